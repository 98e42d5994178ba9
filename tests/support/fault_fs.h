#pragma once
// A disk for tests that can lose power or fail a sync (Debian's RocksDB
// ships no fault-injection header; RocksDB's own FaultInjectionTestFS is the
// model). It sits beneath the store's early-sync wrapper and its
// acknowledged-sequence mark (StoreOptions::file_system_for_test) and
// remembers what each file had when it was last synced, and which new files
// and renames their directory has not made durable yet.
//
// cut_power() is the moment the machine loses power: from then on nothing
// reaches the disk (every write, sync, create, rename and delete answers OK
// and changes nothing), as for processes that have not noticed yet. Once the
// store above is gone, apply_loss() leaves on the disk what a real one could
// hold after the cut: every byte past the last sync of its file dropped (or
// kept up to a random point, or garbled: cut at a random point and filled
// with random bytes), files made
// since their directory's last sync removed, renames not made durable
// undone, and a random-write file (the mark) back at its last synced image
// (or garbled where it was written since). Deletions count as durable at
// once (a deleted file that came back after the cut is not simulated).
//
// fail_wal_syncs() makes every later sync of a WAL file (NNNNNN.log) fail
// with an I/O error, as a disk does that drops a write.
//
// Thread safety: any thread (one mutex over the bookkeeping; the files'
// own I/O outside it).

#include <rocksdb/file_system.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace wpm::testing {

class FaultFileSystem : public rocksdb::FileSystemWrapper {
 public:
  explicit FaultFileSystem(std::shared_ptr<rocksdb::FileSystem> target = rocksdb::FileSystem::Default());
  const char* Name() const override { return "WpmFaultFileSystem"; }

  // kDrop: nothing unsynced is kept. kTornTail: a random prefix of each
  // file's unsynced tail is kept intact (writeback got that far), and a mark
  // written since its sync may be kept. kGarble: a random part of it is kept
  // as random bytes.
  enum class Loss { kDrop, kTornTail, kGarble };
  void cut_power() { cut_.store(true, std::memory_order_release); }
  // The power goes right after the `n`th write from now (any file) reached
  // the disk, before anything syncs it.
  void cut_power_at_write(uint64_t n) {
    writes_.store(0, std::memory_order_relaxed);
    cut_at_.store(n, std::memory_order_release);
  }
  bool power_cut() const { return cut_.load(std::memory_order_acquire); }
  // What a cut leaves (after the store above is closed). Returns a line per
  // file changed, for the test's log.
  std::vector<std::string> apply_loss(Loss loss, uint64_t seed);
  void fail_wal_syncs() { fail_wal_syncs_.store(true, std::memory_order_release); }
  // Syncs that reached the disk (files and directories).
  uint64_t syncs() const { return syncs_.load(std::memory_order_relaxed); }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& name, const std::string& old_name,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& options,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& from, const std::string& to, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& name, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& from, const std::string& to, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& name, size_t size, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;

  // Bookkeeping, called by the files.
  void appended(const std::string& name, uint64_t end);
  void truncated(const std::string& name, uint64_t size);
  rocksdb::IOStatus before_sync(const std::string& name);
  uint64_t size_of(const std::string& name);
  void synced(const std::string& name, uint64_t covered);
  void written_at(const std::string& name, uint64_t offset, uint64_t length);
  void image_synced(const std::string& name, std::string image);
  void directory_synced(const std::string& dir);

 private:
  struct File {
    uint64_t size = 0;    // bytes written through us (from the size at open)
    uint64_t synced = 0;  // size at the last sync
    bool entry_durable = true;  // false: made since its directory's last sync
    // Random-write files: the content at the last sync, and what was written since.
    std::optional<std::string> image;
    std::vector<std::pair<uint64_t, uint64_t>> dirty;  // offset, length
  };
  struct Rename {
    std::string from, to;
    std::optional<std::string> old_to;  // what `to` held before; nullopt: nothing
  };
  // A file made (or reopened) at `name` holding `size` bytes already on disk.
  void track(const std::string& name, uint64_t size, bool made);
  static std::string dir_of(const std::string& name);

  std::atomic<bool> cut_{false};
  std::atomic<bool> fail_wal_syncs_{false};
  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> writes_{0};
  std::atomic<uint64_t> cut_at_{0};  // 0: no cut planned
  void count_write() {
    uint64_t at = cut_at_.load(std::memory_order_acquire);
    if (at != 0 && writes_.fetch_add(1, std::memory_order_acq_rel) + 1 == at) cut_power();
  }
  std::mutex mutex_;
  std::map<std::string, File> files_;
  std::vector<Rename> renames_;  // not yet made durable by a directory sync
};

}  // namespace wpm::testing
