// The WPAR supervisor with real processes and cgroups (root).

#include "agents/runtime/supervisor.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace wpm::runtime {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

bool wait_until_gone(pid_t pid) {
  for (int i = 0; i < 500; ++i) {
    if (!supervisor_alive(pid)) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Supervisor : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for cgroups";
    static int counter = 0;
    root_ = fmt::format("{}/supervisor-{}-{}", WPM_TEST_TMP_DIR, ::getpid(), ++counter);
    fs::create_directories(root_);
    cgroup_ = fmt::format("wpm-test/sup-{}-{}", ::getpid(), counter);
  }
  void TearDown() override {
    if (root_.empty()) return;
    if (auto r = WparFiles(root_, "w").read_record(); r && supervisor_alive(r->supervisor_pid)) {
      ::kill(r->supervisor_pid, SIGQUIT);
      wait_for([&](const WparRecord& rec) { return rec.ended; }, 10s);
    }
    std::error_code ec;
    fs::remove_all(root_, ec);
    // The shared parent goes once no test uses it (rmdir fails while it has children).
    if (auto parent = CgroupSet::create(CgroupLayout::detect(), "wpm-test")) (void)parent->remove();
  }
  SupervisorLaunch launch(WparSpec spec) {
    WparFiles files(root_, "w");
    EXPECT_TRUE(files.create_dir().has_value());
    spec.name = "w";
    EXPECT_TRUE(files.write_spec(spec).has_value());
    return SupervisorLaunch{WPM_SUPERVISOR, root_, "w", cgroup_, 10s};
  }
  std::optional<WparRecord> wait_for(const std::function<bool(const WparRecord&)>& pred,
                                     std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = WparFiles(root_, "w").read_record();
      if (r && pred(*r)) return *r;
      std::this_thread::sleep_for(10ms);
    }
    return std::nullopt;
  }
  static WparSpec app(std::vector<std::string> command) {
    WparSpec s;
    s.type = WparType::kApplication;
    s.command = std::move(command);
    return s;
  }
  bool cgroup_gone() {
    auto layout = CgroupLayout::detect();
    for (const auto& [name, c] : layout.controllers) {
      if (fs::exists(c.mount + "/" + cgroup_)) return false;
    }
    return true;
  }

  std::string root_;
  std::string cgroup_;
};

TEST(CgroupLimits, AnApplicationWparsInitTakesOneProcessMoreThanItsLimit) {
  WparSpec spec;
  spec.limits.max_processes = 5;
  spec.limits.memory_bytes = 64u << 20;
  EXPECT_EQ(cgroup_limits(spec).max_processes, 6u) << "the init of its PID namespace counts";
  EXPECT_EQ(cgroup_limits(spec).memory_bytes, spec.limits.memory_bytes);
  spec.privileged = true;
  EXPECT_EQ(cgroup_limits(spec).max_processes, 5u) << "no init of its own";
  spec.privileged = false;
  spec.type = WparType::kSystem;
  EXPECT_EQ(cgroup_limits(spec).max_processes, 5u) << "a system WPAR's init is its own";
  spec.type = WparType::kApplication;
  spec.limits.max_processes.reset();
  EXPECT_FALSE(cgroup_limits(spec).max_processes);
}

TEST_F(Supervisor, ApplicationWparRecordsItsExitStatusAndConsoleLog) {
  auto started = start_supervisor(launch(app({"/bin/sh", "-c", "echo hello from the wpar; exit 7"})));
  ASSERT_TRUE(started.has_value()) << started.error().message;
  EXPECT_GT(started->workload_pid, 0);
  auto ended = wait_for([](const WparRecord& r) { return r.ended && r.state == WparState::kDefined; }, 10s);
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exit_code, 7);
  EXPECT_FALSE(ended->exit_signal.has_value());
  EXPECT_NE(slurp(WparFiles(root_, "w").console_path()).find("hello from the wpar"), std::string::npos);
  EXPECT_TRUE(cgroup_gone()) << "the WPAR's cgroups are removed when it ends";
}

TEST_F(Supervisor, WorkloadRunsInItsCgroupWithItsLimitsAndStopsGracefully) {
  WparSpec spec = app({"/bin/sleep", "30"});
  spec.limits.max_processes = 20;
  spec.limits.memory_bytes = 64ull << 20;
  auto started = start_supervisor(launch(spec));
  ASSERT_TRUE(started.has_value()) << started.error().message;
  ASSERT_EQ(started->state, WparState::kActive);
  std::string membership = slurp(fmt::format("/proc/{}/cgroup", started->workload_pid));
  EXPECT_NE(membership.find(cgroup_), std::string::npos) << membership;
  auto set = CgroupSet::create(CgroupLayout::detect(), cgroup_);
  ASSERT_TRUE(set.has_value());
  auto limits = set->read_limits();
  ASSERT_TRUE(limits.has_value());
  EXPECT_EQ(limits->max_processes, 21u) << "20, and the init of its PID namespace";
  EXPECT_EQ(limits->memory_bytes, 64ull << 20);

  ASSERT_TRUE(stop_supervisor(*started, StopMode::kGraceful).has_value());
  auto ended = wait_for([](const WparRecord& r) { return r.ended && r.state == WparState::kDefined; }, 10s);
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exit_signal, SIGTERM);
  EXPECT_TRUE(cgroup_gone());
}

