// The id ranges of WPARs in user namespaces (agents/runtime/id_map.h): the
// registry, the shift of a tree's ownership, and idmapped mounts on a tmpfs
// tree (the file system every host has that supports them).
#include "agents/runtime/id_map.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace wpm::runtime {
namespace {

namespace fs = std::filesystem;

class IdMap : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(WPM_TEST_TMP_DIR) / fmt::format("idmap-{}-{}", ::getpid(), counter_++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  static inline int counter_ = 0;
};

TEST_F(IdMap, EachWparDirectoryHasItsOwnRangeAndKeepsIt) {
  const std::string registry = dir_ / "registry";
  fs::create_directories(dir_ / "a");
  fs::create_directories(dir_ / "b");
  auto a = claim_id_range(registry, dir_ / "a");
  auto b = claim_id_range(registry, dir_ / "b");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->first, kFirstWparId);
  EXPECT_EQ(b->first, kFirstWparId + kWparIdCount) << "never shared";
  EXPECT_EQ(a->count, kWparIdCount);
  EXPECT_EQ(claim_id_range(registry, dir_ / "a"), a) << "the same WPAR keeps its range";
  // Released, the lowest range goes to the next claim.
  ASSERT_TRUE(release_id_range(registry, dir_ / "a"));
  fs::create_directories(dir_ / "c");
  EXPECT_EQ(claim_id_range(registry, dir_ / "c")->first, kFirstWparId);
  // A claim whose WPAR directory is gone is taken over.
  fs::remove_all(dir_ / "b");
  fs::create_directories(dir_ / "d");
  EXPECT_EQ(claim_id_range(registry, dir_ / "d")->first, kFirstWparId + kWparIdCount);
  fs::create_directories(dir_ / "e");
  EXPECT_EQ(claim_id_range(registry, dir_ / "e")->first, kFirstWparId + 2 * kWparIdCount);
}

TEST_F(IdMap, TheOwnerRangeIsRecordedBesideTheFileSystems) {
  EXPECT_EQ(read_owner_range(dir_).value(), std::nullopt) << "none: the host's own ids";
  ASSERT_TRUE(write_owner_range(dir_, IdRange{kFirstWparId, kWparIdCount}));
  EXPECT_EQ(read_owner_range(dir_).value(), (IdRange{kFirstWparId, kWparIdCount}));
  ASSERT_TRUE(write_owner_range(dir_, std::nullopt));
  EXPECT_EQ(read_owner_range(dir_).value(), std::nullopt);
  std::ofstream(dir_ / "ids") << "garbage";
  EXPECT_FALSE(read_owner_range(dir_).has_value());
}

