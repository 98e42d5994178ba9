#include "eventstore/store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdarg>
#include <cstdio>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "eventstore/constants.h"
#include "eventstore/mark.h"
#include "eventstore/recovery.h"
#include "eventstore/wal_sync.h"
#include "schemas/record.h"
#include "schemas/assert.h"
#include "schemas/codec.h"

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;

constexpr const char* kLogColumn = "log";
constexpr const char* kStreamsColumn = "streams";
constexpr const char* kIdempotencyColumn = "idempotency";
constexpr const char* kMetaColumn = "meta";
constexpr const char* kSnapshotsColumn = "snapshots";
constexpr const char* kMetricsColumn = "metrics";
constexpr const char* kMetaLogBytes = "log_bytes";
// In each derived column family: the sequence its content reflects. Starts
// with NUL, which no stream id or idempotency key may contain.
const std::string kDerivedMarkKey = std::string("\0derived_up_to", 14);

// ---- key and value encodings ------------------------------------------------

std::string seq_key(uint64_t sequence) {
  uint64_t be = std::byteswap(sequence);
  return std::string(reinterpret_cast<const char*>(&be), 8);
}
uint64_t key_seq(std::string_view key) {
  WPM_ASSERT(key.size() == 8, "log key of {} bytes", key.size());
  uint64_t be;
  std::memcpy(&be, key.data(), 8);
  return std::byteswap(be);
}
std::string stream_key(const std::string& stream_id, uint64_t version) {
  std::string key = stream_id;
  key.push_back('\0');
  key += seq_key(version);
  return key;
}
std::string u64_value(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
uint64_t value_u64(std::string_view v) {
  uint64_t out = 0;
  if (v.size() == 8) std::memcpy(&out, v.data(), 8);
  return out;
}
std::string type_key(size_t type) { return fmt::format("type/{}", type); }
// Counter slot of a type: its ordinal, or 0 for types this binary does not know.
size_t type_slot(EventType type) { return known_event_type(type) ? static_cast<size_t>(type) : 0; }

// Stream-index entry: key (stream id, NUL, first version), value the sequence of
// that version, then, for more than one event, how many consecutive versions sit
// at consecutive sequences from there (both 8-byte big-endian). A batch writes
// one entry per run of a stream's events, not one per event.
struct StreamEntry {
  uint64_t first_version = 0;
  uint64_t first_sequence = 0;
  uint64_t count = 0;
};
constexpr size_t kStreamEntryOneBytes = 8;
constexpr size_t kStreamEntryRunBytes = 16;

// Empty when `key` is not an entry of the stream whose keys start with `prefix`
// (the stream id and NUL); an entry that cannot be right (a value of another
// size, a zero, a run past 2^64 - 1) is a corruption error.
Result<std::optional<StreamEntry>> parse_stream_entry(std::string_view prefix, std::string_view key,
                                                      std::string_view value) {
  if (!key.starts_with(prefix) || key.size() != prefix.size() + 8) return std::nullopt;
  StreamEntry e{key_seq(key.substr(prefix.size())), 0, 1};
  auto damaged = [&](std::string_view what) {
    return fail(ErrorCode::kCorruption,
                fmt::format("the stream index entry at version {} of stream \"{}\" is damaged ({}); "
                            "the index is derived from the log: restore the data directory from "
                            "a backup",
                            e.first_version, prefix.substr(0, prefix.size() - 1), what));
  };
  if (value.size() != kStreamEntryOneBytes && value.size() != kStreamEntryRunBytes) {
    return damaged(fmt::format("a value of {} bytes", value.size()));
  }
  e.first_sequence = key_seq(value.substr(0, 8));
  if (value.size() == kStreamEntryRunBytes) e.count = key_seq(value.substr(8));
  // Versions and sequences start at 1; neither may run past 2^64 - 1.
  if (e.first_version == 0 || e.first_sequence == 0 || e.count == 0 ||
      e.count - 1 > UINT64_MAX - e.first_version || e.count - 1 > UINT64_MAX - e.first_sequence) {
    return damaged(fmt::format("sequence {}, {} events", e.first_sequence, e.count));
  }
  return e;
}

// Idempotency value: first sequence, count, commit time (Store::KeyEntry).
constexpr size_t kKeyEntryBytes = 8 + 4 + 8;

std::string encode_entry(const Store::KeyEntry& e) {
  std::string out(kKeyEntryBytes, '\0');
  std::memcpy(out.data(), &e.first_sequence, 8);
  std::memcpy(out.data() + 8, &e.count, 4);
  std::memcpy(out.data() + 12, &e.committed_ns, 8);
  return out;
}
std::optional<Store::KeyEntry> decode_entry(std::string_view v) {
  if (v.size() != kKeyEntryBytes) return std::nullopt;
  Store::KeyEntry e;
  std::memcpy(&e.first_sequence, v.data(), 8);
  std::memcpy(&e.count, v.data() + 8, 4);
  std::memcpy(&e.committed_ns, v.data() + 12, 8);
  return e;
}

bool same_event(const Event& stored, const EventDraft& draft) {
  return stored.stream_id == draft.stream_id && stored.correlation_id == draft.correlation_id &&
         stored.causation_id == draft.causation_id && stored.actor == draft.actor &&
         stored.payload == draft.payload;
}

// Drops idempotency keys older than the window at compaction.
class IdempotencyWindowFilter : public rocksdb::CompactionFilter {
 public:
  explicit IdempotencyWindowFilter(uint32_t window_s) : window_ns_(int64_t{window_s} * 1'000'000'000) {}
  bool Filter(int, const rocksdb::Slice&, const rocksdb::Slice& value, std::string*,
              bool*) const override {
    auto entry = decode_entry(std::string_view(value.data(), value.size()));
    if (!entry) return false;
    int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    return now - entry->committed_ns > window_ns_;
  }
  const char* Name() const override { return "wpm.IdempotencyWindowFilter"; }

 private:
  int64_t window_ns_;
};

// RocksDB's own diagnostics go to our logger, not to a LOG file in the data
// directory: on a full disk that file cannot be written either (and RocksDB's
// file writer asserts on the next write after a failed one).
class RocksLogger : public rocksdb::Logger {
 public:
  explicit RocksLogger(std::shared_ptr<spdlog::logger> log)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), log_(std::move(log)) {}
  using rocksdb::Logger::Logv;
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buf[1024];
    std::vsnprintf(buf, sizeof buf, format, ap);
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      log_->error("rocksdb message=\"{}\"", buf);
    } else {
      log_->warn("rocksdb message=\"{}\"", buf);
    }
  }
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }

 private:
  std::shared_ptr<spdlog::logger> log_;
};

// The stream part of a streams-index key: everything up to and including the NUL.
class StreamPrefix : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "wpm.StreamPrefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    const void* nul = std::memchr(key.data(), '\0', key.size());
    return rocksdb::Slice(key.data(), static_cast<const char*>(nul) - key.data() + 1);
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    return std::memchr(key.data(), '\0', key.size()) != nullptr;
  }
};

Error rocks_error(const char* what, const rocksdb::Status& s) {
  ErrorCode code = s.IsCorruption() ? ErrorCode::kCorruption : ErrorCode::kIo;
  return Error{code, fmt::format("{}: {}", what, s.ToString())};
}

