// Real cgroups on this host (root). Skips only where the host lacks a
// controller the test needs.

#include "agents/runtime/cgroups.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

namespace wpm::runtime {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return condition();
}

// Run in a process of a group whose devices are limited to the minimal /dev:
// the bits of what held (15 = all).
int probe_devices(const std::string& scratch) {
  int held = 0;
  int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd >= 0) held |= 1, ::close(fd);
  fd = ::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && errno == EPERM) held |= 2;
  if (fd >= 0) ::close(fd);
  std::string kmsg = scratch + "/kmsg", null = scratch + "/null";
  if (::mknod(kmsg.c_str(), S_IFCHR | 0600, makedev(1, 11)) != 0 && errno == EPERM) held |= 4;
  if (::mknod(null.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) held |= 8;
  return held;
}

// /dev/kmsg opens here (as root, outside any limit): else the probe proves nothing.
bool host_device_opens() {
  int fd = ::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

class Cgroups : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create cgroups";
    layout_ = CgroupLayout::detect();
    for (const char* c : {"cpu", "memory", "pids"}) {
      if (!layout_.controllers.contains(c)) GTEST_SKIP() << "no " << c << " controller on this host";
    }
    static int counter = 0;
    auto set = CgroupSet::create(layout_, fmt::format("wpm-test/{}-{}", ::getpid(), ++counter));
    ASSERT_TRUE(set.has_value()) << set.error().message;
    set_.emplace(std::move(*set));
  }
  void TearDown() override {
    for (pid_t p : children_) ::kill(p, SIGKILL);
    if (set_) (void)set_->thaw();
    for (pid_t p : children_) ::waitpid(p, nullptr, 0);
    if (set_) {
      bool gone = wait_until([&] { return set_->processes().value_or(std::vector<pid_t>{1}).empty(); }, 5s);
      EXPECT_TRUE(gone);
      auto r = set_->remove();
      EXPECT_TRUE(r.has_value()) << r.error().message;
      // The shared parent goes once no test uses it (rmdir fails while it has children).
      if (auto parent = CgroupSet::create(layout_, "wpm-test")) (void)parent->remove();
    }
  }
  // Forks a child that joins the group first, then runs `body`.
  pid_t child_in_group(const std::function<int()>& body) {
    int ready[2];
    EXPECT_EQ(::pipe(ready), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      char c;
      ::close(ready[1]);
      if (::read(ready[0], &c, 1) != 1) ::_exit(100);
      ::_exit(body());
    }
    ::close(ready[0]);
    auto r = set_->add_process(pid);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(::write(ready[1], "g", 1), 1);
    ::close(ready[1]);
    children_.push_back(pid);
    return pid;
  }

  CgroupLayout layout_;
  std::optional<CgroupSet> set_;
  std::vector<pid_t> children_;
};

TEST_F(Cgroups, LimitsAreWrittenAndReadBack) {
  ResourceLimits limits;
  limits.cpu_shares = 512;
  limits.cpu_limit_percent = 50;
  limits.memory_bytes = 256ull << 20;
  limits.max_processes = 20;
  auto r = set_->apply(limits);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  auto back = set_->read_limits();
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(back->cpu_limit_percent, 50u);
  EXPECT_EQ(back->memory_bytes, 256ull << 20);
  EXPECT_EQ(back->max_processes, 20u);
  if (layout_.controllers.at("cpu").version == 1) {
    EXPECT_EQ(back->cpu_shares, 512u);
  }
}

TEST_F(Cgroups, WithAProcessLimitOfTwentyTheTwentyFirstForkFails) {
  ResourceLimits limits;
  limits.max_processes = 20;
  ASSERT_TRUE(set_->apply(limits).has_value());
  pid_t pid = child_in_group([] {
    // This process is the first of the 20; count the forks that succeed.
    int made = 0;
    int hold[2];
    if (::pipe(hold) != 0) return 101;
    for (int i = 0; i < 30; ++i) {
      pid_t p = ::fork();
      if (p == 0) {
        char c;
        ::close(hold[1]);
        (void)::read(hold[0], &c, 1);  // wait until the parent exits
        ::_exit(0);
      }
      if (p > 0) ++made;
    }
    return made;
  });
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 19) << "19 children + the parent = the 20 allowed";
  children_.clear();
}

TEST_F(Cgroups, FrozenGroupMakesNoProgressAndContinuesAfterThaw) {
  if (!layout_.controllers.contains("freezer") && !layout_.v2_mount) GTEST_SKIP() << "no freezer";
  auto* counter = static_cast<std::atomic<uint64_t>*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(counter, MAP_FAILED);
  counter->store(0);
  child_in_group([counter] {
    for (uint64_t i = 0; i < (1ull << 62); ++i) {  // bounded in practice by SIGKILL in teardown
      counter->fetch_add(1);
      ::usleep(1000);
    }
    return 0;
  });
  ASSERT_TRUE(wait_until([&] { return counter->load() > 5; }, 5s));
  ASSERT_TRUE(set_->freeze().has_value());
  ASSERT_TRUE(wait_until([&] { return set_->frozen().value_or(false); }, 5s));
  uint64_t at_freeze = counter->load();
  std::this_thread::sleep_for(200ms);  // the observation window: nothing may move
  EXPECT_EQ(counter->load(), at_freeze) << "a frozen group made progress";
  ASSERT_TRUE(set_->thaw().has_value());
  EXPECT_TRUE(wait_until([&] { return counter->load() > at_freeze + 5; }, 5s))
      << "no progress after thaw";
  EXPECT_FALSE(set_->frozen().value_or(true));
  ::munmap(counter, 4096);
}

