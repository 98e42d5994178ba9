#pragma once
// The append-only event log (DESIGN.md §2): RocksDB with one writer.
//
// commit() is the sequencer: it validates a group of append requests, assigns
// gap-free sequences and stream versions, chains and checksums the records,
// writes them in one batch, syncs the WAL, writes the acknowledged-sequence
// mark (eventstore/mark.h; synced now or within mark_sync_interval_ms), and
// only then returns results. Nothing above the mark is ever read or published. A write error (disk full) fails the batch and turns the store
// read-only; a failed sync aborts the process.
//
// Thread safety: commit() from one thread only (the sequencer); the read
// functions and head() may run on any thread. Never writes outside data_dir.

#include <spdlog/logger.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <rocksdb/write_batch.h>

#include "eventstore/mark.h"
#include "eventstore/options.h"
#include "schemas/error.h"
#include "schemas/hash.h"
#include "schemas/protocol.h"

namespace rocksdb {
struct ColumnFamilyDescriptor;
struct DBOptions;
class DB;
class Env;
class WriteBatch;
class ColumnFamilyHandle;
class CompactionFilter;
}  // namespace rocksdb

namespace wpm::eventstore {

class AckMark;
class EarlySyncFileSystem;

// A set of event types: bit t for a known type t, bit 0 for every type this
// binary does not know (a newer writer's).
using TypeMask = uint64_t;
static_assert(kEventTypeMax < 64, "a TypeMask holds one bit per event type");
inline TypeMask type_bit(EventType type) {
  return TypeMask{1} << (known_event_type(type) ? static_cast<unsigned>(type) : 0u);
}

// An event made durable by a commit, ready to publish.
struct Committed {
  uint64_t sequence = 0;
  EventType type = EventType::kSynthetic;
  std::string record;
};

struct CommitOutcome {
  std::vector<Result<AppendResult>> results;  // one per request, in order
  std::vector<Committed> committed;           // in sequence order
  size_t batch_events = 0;
};

class Store {
 public:
  // An idempotency key's stored value. What the key stands for is the events
  // themselves, read back from the log on a re-send (rare), so the hot path
  // computes no digest.
  struct KeyEntry {
    uint64_t first_sequence = 0;
    uint32_t count = 0;
    int64_t committed_ns = 0;
  };

  static Result<std::unique_ptr<Store>> open(const StoreOptions& options,
                                             std::shared_ptr<spdlog::logger> log);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // One group commit. `now_ns` stamps the events (the caller owns the clock).
  CommitOutcome commit(std::span<const AppendRequest> requests, int64_t now_ns);
  // Writes the derived data (stream index, idempotency keys, counters) of the
  // last commit. Call it after the replies are out; the next commit (and
  // closing) calls it if the caller did not. Reads by stream and re-sent keys
  // see a commit only once this ran.
  Result<void> apply_index();
  // Syncs the acknowledged-sequence mark written by the last commits when
  // mark_sync_interval_ms has passed since the first unsynced write, or at
  // once with `force`. Call it after the replies and whenever
  // mark_sync_due_in() runs out. Closing the store writes the final head,
  // synced and flagged exact. A failed sync aborts the process.
  void sync_mark(bool force = false);
  // Time until sync_mark() has work to do; max() when the mark is synced.
  std::chrono::milliseconds mark_sync_due_in() const;

  Result<ReadReply> read_range(const ReadRangeRequest& request) const;
  Result<ReadReply> read_stream(const ReadStreamRequest& request) const;
  StatsReply stats() const;

  // Highest acknowledged sequence (0: empty log).
  uint64_t head() const { return head_.load(std::memory_order_acquire); }
  // The in-process commit signal (DESIGN.md §2: embedded consumers tail the
  // log by reading ranges when the store signals new commits, not by a
  // publication per event). Waits until a commit beyond `sequence` is fully
  // readable (by range and by stream), or `timeout`; returns the readable
  // head. Any thread.
  uint64_t wait_beyond(uint64_t sequence, std::chrono::milliseconds timeout) const;
  // For followers that fold only some types: the highest sequence S >= `after`
  // such that no event in (after, S] has a type in `wanted`, as far as the
  // store's summary of its recent commits (the types of each batch, not the
  // records) tells; at most the readable head. `after` when it cannot say
  // (nothing new, a wanted type next, or a range older than the summary).
  // Any thread.
  uint64_t skippable_through(uint64_t after, TypeMask wanted) const;
  bool read_only() const { return read_only_.load(std::memory_order_acquire); }
  uint64_t log_bytes() const;
  // What open found acknowledged: the mark, or derived data beyond it, or the
  // head it kept above a lower-bound mark (offline tools compare it with what
  // the log holds).
  uint64_t acknowledged_at_open() const { return acknowledged_at_open_; }
  const StoreOptions& options() const { return options_; }