std::optional<Error> validate(const AppendRequest& r) {
  auto invalid = [](std::string msg) { return Error{ErrorCode::kInvalidRequest, std::move(msg)}; };
  if (r.events.empty()) return invalid("append request has no events; send at least one");
  if (r.events.size() > kRequestEventsMax) {
    return invalid(fmt::format("append request has {} events; the limit is {}, split it",
                               r.events.size(), kRequestEventsMax));
  }
  if (r.idempotency_key.find('\0') != std::string::npos) {
    return invalid("idempotency key contains a NUL byte; use printable text");
  }
  if (r.idempotency_key.size() > kIdempotencyKeyBytesMax) {
    return invalid(fmt::format("idempotency key of {} bytes; the limit is {}",
                               r.idempotency_key.size(), kIdempotencyKeyBytesMax));
  }
  auto check_stream = [&](const std::string& s) -> std::optional<Error> {
    if (s.empty() || s.size() > kStreamIdBytesMax || s.find('\0') != std::string::npos) {
      return invalid(fmt::format("stream id '{}' is invalid: it must be 1..{} bytes without NUL",
                                 s.substr(0, 64), kStreamIdBytesMax));
    }
    return std::nullopt;
  };
  for (const auto& e : r.events) {
    if (auto err = check_stream(e.stream_id)) return err;
    size_t bytes = e.stream_id.size() + e.correlation_id.size() + e.causation_id.size() +
                   e.actor.size() + r.idempotency_key.size() + payload_bytes(e.payload);
    if (bytes > kEventBytesMax) {
      return invalid(fmt::format("an event of {} bytes exceeds the limit of {} bytes; keep bulk "
                                 "data out of events",
                                 bytes, kEventBytesMax));
    }
  }
  for (const auto& x : r.expectations) {
    if (auto err = check_stream(x.stream_id)) return err;
  }
  return std::nullopt;
}

// Checks one expectation against the stream's current version (0 = no stream).
std::optional<Error> check_expectation(const StreamExpectation& x, uint64_t current) {
  bool ok = true;
  switch (x.kind) {
    case ExpectKind::kAny: break;
    case ExpectKind::kNoStream: ok = current == 0; break;
    case ExpectKind::kExact: ok = current == x.version; break;
    case ExpectKind::kStreamExists: ok = current > 0; break;
  }
  if (ok) return std::nullopt;
  Error e{ErrorCode::kWrongExpectedVersion,
          fmt::format("stream {} is at version {}, the request expected {}; reload the stream "
                      "and decide again",
                      x.stream_id, current,
                      x.kind == ExpectKind::kNoStream       ? std::string("no stream")
                      : x.kind == ExpectKind::kStreamExists ? std::string("an existing stream")
                                                            : std::to_string(x.version))};
  e.stream_id = x.stream_id;
  e.expected_version = x.version;
  e.actual_version = current;
  return e;
}

}  // namespace

// ---- open and recovery --------------------------------------------------------

Store::Store(StoreOptions options, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)), log_(std::move(log)) {}