TEST_F(IdMap, AShiftMovesTheIdsOfTheRangeAndKeepsTheOthersAndSetIdBits) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change owners";
  fs::create_directories(dir_ / "t/sub");
  std::ofstream(dir_ / "t/root-file") << "x";
  std::ofstream(dir_ / "t/sub/user-file") << "x";
  std::ofstream(dir_ / "t/outside") << "x";
  fs::create_symlink("/etc/passwd", dir_ / "t/link");
  ASSERT_EQ(::chown((dir_ / "t/sub/user-file").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod((dir_ / "t/sub/user-file").c_str(), 04755), 0);
  ASSERT_EQ(::chown((dir_ / "t/outside").c_str(), 70000, 70000), 0);
  auto moved = shift_ownership(dir_ / "t", 0, 200000, 65536);
  ASSERT_TRUE(moved.has_value()) << moved.error().message;
  EXPECT_EQ(*moved, 5u) << "t, sub, root-file, user-file, link";
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "t/root-file").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 200000u);
  ASSERT_EQ(::stat((dir_ / "t/sub/user-file").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 201000u);
  EXPECT_EQ(st.st_gid, 201000u);
  EXPECT_EQ(st.st_mode & 07777, 04755u) << "the set-user-id bit kept";
  ASSERT_EQ(::stat((dir_ / "t/outside").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 70000u) << "outside the range: unchanged";
  ASSERT_EQ(::lstat((dir_ / "t/link").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 200000u) << "the link itself";
  ASSERT_EQ(::stat("/etc/passwd", &st), 0);
  EXPECT_EQ(st.st_uid, 0u) << "never through the link";
  // And back.
  ASSERT_TRUE(shift_ownership(dir_ / "t", 200000, 0, 65536));
  ASSERT_EQ(::stat((dir_ / "t/sub/user-file").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
}

// An idmapped copy of a tmpfs tree shows its files' owners shifted into the
// range, read-only; the tree itself keeps its owners. In a child with its
// own mount namespace, so nothing is left mounted.
TEST_F(IdMap, AnIdmappedCopyOfATmpfsTreeShowsItsOwnersInTheRange) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount";
  const IdRange range{kFirstWparId + 7 * kWparIdCount, kWparIdCount};
  auto userns = mapping_user_namespace(range);
  ASSERT_TRUE(userns.has_value()) << userns.error().message;
  fs::create_directories(dir_ / "lower");
  fs::create_directories(dir_ / "seen");
  pid_t child = ::fork();
  if (child == 0) {
    auto check = [](bool ok, int code) {
      if (!ok) ::_exit(code);
    };
    check(::unshare(CLONE_NEWNS) == 0, 10);
    check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, 11);
    const std::string lower = dir_ / "lower", seen = dir_ / "seen";
    check(::mount("tmpfs", lower.c_str(), "tmpfs", 0, "mode=755") == 0, 12);
    std::ofstream(lower + "/root-file") << "x";
    std::ofstream(lower + "/user-file") << "x";
    check(::chown((lower + "/user-file").c_str(), 1000, 1001) == 0, 13);
    auto tree = idmapped_clone(lower, *userns, false);
    check(tree.has_value(), 14);
    check(attach_mount(*tree, seen).has_value(), 15);
    struct stat st {};
    check(::stat((seen + "/root-file").c_str(), &st) == 0 && st.st_uid == range.first && st.st_gid == range.first, 16);
    check(::stat((seen + "/user-file").c_str(), &st) == 0 && st.st_uid == range.first + 1000 &&
              st.st_gid == range.first + 1001, 17);
    check(::stat((lower + "/user-file").c_str(), &st) == 0 && st.st_uid == 1000, 18);
    int fd = ::open((seen + "/new").c_str(), O_WRONLY | O_CREAT, 0644);
    check(fd < 0 && errno == EROFS, 19);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ::close(*userns);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10-13 set-up, 14 clone, 15 attach, 16 root's file, 17 a user's file, "
                                       "18 the tree unchanged, 19 read-only";
}

TEST_F(IdMap, AnOverlayRootCannotBeIdmappedAndSaysSo) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount";
  auto userns = mapping_user_namespace(IdRange{kFirstWparId, kWparIdCount});
  ASSERT_TRUE(userns.has_value()) << userns.error().message;
  for (const char* d : {"l", "u", "w", "m"}) fs::create_directories(dir_ / d);
  pid_t child = ::fork();
  if (child == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(10);
    std::string opts = fmt::format("lowerdir={},upperdir={},workdir={}", (dir_ / "l").string(), (dir_ / "u").string(),
                                   (dir_ / "w").string());
    if (::mount("overlay", (dir_ / "m").c_str(), "overlay", 0, opts.c_str()) != 0) ::_exit(11);
    auto tree = idmapped_clone(dir_ / "m", *userns, false);
    ::_exit(tree.has_value() ? 1 : (tree.error().message.find("cannot idmap") != std::string::npos ? 0 : 2));
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ::close(*userns);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 11) GTEST_SKIP() << "no overlay on this test directory";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: this kernel idmaps overlayfs (the fallback would then be needless)";
}

}  // namespace
}  // namespace wpm::runtime
