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

void EarlySyncFileSystem::appended(uint64_t bytes) {
  if (!armed_.load(std::memory_order_acquire)) return;
  // One writer appends to the WAL at a time (RocksDB's write group leader).
  uint64_t left = armed_left_.load(std::memory_order_relaxed);
  armed_left_.store(left > bytes ? left - bytes : 0, std::memory_order_relaxed);
}

void EarlySyncFileSystem::flushed(EarlySyncWal& file) {
  if (!armed_.load(std::memory_order_acquire) ||
      armed_left_.load(std::memory_order_relaxed) > 0) {
    return;
  }
  if (!armed_.exchange(false, std::memory_order_acq_rel)) return;
  {
    std::lock_guard lock(mutex_);
    // One early sync per file at a time: a second arm before the Sync() that
    // takes the first is left to that Sync(), which syncs what is not covered.
    if (file.early_ != EarlySyncWal::Early::kNone) return;
    file.early_ = EarlySyncWal::Early::kQueued;
    file.covers_ = file.appended_.load(std::memory_order_relaxed);
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
    file->status_ = s;
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
  appended_.fetch_add(bytes, std::memory_order_relaxed);
  fs_.appended(bytes);
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

std::optional<IOStatus> EarlySyncWal::take_early() {
  std::unique_lock lock(fs_.mutex_);
  if (early_ == Early::kNone) return std::nullopt;
  fs_.settle(*this, lock);
  early_ = Early::kNone;
  if (!status_.ok()) return status_;  // never retried: the caller aborts
  // Bytes appended after the early sync was queued need a sync of their own.
  if (covers_ != appended_.load(std::memory_order_relaxed)) return std::nullopt;
  fs_.answered_syncs_.fetch_add(1, std::memory_order_relaxed);
  return IOStatus::OK();
}

IOStatus EarlySyncWal::Sync(const IOOptions& options, IODebugContext* dbg) {
  if (auto early = take_early()) return *early;
  return target()->Sync(options, dbg);
}

IOStatus EarlySyncWal::Fsync(const IOOptions& options, IODebugContext* dbg) {
  // The early sync was an fdatasync; fsync also syncs the metadata, so it runs anyway.
  if (auto early = take_early(); early && !early->ok()) return *early;
  return target()->Fsync(options, dbg);
}

IOStatus EarlySyncWal::Close(const IOOptions& options, IODebugContext* dbg) {
  {
    std::unique_lock lock(fs_.mutex_);
    fs_.settle(*this, lock);
    early_ = Early::kNone;
  }
  return target()->Close(options, dbg);
}

}  // namespace wpm::eventstore
