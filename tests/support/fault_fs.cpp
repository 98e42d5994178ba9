#include "tests/support/fault_fs.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace wpm::testing {
namespace {

namespace fs = std::filesystem;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

bool is_wal(const std::string& name) {
  return name.size() > 4 && name.compare(name.size() - 4, 4, ".log") == 0;
}

std::string read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_whole(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

class FaultWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWritableFile(FaultFileSystem& fs, std::string name, std::unique_ptr<rocksdb::FSWritableFile> target,
                    uint64_t size)
      : FSWritableFileOwnerWrapper(std::move(target)), fs_(fs), name_(std::move(name)), size_(size) {}

  IOStatus Append(const Slice& data, const IOOptions& options, IODebugContext* dbg) override {
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = target()->Append(data, options, dbg);
    if (s.ok()) fs_.appended(name_, size_ += data.size());
    return s;
  }
  IOStatus Append(const Slice& data, const IOOptions& options, const rocksdb::DataVerificationInfo& info,
                  IODebugContext* dbg) override {
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = target()->Append(data, options, info, dbg);
    if (s.ok()) fs_.appended(name_, size_ += data.size());
    return s;
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& options,
                            IODebugContext* dbg) override {
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = target()->PositionedAppend(data, offset, options, dbg);
    if (s.ok()) fs_.appended(name_, size_ = std::max(size_, offset + data.size()));
    return s;
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& options,
                            const rocksdb::DataVerificationInfo& info, IODebugContext* dbg) override {
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = target()->PositionedAppend(data, offset, options, info, dbg);
    if (s.ok()) fs_.appended(name_, size_ = std::max(size_, offset + data.size()));
    return s;
  }
  IOStatus Truncate(uint64_t size, const IOOptions& options, IODebugContext* dbg) override {
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = target()->Truncate(size, options, dbg);
    if (s.ok()) fs_.truncated(name_, size_ = size);
    return s;
  }
  IOStatus Sync(const IOOptions& options, IODebugContext* dbg) override { return sync(options, dbg, false); }
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override { return sync(options, dbg, true); }
  // A range sync makes nothing durable that a later Sync() does not.
  IOStatus RangeSync(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
  IOStatus Close(const IOOptions& options, IODebugContext* dbg) override {
    // Closing writes nothing but may trim a preallocation; the loss applied
    // later trims to what was synced anyway.
    return target()->Close(options, dbg);
  }

 private:
  IOStatus sync(const IOOptions& options, IODebugContext* dbg, bool full) {
    if (auto s = fs_.before_sync(name_); !s.ok()) return s;
    if (fs_.power_cut()) return IOStatus::OK();
    // What the sync covers is what was appended before it started: bytes
    // another thread appends meanwhile need a sync of their own.
    uint64_t covered = fs_.size_of(name_);
    auto s = full ? target()->Fsync(options, dbg) : target()->Sync(options, dbg);
    if (s.ok()) fs_.synced(name_, covered);
    return s;
  }
  FaultFileSystem& fs_;
  std::string name_;
  uint64_t size_;
};

class FaultRandomRWFile : public rocksdb::FSRandomRWFile {
 public:
  FaultRandomRWFile(FaultFileSystem& fs, std::string name, std::unique_ptr<rocksdb::FSRandomRWFile> target)
      : fs_(fs), name_(std::move(name)), target_(std::move(target)) {}
  IOStatus Write(uint64_t offset, const Slice& data, const IOOptions& options, IODebugContext* dbg) override {
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = target_->Write(offset, data, options, dbg);
    if (s.ok()) fs_.written_at(name_, offset, data.size());
    return s;
  }
  IOStatus Read(uint64_t offset, size_t n, const IOOptions& options, Slice* result, char* scratch,
                IODebugContext* dbg) const override {
    return target_->Read(offset, n, options, result, scratch, dbg);
  }
  IOStatus Flush(const IOOptions& options, IODebugContext* dbg) override {
    if (fs_.power_cut()) return IOStatus::OK();
    return target_->Flush(options, dbg);
  }
  IOStatus Sync(const IOOptions& options, IODebugContext* dbg) override { return sync(options, dbg, false); }
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override { return sync(options, dbg, true); }
  IOStatus Close(const IOOptions& options, IODebugContext* dbg) override { return target_->Close(options, dbg); }

 private:
  IOStatus sync(const IOOptions& options, IODebugContext* dbg, bool full) {
    if (auto s = fs_.before_sync(name_); !s.ok()) return s;
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = full ? target_->Fsync(options, dbg) : target_->Sync(options, dbg);
    if (s.ok()) fs_.image_synced(name_, read_whole(name_));
    return s;
  }
  FaultFileSystem& fs_;
  std::string name_;
  std::unique_ptr<rocksdb::FSRandomRWFile> target_;
};

class FaultDirectory : public rocksdb::FSDirectory {
 public:
  FaultDirectory(FaultFileSystem& fs, std::string name, std::unique_ptr<rocksdb::FSDirectory> target)
      : fs_(fs), name_(std::move(name)), target_(std::move(target)) {}
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = target_->Fsync(options, dbg);
    if (s.ok()) fs_.directory_synced(name_);
    return s;
  }
  IOStatus FsyncWithDirOptions(const IOOptions& options, IODebugContext* dbg,
                               const rocksdb::DirFsyncOptions& dir_options) override {
    if (fs_.power_cut()) return IOStatus::OK();
    auto s = target_->FsyncWithDirOptions(options, dbg, dir_options);
    if (s.ok()) fs_.directory_synced(name_);
    return s;
  }
  IOStatus Close(const IOOptions& options, IODebugContext* dbg) override { return target_->Close(options, dbg); }
  size_t GetUniqueId(char* id, size_t max_size) const override { return target_->GetUniqueId(id, max_size); }

 private:
  FaultFileSystem& fs_;
  std::string name_;
  std::unique_ptr<rocksdb::FSDirectory> target_;
};

// A file that takes everything and keeps nothing: made after the cut.
class VoidWritableFile : public rocksdb::FSWritableFile {
 public:
  IOStatus Append(const Slice&, const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
  IOStatus Close(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
  IOStatus Flush(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
  IOStatus Sync(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }
};

}  // namespace

FaultFileSystem::FaultFileSystem(std::shared_ptr<rocksdb::FileSystem> target) : FileSystemWrapper(std::move(target)) {}

std::string FaultFileSystem::dir_of(const std::string& name) {
  std::string dir = fs::path(name).parent_path().string();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

void FaultFileSystem::track(const std::string& name, uint64_t size, bool made) {
  std::lock_guard lock(mutex_);
  File& f = files_[name];
  f = File{};
  f.size = f.synced = size;
  f.entry_durable = !made;
}

IOStatus FaultFileSystem::NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                          std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext* dbg) {
  if (power_cut()) {
    *result = std::make_unique<VoidWritableFile>();
    return IOStatus::OK();
  }
  bool existed = target()->FileExists(name, IOOptions(), dbg).ok();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  auto s = target()->NewWritableFile(name, options, &file, dbg);
  if (!s.ok()) return s;
  track(name, 0, !existed);
  *result = std::make_unique<FaultWritableFile>(*this, name, std::move(file), 0);
  return s;
}

IOStatus FaultFileSystem::ReopenWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                             std::unique_ptr<rocksdb::FSWritableFile>* result,
                                             IODebugContext* dbg) {
  if (power_cut()) {
    *result = std::make_unique<VoidWritableFile>();
    return IOStatus::OK();
  }
  bool existed = target()->FileExists(name, IOOptions(), dbg).ok();
  uint64_t size = 0;
  if (existed) (void)target()->GetFileSize(name, IOOptions(), &size, dbg);
  std::unique_ptr<rocksdb::FSWritableFile> file;
  auto s = target()->ReopenWritableFile(name, options, &file, dbg);
  if (!s.ok()) return s;
  track(name, size, !existed);
  *result = std::make_unique<FaultWritableFile>(*this, name, std::move(file), size);
  return s;
}

IOStatus FaultFileSystem::ReuseWritableFile(const std::string& name, const std::string& old_name,
                                            const rocksdb::FileOptions& options,
                                            std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext* dbg) {
  // A recycled WAL: a rename, then a new file from offset 0.
  if (auto s = RenameFile(old_name, name, IOOptions(), dbg); !s.ok()) return s;
  return ReopenWritableFile(name, options, result, dbg);
}

IOStatus FaultFileSystem::NewRandomRWFile(const std::string& name, const rocksdb::FileOptions& options,
                                          std::unique_ptr<rocksdb::FSRandomRWFile>* result, IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSRandomRWFile> file;
  auto s = target()->NewRandomRWFile(name, options, &file, dbg);
  if (!s.ok()) return s;
  {
    std::lock_guard lock(mutex_);
    File& f = files_[name];  // a file made here before (NewWritableFile) keeps its entry's state
    f.image = read_whole(name);
    f.size = f.synced = f.image->size();
    f.dirty.clear();
  }
  *result = std::make_unique<FaultRandomRWFile>(*this, name, std::move(file));
  return s;
}

IOStatus FaultFileSystem::NewDirectory(const std::string& name, const IOOptions& options,
                                       std::unique_ptr<rocksdb::FSDirectory>* result, IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSDirectory> dir;
  auto s = target()->NewDirectory(name, options, &dir, dbg);
  if (!s.ok()) return s;
  std::string clean = name;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  *result = std::make_unique<FaultDirectory>(*this, clean, std::move(dir));
  return s;
}

IOStatus FaultFileSystem::RenameFile(const std::string& from, const std::string& to, const IOOptions& options,
                                     IODebugContext* dbg) {
  if (power_cut()) return IOStatus::OK();
  std::optional<std::string> old_to;
  if (target()->FileExists(to, options, dbg).ok()) old_to = read_whole(to);
  auto s = target()->RenameFile(from, to, options, dbg);
  if (!s.ok()) return s;
  std::lock_guard lock(mutex_);
  renames_.push_back(Rename{from, to, std::move(old_to)});
  if (auto it = files_.find(from); it != files_.end()) {
    File moved = it->second;
    files_.erase(it);
    moved.entry_durable = true;  // its fate is the rename's now
    files_[to] = moved;
  } else {
    files_.erase(to);
  }
  return s;
}

IOStatus FaultFileSystem::DeleteFile(const std::string& name, const IOOptions& options, IODebugContext* dbg) {
  if (power_cut()) return IOStatus::OK();
  auto s = target()->DeleteFile(name, options, dbg);
  if (s.ok()) {
    std::lock_guard lock(mutex_);
    files_.erase(name);
  }
  return s;
}

IOStatus FaultFileSystem::LinkFile(const std::string& from, const std::string& to, const IOOptions& options,
                                   IODebugContext* dbg) {
  if (power_cut()) return IOStatus::OK();
  auto s = target()->LinkFile(from, to, options, dbg);
  if (s.ok()) {
    uint64_t size = 0;
    (void)target()->GetFileSize(to, options, &size, dbg);
    track(to, size, true);
  }
  return s;
}

IOStatus FaultFileSystem::Truncate(const std::string& name, size_t size, const IOOptions& options,
                                   IODebugContext* dbg) {
  if (power_cut()) return IOStatus::OK();
  auto s = target()->Truncate(name, size, options, dbg);
  if (s.ok()) truncated(name, size);
  return s;
}

void FaultFileSystem::appended(const std::string& name, uint64_t end) {
  {
    std::lock_guard lock(mutex_);
    files_[name].size = end;
  }
  count_write();
}

void FaultFileSystem::truncated(const std::string& name, uint64_t size) {
  std::lock_guard lock(mutex_);
  File& f = files_[name];
  f.size = size;
  f.synced = std::min(f.synced, size);
}

IOStatus FaultFileSystem::before_sync(const std::string& name) {
  if (fail_wal_syncs_.load(std::memory_order_acquire) && is_wal(name)) {
    return IOStatus::IOError("injected: the disk failed to sync " + name);
  }
  return IOStatus::OK();
}

uint64_t FaultFileSystem::size_of(const std::string& name) {
  std::lock_guard lock(mutex_);
  return files_[name].size;
}

void FaultFileSystem::synced(const std::string& name, uint64_t covered) {
  syncs_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  File& f = files_[name];
  f.synced = std::max(f.synced, std::min(covered, f.size));
}

void FaultFileSystem::written_at(const std::string& name, uint64_t offset, uint64_t length) {
  {
    std::lock_guard lock(mutex_);
    File& f = files_[name];
    f.dirty.emplace_back(offset, length);
    f.size = std::max(f.size, offset + length);
  }
  count_write();
}

void FaultFileSystem::image_synced(const std::string& name, std::string image) {
  syncs_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  File& f = files_[name];
  f.size = f.synced = image.size();
  f.image = std::move(image);
  f.dirty.clear();
}

void FaultFileSystem::directory_synced(const std::string& dir) {
  syncs_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  for (auto& [name, f] : files_) {
    if (dir_of(name) == dir) f.entry_durable = true;
  }
  std::erase_if(renames_, [&](const Rename& r) { return dir_of(r.to) == dir; });
}

std::vector<std::string> FaultFileSystem::apply_loss(Loss loss, uint64_t seed) {
  std::lock_guard lock(mutex_);
  std::mt19937_64 random(seed);
  std::vector<std::string> changed;
  std::error_code ec;
  // Renames not made durable, newest first: the target holds what it held.
  for (auto it = renames_.rbegin(); it != renames_.rend(); ++it) {
    if (it->old_to) {
      write_whole(it->to, *it->old_to);
    } else {
      fs::remove(it->to, ec);
    }
    files_.erase(it->to);
    changed.push_back(fmt::format("{}: rename from {} undone", it->to, it->from));
  }
  renames_.clear();
  for (auto& [name, f] : files_) {
    if (!fs::exists(name, ec)) continue;
    if (!f.entry_durable) {
      fs::remove(name, ec);
      changed.push_back(fmt::format("{}: made since its directory's last sync, gone", name));
      continue;
    }
    if (f.image) {  // a random-write file: back to its synced image, or garbled where written since
      std::string now = read_whole(name);
      std::string after = *f.image;
      if (loss == Loss::kTornTail && random() % 2 == 0) after = now;  // written back after all
      if (loss == Loss::kGarble) {
        after = now;
        for (auto [offset, length] : f.dirty) {
          for (uint64_t i = offset; i < offset + length && i < after.size(); ++i) {
            after[i] = static_cast<char>(random());
          }
        }
      }
      if (after != now) {
        write_whole(name, after);
        changed.push_back(fmt::format("{}: {} written since its last sync", name,
                                      loss == Loss::kGarble ? "garbled where" : "lost what was"));
      }
      continue;
    }
    uint64_t on_disk = fs::file_size(name, ec);
    if (ec || on_disk <= f.synced) continue;
    uint64_t keep = f.synced;
    if (loss == Loss::kTornTail) {
      // Writeback got some way: a prefix of the unsynced tail, intact.
      uint64_t tail = std::min(on_disk, f.size) - f.synced;
      keep = f.synced + (tail == 0 ? 0 : random() % (tail + 1));
    } else if (loss == Loss::kGarble) {
      // Some of the unsynced tail reached the disk, as garbage.
      uint64_t tail = std::min(on_disk, f.size) - f.synced;
      uint64_t garbled = tail == 0 ? 0 : random() % (tail + 1);
      int fd = ::open(name.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        std::string junk(garbled, '\0');
        for (char& c : junk) c = static_cast<char>(random());
        (void)::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(f.synced));
        ::close(fd);
      }
      keep = f.synced + garbled;
    }
    fs::resize_file(name, keep, ec);
    if (keep != on_disk) {
      changed.push_back(fmt::format("{}: {} of {} bytes kept ({} synced)", name, keep, on_disk, f.synced));
    }
  }
  files_.clear();
  return changed;
}

}  // namespace wpm::testing