Store::~Store() {
  if (opened_ && mark_) {
    // The final head, synced and flagged exact: nothing is acknowledged after it.
    if (auto r = mark_->write(head(), true); !r) {
      log_->critical("ack_mark_sync_failed error=\"{}\" at=close", r.error().message);
    }
    mark_dirty_since_.reset();
  }
  // A clean stop leaves the memtables in tables, so the next start replays no WAL.
  if (db_ && !options_.read_only && !read_only()) {
    (void)apply_index();  // on error it has logged and turned read-only
    rocksdb::FlushOptions fo;
    fo.wait = true;
    rocksdb::Status s = db_->Flush(fo, handles_);
    if (!s.ok()) log_->warn("store_flush_on_close_failed error=\"{}\"", s.ToString());
  }
  for (auto* h : handles_) {
    if (db_) (void)db_->DestroyColumnFamilyHandle(h);  // close: nothing to report
  }
  if (db_) {
    rocksdb::Status s = db_->Close();
    if (!s.ok()) log_->warn("store_close_failed error=\"{}\"", s.ToString());
  }
  db_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

// DATA/format: "wpm-data N". A directory without one was written before the
// file existed, in format 1. A writer stamps it; a newer format is refused
// before anything is opened, so an older wpmd never misreads a newer layout.
static Result<void> check_format(const StoreOptions& options) {
  std::string path = options.data_dir + "/format";
  std::ifstream in(path);
  std::string word;
  uint32_t format = 0;
  if (in) {
    if (!(in >> word >> format) || word != "wpm-data" || format == 0) {
      return fail(ErrorCode::kCorruption,
                  fmt::format("{} is unreadable: it should hold 'wpm-data N'; restore it from a backup", path));
    }
    if (format > kDataFormat) {
      return fail(ErrorCode::kInvalidRequest,
                  fmt::format("data directory {} has format {}, written by a newer wpm; this one reads formats up "
                              "to {}: upgrade wpm (nothing was changed)",
                              options.data_dir, format, kDataFormat));
    }
    return {};
  }
  if (options.read_only) return {};
  std::string tmp = path + ".tmp";
  std::string content = fmt::format("wpm-data {}\n", kDataFormat);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0 && ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  }
  return {};
}

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options,
                                           std::shared_ptr<spdlog::logger> log) {
  WPM_ASSERT(!options.data_dir.empty(), "data_dir is required");
  std::unique_ptr<Store> store(new Store(options, std::move(log)));
  std::error_code ec;
  if (!options.read_only) {
    fs::create_directories(options.data_dir, ec);
    if (ec) {
      return fail(ErrorCode::kIo, fmt::format("cannot create data directory {}: {}",
                                              options.data_dir, ec.message()));
    }
  } else if (!fs::exists(fs::path(options.data_dir) / "log" / "CURRENT")) {
    return fail(ErrorCode::kNotFound,
                fmt::format("no event log in {} (expected {}/log); check --data",
                            options.data_dir, options.data_dir));
  }
  // One writer per directory: an advisory lock held for the process lifetime.
  // Read-only openers take it too, so an offline check never races wpmd.
  std::string lock_path = options.data_dir + "/wpmd.lock";
  store->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (store->lock_fd_ < 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot open {}: {}", lock_path, std::strerror(errno)));
  }
  if (::flock(store->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    ssize_t n = ::pread(store->lock_fd_, pid, sizeof pid - 1, 0);
    std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "unknown";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return fail(ErrorCode::kUnavailable,
                fmt::format("data directory {} is in use by another wpmd (pid {}); stop it first "
                            "or choose another --data",
                            options.data_dir, holder));
  }
  if (!options.read_only) {
    std::string pid = fmt::format("{}\n", ::getpid());
    if (::ftruncate(store->lock_fd_, 0) != 0 ||
        ::pwrite(store->lock_fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
      store->log_->warn("lock_file_pid_not_written path={} error=\"{}\"", lock_path,
                        std::strerror(errno));
    }
  }
  if (auto r = check_format(options); !r) return std::unexpected(r.error());
  if (auto r = store->open_database(); !r) return std::unexpected(r.error());
  if (auto r = store->recover(); !r) return std::unexpected(r.error());
  return store;
}

Result<void> Store::open_database() {
  rocksdb::DBOptions db;
  db.create_if_missing = !options_.read_only;
  db.create_missing_column_families = !options_.read_only;
  db.paranoid_checks = true;
  // A torn record at the very tail is what kill -9 during a write leaves: it was
  // never synced, so never acknowledged, and may be dropped. Corruption anywhere
  // else fails the open instead of silently truncating the log (DESIGN.md §9).
  db.wal_recovery_mode = options_.salvage ? rocksdb::WALRecoveryMode::kSkipAnyCorruptedRecords
                                          : rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  db.max_background_jobs = 2;
  db.keep_log_file_num = 5;
  db.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  db.info_log = std::make_shared<RocksLogger>(log_);
  db.avoid_flush_during_shutdown = false;
  std::shared_ptr<rocksdb::FileSystem> disk =
      options_.file_system_for_test ? options_.file_system_for_test : rocksdb::FileSystem::Default();
  if (!options_.read_only && options_.wal_early_sync_bytes > 0) {
    wal_fs_ = std::make_shared<EarlySyncFileSystem>(disk);
    env_ = rocksdb::NewCompositeEnv(wal_fs_);
    db.env = env_.get();
  } else if (options_.file_system_for_test) {
    env_ = rocksdb::NewCompositeEnv(disk);
    db.env = env_.get();
  }
  if (options_.low_priority_compactions && !options_.read_only) {
    auto s = rocksdb::Env::Default()->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW,
                                                                 rocksdb::CpuPriority::kLow);
    if (!s.ok()) log_->warn("compaction_priority_unchanged error=\"{}\"", s.ToString());
  }

  rocksdb::ColumnFamilyOptions log_cf;
  log_cf.write_buffer_size = options_.write_buffer_bytes;
  // Log keys only grow: one insert hint for the whole column family turns each
  // memtable insert into an append at the remembered position.
  log_cf.memtable_insert_with_hint_prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(0));
  // The log is compressed once, by the flush, and at every level alike: keys
  // only grow, so files do not overlap and compactions move them down without
  // rewriting (RocksDB moves a file only when the compression of both levels
  // matches). Leaving the upper levels uncompressed made every byte be read,
  // compressed and written again on its way down, which slowed the WAL syncs
  // it competed with. (Files written uncompressed before this setting keep
  // their compression when they move.)
  log_cf.compression = rocksdb::kZSTD;
  rocksdb::ColumnFamilyOptions small_cf;
  small_cf.write_buffer_size = options_.write_buffer_bytes / 4;
  rocksdb::ColumnFamilyOptions streams_cf = small_cf;
  // Within a stream, index keys grow: one hint per stream.
  streams_cf.memtable_insert_with_hint_prefix_extractor = std::make_shared<StreamPrefix>();
  rocksdb::ColumnFamilyOptions idem_cf = small_cf;
  // Every append with a key looks it up, and a new key is not there: bloom
  // filters answer that from memory instead of reading a block of every
  // level-0 file and of one file per level. Same block cache as the others.
  rocksdb::BlockBasedTableOptions idem_tables;
  if (const auto* shared = small_cf.table_factory->GetOptions<rocksdb::BlockBasedTableOptions>()) {
    idem_tables = *shared;
  }
  idem_tables.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  idem_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(idem_tables));
  idem_filter_ = std::make_unique<IdempotencyWindowFilter>(options_.idempotency_window_s);
  idem_cf.compaction_filter = idem_filter_.get();

  // Metric samples (eventstore/samples.h): recent rows and sealed blocks,
  // dropped by time in whole ranges.
  rocksdb::ColumnFamilyOptions metrics_cf = small_cf;
  metrics_cf.compression = rocksdb::kZSTD;
  std::vector<rocksdb::ColumnFamilyDescriptor> columns = {
      {rocksdb::kDefaultColumnFamilyName, small_cf},
      {kLogColumn, log_cf},
      {kStreamsColumn, streams_cf},
      {kIdempotencyColumn, idem_cf},
      {kMetaColumn, small_cf},
      {kSnapshotsColumn, small_cf},
      {kMetricsColumn, metrics_cf},
  };
  std::string path = options_.data_dir + "/log";
  if (options_.read_only) {
    // A database written before snapshots (or metrics) existed has no such
    // family, and a read-only open cannot create it.
    std::vector<std::string> existing;
    if (rocksdb::DB::ListColumnFamilies(db, path, &existing).ok()) {
      std::erase_if(columns, [&](const rocksdb::ColumnFamilyDescriptor& c) {
        return c.name != rocksdb::kDefaultColumnFamilyName &&
               std::find(existing.begin(), existing.end(), c.name) == existing.end();
      });
    }
  }
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      options_.read_only
          ? rocksdb::DB::OpenForReadOnly(db, path, columns, &handles_, &raw)
          : rocksdb::DB::Open(db, path, columns, &handles_, &raw);
  if (s.IsCorruption() && !options_.read_only && !options_.salvage) {
    // Damage in the WAL after every acknowledged event is what a power cut
    // leaves when the disk kept part of an unsynced tail as garbage (more
    // than one torn record, which the tail mode tolerates alone). A
    // read-only probe that stops at the damage finds where the intact log
    // ends; when that is at or past the mark, nothing acknowledged is behind
    // the damage and the store opens without it. Otherwise it refuses,
    // naming the first acknowledged sequence it lacks.
    auto intact = intact_wal_prefix(db, path, columns);
    auto mark = AckMark::read(options_.data_dir + "/acknowledged", boot_id());
    if (intact && mark && *mark && *intact >= (*mark)->sequence) {
      db.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
      handles_.clear();
      rocksdb::Status retried = rocksdb::DB::Open(db, path, columns, &handles_, &raw);
      if (retried.ok()) {
        // Exact mark: nothing acknowledged lies behind the damage. A mark that
        // is a lower bound (after a reboot) leaves events acknowledged in its
        // last milliseconds to their WAL sync alone (docs/eventstore.md): a
        // power cut cannot damage synced bytes, a failing disk could.
        log_->error("recovery_dropped_damaged_wal_tail damage=\"{}\" intact_through={} acknowledged={} "
                    "mark={} note=\"the damaged records after sequence {} were never acknowledged as far as "
                    "the mark tells (a power cut during their write)\"",
                    s.ToString(), *intact, (*mark)->sequence, (*mark)->exact ? "exact" : "lower-bound", *intact);
        s = retried;
      }
    } else if (!intact) {
      log_->warn("wal_probe_failed error=\"{}\" note=\"the damage cannot be placed after the acknowledged "
                 "events\"", intact.error().message);
    } else if (intact && mark && *mark) {
      return fail(ErrorCode::kCorruption,
                  fmt::format("acknowledged events are missing: the WAL of {} is damaged after sequence {} ({}), so "
                              "sequences {} to {} are lost though sequence {} was acknowledged. Inspect it with "
                              "`wpm log verify --data {}` and restore from a backup",
                              path, *intact, s.ToString(), *intact + 1, (*mark)->sequence, (*mark)->sequence,
                              options_.data_dir));
    }
  }
  if (!s.ok()) {
    std::string hint =
        s.IsCorruption()
            ? fmt::format("; the database in {} is damaged and was not opened, so that no "
                          "acknowledged event is silently dropped. Inspect it with "
                          "`wpm log verify --data {}` and restore from a backup",
                          path, options_.data_dir)
            : "";
    return fail(s.IsCorruption() ? ErrorCode::kCorruption : ErrorCode::kIo,
                fmt::format("cannot open event log {}: {}{}", path, s.ToString(), hint));
  }
  db_.reset(raw);
  log_cf_ = handles_[1];
  streams_cf_ = handles_[2];
  idempotency_cf_ = handles_[3];
  meta_cf_ = handles_[4];
  for (size_t i = 5; i < handles_.size(); ++i) {
    if (handles_[i]->GetName() == kSnapshotsColumn) snapshots_cf_ = handles_[i];
    if (handles_[i]->GetName() == kMetricsColumn) metrics_cf_ = handles_[i];
  }
  return {};
}

BootId Store::boot_id() const {
  return options_.boot_id_for_test.empty()              ? current_boot_id()
         : options_.boot_id_for_test == "unreadable" ? BootId{}
                                                        : boot_id_from_text(options_.boot_id_for_test);
}

Result<uint64_t> Store::intact_wal_prefix(const rocksdb::DBOptions& options, const std::string& path,
                                          const std::vector<rocksdb::ColumnFamilyDescriptor>& columns) const {
  rocksdb::DBOptions probe = options;
  probe.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  if (auto s = rocksdb::DB::OpenForReadOnly(probe, path, columns, &handles, &raw); !s.ok()) {
    return std::unexpected(rocks_error("cannot probe the log", s));
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  uint64_t last = 0;
  rocksdb::Status status;
  for (size_t i = 0; i < columns.size() && i < handles.size(); ++i) {
    if (columns[i].name != kLogColumn) continue;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[i]));
    it->SeekToLast();
    status = it->status();
    if (it->Valid()) last = key_seq(std::string_view(it->key().data(), it->key().size()));
  }
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  if (!status.ok()) return std::unexpected(rocks_error("cannot probe the log", status));
  return last;
}

Result<uint64_t> Store::last_stored_sequence() const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), log_cf_));
  it->SeekToLast();
  if (!it->status().ok()) return std::unexpected(rocks_error("cannot read the log tail", it->status()));
  if (!it->Valid()) return uint64_t{0};
  return key_seq(std::string_view(it->key().data(), it->key().size()));
}