TEST_F(Supervisor, ASecondSupervisorForARunningWparIsRefusedAndLeavesItsRecordAlone) {
  auto first = start_supervisor(launch(app({"/bin/sleep", "30"})));
  ASSERT_TRUE(first.has_value()) << first.error().message;
  auto second = start_supervisor(SupervisorLaunch{WPM_SUPERVISOR, root_, "w", cgroup_, 10s});
  ASSERT_FALSE(second.has_value());
  EXPECT_NE(second.error().message.find("runs already"), std::string::npos) << second.error().message;
  auto record = WparFiles(root_, "w").read_record();
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->state, WparState::kActive);
  EXPECT_EQ(record->supervisor_pid, first->supervisor_pid);
  EXPECT_EQ(::kill(first->workload_pid, 0), 0) << "the running workload was not touched";
}

TEST_F(Supervisor, TheConsoleLogIsCappedAtTwoFilesAndKeepsTheLatestOutput) {
  auto started = start_supervisor(
      launch(app({"/bin/sh", "-c", "head -c 20000000 /dev/zero; echo last-line-of-the-workload"})));
  ASSERT_TRUE(started.has_value()) << started.error().message;
  ASSERT_TRUE(wait_for([](const WparRecord& r) { return r.ended && r.state == WparState::kDefined; }, 20s));
  std::string console = WparFiles(root_, "w").console_path();
  std::error_code ec;
  EXPECT_LE(fs::file_size(console, ec), 8u << 20);
  EXPECT_LE(fs::file_size(console + ".1", ec), 8u << 20);
  EXPECT_TRUE(fs::exists(console + ".1")) << "20 MB of output rotated once at least";
  std::string text = slurp(console);
  EXPECT_TRUE(text.ends_with("last-line-of-the-workload\n")) << text.size();
}

TEST_F(Supervisor, GracefulStopTurnsForcedAfterTheTimeout) {
  WparSpec spec = app({"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"});
  spec.stop_timeout_s = 1;
  auto started = start_supervisor(launch(spec));
  ASSERT_TRUE(started.has_value()) << started.error().message;
  // Only once the trap is set does SIGTERM meet a workload that ignores it.
  for (int i = 0; i < 500 && slurp(WparFiles(root_, "w").console_path()).find("ready") == std::string::npos; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(stop_supervisor(*started, StopMode::kGraceful).has_value());
  auto ended = wait_for([](const WparRecord& r) { return r.ended && r.state == WparState::kDefined; }, 10s);
  ASSERT_TRUE(ended.has_value()) << "the workload ignored SIGTERM and was not killed";
  EXPECT_EQ(ended->exit_signal, SIGKILL);
  EXPECT_GE(ended->ended_at_ns - started->started_at_ns, 900'000'000) << "killed before the timeout";
}

// kill -9 of the agent under a running application WPAR that then ends: a
// restarted agent finds the exit status in the record.
TEST_F(Supervisor, TheWparOutlivesAKilledAgentAndItsExitStatusIsFound) {
  SupervisorLaunch l = launch(app({"/bin/sh", "-c", "sleep 1; exit 3"}));
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  pid_t agent = ::fork();
  if (agent == 0) {
    auto r = start_supervisor(l);
    char ok = r.has_value() ? 'y' : 'n';
    (void)::write(report[1], &ok, 1);
    ::pause();
    ::_exit(0);
  }
  char ok = 0;
  ASSERT_EQ(::read(report[0], &ok, 1), 1);
  ASSERT_EQ(ok, 'y');
  ::kill(agent, SIGKILL);
  ::waitpid(agent, nullptr, 0);
  auto running = WparFiles(root_, "w").read_record();
  ASSERT_TRUE(running.has_value());
  EXPECT_TRUE(supervisor_alive(running->supervisor_pid)) << "the supervisor died with the agent";
  // The "restarted agent": re-attach by reading the record.
  auto ended = wait_for([](const WparRecord& r) { return r.ended && r.state == WparState::kDefined; }, 10s);
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exit_code, 3);
  EXPECT_TRUE(wait_until_gone(ended->supervisor_pid));
}

TEST_F(Supervisor, ACommandThatCannotRunLeavesTheWparBrokenWithTheReason) {
  auto started = start_supervisor(launch(app({"/nonexistent/wpm-command"})));
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find("cannot run '/nonexistent/wpm-command'"), std::string::npos)
      << started.error().message;
  auto record = WparFiles(root_, "w").read_record();
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->state, WparState::kBroken);
  EXPECT_TRUE(cgroup_gone());
}

}  // namespace
}  // namespace wpm::runtime
