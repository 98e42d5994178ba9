#include "eventstore/backup.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "eventstore/store.h"
#include "eventstore/verify.h"
#include "schemas/record.h"

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;

AppendRequest synthetic(const std::string& stream, uint64_t index, size_t count) {
  AppendRequest r;
  for (size_t i = 0; i < count; ++i) {
    r.events.push_back(EventDraft{stream, "corr", "cause", "tester", Synthetic{"run", index + i, "", ""}});
  }
  return r;
}

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "wpm-backup-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    root_ = tmpl;
    log_ = std::make_shared<spdlog::logger>("backup-test", std::make_shared<spdlog::sinks::null_sink_mt>());
    options_.data_dir = root_ + "/data";
    options_.write_buffer_bytes = 4u << 20;
    fs::create_directories(options_.data_dir + "/keys");
    std::ofstream(options_.data_dir + "/keys/admin.key") << "secret\n";
    std::ofstream(options_.data_dir + "/registration.hash") << "scrypt$hash\n";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  std::unique_ptr<Store> open(const std::string& dir) {
    StoreOptions o = options_;
    o.data_dir = dir;
    auto s = Store::open(o, log_);
    EXPECT_TRUE(s.has_value()) << s.error().message;
    return s ? std::move(*s) : nullptr;
  }
  std::vector<std::string> records(const Store& store, uint64_t to) {
    std::vector<std::string> out;
    EXPECT_TRUE(store
                    .scan(1, Store::ScanMode::kPage,
                          [&](uint64_t seq, std::string_view r) {
                            if (seq > to) return false;
                            out.emplace_back(r);
                            return true;
                          })
                    .has_value());
    return out;
  }
  std::string root_;
  StoreOptions options_;
  std::shared_ptr<spdlog::logger> log_;
};

TEST_F(BackupTest, TakenWhileAppendsRunItRestoresToTheSameLogUpToItsHead) {
  auto store = open(options_.data_dir);
  ASSERT_TRUE(store);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(store->commit(std::vector{synthetic("s", i * 50, 50)}, 1).results[0]);
  store->sync_mark(true);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> appended{0};
  std::thread writer([&] {
    for (uint64_t i = 0; !stop && i < 100'000; ++i) {
      auto out = store->commit(std::vector{synthetic("w", i * 10, 10)}, 2);
      (void)store->apply_index();
      store->sync_mark();
      if (out.results[0]) appended += 10;
    }
  });
  while (appended < 200) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto made = create_backup(*store, options_.data_dir, root_ + "/backups", 1'796'000'000'000'000'000, "9.9.9");
  while (appended < 400) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  writer.join();
  ASSERT_TRUE(made.has_value()) << made.error().message;
  EXPECT_EQ(made->name, "wpm-20261130T005320Z");
  EXPECT_GE(made->head, 1000u + 200u);
  EXPECT_LT(made->head, store->head()) << "appends went on after it";
  EXPECT_EQ(fs::status(made->path).permissions() & fs::perms::all, fs::perms::owner_all) << "it holds keys";
  EXPECT_EQ(fs::status(root_ + "/backups").permissions() & fs::perms::all, fs::perms::owner_all);

  // Listed, with a manifest whose every file checks.
  auto all = list_backups(root_ + "/backups");
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].head, made->head);
  EXPECT_EQ((*all)[0].version, "9.9.9");
  EXPECT_TRUE(check_backup_files((*all)[0]).has_value());
  bool has_key = false;
  for (const auto& f : made->files) has_key |= f.path == "keys/admin.key";
  EXPECT_TRUE(has_key);

  // Restored into an empty directory: the same records 1..head, the hash
  // chain sound, the keys there, and the store opens with that head.
  auto original = records(*store, made->head);
  store.reset();
  auto restored = restore_backup(made->path, root_ + "/restored");
  ASSERT_TRUE(restored.has_value()) << restored.error().message;
  auto back = open(root_ + "/restored");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->head(), made->head);
  EXPECT_EQ(records(*back, UINT64_MAX), original);
  ChainVerifier verifier;
  EXPECT_TRUE(verify_log(*back, verifier, back->head(), 0, {}).has_value());
  EXPECT_EQ(verifier.count(), made->head);
  std::ifstream key(root_ + "/restored/keys/admin.key");
  std::string word;
  key >> word;
  EXPECT_EQ(word, "secret");
  // It goes on appending from there.
  ASSERT_TRUE(back->commit(std::vector{synthetic("after", 0, 1)}, 3).results[0]);
  EXPECT_EQ(back->head(), made->head + 1);

  // A data directory that holds a log is never overwritten.
  auto again = restore_backup(made->path, root_ + "/restored");
  ASSERT_FALSE(again.has_value());
  EXPECT_NE(again.error().message.find("holds a log already"), std::string::npos) << again.error().message;
}

