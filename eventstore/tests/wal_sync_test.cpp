#include "eventstore/wal_sync.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;

// What the file system under the early-sync layer saw: the real files, with
// their syncs counted and, when a test asks, slowed down or failed.
struct SyncLog {
  std::atomic<int> syncs{0};
  std::atomic<int> fsyncs{0};
  std::atomic<int> running{0};
  std::atomic<bool> closed_while_syncing{false};
  std::atomic<int> delay_ms{0};
  std::atomic<bool> fail{false};
};

class ObservedFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  ObservedFile(std::unique_ptr<rocksdb::FSWritableFile> target, SyncLog& log)
      : rocksdb::FSWritableFileOwnerWrapper(std::move(target)), log_(log) {}
  IOStatus Sync(const IOOptions& options, IODebugContext* dbg) override {
    ++log_.running;
    std::this_thread::sleep_for(std::chrono::milliseconds(log_.delay_ms.load()));
    IOStatus s = log_.fail ? IOStatus::IOError("injected sync failure")
                           : target()->Sync(options, dbg);
    ++log_.syncs;
    --log_.running;
    return s;
  }
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    ++log_.fsyncs;
    return target()->Fsync(options, dbg);
  }
  IOStatus Close(const IOOptions& options, IODebugContext* dbg) override {
    if (log_.running > 0) log_.closed_while_syncing = true;
    return target()->Close(options, dbg);
  }

 private:
  SyncLog& log_;
};

class ObservedFileSystem : public rocksdb::FileSystemWrapper {
 public:
  explicit ObservedFileSystem(SyncLog& log)
      : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()), log_(log) {}
  const char* Name() const override { return "ObservedFileSystem"; }
  IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                           std::unique_ptr<rocksdb::FSWritableFile>* result,
                           IODebugContext* dbg) override {
    IOStatus s = target()->NewWritableFile(name, options, result, dbg);
    if (s.ok()) *result = std::make_unique<ObservedFile>(std::move(*result), log_);
    return s;
  }

 private:
  SyncLog& log_;
};

class EarlyWalSyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("wal_sync_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    early_ = std::make_shared<EarlySyncFileSystem>(std::make_shared<ObservedFileSystem>(log_));
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<rocksdb::FSWritableFile> open_file(const std::string& name) {
    std::unique_ptr<rocksdb::FSWritableFile> file;
    EXPECT_TRUE(early_->NewWritableFile(dir_ / name, rocksdb::FileOptions(), &file, nullptr).ok());
    return file;
  }

  // The bytes in a database's WAL files (flushed to the kernel after each write).
  static uint64_t wal_size(const fs::path& db) {
    uint64_t bytes = 0;
    for (const auto& entry : fs::directory_iterator(db)) {
      if (EarlySyncFileSystem::is_wal(entry.path().string())) bytes += entry.file_size();
    }
    return bytes;
  }

  static void append(rocksdb::FSWritableFile& file, size_t bytes) {
    ASSERT_TRUE(file.Append(std::string(bytes, 'x'), IOOptions(), nullptr).ok());
  }

  // What the store's write of an armed batch does to the WAL file: arm, append, flush.
  void armed_write(rocksdb::FSWritableFile& file, size_t bytes) {
    early_->arm(bytes);
    append(file, bytes);
    ASSERT_TRUE(file.Flush(IOOptions(), nullptr).ok());
  }

  // A database in dir_/db over the early-sync layer; null if it cannot be opened.
  std::unique_ptr<rocksdb::DB> open_db() {
    if (!env_) env_ = rocksdb::NewCompositeEnv(early_);
    rocksdb::Options options;
    options.create_if_missing = true;
    options.env = env_.get();
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(options, dir_ / "db", &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return std::unique_ptr<rocksdb::DB>(s.ok() ? raw : nullptr);
  }

  fs::path dir_;
  SyncLog log_;
  std::shared_ptr<EarlySyncFileSystem> early_;
  std::unique_ptr<rocksdb::Env> env_;  // early_ as RocksDB sees it; outlives the databases
};

TEST_F(EarlyWalSyncTest, ArmedWriteIsSyncedOnceEarlyAndSurvivesReopening) {
  std::unique_ptr<rocksdb::DB> db = open_db();
  ASSERT_NE(db, nullptr);

  rocksdb::WriteBatch batch;
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(batch.Put("key" + std::to_string(i), std::string(300, 'v')).ok());
  int syncs_before = log_.syncs;
  early_->arm(EarlySyncFileSystem::wal_bytes(batch.GetDataSize()));
  ASSERT_TRUE(db->Write(rocksdb::WriteOptions(), &batch).ok());
  early_->disarm();
  ASSERT_TRUE(db->SyncWAL().ok());
  EXPECT_EQ(early_->early_syncs(), 1u);
  EXPECT_EQ(early_->answered_syncs(), 1u);
  EXPECT_EQ(log_.syncs - syncs_before, 1) << "the WAL was synced twice";

  // A write that was not armed syncs on the caller's thread, as before.
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "late", "value").ok());
  ASSERT_TRUE(db->SyncWAL().ok());
  EXPECT_EQ(early_->early_syncs(), 1u);
  EXPECT_EQ(early_->answered_syncs(), 1u);

  ASSERT_TRUE(db->Close().ok());
  db.reset();
  db = open_db();
  ASSERT_NE(db, nullptr);
  std::string value;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), "key299", &value).ok());
  EXPECT_EQ(value, std::string(300, 'v'));
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), "late", &value).ok());
  ASSERT_TRUE(db->Close().ok());
}

