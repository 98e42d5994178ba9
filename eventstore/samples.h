#pragma once
// Metric history (DESIGN.md §2; seed "Viewing performance metrics"): the
// samples agents report, kept in the store's `metrics` column family. They
// are not log events: no sequence, no chain, never through the sequencer.
//
// Layout (keys; B = a block's start, seconds, 8 bytes big-endian):
//   r B SYSTEM \0 T        one host's report at second T: its values and its WPARs'
//   x B W NAME \0 SYSTEM    WPAR NAME reported by SYSTEM within block B (an index of r)
//   c B S SYSTEM           sealed: the host's samples of block B (series.h encoding)
//   c B W NAME \0 SYSTEM    sealed: WPAR NAME's samples on SYSTEM in block B
//   a B …                  sealed: 5-minute aggregates (min, mean, max) of the same
// A report is one write of its row (with the WAL, not synced: a crash of the
// process loses nothing written, a power cut the last moments, as for any
// unsynced write). Once a block has ended (plus a grace for late reports),
// maintain() seals it: each entity's samples become one compact block and
// its aggregates another, and the rows are dropped (written without the WAL
// and flushed: a crash before the flush seals the block again). Raw blocks are kept for
// raw_retention, aggregates for aggregate_retention, dropped by whole ranges.
// Times are the manager's (when the report arrived), in seconds, so an
// agent's clock cannot reorder history.
//
// Thread safety: every member function may run on any thread.

#include <spdlog/logger.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <atomic>
#include <mutex>
#include <shared_mutex>
#include <optional>
#include <string>
#include <vector>

#include "eventstore/series.h"
#include "eventstore/store.h"
#include "schemas/error.h"

namespace wpm::eventstore {

// The report types (schemas/metrics.h), as the store names them.
using metrics::MetricValues;
using metrics::WparSample;
using metrics::HostSample;
using metrics::History;

// The row of a report without its key (system and time), and back.
std::string encode_sample_row(const HostSample& sample);
Result<HostSample> decode_sample_row(std::string_view row, std::string system, int64_t time_s);

struct SampleOptions {
  int64_t block_s = 3600;                        // a raw block's span
  int64_t seal_grace_s = 120;                    // a block is sealed this long after it ends
  int64_t raw_retention_s = 24 * 3600;           // default 24 h
  int64_t aggregate_retention_s = 30 * 86'400;   // default 30 days
  int64_t aggregate_s = 300;                     // 5-minute aggregates
};

enum class Resolution { kRaw, kAggregate };

struct MaintainOutcome {
  int sealed_blocks = 0;
  uint64_t sealed_rows = 0;
  uint64_t chunks_written = 0;
};

class SampleStore {
 public:
  // Needs the store's metrics column family; kReadOnly for a read-only open
  // of a database from before metrics existed.
  static Result<std::unique_ptr<SampleStore>> open(Store& store, SampleOptions options,
                                                   std::shared_ptr<spdlog::logger> log);

  // Records one report. Reports from before the newest sealed block are
  // dropped (counted in `late()`): history is sealed by then.
  Result<void> write(const HostSample& sample);
  // A host's (wpar = false) or a WPAR's history in [from_s, to_s]; with
  // `system`, only what that system reported (a WPAR's samples from where it
  // ran then: the what-if simulation, which knows, reads no other).
  Result<History> read(bool wpar, const std::string& name, int64_t from_s, int64_t to_s, Resolution resolution,
                       const std::string* system = nullptr) const;
  // Seals the blocks that ended before now_s − grace and drops what is past
  // retention. Run it now and then (wpmd: every minute).
  Result<MaintainOutcome> maintain(int64_t now_s);

  // Called after each write, on the writer's thread (keep it short).
  void subscribe(std::function<void(const HostSample&)> subscriber);

  // Bytes of the column family's files on disk (memtables not counted).
  uint64_t disk_bytes() const;
  // Compacts the column family (benchmarks: the size at rest).
  void compact();
  uint64_t late() const;
  const SampleOptions& options() const { return options_; }

 private:
  SampleStore(Store::MetricsColumn column, SampleOptions options, std::shared_ptr<spdlog::logger> log)
      : db_(column.db), cf_(column.cf), options_(options), log_(std::move(log)) {}
  int64_t block_of(int64_t t) const { return t - (t % options_.block_s + options_.block_s) % options_.block_s; }
  Result<void> seal(int64_t block, MaintainOutcome& outcome);
  Result<void> read_block(bool wpar, const std::string& name, int64_t block, Resolution resolution,
                          const std::string* system, History& out) const;
  std::optional<int64_t> oldest_raw_block() const;
  void flush_soon();

  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* cf_;
  SampleOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  // Writes hold it shared, the end of a sealing exclusively: a report is in
  // the rows a sealing reads, or refused as late, never written after.
  mutable std::shared_mutex seal_mutex_;
  int64_t sealed_before_ = 0;  // reports before this time are late (guarded by seal_mutex_)
  std::atomic<uint64_t> late_{0};
  mutable std::mutex subscribers_mutex_;
  std::vector<std::function<void(const HostSample&)>> subscribers_;
};

}  // namespace wpm::eventstore