TEST_F(Cgroups, AGroupThatForksAllTheTimeFreezesEveryTime) {
  if (!layout_.controllers.contains("freezer") && !layout_.v2_mount) GTEST_SKIP() << "no freezer";
  child_in_group([] {
    for (uint64_t i = 0; i < (1ull << 62); ++i) {  // bounded in practice by SIGKILL in teardown
      pid_t p = ::fork();
      if (p == 0) ::_exit(0);
      if (p > 0) ::waitpid(p, nullptr, 0);
    }
    return 0;
  });
  for (int round = 0; round < 30; ++round) {
    auto f = set_->freeze_and_wait(10s);
    ASSERT_TRUE(f.has_value()) << "round " << round << ": " << f.error().message;
    EXPECT_TRUE(set_->frozen().value_or(false));
    ASSERT_TRUE(set_->thaw().has_value());
    std::this_thread::sleep_for(2ms);
  }
}

TEST_F(Cgroups, ALimitedGroupOpensAndMakesOnlyTheMinimalDevices) {
  if (!host_device_opens()) GTEST_SKIP() << "/dev/kmsg does not open on this host even for root";
  ASSERT_TRUE(set_->restrict_devices(minimal_devices()).has_value());
  std::string scratch = fs::temp_directory_path() / fmt::format("wpm-devices-{}", ::getpid());
  fs::create_directories(scratch);
  pid_t pid = child_in_group([&] { return probe_devices(scratch); });
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  children_.clear();
  fs::remove_all(scratch);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 15) << "1 /dev/null opens, 2 /dev/kmsg refused, 4 making kmsg refused, "
                                        "8 making null allowed";
}

// The device program of a cgroup v2 tree, tested on its own v2 group even
// where the v1 devices controller does the work for WPARs (a hybrid host).
TEST(DeviceProgram, AGroupWithTheProgramOpensAndMakesOnlyTheMinimalDevices) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to attach a device program";
  auto layout = CgroupLayout::detect();
  if (!layout.v2_mount) GTEST_SKIP() << "no cgroup v2 tree on this host";
  if (!host_device_opens()) GTEST_SKIP() << "/dev/kmsg does not open on this host even for root";
  std::string dir = *layout.v2_mount + fmt::format("/wpm-test-devices-{}", ::getpid());
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << std::strerror(errno);
  auto attached = attach_device_program(dir, minimal_devices());
  ASSERT_TRUE(attached.has_value()) << attached.error().message;
  std::string scratch = fs::temp_directory_path() / fmt::format("wpm-devprog-{}", ::getpid());
  fs::create_directories(scratch);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    char c;
    ::close(ready[1]);
    if (::read(ready[0], &c, 1) != 1) ::_exit(100);
    ::_exit(probe_devices(scratch));
  }
  ::close(ready[0]);
  {
    std::ofstream procs(dir + "/cgroup.procs");
    procs << pid;
  }
  EXPECT_EQ(::write(ready[1], "g", 1), 1);
  ::close(ready[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  fs::remove_all(scratch);
  EXPECT_EQ(::rmdir(dir.c_str()), 0) << std::strerror(errno);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 15) << "1 /dev/null opens, 2 /dev/kmsg refused, 4 making kmsg refused, "
                                        "8 making null allowed";
}

TEST(DeviceRules, TheV1ControllerReadsTheRulesAsWritten) {
  EXPECT_EQ(v1_rule_text({'c', 1, 3, "rwm"}), "c 1:3 rwm");
  EXPECT_EQ(v1_rule_text({'c', 136, std::nullopt, "rw"}), "c 136:* rw");
  EXPECT_EQ(v1_rule_text({'b', std::nullopt, std::nullopt, "m"}), "b *:* m");
}

TEST_F(Cgroups, CpuLimitOfFiftyPercentShowsInCpuAccounting) {
  ResourceLimits limits;
  limits.cpu_limit_percent = 50;
  ASSERT_TRUE(set_->apply(limits).has_value());
  child_in_group([] {
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < (1ull << 62); ++i) x = x + i;  // bounded by SIGKILL in teardown
    return 0;
  });
  auto before = set_->cpu_usage_ns();
  ASSERT_TRUE(before.has_value()) << before.error().message;
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(1s);  // the measurement window
  auto after = set_->cpu_usage_ns();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(after.has_value());
  double share = static_cast<double>(*after - *before) / 1e9 / wall;
  EXPECT_GE(share, 0.30);
  EXPECT_LE(share, 0.70);
}

TEST(CgroupMath, SharesMapToWeights) {
  EXPECT_EQ(shares_to_weight(2), 1u);
  EXPECT_EQ(shares_to_weight(1024), 39u);
  EXPECT_EQ(shares_to_weight(262144), 10000u);
  EXPECT_EQ(shares_to_weight(0), 1u) << "clamped";
}

TEST(CgroupPaths, BadRelativePathsAreRefused) {
  CgroupLayout layout;
  EXPECT_FALSE(CgroupSet::create(layout, "").has_value());
  EXPECT_FALSE(CgroupSet::create(layout, "/abs").has_value());
  EXPECT_FALSE(CgroupSet::create(layout, "a/../../etc").has_value());
}

}  // namespace
}  // namespace wpm::runtime