TEST_F(EarlyWalSyncTest, AFlushBeforeTheArmedBytesAreAppendedStartsNothing) {
  auto file = open_file("000001.log");
  early_->arm(100);
  append(*file, 60);
  ASSERT_TRUE(file->Flush(IOOptions(), nullptr).ok());  // a full write buffer, mid-batch
  EXPECT_EQ(early_->early_syncs(), 0u);
  append(*file, 60);
  ASSERT_TRUE(file->Flush(IOOptions(), nullptr).ok());  // the end of the batch
  EXPECT_EQ(early_->early_syncs(), 1u);
  ASSERT_TRUE(file->Sync(IOOptions(), nullptr).ok());
  EXPECT_EQ(early_->answered_syncs(), 1u);
  EXPECT_EQ(log_.syncs, 1);
  ASSERT_TRUE(file->Close(IOOptions(), nullptr).ok());
}

TEST_F(EarlyWalSyncTest, BytesAppendedAfterTheEarlySyncStartedGetASyncOfTheirOwn) {
  auto file = open_file("000002.log");
  armed_write(*file, 10);
  append(*file, 5);  // not covered by the sync queued at the flush
  ASSERT_TRUE(file->Sync(IOOptions(), nullptr).ok());
  EXPECT_EQ(early_->early_syncs(), 1u);
  EXPECT_EQ(early_->answered_syncs(), 0u);
  EXPECT_EQ(log_.syncs, 2);
  ASSERT_TRUE(file->Close(IOOptions(), nullptr).ok());
}

TEST_F(EarlyWalSyncTest, AFailedEarlySyncIsReturnedAndNotRetried) {
  auto file = open_file("000003.log");
  log_.fail = true;
  armed_write(*file, 10);
  IOStatus s = file->Sync(IOOptions(), nullptr);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  // The disk recovers, but the pages the sync lost are gone: no later call may
  // report the file as synced.
  log_.fail = false;
  s = file->Sync(IOOptions(), nullptr);
  EXPECT_TRUE(s.IsIOError()) << "a second Sync() after a failed one: " << s.ToString();
  s = file->Fsync(IOOptions(), nullptr);
  EXPECT_TRUE(s.IsIOError()) << "an Fsync() after a failed sync: " << s.ToString();
  EXPECT_EQ(log_.syncs, 1) << "a failed sync must never be retried";
  EXPECT_EQ(early_->answered_syncs(), 0u);
  // Neither is another early sync started for it.
  armed_write(*file, 10);
  EXPECT_EQ(early_->early_syncs(), 1u);
  early_->disarm();
  s = file->Close(IOOptions(), nullptr);
  EXPECT_TRUE(s.IsIOError()) << "Close() after a failed sync: " << s.ToString();
  EXPECT_EQ(log_.syncs, 1);
}

TEST_F(EarlyWalSyncTest, AFailedSyncOnTheCallersThreadIsKeptToo) {
  auto file = open_file("000006.log");
  append(*file, 10);
  log_.fail = true;
  EXPECT_TRUE(file->Sync(IOOptions(), nullptr).IsIOError());
  log_.fail = false;
  EXPECT_TRUE(file->Sync(IOOptions(), nullptr).IsIOError());
  EXPECT_EQ(log_.syncs, 1) << "a failed sync must never be retried";
  EXPECT_TRUE(file->Close(IOOptions(), nullptr).IsIOError());
}