  // A consistent copy of the whole database (every column family, memtables
  // flushed first) in `dir`, which must not exist: hard links where it is on
  // the same file system, copies elsewhere. Safe while commits run. Returns
  // the last sequence the copy holds (it may be above the acknowledged head
  // by a batch whose reply was not out yet). Any thread.
  Result<uint64_t> checkpoint(const std::string& dir) const;

  // Iterates every stored record in order (offline verify, benchmarks).
  // `visit` returns false to stop. Errors are RocksDB read errors (e.g. a
  // corrupt table block) with the sequence where reading stopped.
  enum class ScanMode { kPage, kBulk };  // kBulk: read ahead, bypass the block cache
  Result<void> scan(uint64_t from, ScanMode mode,
                    const std::function<bool(uint64_t, std::string_view)>& visit) const;

  // Projection snapshots (DESIGN.md §2): their own column family, one per
  // name, tagged with the sequence they reflect. Derived data: written
  // without the WAL and flushed in the background, so a crash may lose the
  // newest (the projection then folds a longer tail). Any thread.
  struct Snapshot {
    uint64_t sequence = 0;
    std::string state;
  };
  Result<void> put_snapshot(std::string_view name, uint64_t sequence, std::string_view state);
  Result<std::optional<Snapshot>> get_snapshot(std::string_view name) const;

  // The metrics column family, for the sample store (eventstore/samples.h),
  // which owns its content. Null in a read-only open of a database from
  // before metrics existed.
  struct MetricsColumn {
    rocksdb::DB* db = nullptr;
    rocksdb::ColumnFamilyHandle* cf = nullptr;
  };
  MetricsColumn metrics_column() const { return {db_.get(), metrics_cf_}; }

  // Offline repair (wpm admin rebuild, wpmd stopped): forgets every derived
  // structure (stream index, idempotency keys, counters, snapshots), so that
  // the next open rebuilds them from the log.
  Result<void> drop_derived();

  // Test and repair access (tools and tests only): rewrites one stored record.
  Result<void> overwrite_record_for_test(uint64_t sequence, const std::string& record);

 private:
  struct Columns;
  Store(StoreOptions options, std::shared_ptr<spdlog::logger> log);
  Result<void> open_database();
  Result<void> recover();
  Result<void> discard_unacknowledged(uint64_t mark, uint64_t last);
  Result<void> rebuild_derived(uint64_t head);
  Result<std::array<uint64_t, 3>> derived_marks() const;
  void put_derived_marks(rocksdb::WriteBatch& batch, uint64_t sequence);
  Result<void> verify_tail();
  Result<uint64_t> last_stored_sequence() const;
  // The running boot's id (or the test's stand-in).
  BootId boot_id() const;
  // The last sequence of the log read up to the first damage of its WAL
  // (a read-only open that stops there; nothing is changed).
  Result<uint64_t> intact_wal_prefix(const rocksdb::DBOptions& options, const std::string& path,
                                     const std::vector<rocksdb::ColumnFamilyDescriptor>& columns) const;
  Result<uint64_t> stream_version(const std::string& stream_id) const;
  Result<std::string> get_record(uint64_t sequence) const;
  void fail_read_only(const std::string& reason);
  void kill_point(const char* name) const;
  struct PendingKey {
    KeyEntry entry;
    const AppendRequest* request;
  };
  // Consecutive events of one stream at consecutive sequences: one stream-index
  // entry, built after the replies (apply_index()) or by a rebuild.
  struct StreamRun {
    std::string stream_id;
    uint64_t first_version = 0;
    uint64_t first_sequence = 0;
    uint64_t count = 0;
    bool continued_by(const std::string& stream, uint64_t version, uint64_t sequence) const {
      return count > 0 && stream_id == stream && first_version + count == version &&
             first_sequence + count == sequence;
    }
  };
  void put_stream_run(rocksdb::WriteBatch& batch, const StreamRun& run);
  // One batch being staged: copies of the sequencer state plus what it adds.
  struct Staging {
    // Reserves room for `events` typical records: a batch grown by doubling
    // was copied about ten times at 256 events, a sixth of the staging time.
    explicit Staging(size_t events)
        : batch(std::min(events * kStagedRecordBytes, kStagedReserveBytesMax)),
          index(std::min(events * kStagedIndexBytes, kStagedReserveBytesMax)) {}
    static constexpr size_t kStagedRecordBytes = 384;  // a small event's record, key, framing
    static constexpr size_t kStagedIndexBytes = 64;    // a typical stream-index entry
    static constexpr size_t kStagedReserveBytesMax = 8u << 20;  // larger batches grow
    uint64_t next = 1;
    std::array<uint8_t, 32> chain{};
    uint64_t log_bytes = 0;
    std::array<uint64_t, kEventTypeMax + 1> type_counts{};
    std::unordered_map<std::string, uint64_t> versions;  // streams this batch touched
    std::unordered_map<std::string, PendingKey> keys;    // keys this batch committed
    rocksdb::WriteBatch batch;  // the records: synced before anything is acknowledged
    rocksdb::WriteBatch index;  // derived data: applied after acknowledging
    std::vector<StreamRun> stream_runs;  // its stream-index entries, put by apply_index()
    Sha256 hasher;
    std::vector<Committed> committed;
  };
  Result<AppendResult> stage(const AppendRequest& request, int64_t now_ns, Staging& staging);
  Result<uint64_t> current_version(const std::string& stream, const Staging& staging) const;
  std::optional<std::string> make_durable(Staging& staging);
  // Empty: the key is new. Otherwise the answer to a re-sent key: the original
  // sequences when the events are the same, kIdempotencyKeyReused when not.
  std::optional<Result<AppendResult>> resend_outcome(
      const AppendRequest& request, const std::unordered_map<std::string, PendingKey>& keys) const;

  StoreOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  int lock_fd_ = -1;
  std::unique_ptr<AckMark> mark_;
  std::unique_ptr<rocksdb::CompactionFilter> idem_filter_;  // must outlive db_
  std::shared_ptr<EarlySyncFileSystem> wal_fs_;  // writable stores; must outlive db_
  std::unique_ptr<rocksdb::Env> env_;             // wal_fs_ as RocksDB sees it
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* log_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* streams_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* idempotency_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* snapshots_cf_ = nullptr;  // null: a read-only open of an older database
  rocksdb::ColumnFamilyHandle* metrics_cf_ = nullptr;    // likewise

  // Sequencer state (commit thread only).
  rocksdb::WriteBatch index_;  // derived data of the last commit, not yet applied
  std::vector<StreamRun> stream_runs_;  // and its stream-index entries
  bool index_pending_ = false;
  std::array<uint8_t, 32> chain_{};
  uint64_t event_id_prefix_ = 0;
  std::unordered_map<std::string, uint64_t> stream_cache_;
  uint64_t log_bytes_ = 0;
  std::array<uint64_t, kEventTypeMax + 1> type_counts_{};

  uint64_t acknowledged_at_open_ = 0;
  // Whether the mark is synced within mark_sync_interval_ms (true) or before
  // every reply; decided at open.
  bool mark_lazy_ = false;
  // When the mark was first written without a sync since the last sync.
  std::optional<std::chrono::steady_clock::time_point> mark_dirty_since_;
  bool opened_ = false;  // recover() succeeded: closing may write the final mark
  std::atomic<uint64_t> head_{0};
  // The commit signal: the head readable by stream too (after apply_index).
  mutable std::mutex readable_mutex_;
  mutable std::condition_variable readable_cv_;
  uint64_t readable_ = 0;  // guarded by readable_mutex_
  // The types of recently committed ranges, contiguous and in order, up to
  // the readable head (guarded by readable_mutex_; bounded).
  struct TypeRun {
    uint64_t first = 0, last = 0;
    TypeMask types = 0;
  };
  std::deque<TypeRun> type_runs_;
  static constexpr size_t kTypeRunsMax = 4096;
  // Committed but not yet readable (sequencer thread only): from pending_first_ on.
  uint64_t pending_first_ = 0;
  TypeMask pending_types_ = 0;
  void set_readable(uint64_t head);
  std::atomic<bool> read_only_{false};
  mutable std::mutex read_only_mutex_;  // guards read_only_reason_
  std::string read_only_reason_;
  // Published for readers: counters as of head_ (under stats_mutex_).
  mutable std::mutex stats_mutex_;
  uint64_t stats_log_bytes_ = 0;
  std::array<uint64_t, kEventTypeMax + 1> stats_type_counts_{};
};

}  // namespace wpm::eventstore
