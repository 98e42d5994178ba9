// A system WPAR's private file systems through the archive and back, on real
// files (root: whiteouts, trusted.* xattrs, owners), and the archives a
// restore refuses.

#include "agents/checkpoint/internal/fs_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "schemas/hash.h"

namespace wpm::checkpoint {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string xattr(const fs::path& path, const char* name) {
  char buf[256];
  ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof buf);
  return n < 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
}

struct stat lstat_of(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

class FsArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for whiteouts, trusted.* xattrs and owners";
    static int counter = 0;
    dir_ = fmt::format("{}/fs-archive-{}-{}", WPM_TEST_TMP_DIR, ::getpid(), ++counter);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

// A WPAR's fs/ as its overlay and binds leave it.
void make_wpar_fs(const fs::path& f) {
  write(f / "upper/etc/wpm-new", "new\n");
  ASSERT_EQ(::chown((f / "upper/etc/wpm-new").c_str(), 1234, 5678), 0);
  fs::permissions(f / "upper/etc/wpm-new", fs::perms(0640));
  ASSERT_EQ(::mknod((f / "upper/etc/issue").c_str(), S_IFCHR | 0, makedev(0, 0)), 0) << "whiteout";
  write(f / "upper/etc/default/only", "mine\n");
  ASSERT_EQ(::lsetxattr((f / "upper/etc/default").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  fs::create_symlink("/etc/passwd", f / "upper/etc/wpm-link");
  write(f / "home/a", "linked\n");
  fs::create_hard_link(f / "home/a", f / "home/b");
  {
    int fd = ::open((f / "home/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "data", 4, 4 << 20), 4);
    ASSERT_EQ(::ftruncate(fd, 8 << 20), 0);
    ::close(fd);
  }
  fs::create_directories(f / "tmp");
  fs::permissions(f / "tmp", fs::perms::all | fs::perms::sticky_bit);
  ASSERT_EQ(::mkfifo((f / "tmp/fifo").c_str(), 0600), 0);
  // Left out: a socket, a device node that is not a whiteout, the work directory.
  int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", (f / "tmp/sock").c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(sock);
  ASSERT_EQ(::mknod((f / "upper/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  write(f / "work/work/x", "overlay's own\n");
}

TEST_F(FsArchiveTest, RoundTripKeepsFilesLinksWhiteoutsXattrsOwnersAndModes) {
  fs::path src = dir_ / "a/fs", dst = dir_ / "b/fs", archive = dir_ / "fs.tar.zst";
  make_wpar_fs(src);
  auto written = write_fs_archive(src, archive);
  ASSERT_TRUE(written.has_value()) << written.error().message;
  EXPECT_EQ(written->skipped, 2u) << "the socket and /dev/null";
  EXPECT_EQ(written->archive_bytes, fs::file_size(archive));
  EXPECT_EQ(written->sha256, to_hex(sha256(slurp(archive))));
  EXPECT_LT(written->archive_bytes, 64u * 1024) << "the sparse file's hole is not stored";

  auto restored = restore_fs_archive(archive, dst);
  ASSERT_TRUE(restored.has_value()) << restored.error().message;
  EXPECT_EQ(restored->entries, written->entries);
  EXPECT_EQ(slurp(dst / "upper/etc/wpm-new"), "new\n");
  struct stat st = lstat_of(dst / "upper/etc/wpm-new");
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  st = lstat_of(dst / "upper/etc/issue");
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  EXPECT_EQ(xattr(dst / "upper/etc/default", "trusted.overlay.opaque"), "y");
  EXPECT_TRUE(fs::is_symlink(dst / "upper/etc/wpm-link"));
  EXPECT_EQ(fs::read_symlink(dst / "upper/etc/wpm-link"), "/etc/passwd");
  EXPECT_TRUE(fs::equivalent(dst / "home/a", dst / "home/b")) << "still one file";
  EXPECT_EQ(fs::file_size(dst / "home/sparse"), 8u << 20);
  EXPECT_LT(lstat_of(dst / "home/sparse").st_blocks * 512, 1 << 20) << "still sparse";
  EXPECT_EQ(slurp(dst / "home/sparse").substr(4 << 20, 4), "data");
  EXPECT_EQ(lstat_of(dst / "tmp").st_mode & 07777, 01777u);
  EXPECT_TRUE(S_ISFIFO(lstat_of(dst / "tmp/fifo").st_mode));
  EXPECT_FALSE(fs::exists(dst / "tmp/sock"));
  EXPECT_FALSE(fs::exists(dst / "upper/null"));
  EXPECT_FALSE(fs::exists(dst / "work")) << "never the overlay's work directory";
  EXPECT_FALSE(fs::exists(dst / ".restore"));
  EXPECT_EQ(lstat_of(dst).st_mode & 07777, 0700u) << "a new fs/ is the WPAR's alone";
}

TEST_F(FsArchiveTest, RestoreReplacesWhatFsHeldAndEmptiesTheWorkDirectory) {
  fs::path src = dir_ / "a/fs", dst = dir_ / "b/fs", archive = dir_ / "fs.tar.zst";
  write(src / "upper/etc/kept", "from the archive\n");
  fs::create_directories(src / "tmp");
  ASSERT_TRUE(write_fs_archive(src, archive).has_value());
  write(dst / "upper/etc/stale", "written after the checkpoint\n");
  write(dst / "home/stale", "x");
  write(dst / "work/work/x", "x");
  auto restored = restore_fs_archive(archive, dst);
  ASSERT_TRUE(restored.has_value()) << restored.error().message;
  EXPECT_EQ(slurp(dst / "upper/etc/kept"), "from the archive\n");
  EXPECT_FALSE(fs::exists(dst / "upper/etc/stale"));
  EXPECT_FALSE(fs::exists(dst / "home")) << "the archive had no home: the state file is the truth";
  EXPECT_TRUE(fs::is_directory(dst / "tmp"));
  EXPECT_FALSE(fs::exists(dst / "work"));
  EXPECT_FALSE(fs::exists(dst / ".replaced"));
}

TEST_F(FsArchiveTest, AMissingArchiveIsExitFourteenAndAnUnwritableOneTwentyTwo) {
  auto missing = restore_fs_archive((dir_ / "none.tar.zst").string(), dir_ / "fs");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().exit_code, 14);
  auto unwritable = write_fs_archive(dir_ / "fs", (dir_ / "no/such/dir/fs.tar.zst").string());
  ASSERT_FALSE(unwritable.has_value());
  EXPECT_EQ(unwritable.error().exit_code, 22);
}

// A hand-made archive: one entry per (path, type, target); a regular file holds "x".
struct Crafted {
  std::string path;
  unsigned type = AE_IFREG;
  std::string target;  // symlink target or hard link target
  dev_t rdev = 0;
};

void craft(const fs::path& out, const std::vector<Crafted>& entries) {
  archive* a = archive_write_new();
  archive_write_set_format_pax(a);
  archive_write_add_filter_zstd(a);
  ASSERT_EQ(archive_write_open_filename(a, out.c_str()), ARCHIVE_OK);
  for (const auto& c : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, c.path.c_str());
    archive_entry_set_filetype(e, c.type);
    archive_entry_set_perm(e, 0644);
    if (c.type == AE_IFLNK) archive_entry_set_symlink(e, c.target.c_str());
    if (c.type == AE_IFREG && !c.target.empty()) archive_entry_set_hardlink(e, c.target.c_str());
    if (c.type == AE_IFCHR || c.type == AE_IFBLK) archive_entry_set_rdev(e, c.rdev);
    bool data = c.type == AE_IFREG && c.target.empty();
    archive_entry_set_size(e, data ? 1 : 0);
    archive_write_header(a, e);
    if (data) archive_write_data(a, "x", 1);
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

TEST_F(FsArchiveTest, RestoreRefusesPathsOutsideTheFileSystemsDeviceNodesAndLinkTricks) {
  fs::path dst = dir_ / "w/fs";
  write(dst / "upper/etc/before", "kept\n");
  const std::vector<std::vector<Crafted>> bad = {
      {{"../../escaped"}},
      {{"/tmp/absolute-escape"}},
      {{"upper/../../escaped"}},
      {{"work/work/x"}},
      {{".restore/x"}},
      {{"./work/x"}},
      {{"upper/sda", AE_IFBLK, "", makedev(8, 0)}},
      {{"upper/mem", AE_IFCHR, "", makedev(1, 1)}},
      {{"upper/shadow", AE_IFREG, "/etc/shadow"}},
      {{"upper/shadow", AE_IFREG, "../../etc/shadow"}},
      {{"upper/out", AE_IFLNK, dir_.string()}, {"upper/out/escaped"}},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    fs::path archive = dir_ / fmt::format("bad-{}.tar.zst", i);
    craft(archive, bad[i]);
    auto restored = restore_fs_archive(archive, dst);
    EXPECT_FALSE(restored.has_value()) << "archive " << i << " (" << bad[i].back().path << ")";
    if (!restored) {
      EXPECT_EQ(restored.error().exit_code, 4) << restored.error().message;
    }
  }
  EXPECT_FALSE(fs::exists(dir_ / "escaped"));
  EXPECT_FALSE(fs::exists(dir_ / "w/escaped"));
  EXPECT_FALSE(fs::exists("/tmp/absolute-escape"));
  EXPECT_EQ(slurp(dst / "upper/etc/before"), "kept\n") << "a refused archive leaves fs/ as it was";
  EXPECT_FALSE(fs::exists(dst / ".restore"));

  fs::path garbage = dir_ / "garbage.tar.zst";
  write(garbage, std::string(4096, 'g'));
  auto damaged = restore_fs_archive(garbage, dst);
  ASSERT_FALSE(damaged.has_value());
  EXPECT_EQ(damaged.error().exit_code, 4);
}

}  // namespace
}  // namespace wpm::checkpoint