TEST_F(BackupTest, ADamagedOrAddedFileIsFoundAndNothingIsRestoredFromIt) {
  auto store = open(options_.data_dir);
  ASSERT_TRUE(store->commit(std::vector{synthetic("s", 0, 10)}, 1).results[0]);
  auto made = create_backup(*store, options_.data_dir, root_ + "/backups", 1'796'000'000'000'000'000, "1");
  ASSERT_TRUE(made.has_value()) << made.error().message;
  // A file in the log changed by one byte.
  std::string victim;
  for (const auto& f : made->files) {
    if (f.path.starts_with("log/") && f.path.ends_with(".sst")) victim = made->path + "/" + f.path;
  }
  ASSERT_FALSE(victim.empty());
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('\x5a');
  }
  auto checked = check_backup_files(*made);
  ASSERT_FALSE(checked.has_value());
  EXPECT_NE(checked.error().message.find("differs from the manifest"), std::string::npos) << checked.error().message;
  auto restored = restore_backup(made->path, root_ + "/restored");
  ASSERT_FALSE(restored.has_value());
  EXPECT_FALSE(fs::exists(root_ + "/restored/log"));

  // Another backup, with a file added after it was made.
  auto second = create_backup(*store, options_.data_dir, root_ + "/backups", 1'796'000'001'000'000'000, "1");
  ASSERT_TRUE(second.has_value()) << "the damage stayed in the backup (a copy, not links): " << second.error().message;
  std::ofstream(second->path + "/keys/extra") << "x";
  auto added = check_backup_files(*second);
  ASSERT_FALSE(added.has_value());
  EXPECT_NE(added.error().message.find("keys/extra is not in the manifest"), std::string::npos);
  // No manifest: not a backup.
  EXPECT_EQ(read_backup(root_).error().code, ErrorCode::kNotFound);
  // A directory others may write in is refused (the keys would go there), and left as it was.
  fs::create_directories(root_ + "/shared");
  fs::permissions(root_ + "/shared", fs::perms::all);
  auto open_dir = create_backup(*store, options_.data_dir, root_ + "/shared", 1'796'000'002'000'000'000, "1");
  ASSERT_FALSE(open_dir.has_value());
  EXPECT_NE(open_dir.error().message.find("may be written by others"), std::string::npos) << open_dir.error().message;
  EXPECT_EQ(fs::status(root_ + "/shared").permissions(), fs::perms::all);
  EXPECT_TRUE(fs::is_empty(root_ + "/shared"));
}

TEST_F(BackupTest, PruningKeepsTheNewestAndUnfinishedOnesGo) {
  auto store = open(options_.data_dir);
  ASSERT_TRUE(store->commit(std::vector{synthetic("s", 0, 3)}, 1).results[0]);
  std::string dir = root_ + "/backups";
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(create_backup(*store, options_.data_dir, dir, 1'796'000'000'000'000'000 + i * 86'400'000'000'000LL, "1"));
  }
  // The same second twice: a second name.
  auto twin = create_backup(*store, options_.data_dir, dir, 1'796'000'000'000'000'000 + 3 * 86'400'000'000'000LL, "1");
  ASSERT_TRUE(twin.has_value());
  EXPECT_TRUE(twin->name.ends_with("-2")) << twin->name;
  fs::create_directories(dir + "/.partial-wpm-20200101T000000Z/log");  // a crash while one was made
  auto pruned = prune_backups(dir, 2);
  ASSERT_TRUE(pruned.has_value());
  EXPECT_EQ(*pruned, 3u);
  auto left = list_backups(dir);
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ((*left)[1].name, twin->name);
  EXPECT_FALSE(fs::exists(dir + "/.partial-wpm-20200101T000000Z"));
}

}  // namespace
}  // namespace wpm::eventstore
