#pragma once
// The WAL's sync started while RocksDB still inserts the batch into the memtable.
//
// A commit writes its batch without sync, then calls SyncWAL. Inside the write,
// RocksDB appends the batch to the WAL file, flushes it to the kernel, and only
// then inserts it into the memtable (~90 µs for 256 small events on the 2-core
// development machine); SyncWAL's fdatasync (~250 µs) comes after. The two are
// independent: an fdatasync makes durable every byte written before it starts.
//
// EarlySyncFileSystem wraps the WAL files of one database. Once armed, the
// flush that ends the next write's WAL append hands that file's sync to a
// helper thread, and the Sync() that SyncWAL then calls waits for it instead
// of starting its own: the memtable insert runs during the sync. Handing the
// sync over costs two thread wake-ups (~25 µs each on a virtual machine), so
// it pays only for large batches (StoreOptions::wal_early_sync_bytes). The
// waiting Sync() sleeps: spinning there took the core that the helper, the
// kernel's journal thread or a memtable flush needed, and was slower.
//
// Durability is unchanged: SyncWAL returns only once a sync that started after
// the last appended byte has succeeded; bytes appended after the early sync
// started get a sync of their own, which starts only once the early one has
// ended (two syncs at once could leave its error to the other one alone). A
// failed sync, early or not, is never retried: the file returns that failure
// from every later Sync(), Fsync() and Close() (the store aborts at the first,
// DESIGN.md §9).
//
// Thread safety: arm() and disarm() from the writing thread, which syncs the
// WAL only after its write (an early sync must not run beside the caller's
// own sync of the same file); the file system and its files may be used from
// RocksDB's threads as any FileSystem.

#include <rocksdb/file_system.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace wpm::eventstore {

class EarlySyncWal;

class EarlySyncFileSystem : public rocksdb::FileSystemWrapper {
 public:
  explicit EarlySyncFileSystem(const std::shared_ptr<rocksdb::FileSystem>& target);
  ~EarlySyncFileSystem() override;
  EarlySyncFileSystem(const EarlySyncFileSystem&) = delete;
  EarlySyncFileSystem& operator=(const EarlySyncFileSystem&) = delete;

  const char* Name() const override { return "WpmEarlySyncFileSystem"; }

  // The next write to the WAL appends at least `bytes` (see wal_bytes()); the
  // flush that ends them, by the WAL file that appended last, starts that
  // file's sync on the helper thread. A flush before that (RocksDB flushes its
  // 1 MiB write buffer when a large batch fills it) does not.
  void arm(uint64_t bytes) {
    armed_file_.store(nullptr, std::memory_order_relaxed);
    armed_left_.store(bytes, std::memory_order_relaxed);
    armed_.store(true, std::memory_order_release);
  }
  // The fewest bytes the WAL appends for a write batch of `data_size` bytes:
  // RocksDB's log writer cuts it into records of at most 32,761 bytes, each
  // behind a 7-byte header, in 32 KiB blocks (an uncompressed WAL, as the
  // store's; a compressed one would append less and never take the arm).
  static uint64_t wal_bytes(uint64_t data_size) {
    constexpr uint64_t kPayloadMax = 32768 - 7;
    return data_size + 7 * ((data_size + kPayloadMax - 1) / kPayloadMax);
  }
  // Cancels an arm that no flush took (a write that failed before its flush).
  void disarm() { armed_.store(false, std::memory_order_release); }
  // Syncs started early, and Sync() calls that one of them answered.
  uint64_t early_syncs() const { return early_syncs_.load(std::memory_order_relaxed); }
  uint64_t answered_syncs() const { return answered_syncs_.load(std::memory_order_relaxed); }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& name,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  // Recycled WAL files (recycle_log_file_num) are wrapped as new ones.
  rocksdb::IOStatus ReuseWritableFile(const std::string& name, const std::string& old_name,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;

  // RocksDB names its WAL files NNNNNN.log.
  static bool is_wal(const std::string& name);

 private:
  friend class EarlySyncWal;
  // Called by a WAL file's Append(), with the bytes appended.
  void appended(EarlySyncWal& file, uint64_t bytes);
  // Called by a WAL file's Flush(): once the armed bytes are all appended,
  // takes the arm and queues the file.
  void flushed(EarlySyncWal& file);
  // Waits until `file` has no early sync queued or running.
  void settle(EarlySyncWal& file, std::unique_lock<std::mutex>& lock);
  void run();

  std::atomic<bool> armed_{false};
  std::atomic<uint64_t> armed_left_{0};  // bytes still to append before the armed flush
  std::atomic<EarlySyncWal*> armed_file_{nullptr};  // the file that appended last while armed
  std::atomic<uint64_t> early_syncs_{0};
  std::atomic<uint64_t> answered_syncs_{0};
  std::mutex mutex_;                 // guards the queue, stop_ and every file's early state
  std::condition_variable work_;     // the helper waits for a queued file
  std::condition_variable finished_; // a Sync()/Close() waits for the helper
  std::deque<EarlySyncWal*> queue_;  // at most one entry per file
  bool stop_ = false;
  std::thread helper_;
};

// A WAL file whose sync may have been started early by its file system.
class EarlySyncWal : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  EarlySyncWal(EarlySyncFileSystem& fs, std::unique_ptr<rocksdb::FSWritableFile> target);
  ~EarlySyncWal() override;

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     const rocksdb::DataVerificationInfo& info,
                                     rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Flush(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Close(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override;

 private:
  friend class EarlySyncFileSystem;
  enum class Early { kNone, kQueued, kRunning, kDone };
  // Waits for the early sync, if one is queued or running, and takes its
  // outcome. Returns the file's failure, if a sync of it ever failed (not OK),
  // else OK with `*covered` telling whether a sync that started after the last
  // appended byte has succeeded.
  rocksdb::IOStatus take_early(bool* covered);
  // Keeps the failure of a sync for every later call (under fs_.mutex_).
  rocksdb::IOStatus keep_failure(const rocksdb::IOStatus& s);
  void count(uint64_t bytes);  // before each append

  EarlySyncFileSystem& fs_;
  std::atomic<uint64_t> appended_{0};  // bytes handed to the file
  // Under fs_.mutex_:
  Early early_ = Early::kNone;
  uint64_t covers_ = 0;  // appended_ when the early sync was queued
  rocksdb::IOStatus failed_;  // the first failed sync's; OK while none failed
};

}  // namespace wpm::eventstore
