// Disk full: the data directory on a small tmpfs. Appends fail with a clear
// error, nothing unacknowledged appears later, nothing acknowledged is lost.

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>

#include "tests/integration/helpers.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class Tmpfs {
 public:
  explicit Tmpfs(std::string path) : path_(std::move(path)) { fs::create_directories(path_); }
  bool mount(const std::string& size) {
    mounted_ = ::mount("tmpfs", path_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    return mounted_;
  }
  bool resize(const std::string& size) {
    return ::mount("tmpfs", path_.c_str(), "tmpfs", MS_REMOUNT, ("size=" + size).c_str()) == 0;
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool mounted_ = false;
};

TEST(DiskFull, AppendsFailClearlyAndNothingAcknowledgedIsLost) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  TempDir dir;
  Tmpfs fs_small(dir / "small");
  if (!fs_small.mount("24m")) GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  std::string data = fs_small.path() + "/data";
  Wpmd wpmd(Wpmd::Options{data, {}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  std::string acks = dir / "acks";

  // Fill the file system through the real endpoint until the store refuses.
  auto fill = wpm(wpmd, {"log", "append", "--synthetic", "1000000", "--batch", "200",
                         "--payload-bytes", "2000", "--ack-file", acks},
                  180s);
  EXPECT_EQ(fill.exit_code, 1) << fill.out << fill.err;
  EXPECT_NE(fill.err.find("No space left on device"), std::string::npos) << fill.err;
  EXPECT_NE(fill.err.find("read-only"), std::string::npos) << fill.err;
  size_t acked = read_acks(acks).size();
  ASSERT_GT(acked, 0u);

  // Later appends are refused the same way; reads keep working.
  auto more = wpm(wpmd, {"log", "append", "--synthetic", "1"});
  EXPECT_EQ(more.exit_code, 1);
  EXPECT_NE(more.err.find("read-only"), std::string::npos) << more.err;
  auto stats = wpm(wpmd, {"log", "stats", "-o", "json"});
  EXPECT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_NE(stats.out.find("\"readOnly\": true"), std::string::npos) << stats.out;
  EXPECT_NE(wpmd.log().find("store_read_only"), std::string::npos);

  // Free space, restart: exactly the acknowledged events, verified.
  wpmd.stop();
  ASSERT_TRUE(fs_small.resize("512m"));
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  zmq::context_t ctx(1);
  bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options());
  std::vector<Event> events = read_all(client);
  EXPECT_EQ(events.size(), acked) << "nothing unacknowledged may appear after a failed write";
  for (const Ack& a : read_acks(acks)) {
    ASSERT_LE(a.sequence, events.size());
    ASSERT_EQ(events[a.sequence - 1].idempotency_key, a.key);
  }
  auto verify = wpm(wpmd, {"log", "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  auto after = wpm(wpmd, {"log", "append", "--synthetic", "10"});
  EXPECT_EQ(after.exit_code, 0) << after.err;
  wpmd.stop();
}

}  // namespace
}  // namespace wpm::testing