Result<uint64_t> Store::checkpoint(const std::string& dir) const {
  rocksdb::Checkpoint* raw = nullptr;
  if (auto s = rocksdb::Checkpoint::Create(db_.get(), &raw); !s.ok()) {
    return std::unexpected(rocks_error("cannot start a checkpoint", s));
  }
  std::unique_ptr<rocksdb::Checkpoint> cp(raw);
  // 0: flush every memtable first, so the copy needs no WAL replay (and
  // holds the metric writes made without the WAL).
  if (auto s = cp->CreateCheckpoint(dir, 0); !s.ok()) {
    return std::unexpected(rocks_error(fmt::format("cannot write a checkpoint to {}", dir).c_str(), s));
  }
  // Its last sequence: read from the copy itself.
  rocksdb::Options opts;
  std::vector<std::string> names;
  if (auto s = rocksdb::DB::ListColumnFamilies(opts, dir, &names); !s.ok()) {
    return std::unexpected(rocks_error("cannot read the checkpoint's column families", s));
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> columns;
  for (const auto& n : names) columns.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* copy = nullptr;
  if (auto s = rocksdb::DB::OpenForReadOnly(opts, dir, columns, &handles, &copy); !s.ok()) {
    return std::unexpected(rocks_error("cannot open the checkpoint", s));
  }
  uint64_t last = 0;
  rocksdb::Status status;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] != kLogColumn) continue;
    std::unique_ptr<rocksdb::Iterator> it(copy->NewIterator(rocksdb::ReadOptions(), handles[i]));
    it->SeekToLast();
    status = it->status();
    if (it->Valid()) last = key_seq(std::string_view(it->key().data(), it->key().size()));
  }
  for (auto* h : handles) copy->DestroyColumnFamilyHandle(h);
  delete copy;
  if (!status.ok()) return std::unexpected(rocks_error("cannot read the checkpoint's last record", status));
  return last;
}

Result<void> Store::recover() {
  std::string mark_path = options_.data_dir + "/acknowledged";
  BootId boot = boot_id();
  mark_lazy_ = options_.mark_sync_interval_ms > 0;
  if (mark_lazy_ && boot == BootId{}) {
    // Without a boot id an unsynced mark could never be told from a synced one.
    mark_lazy_ = false;
    log_->warn("boot_id_unreadable path=/proc/sys/kernel/random/boot_id action=\"syncing the "
               "acknowledged-sequence mark before every reply\"");
  }
  RecoveryFacts facts;
  facts.salvage = options_.salvage;
  facts.read_only = options_.read_only;
  if (options_.read_only) {
    auto m = AckMark::read(mark_path, boot);
    if (!m) return std::unexpected(m.error());
    facts.mark = *m;
  } else {
    auto m = AckMark::open(mark_path, boot, options_.file_system_for_test.get());
    if (!m) return std::unexpected(m.error());
    mark_ = std::move(*m);
    facts.mark = mark_->reading();
  }
  auto last = last_stored_sequence();
  if (!last) return std::unexpected(last.error());
  facts.stored = *last;
  auto marks = derived_marks();
  if (!marks) return std::unexpected(marks.error());
  facts.derived = *std::max_element(marks->begin(), marks->end());

  RecoveryPlan plan = plan_recovery(facts);
  acknowledged_at_open_ = plan.acknowledged;
  switch (plan.action) {
    case RecoveryAction::kMarkMissing:
      return fail(ErrorCode::kCorruption,
                  fmt::format("the log holds {} events but the acknowledged-sequence file {} is "
                              "missing or unreadable, so lost events could not be detected; "
                              "restore the file or the whole directory from a backup",
                              facts.stored, mark_path));
    case RecoveryAction::kLostAcknowledged:
      return fail(ErrorCode::kCorruption,
                  fmt::format("acknowledged events are missing: the log ends at sequence {} but "
                              "sequence {} was acknowledged (first missing: {}); refusing to run "
                              "on a shorter log. Inspect with `wpm log verify --data {}` and "
                              "restore from a backup",
                              facts.stored, plan.acknowledged, facts.stored + 1, options_.data_dir));
    case RecoveryAction::kMarkStale:
      return fail(ErrorCode::kCorruption,
                  fmt::format("the acknowledged-sequence file {} says {} but sequence {} was "
                              "acknowledged (derived data reflects it): the file is older than "
                              "the log. Restore the whole data directory from one backup",
                              mark_path, plan.head, plan.acknowledged));
    case RecoveryAction::kDiscardAbove:
      if (auto r = discard_unacknowledged(plan.head, facts.stored); !r) return r;
      break;
    case RecoveryAction::kKeepAbove:
      // Written before a restart of the machine and not yet synced: the mark
      // may trail what was acknowledged, so the records above it are kept.
      log_->warn("recovery_kept_above_mark from={} to={} count={} reason=\"the mark was written "
                 "in an earlier boot and may trail the last acknowledgements\"",
                 facts.mark->sequence + 1, facts.stored, facts.stored - facts.mark->sequence);
      break;
    case RecoveryAction::kOpen:
      break;
  }
  uint64_t head = plan.head;
  if (!options_.read_only) {
    if (auto r = rebuild_derived(head); !r) return r;
  }
  // Counters (meta column family).
  for (size_t t = 0; t <= kEventTypeMax; ++t) {
    std::string v;
    auto s = db_->Get(rocksdb::ReadOptions(), meta_cf_, type_key(t), &v);
    if (s.ok()) type_counts_[t] = value_u64(v);
  }
  {
    std::string v;
    if (db_->Get(rocksdb::ReadOptions(), meta_cf_, kMetaLogBytes, &v).ok()) log_bytes_ = value_u64(v);
  }
  if (!options_.read_only) {
    // Both slots at the head, flagged exact only when every later value will
    // be synced before its reply (see AckMark::reset).
    if (auto r = mark_->reset(head, !mark_lazy_); !r) return std::unexpected(r.error());
  }
  if (head > 0) {
    auto record = get_record(head);
    if (!record) return std::unexpected(record.error());
    auto view = parse_record(*record);
    if (!view && !options_.salvage) {
      return fail(ErrorCode::kCorruption,
                  fmt::format("the last record (sequence {}) is damaged: {}; inspect with `wpm log "
                              "verify --data {}`",
                              head, view.error().message, options_.data_dir));
    }
    if (view) chain_ = view->chain;
  }
  head_.store(head, std::memory_order_release);
  set_readable(head);
  stats_log_bytes_ = log_bytes_;
  stats_type_counts_ = type_counts_;
  uint64_t prefix = 0;
  if (::getrandom(&prefix, sizeof prefix, 0) != sizeof prefix) {
    prefix = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  event_id_prefix_ = prefix;
  if (!options_.read_only) {
    if (auto r = verify_tail(); !r) return r;
  }
  std::string mark_sync = options_.read_only ? "none"
                          : mark_lazy_     ? fmt::format("{}ms", options_.mark_sync_interval_ms)
                                           : "before_reply";
  log_->info("store_opened dir={} head={} acknowledged={} log_bytes={} mark_sync={}",
             options_.data_dir, head, plan.acknowledged, log_bytes_, mark_sync);
  opened_ = true;
  return {};
}

Result<void> Store::discard_unacknowledged(uint64_t mark, uint64_t last) {
  // Records above the mark were written by a batch whose acknowledgement never
  // happened (crash between WAL sync and mark sync, or a failed write). Nobody
  // saw them: drop them so the log holds exactly what was acknowledged.
  // Derived data (indexes, counters) is applied only after the mark, so none
  // exists for these records.
  rocksdb::WriteBatch batch;
  uint64_t count = 0;
  auto r = scan(mark + 1, ScanMode::kBulk, [&](uint64_t seq, std::string_view) {
    batch.Delete(log_cf_, seq_key(seq));
    ++count;
    return true;
  });
  if (!r) return r;
  rocksdb::WriteOptions wo;
  wo.sync = true;
  auto s = db_->Write(wo, &batch);
  if (!s.ok()) return std::unexpected(rocks_error("cannot discard unacknowledged records", s));
  log_->warn("recovery_discarded_unacknowledged from={} to={} count={}", mark + 1, last, count);
  return {};
}

Result<void> Store::verify_tail() {
  uint64_t head = this->head();
  if (head == 0 || options_.open_verify_tail_events == 0) return {};
  uint64_t first = head > options_.open_verify_tail_events ? head - options_.open_verify_tail_events + 1 : 1;
  Sha256Digest previous{};
  if (first > 1) {
    auto rec = get_record(first - 1);
    if (!rec) return std::unexpected(rec.error());
    auto view = parse_record(*rec);
    if (!view) {
      return fail(ErrorCode::kCorruption, fmt::format("sequence {}: {}", first - 1, view.error().message));
    }
    previous = view->chain;
  }
  ChainVerifier verifier(first, previous);
  std::optional<Error> problem;
  auto r = scan(first, ScanMode::kPage, [&](uint64_t seq, std::string_view record) {
    if (seq > head) return false;
    auto e = verifier.feed(seq, record);
    if (!e) problem = e.error();
    return e.has_value();
  });
  if (!r) return r;
  if (!problem && verifier.next_sequence() != head + 1) {
    problem = Error{ErrorCode::kCorruption, fmt::format("sequence {}: missing", verifier.next_sequence())};
  }
  if (problem) {
    return fail(ErrorCode::kCorruption,
                fmt::format("the log tail failed verification at open: {}; inspect with `wpm log "
                            "verify --data {}`",
                            problem->message, options_.data_dir));
  }
  return {};
}

// ---- the sequencer ------------------------------------------------------------

Result<uint64_t> Store::stream_version(const std::string& stream_id) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), streams_cf_));
  std::string prefix = stream_id;
  prefix.push_back('\0');
  it->SeekForPrev(stream_key(stream_id, UINT64_MAX));
  if (!it->status().ok()) return std::unexpected(rocks_error("cannot read the stream index", it->status()));
  if (!it->Valid()) return uint64_t{0};
  auto entry = parse_stream_entry(prefix, it->key().ToStringView(), it->value().ToStringView());
  if (!entry) return std::unexpected(entry.error());
  return *entry ? (*entry)->first_version + (*entry)->count - 1 : 0;
}

