#include "eventstore/wal_sync.h"

#include <pthread.h>

#include "schemas/assert.h"

namespace wpm::eventstore {

using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;

EarlySyncFileSystem::EarlySyncFileSystem(const std::shared_ptr<rocksdb::FileSystem>& target)
    : rocksdb::FileSystemWrapper(target) {
  helper_ = std::thread([this] { run(); });
  pthread_setname_np(helper_.native_handle(), "wpm-walsync");
}

EarlySyncFileSystem::~EarlySyncFileSystem() {
  {
    std::lock_guard lock(mutex_);
    // Files are closed (and so settled) before their file system goes.
    WPM_ASSERT(queue_.empty(), "{} early WAL syncs still queued", queue_.size());
    stop_ = true;
  }
  work_.notify_one();
  helper_.join();
}

bool EarlySyncFileSystem::is_wal(const std::string& name) {
  constexpr std::string_view kSuffix = ".log";
  return name.size() > kSuffix.size() && name.ends_with(kSuffix);
}

IOStatus EarlySyncFileSystem::NewWritableFile(const std::string& name,
                                              const rocksdb::FileOptions& options,
                                              std::unique_ptr<rocksdb::FSWritableFile>* result,
                                              IODebugContext* dbg) {
  IOStatus s = target()->NewWritableFile(name, options, result, dbg);
  if (s.ok() && is_wal(name)) *result = std::make_unique<EarlySyncWal>(*this, std::move(*result));
  return s;
}

IOStatus EarlySyncFileSystem::ReopenWritableFile(const std::string& name,
                                                 const rocksdb::FileOptions& options,
                                                 std::unique_ptr<rocksdb::FSWritableFile>* result,
                                                 IODebugContext* dbg) {
  IOStatus s = target()->ReopenWritableFile(name, options, result, dbg);
  if (s.ok() && is_wal(name)) *result = std::make_unique<EarlySyncWal>(*this, std::move(*result));
  return s;
}

IOStatus EarlySyncFileSystem::ReuseWritableFile(const std::string& name,
                                                const std::string& old_name,
                                                const rocksdb::FileOptions& options,
                                                std::unique_ptr<rocksdb::FSWritableFile>* result,
                                                IODebugContext* dbg) {
  IOStatus s = target()->ReuseWritableFile(name, old_name, options, result, dbg);
  if (s.ok() && is_wal(name)) *result = std::make_unique<EarlySyncWal>(*this, std::move(*result));
  return s;
}

void EarlySyncFileSystem::appended(EarlySyncWal& file, uint64_t bytes) {
  if (!armed_.load(std::memory_order_acquire)) return;
  // One writer appends to the WAL at a time (RocksDB's write group leader).
  armed_file_.store(&file, std::memory_order_relaxed);
  uint64_t left = armed_left_.load(std::memory_order_relaxed);
  armed_left_.store(left > bytes ? left - bytes : 0, std::memory_order_relaxed);
}

void EarlySyncFileSystem::flushed(EarlySyncWal& file) {
  // Only the file the armed write went to: RocksDB may flush an older WAL
  // file on another thread meanwhile.
  if (!armed_.load(std::memory_order_acquire) ||
      armed_left_.load(std::memory_order_relaxed) > 0 ||
      armed_file_.load(std::memory_order_relaxed) != &file) {
    return;
  }
  if (!armed_.exchange(false, std::memory_order_acq_rel)) return;
  {
    std::lock_guard lock(mutex_);
    // One early sync per file at a time: a second arm before the Sync() that
    // takes the first is left to that Sync(), which syncs what is not covered.
    // A file whose sync failed gets no more.
    if (file.early_ != EarlySyncWal::Early::kNone || !file.failed_.ok()) return;
    file.early_ = EarlySyncWal::Early::kQueued;
    file.covers_ = file.appended_.load(std::memory_order_acquire);
    queue_.push_back(&file);
  }
  early_syncs_.fetch_add(1, std::memory_order_relaxed);
  work_.notify_one();
}

void EarlySyncFileSystem::settle(EarlySyncWal& file, std::unique_lock<std::mutex>& lock) {
  finished_.wait(lock, [&] {
    return file.early_ == EarlySyncWal::Early::kNone || file.early_ == EarlySyncWal::Early::kDone;
  });
}

void EarlySyncFileSystem::run() {
  std::unique_lock lock(mutex_);
  // Runs until the file system is destroyed: an intentionally unbounded service loop.
  while (true) {
    work_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left
    EarlySyncWal* file = queue_.front();
    queue_.pop_front();
    file->early_ = EarlySyncWal::Early::kRunning;
    lock.unlock();
    // The file is not closed while its sync is queued or running (settle()).
    IOStatus s = file->target()->Sync(IOOptions(), nullptr);
    lock.lock();
    file->keep_failure(s);
    file->early_ = EarlySyncWal::Early::kDone;
    finished_.notify_all();
  }
}

EarlySyncWal::EarlySyncWal(EarlySyncFileSystem& fs, std::unique_ptr<rocksdb::FSWritableFile> target)
    : rocksdb::FSWritableFileOwnerWrapper(std::move(target)), fs_(fs) {}

EarlySyncWal::~EarlySyncWal() {
  std::unique_lock lock(fs_.mutex_);
  fs_.settle(*this, lock);
}

void EarlySyncWal::count(uint64_t bytes) {
  appended_.fetch_add(bytes, std::memory_order_release);
  fs_.appended(*this, bytes);
}

IOStatus EarlySyncWal::Append(const rocksdb::Slice& data, const IOOptions& options,
                              IODebugContext* dbg) {
  count(data.size());
  return target()->Append(data, options, dbg);
}

IOStatus EarlySyncWal::Append(const rocksdb::Slice& data, const IOOptions& options,
                              const rocksdb::DataVerificationInfo& info, IODebugContext* dbg) {
  count(data.size());
  return target()->Append(data, options, info, dbg);
}

IOStatus EarlySyncWal::PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                        const IOOptions& options, IODebugContext* dbg) {
  count(data.size());
  return target()->PositionedAppend(data, offset, options, dbg);
}