TEST_F(EarlyWalSyncTest, TheArmGoesOnlyToTheFileTheWriteAppendedTo) {
  auto old_wal = open_file("000007.log");
  auto new_wal = open_file("000008.log");
  early_->arm(10);
  append(*new_wal, 10);
  ASSERT_TRUE(old_wal->Flush(IOOptions(), nullptr).ok());  // e.g. a background flush
  EXPECT_EQ(early_->early_syncs(), 0u) << "an older WAL file took the arm";
  ASSERT_TRUE(new_wal->Flush(IOOptions(), nullptr).ok());
  EXPECT_EQ(early_->early_syncs(), 1u);
  ASSERT_TRUE(new_wal->Sync(IOOptions(), nullptr).ok());
  EXPECT_EQ(early_->answered_syncs(), 1u);
  ASSERT_TRUE(old_wal->Close(IOOptions(), nullptr).ok());
  ASSERT_TRUE(new_wal->Close(IOOptions(), nullptr).ok());
}

TEST_F(EarlyWalSyncTest, AnFsyncRunsEvenAfterAnEarlySync) {
  auto file = open_file("000009.log");
  armed_write(*file, 10);
  ASSERT_TRUE(file->Fsync(IOOptions(), nullptr).ok());
  EXPECT_EQ(log_.syncs, 1);   // the early fdatasync
  EXPECT_EQ(log_.fsyncs, 1);  // and the fsync, which also syncs the metadata
  EXPECT_EQ(early_->answered_syncs(), 0u) << "an fsync is not answered by an fdatasync";
  ASSERT_TRUE(file->Close(IOOptions(), nullptr).ok());
}

TEST_F(EarlyWalSyncTest, TheArmedSizeIsALowerBoundOfWhatTheWalAppends) {
  EXPECT_EQ(EarlySyncFileSystem::wal_bytes(0), 0u);
  EXPECT_EQ(EarlySyncFileSystem::wal_bytes(100), 107u);
  EXPECT_EQ(EarlySyncFileSystem::wal_bytes(32761), 32768u);
  EXPECT_EQ(EarlySyncFileSystem::wal_bytes(32762), 32776u);
  // Against RocksDB itself: the WAL grows by at least that much per write.
  std::unique_ptr<rocksdb::DB> db = open_db();
  ASSERT_NE(db, nullptr);
  for (size_t values : {1, 50, 400}) {
    rocksdb::WriteBatch batch;
    for (size_t i = 0; i < values; ++i) ASSERT_TRUE(batch.Put("k" + std::to_string(i), std::string(200, 'v')).ok());
    uint64_t before = wal_size(dir_ / "db");
    ASSERT_TRUE(db->Write(rocksdb::WriteOptions(), &batch).ok());
    uint64_t grown = wal_size(dir_ / "db") - before;
    EXPECT_GE(grown, EarlySyncFileSystem::wal_bytes(batch.GetDataSize())) << values << " values";
    EXPECT_LE(grown, EarlySyncFileSystem::wal_bytes(batch.GetDataSize()) + 7 + 6) << values << " values";
  }
  ASSERT_TRUE(db->Close().ok());
}

TEST_F(EarlyWalSyncTest, CloseWaitsForTheEarlySync) {
  auto file = open_file("000004.log");
  log_.delay_ms = 100;
  armed_write(*file, 10);
  ASSERT_TRUE(file->Close(IOOptions(), nullptr).ok());
  EXPECT_EQ(log_.syncs, 1);
  EXPECT_FALSE(log_.closed_while_syncing) << "the file was closed under a running sync";
  file.reset();  // destroying a closed file waits for nothing
}

TEST_F(EarlyWalSyncTest, DestroyingAFileWaitsForItsEarlySync) {
  auto file = open_file("000005.log");
  log_.delay_ms = 100;
  armed_write(*file, 10);
  file.reset();  // the wrapped file goes only after its sync ended
  EXPECT_EQ(log_.syncs, 1);
  EXPECT_EQ(log_.running, 0);
}

TEST_F(EarlyWalSyncTest, OnlyWalFilesAreSyncedEarly) {
  EXPECT_TRUE(EarlySyncFileSystem::is_wal("/data/log/000012.log"));
  EXPECT_FALSE(EarlySyncFileSystem::is_wal("/data/log/MANIFEST-000005"));
  EXPECT_FALSE(EarlySyncFileSystem::is_wal("/data/log/000013.sst"));
  EXPECT_FALSE(EarlySyncFileSystem::is_wal(".log"));
  auto file = open_file("MANIFEST-000001");
  armed_write(*file, 10);
  EXPECT_EQ(early_->early_syncs(), 0u);
  ASSERT_TRUE(file->Sync(IOOptions(), nullptr).ok());
  EXPECT_EQ(log_.syncs, 1);
  early_->disarm();
  ASSERT_TRUE(file->Close(IOOptions(), nullptr).ok());
}

}  // namespace
}  // namespace wpm::eventstore