void Store::kill_point(const char* name) const {
  if (options_.kill_point.empty() || options_.kill_point != name) return;
  log_->warn("kill_point name={} head={}", name, head());
  log_->flush();
  ::kill(::getpid(), SIGKILL);
}

void Store::fail_read_only(const std::string& reason) {
  {
    std::lock_guard lock(read_only_mutex_);
    read_only_reason_ = reason;
  }
  read_only_.store(true, std::memory_order_release);
  log_->error("store_read_only reason=\"{}\" action=\"free space or repair the disk under {}, then "
              "restart wpmd; reads keep working\"",
              reason, options_.data_dir);
}

Result<uint64_t> Store::current_version(const std::string& stream, const Staging& st) const {
  if (auto it = st.versions.find(stream); it != st.versions.end()) return it->second;
  if (auto it = stream_cache_.find(stream); it != stream_cache_.end()) return it->second;
  return stream_version(stream);
}

// Validates one request against the state as this batch leaves it and, when
// it may be written, adds its records to the batch, its idempotency key to the
// index and its stream-index entries to the runs. A refused request adds nothing.
Result<AppendResult> Store::stage(const AppendRequest& req, int64_t now_ns, Staging& st) {
  if (auto err = validate(req)) return std::unexpected(*err);
  if (!req.idempotency_key.empty()) {
    if (auto resent = resend_outcome(req, st.keys)) return *resent;
  }
  for (const auto& x : req.expectations) {
    auto cur = current_version(x.stream_id, st);
    if (!cur) return std::unexpected(cur.error());
    if (auto err = check_expectation(x, *cur)) return std::unexpected(*err);
  }
  // Resolve versions first, so that a failed lookup leaves nothing half-added.
  // Events of one stream usually come in a run: the map is consulted only
  // where the stream changes.
  std::vector<uint64_t> assigned;
  assigned.reserve(req.events.size());
  std::unordered_map<std::string, uint64_t> local;
  const std::string* run_stream = nullptr;
  uint64_t run_version = 0;
  for (const auto& d : req.events) {
    if (run_stream == nullptr || d.stream_id != *run_stream) {
      if (run_stream != nullptr) local[*run_stream] = run_version;
      if (auto it = local.find(d.stream_id); it != local.end()) {
        run_version = it->second;
      } else {
        auto cur = current_version(d.stream_id, st);
        if (!cur) return std::unexpected(cur.error());
        run_version = *cur;
      }
      run_stream = &d.stream_id;
    }
    assigned.push_back(++run_version);
  }
  if (run_stream != nullptr) local[*run_stream] = run_version;
  uint64_t first = st.next;
  for (size_t i = 0; i < req.events.size(); ++i) {
    const EventDraft& d = req.events[i];
    EventHeader header{st.next, {}, now_ns, assigned[i], req.idempotency_key};
    uint64_t be_seq = std::byteswap(st.next);
    std::memcpy(header.event_id.data(), &event_id_prefix_, 8);
    std::memcpy(header.event_id.data() + 8, &be_seq, 8);
    std::string record = encode_event(header, d, kRecordHeaderBytes);
    seal_record(record, st.chain, st.hasher, &st.chain);
    rocksdb::Slice sequence(reinterpret_cast<const char*>(&be_seq), sizeof be_seq);
    st.batch.Put(log_cf_, sequence, record);
    if (!st.stream_runs.empty() &&
        st.stream_runs.back().continued_by(d.stream_id, assigned[i], st.next)) {
      ++st.stream_runs.back().count;
    } else {
      st.stream_runs.push_back(StreamRun{d.stream_id, assigned[i], st.next, 1});
    }
    st.log_bytes += record.size();
    EventType type = payload_type(d.payload);
    ++st.type_counts[type_slot(type)];
    st.committed.push_back(Committed{st.next, type, std::move(record)});
    ++st.next;
  }
  for (auto& [stream, v] : local) st.versions[stream] = v;
  auto count = static_cast<uint32_t>(req.events.size());
  if (!req.idempotency_key.empty()) {
    KeyEntry entry{first, count, now_ns};
    st.index.Put(idempotency_cf_, req.idempotency_key, encode_entry(entry));
    st.keys[req.idempotency_key] = PendingKey{entry, &req};
  }
  return AppendResult{first, count, false};
}

// Writes the batch, syncs the WAL, then the mark. Returns the write error,
// if any (the store is then read-only); a failed sync aborts (DESIGN.md §9).
std::optional<std::string> Store::make_durable(Staging& st) {
  // Write without sync, then sync explicitly: a write error (disk full) is
  // survivable and reported; a sync error is not.
  rocksdb::WriteOptions wo;
  wo.sync = false;
  bool early_sync = wal_fs_ && st.batch.GetDataSize() >= options_.wal_early_sync_bytes;
  if (early_sync) wal_fs_->arm(EarlySyncFileSystem::wal_bytes(st.batch.GetDataSize()));
  rocksdb::Status s = db_->Write(wo, &st.batch);
  if (early_sync) wal_fs_->disarm();  // a write that failed before its WAL flush
  if (!s.ok()) {
    fail_read_only(fmt::format("write of sequences {}..{} failed: {}", head() + 1, st.next - 1,
                               s.ToString()));
    return s.ToString();
  }
  s = db_->SyncWAL();
  if (!s.ok()) {
    log_->critical("wal_sync_failed error=\"{}\" action=\"aborting; a failed sync is never "
                   "retried; recovery runs at the next start\"",
                   s.ToString());
    log_->flush();
    std::abort();
  }
  kill_point("after_wal_sync");
  // Into the page cache now (it outlives a crash of this process); to disk now
  // or within mark_sync_interval_ms (sync_mark()).
  bool sync_now = !mark_lazy_;
  if (auto r = mark_->write(st.next - 1, sync_now); !r) {
    log_->critical("ack_mark_write_failed error=\"{}\" action=\"aborting\"", r.error().message);
    log_->flush();
    std::abort();
  }
  if (!sync_now && !mark_dirty_since_) mark_dirty_since_ = std::chrono::steady_clock::now();
  kill_point("after_mark_write");
  return std::nullopt;
}