IOStatus EarlySyncWal::PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                        const IOOptions& options,
                                        const rocksdb::DataVerificationInfo& info,
                                        IODebugContext* dbg) {
  count(data.size());
  return target()->PositionedAppend(data, offset, options, info, dbg);
}

IOStatus EarlySyncWal::Flush(const IOOptions& options, IODebugContext* dbg) {
  IOStatus s = target()->Flush(options, dbg);
  if (s.ok()) fs_.flushed(*this);
  return s;
}

IOStatus EarlySyncWal::keep_failure(const IOStatus& s) {
  if (!s.ok() && failed_.ok()) failed_ = s;
  return failed_;
}

IOStatus EarlySyncWal::take_early(bool* covered) {
  std::unique_lock lock(fs_.mutex_);
  *covered = false;
  if (early_ == Early::kNone) return failed_;
  // Waited for even when bytes were appended after it was queued, so that no
  // second sync of the file runs beside it and takes its error.
  fs_.settle(*this, lock);
  early_ = Early::kNone;
  if (!failed_.ok()) return failed_;
  // Bytes appended after the early sync was queued need a sync of their own.
  *covered = covers_ == appended_.load(std::memory_order_acquire);
  return IOStatus::OK();
}

IOStatus EarlySyncWal::Sync(const IOOptions& options, IODebugContext* dbg) {
  bool covered = false;
  if (IOStatus failure = take_early(&covered); !failure.ok()) return failure;
  if (covered) {
    fs_.answered_syncs_.fetch_add(1, std::memory_order_relaxed);
    return IOStatus::OK();
  }
  IOStatus s = target()->Sync(options, dbg);
  std::lock_guard lock(fs_.mutex_);
  return keep_failure(s);
}

IOStatus EarlySyncWal::Fsync(const IOOptions& options, IODebugContext* dbg) {
  // The early sync was an fdatasync; fsync also syncs the metadata, so it runs anyway.
  bool covered = false;
  if (IOStatus failure = take_early(&covered); !failure.ok()) return failure;
  IOStatus s = target()->Fsync(options, dbg);
  std::lock_guard lock(fs_.mutex_);
  return keep_failure(s);
}

IOStatus EarlySyncWal::Close(const IOOptions& options, IODebugContext* dbg) {
  bool covered = false;
  IOStatus failure = take_early(&covered);
  IOStatus s = target()->Close(options, dbg);
  return failure.ok() ? s : failure;
}

}  // namespace wpm::eventstore