std::chrono::milliseconds Store::mark_sync_due_in() const {
  if (!mark_dirty_since_) return std::chrono::milliseconds::max();
  auto due = *mark_dirty_since_ + std::chrono::milliseconds(options_.mark_sync_interval_ms);
  auto left = std::chrono::ceil<std::chrono::milliseconds>(due - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

void Store::sync_mark(bool force) {
  if (!mark_ || !mark_dirty_since_) return;
  if (!force && mark_sync_due_in().count() > 0) return;
  if (auto r = mark_->sync(); !r) {
    // As for the WAL: a failed sync is never retried (DESIGN.md §9).
    log_->critical("ack_mark_sync_failed error=\"{}\" action=\"aborting\"", r.error().message);
    log_->flush();
    std::abort();
  }
  mark_dirty_since_.reset();
}

CommitOutcome Store::commit(std::span<const AppendRequest> requests, int64_t now_ns) {
  WPM_ASSERT(!options_.read_only, "commit on a read-only store");
  CommitOutcome out;
  out.results.reserve(requests.size());
  (void)apply_index();  // normally done already; an error turned the store read-only
  if (read_only()) {
    std::string reason;
    {
      std::lock_guard lock(read_only_mutex_);
      reason = read_only_reason_;
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      out.results.push_back(fail(ErrorCode::kReadOnly,
                                 fmt::format("the store is read-only after a write error ({}); "
                                             "free space or repair the disk, then restart wpmd",
                                             reason)));
    }
    return out;
  }
  // Everything is staged on copies; members change only once the batch is durable.
  size_t events = 0;
  for (const AppendRequest& req : requests) events += req.events.size();
  Staging st(events);
  st.next = head() + 1;
  st.chain = chain_;
  st.log_bytes = log_bytes_;
  st.type_counts = type_counts_;
  st.committed.reserve(events);
  for (const AppendRequest& req : requests) out.results.push_back(stage(req, now_ns, st));
  if (st.committed.empty()) return out;
  st.index.Put(meta_cf_, kMetaLogBytes, u64_value(st.log_bytes));
  for (size_t t = 0; t <= kEventTypeMax; ++t) {
    if (st.type_counts[t] != type_counts_[t]) st.index.Put(meta_cf_, type_key(t), u64_value(st.type_counts[t]));
  }
  put_derived_marks(st.index, st.next - 1);

  if (auto write_error = make_durable(st)) {
    for (auto& r : out.results) {
      // Also a duplicate of a request in this very batch: it was not written either.
      if (r && (!r->duplicate || r->first_sequence > head())) {
        r = fail(ErrorCode::kReadOnly,
                 fmt::format("the batch could not be written ({}); nothing of it was "
                             "acknowledged and the store is now read-only: free space or repair "
                             "the disk, then restart wpmd",
                             *write_error));
      }
    }
    return out;
  }
  // Durable: publish the new state.
  index_ = std::move(st.index);
  stream_runs_ = std::move(st.stream_runs);
  index_pending_ = true;
  chain_ = st.chain;
  log_bytes_ = st.log_bytes;
  type_counts_ = st.type_counts;
  if (stream_cache_.size() + st.versions.size() > kStreamCacheEntriesMax) stream_cache_.clear();
  for (auto& [stream, v] : st.versions) stream_cache_[stream] = v;
  {
    std::lock_guard lock(stats_mutex_);
    stats_log_bytes_ = log_bytes_;
    stats_type_counts_ = type_counts_;
  }
  if (pending_first_ == 0) pending_first_ = st.committed.front().sequence;
  for (const auto& c : st.committed) pending_types_ |= type_bit(c.type);
  head_.store(st.next - 1, std::memory_order_release);
  out.batch_events = st.committed.size();
  out.committed = std::move(st.committed);
  WPM_ASSERT(out.results.size() == requests.size(), "one result per request");
  return out;
}

// ---- derived data: stream index, idempotency keys, counters -----------------------
//
// Everything but the records is derived from the log, so it stays off the
// synced write path: commit() prepares it, apply_index() writes it without the
// WAL once the batch is acknowledged, and each derived column family carries
// the sequence it reflects (kDerivedMarkKey). After a crash, open re-derives
// what was lost from the records above those marks.

void Store::put_derived_marks(rocksdb::WriteBatch& batch, uint64_t sequence) {
  for (auto* cf : {streams_cf_, idempotency_cf_, meta_cf_}) {
    batch.Put(cf, kDerivedMarkKey, u64_value(sequence));
  }
}

void Store::put_stream_run(rocksdb::WriteBatch& batch, const StreamRun& run) {
  // The key (stream id, NUL, big-endian version) without building a string.
  uint64_t be_version = std::byteswap(run.first_version);
  uint64_t be_value[2] = {std::byteswap(run.first_sequence), std::byteswap(run.count)};
  rocksdb::Slice key_parts[3] = {run.stream_id, rocksdb::Slice("\0", 1),
                                 rocksdb::Slice(reinterpret_cast<const char*>(&be_version), 8)};
  rocksdb::Slice value(reinterpret_cast<const char*>(be_value),
                       run.count == 1 ? kStreamEntryOneBytes : kStreamEntryRunBytes);
  batch.Put(streams_cf_, rocksdb::SliceParts(key_parts, 3), rocksdb::SliceParts(&value, 1));
}

Result<void> Store::apply_index() {
  if (!index_pending_) return {};
  for (const StreamRun& run : stream_runs_) put_stream_run(index_, run);
  stream_runs_.clear();
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;  // derived: rebuilt from the log after a crash
  rocksdb::Status s = db_->Write(wo, &index_);
  index_.Clear();
  index_pending_ = false;
  if (!s.ok()) {
    fail_read_only(fmt::format("cannot update the stream index: {}", s.ToString()));
    return std::unexpected(rocks_error("cannot update the stream index", s));
  }
  set_readable(head());
  return {};
}

void Store::set_readable(uint64_t head) {
  {
    std::lock_guard lock(readable_mutex_);
    readable_ = head;
    if (pending_first_ != 0 && pending_first_ <= head) {
      // Runs stay contiguous: one that does not follow the last starts afresh.
      if (!type_runs_.empty() && type_runs_.back().last + 1 != pending_first_) type_runs_.clear();
      type_runs_.push_back(TypeRun{pending_first_, head, pending_types_});
      if (type_runs_.size() > kTypeRunsMax) type_runs_.pop_front();
    }
    pending_first_ = 0;
    pending_types_ = 0;
  }
  readable_cv_.notify_all();
}

uint64_t Store::skippable_through(uint64_t after, TypeMask wanted) const {
  std::lock_guard lock(readable_mutex_);
  // The first run that holds after + 1.
  auto run = std::partition_point(type_runs_.begin(), type_runs_.end(),
                                  [&](const TypeRun& r) { return r.last <= after; });
  if (run == type_runs_.end() || run->first > after + 1) return after;
  uint64_t through = after;
  for (; run != type_runs_.end() && (run->types & wanted) == 0; ++run) through = run->last;
  return std::min(through, readable_);
}

uint64_t Store::wait_beyond(uint64_t sequence, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(readable_mutex_);
  readable_cv_.wait_for(lock, timeout, [&] { return readable_ > sequence; });
  return readable_;
}


Result<void> Store::put_snapshot(std::string_view name, uint64_t sequence, std::string_view state) {
  if (options_.read_only || snapshots_cf_ == nullptr) {
    return fail(ErrorCode::kReadOnly, "the store is open read-only: no snapshot is written");
  }
  std::string value = u64_value(sequence);
  value.append(state);
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;  // derived: a lost snapshot only means a longer fold
  auto s = db_->Put(wo, snapshots_cf_, rocksdb::Slice(name.data(), name.size()), value);
  if (!s.ok()) return std::unexpected(rocks_error("cannot write a snapshot", s));
  rocksdb::FlushOptions flush;
  flush.wait = false;
  flush.allow_write_stall = true;
  (void)db_->Flush(flush, snapshots_cf_);  // in the background; a failure leaves it in the memtable
  return {};
}

Result<std::optional<Store::Snapshot>> Store::get_snapshot(std::string_view name) const {
  if (snapshots_cf_ == nullptr) return std::optional<Snapshot>();
  std::string value;
  auto s = db_->Get(rocksdb::ReadOptions(), snapshots_cf_, rocksdb::Slice(name.data(), name.size()), &value);
  if (s.IsNotFound()) return std::optional<Snapshot>();
  if (!s.ok()) return std::unexpected(rocks_error("cannot read a snapshot", s));
  if (value.size() < 8) {
    return fail(ErrorCode::kCorruption, fmt::format("snapshot '{}' of {} bytes is damaged", name, value.size()));
  }
  Snapshot snap{value_u64(std::string_view(value).substr(0, 8)), value.substr(8)};
  if (snap.sequence > head()) {
    return fail(ErrorCode::kCorruption,
                fmt::format("snapshot '{}' reflects sequence {} but the log ends at {}; run wpm admin "
                            "rebuild --data {}",
                            name, snap.sequence, head(), options_.data_dir));
  }
  return std::optional<Snapshot>(std::move(snap));
}

Result<void> Store::drop_derived() {
  WPM_ASSERT(!options_.read_only, "drop_derived on a read-only store");
  // Keys are at most a few hundred bytes: this end sorts after every one.
  const std::string end(1024, '\xff');
  rocksdb::WriteBatch batch;
  for (auto* cf : {streams_cf_, idempotency_cf_, snapshots_cf_}) {
    if (cf != nullptr) batch.DeleteRange(cf, rocksdb::Slice(""), end);
  }
  for (auto* cf : {streams_cf_, idempotency_cf_, meta_cf_}) batch.Delete(cf, kDerivedMarkKey);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  auto s = db_->Write(wo, &batch);
  if (!s.ok()) return std::unexpected(rocks_error("cannot drop the derived data", s));
  stream_cache_.clear();
  return {};
}

Result<std::array<uint64_t, 3>> Store::derived_marks() const {
  std::array<uint64_t, 3> marks{};
  rocksdb::ColumnFamilyHandle* cfs[3] = {streams_cf_, idempotency_cf_, meta_cf_};
  for (size_t i = 0; i < 3; ++i) {
    std::string v;
    auto s = db_->Get(rocksdb::ReadOptions(), cfs[i], kDerivedMarkKey, &v);
    if (!s.ok() && !s.IsNotFound()) return std::unexpected(rocks_error("cannot read derived marks", s));
    marks[i] = s.ok() ? value_u64(v) : 0;
  }
  return marks;
}

Result<void> Store::rebuild_derived(uint64_t head) {
  auto found = derived_marks();
  if (!found) return std::unexpected(found.error());
  std::array<uint64_t, 3> marks = *found;
  uint64_t newest = *std::max_element(marks.begin(), marks.end());
  if (newest > head) {
    return fail(ErrorCode::kCorruption,
                fmt::format("derived data reflects sequence {} but the log ends at {}; restore "
                            "the whole data directory from one backup",
                            newest, head));
  }
  uint64_t from = *std::min_element(marks.begin(), marks.end());
  if (from == head) return {};
  uint64_t bytes = 0;
  std::array<uint64_t, kEventTypeMax + 1> counts{};
  if (marks[2] > 0) {
    std::string v;
    if (db_->Get(rocksdb::ReadOptions(), meta_cf_, kMetaLogBytes, &v).ok()) bytes = value_u64(v);
    for (size_t t = 0; t <= kEventTypeMax; ++t) {
      if (db_->Get(rocksdb::ReadOptions(), meta_cf_, type_key(t), &v).ok()) counts[t] = value_u64(v);
    }
  }
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;  // derived: a crash part-way only means rebuilding again
  rocksdb::WriteBatch batch;
  std::optional<Error> problem;
  // Writes what is gathered, with the marks at `through`; only ever called at a
  // request boundary, so an idempotency entry is never split.
  auto write_chunk = [&](uint64_t through) -> bool {
    batch.Put(meta_cf_, kMetaLogBytes, u64_value(bytes));
    for (size_t t = 0; t <= kEventTypeMax; ++t) batch.Put(meta_cf_, type_key(t), u64_value(counts[t]));
    // A family already ahead of `through` keeps its own mark (its content is).
    rocksdb::ColumnFamilyHandle* cfs[3] = {streams_cf_, idempotency_cf_, meta_cf_};
    for (size_t i = 0; i < 3; ++i) {
      batch.Put(cfs[i], kDerivedMarkKey, u64_value(std::max(through, marks[i])));
    }
    auto s = db_->Write(wo, &batch);
    batch.Clear();
    if (!s.ok()) problem = rocks_error("cannot rebuild derived data", s);
    return s.ok();
  };
  // Events of one request are contiguous and share its key: one entry per run.
  std::string run_key;
  KeyEntry run{};
  // Likewise one stream-index entry per run of a stream's events.
  StreamRun stream_run;
  auto put_stream = [&] {
    if (stream_run.count > 0) put_stream_run(batch, stream_run);
    stream_run.count = 0;
  };
  uint64_t in_chunk = 0;
  auto r = scan(from + 1, ScanMode::kBulk, [&](uint64_t seq, std::string_view record) {
    if (seq > head) return false;
    auto view = parse_record(record);
    auto event = view ? decode_event(view->event_bytes) : Result<Event>(std::unexpected(view.error()));
    if (!event) {
      problem = Error{ErrorCode::kCorruption, fmt::format("sequence {}: {}", seq, event.error().message)};
      return false;
    }
    bool new_request = event->idempotency_key != run_key || run_key.empty();
    if (new_request) {
      if (!run_key.empty()) batch.Put(idempotency_cf_, run_key, encode_entry(run));
      run_key.clear();
      if (in_chunk >= kRebuildChunkEvents) {
        put_stream();
        if (!write_chunk(seq - 1)) return false;
        in_chunk = 0;
      }
    }
    ++in_chunk;
    if (seq > marks[0]) {
      if (stream_run.continued_by(event->stream_id, event->stream_version, seq)) {
        ++stream_run.count;
      } else {
        put_stream();
        stream_run = StreamRun{event->stream_id, event->stream_version, seq, 1};
      }
    }
    if (seq > marks[1] && !event->idempotency_key.empty()) {
      if (run_key.empty()) {
        run_key = event->idempotency_key;
        run = KeyEntry{seq, 0, event->timestamp_ns};
      }
      ++run.count;
    }
    if (seq > marks[2]) {
      bytes += record.size();
      ++counts[type_slot(event->type())];
    }
    return true;
  });
  if (!r) return r;
  if (problem) return std::unexpected(*problem);
  if (!run_key.empty()) batch.Put(idempotency_cf_, run_key, encode_entry(run));
  put_stream();
  if (!write_chunk(head)) return std::unexpected(*problem);
  log_->info("recovery_rebuilt_derived from={} to={}", from + 1, head);
  return {};
}

std::optional<Result<AppendResult>> Store::resend_outcome(
    const AppendRequest& req, const std::unordered_map<std::string, PendingKey>& keys) const {
  std::optional<KeyEntry> seen;
  bool same = false;
  if (auto it = keys.find(req.idempotency_key); it != keys.end()) {
    seen = it->second.entry;
    same = it->second.request->events == req.events;
  } else {
    std::string v;
    auto s = db_->Get(rocksdb::ReadOptions(), idempotency_cf_, req.idempotency_key, &v);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return Result<AppendResult>(std::unexpected(rocks_error("cannot read idempotency keys", s)));
    seen = decode_entry(v);
    if (!seen) return std::nullopt;  // an entry of another format: treat the key as new
    same = seen->count == req.events.size();
    for (uint32_t i = 0; same && i < seen->count; ++i) {
      auto record = get_record(seen->first_sequence + i);
      if (!record) return Result<AppendResult>(std::unexpected(record.error()));
      auto view = parse_record(*record);
      if (!view) return Result<AppendResult>(std::unexpected(view.error()));
      auto event = decode_event(view->event_bytes);
      if (!event) return Result<AppendResult>(std::unexpected(event.error()));
      same = same_event(*event, req.events[i]);
    }
  }
  if (!same) {
    return Result<AppendResult>(fail(
        ErrorCode::kIdempotencyKeyReused,
        fmt::format("idempotency key '{}' was already used for other events (sequences {}..{}); "
                    "use a new key for new events",
                    req.idempotency_key, seen->first_sequence,
                    seen->first_sequence + seen->count - 1)));
  }
  return Result<AppendResult>(AppendResult{seen->first_sequence, seen->count, true});
}

// ---- reads ----------------------------------------------------------------------

Result<std::string> Store::get_record(uint64_t sequence) const {
  std::string value;
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  auto s = db_->Get(ro, log_cf_, seq_key(sequence), &value);
  if (s.IsNotFound()) {
    return fail(ErrorCode::kCorruption, fmt::format("sequence {} is missing from the log", sequence));
  }
  if (!s.ok()) return std::unexpected(rocks_error("cannot read the log", s));
  return value;
}

Result<void> Store::scan(uint64_t from, ScanMode mode,
                         const std::function<bool(uint64_t, std::string_view)>& visit) const {
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  if (mode == ScanMode::kBulk) {
    ro.fill_cache = false;
    ro.readahead_size = 2u << 20;
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, log_cf_));
  uint64_t last = from == 0 ? 0 : from - 1;
  for (it->Seek(seq_key(from)); it->Valid(); it->Next()) {
    last = key_seq(std::string_view(it->key().data(), it->key().size()));
    if (!visit(last, std::string_view(it->value().data(), it->value().size()))) return {};
  }
  if (!it->status().ok()) {
    return fail(ErrorCode::kCorruption,
                fmt::format("sequence {}: unreadable ({})", last + 1, it->status().ToString()));
  }
  return {};
}

Result<ReadReply> Store::read_range(const ReadRangeRequest& request) const {
  ReadReply reply;
  reply.head = head();
  uint64_t from = std::max<uint64_t>(request.from, 1);
  uint64_t to = request.to == 0 ? reply.head : std::min(request.to, reply.head);
  uint32_t max_events = request.max_events == 0
                            ? options_.read_page_events_max
                            : std::min(request.max_events, options_.read_page_events_max);
  reply.next = from;
  if (from > to) {
    reply.end = true;
    return reply;
  }
  size_t bytes = 0;
  std::optional<uint64_t> gap;
  auto r = scan(from, ScanMode::kPage, [&](uint64_t seq, std::string_view record) {
    if (seq > to || reply.records.size() >= max_events || bytes >= options_.read_page_bytes_max) {
      return false;
    }
    if (seq != reply.next) {
      gap = seq;
      return false;
    }
    reply.records.emplace_back(record);
    bytes += record.size();
    reply.next = seq + 1;
    return true;
  });
  if (!r) return std::unexpected(r.error());
  if (gap || (reply.records.empty() && reply.next <= to)) {
    return fail(ErrorCode::kCorruption,
                fmt::format("sequence {} is missing from the log; run `wpm log verify`", reply.next));
  }
  reply.end = reply.next > to;
  return reply;
}

Result<ReadReply> Store::read_stream(const ReadStreamRequest& request) const {
  ReadReply reply;
  reply.head = head();
  uint64_t from = std::max<uint64_t>(request.from_version, 1);
  uint32_t max_events = request.max_events == 0
                            ? options_.read_page_events_max
                            : std::min(request.max_events, options_.read_page_events_max);
  reply.next = from;
  std::string prefix = request.stream_id + '\0';
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), streams_cf_));
  auto entry_here = [&]() -> Result<std::optional<StreamEntry>> {
    if (!it->Valid()) return std::nullopt;
    return parse_stream_entry(prefix, it->key().ToStringView(), it->value().ToStringView());
  };
  // The entry holding `from` is the last one starting at or before it; when
  // that one ends before `from`, the next one is where the stream goes on.
  it->SeekForPrev(stream_key(request.stream_id, from));
  if (!it->status().ok()) return std::unexpected(rocks_error("cannot read the stream index", it->status()));
  auto entry = entry_here();
  if (!entry) return std::unexpected(entry.error());
  if (!*entry || (*entry)->first_version + (*entry)->count <= from) {
    it->Seek(stream_key(request.stream_id, from));
  }
  size_t bytes = 0;
  reply.end = true;
  uint64_t version = from;  // the next one to return
  for (; it->Valid(); it->Next()) {
    entry = entry_here();
    if (!entry) return std::unexpected(entry.error());
    if (!*entry) break;  // the next stream's entries
    const StreamEntry& e = **entry;
    // A stream's versions have no gaps, so neither have its entries.
    if (e.first_version > version) {
      return fail(ErrorCode::kCorruption,
                  fmt::format("the stream index has no entry for versions {}..{} of stream \"{}\"; "
                              "the index is derived from the log: restore the data directory "
                              "from a backup",
                              version, e.first_version - 1, request.stream_id));
    }
    for (; version < e.first_version + e.count; ++version) {
      uint64_t seq = e.first_sequence + (version - e.first_version);
      if (seq > reply.head) return reply;
      if (reply.records.size() >= max_events || bytes >= options_.read_page_bytes_max) {
        reply.end = false;
        return reply;
      }
      auto record = get_record(seq);
      if (!record) return std::unexpected(record.error());
      bytes += record->size();
      reply.records.push_back(std::move(*record));
      reply.next = version + 1;
    }
  }
  if (!it->status().ok()) return std::unexpected(rocks_error("cannot read the stream index", it->status()));
  return reply;
}

uint64_t Store::log_bytes() const {
  std::lock_guard lock(stats_mutex_);
  return stats_log_bytes_;
}

StatsReply Store::stats() const {
  StatsReply st;
  st.head = head();
  st.event_count = st.head;  // sequences are gap-free from 1
  {
    std::lock_guard lock(stats_mutex_);
    st.log_bytes = stats_log_bytes_;
    for (size_t t = 1; t <= kEventTypeMax; ++t) {
      if (stats_type_counts_[t] > 0) {
        st.per_type.push_back(TypeCount{static_cast<EventType>(t), stats_type_counts_[t]});
      }
    }
    st.unknown_events = stats_type_counts_[0];
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.data_dir + "/log", ec)) {
    std::error_code size_ec;
    auto size = entry.file_size(size_ec);
    if (!size_ec) st.disk_bytes += size;
  }
  st.read_only = read_only();
  if (st.read_only) {
    std::lock_guard lock(read_only_mutex_);
    st.read_only_reason = read_only_reason_;
  }
  st.data_dir = options_.data_dir;
  return st;
}

Result<void> Store::overwrite_record_for_test(uint64_t sequence, const std::string& record) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  auto s = db_->Put(wo, log_cf_, seq_key(sequence), record);
  if (!s.ok()) return std::unexpected(rocks_error("cannot overwrite", s));
  s = db_->Flush(rocksdb::FlushOptions(), log_cf_);
  if (!s.ok()) return std::unexpected(rocks_error("cannot flush", s));
  return {};
}

}  // namespace wpm::eventstore
