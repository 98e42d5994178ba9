// Cooperative checkpoint and restart with real processes, cgroups and the
// wpm-demo-counter workload (root).

#include "agents/checkpoint/cooperative.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace wpm::checkpoint {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using runtime::WparState;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

class Cooperative : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for cgroups";
    static int counter = 0;
    dir_ = fmt::format("{}/checkpoint-{}-{}", WPM_TEST_TMP_DIR, ::getpid(), ++counter);
    root_ = dir_ + "/wpars";
    fs::create_directories(root_);
    cgroup_ = fmt::format("wpm-test/ckpt-{}-{}", ::getpid(), counter);
    out_ = dir_ + "/count.txt";
  }
  void TearDown() override {
    if (dir_.empty()) return;
    auto set = runtime::CgroupSet::create(runtime::CgroupLayout::detect(), cgroup_);
    if (set) (void)set->thaw();
    if (auto r = files().read_record(); r && runtime::supervisor_alive(r->supervisor_pid)) {
      ::kill(r->supervisor_pid, SIGQUIT);
      wait_until([&] { return !runtime::supervisor_alive(r->supervisor_pid); }, 10s);
    }
    if (set) (void)set->remove();  // create() above made it if it was gone
    std::error_code ec;
    fs::remove_all(dir_, ec);
    if (auto parent = runtime::CgroupSet::create(runtime::CgroupLayout::detect(), "wpm-test")) {
      (void)parent->remove();
    }
  }
  runtime::WparFiles files() const { return runtime::WparFiles(root_, "w"); }
  runtime::SupervisorLaunch launch() const {
    return runtime::SupervisorLaunch{WPM_SUPERVISOR, root_, "w", cgroup_, 10s};
  }
  runtime::WparRecord start(std::vector<std::string> command, bool checkpointable = true) {
    runtime::WparSpec spec;
    spec.name = "w";
    spec.command = std::move(command);
    spec.checkpointable = checkpointable;
    spec.env["WPM_STATE_DIR"] = trigger_dir(root_, "w");
    EXPECT_TRUE(files().create_dir().has_value());
    EXPECT_TRUE(files().write_spec(spec).has_value());
    auto r = runtime::start_supervisor(launch());
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r.value_or(runtime::WparRecord{});
  }
  std::vector<std::string> counter(uint64_t state_bytes = 0) const {
    return {WPM_DEMO_COUNTER, "--out", out_, "--interval-ms", "20", "--state-bytes",
            std::to_string(state_bytes)};
  }
  uint64_t count() const {
    std::string s = slurp(out_);
    return s.empty() ? 0 : std::stoull(s);
  }
  CheckpointRequest request(After after, std::chrono::milliseconds timeout = 10s) const {
    return CheckpointRequest{root_, "w", cgroup_, dir_ + "/statefile", after, timeout};
  }

  std::string dir_, root_, cgroup_, out_;
};

TEST_F(Cooperative, CheckpointThenRestartContinuesFromTheSavedCountWithStateIntact) {
  start(counter(1 << 20));
  ASSERT_TRUE(wait_until([&] { return count() >= 30; }, 10s));
  auto done = checkpoint(request(After::kKill));
  ASSERT_TRUE(done.has_value()) << done.error().message;
  EXPECT_EQ(done->files, 3u) << "count, state.bin, state.meta";
  EXPECT_GT(done->bytes, 1u << 20);
  ASSERT_TRUE(wait_until([&] { return files().read_record().value_or(runtime::WparRecord{}).ended; }, 10s));
  uint64_t saved = std::stoull(slurp(dir_ + "/statefile/state/count"));
  EXPECT_GE(saved, 30u);
  EXPECT_NE(slurp(dir_ + "/statefile/mcr.log").find("checkpoint_done"), std::string::npos);

  fs::remove(out_);
  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  ASSERT_TRUE(restarted.has_value()) << restarted.error().message;
  ASSERT_TRUE(wait_until([&] { return count() > 0; }, 10s));
  uint64_t first = count();
  EXPECT_GT(first, saved) << "the restored workload continues after the saved count";
  EXPECT_LT(first, saved + 40) << "it did not start over";
  // The counter exits 3 when its restored state fails its checks: it still runs.
  std::this_thread::sleep_for(100ms);
  auto record = files().read_record();
  ASSERT_TRUE(record.has_value());
  EXPECT_FALSE(record->ended) << slurp(files().console_path());
}

TEST_F(Cooperative, ASystemWparCheckpointsThroughItsInitAndRestartsFromTheSavedCount) {
  runtime::WparSpec spec;
  spec.name = "w";
  spec.type = runtime::WparType::kSystem;
  spec.command = counter(4096);
  spec.checkpointable = true;
  spec.env["WPM_STATE_DIR"] = trigger_dir(root_, "w");
  ASSERT_TRUE(files().create_dir().has_value());
  ASSERT_TRUE(files().write_spec(spec).has_value());
  auto started = runtime::start_supervisor(launch());
  ASSERT_TRUE(started.has_value()) << started.error().message;
  // Inside the WPAR the counter writes into its private root: the overlay's upper layer.
  std::string inside = files().dir() + "/fs/upper" + out_;
  auto count_inside = [&] {
    std::string s = slurp(inside);
    return s.empty() ? uint64_t{0} : std::stoull(s);
  };
  ASSERT_TRUE(wait_until([&] { return count_inside() >= 20; }, 10s)) << slurp(files().console_path());
  auto done = checkpoint(request(After::kKill));
  ASSERT_TRUE(done.has_value()) << done.error().message << "\n" << slurp(files().console_path());
  uint64_t saved = std::stoull(slurp(dir_ + "/statefile/state/count"));
  EXPECT_GE(saved, 20u);
  ASSERT_TRUE(wait_until([&] { return files().read_record().value_or(runtime::WparRecord{}).ended; }, 10s));

  fs::remove(inside);
  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  ASSERT_TRUE(restarted.has_value()) << restarted.error().message;
  ASSERT_TRUE(wait_until([&] { return count_inside() > 0; }, 10s)) << slurp(files().console_path());
  EXPECT_GT(count_inside(), saved);
  EXPECT_LT(count_inside(), saved + 40) << "it did not start over";
}

TEST_F(Cooperative, AWorkloadThatNeverCompletesGetsExitSixAndStaysActive) {
  auto running = start({"/bin/sh", "-c", "trap '' USR1; echo ready; while :; do sleep 0.1; done"});
  ASSERT_TRUE(wait_until([&] { return slurp(files().console_path()).find("ready") != std::string::npos; }, 10s));
  auto done = checkpoint(request(After::kPause, 500ms));
  ASSERT_FALSE(done.has_value());
  EXPECT_EQ(done.error().exit_code, 6);
  auto record = files().read_record();
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->state, WparState::kActive);
  EXPECT_EQ(::kill(running.workload_pid, 0), 0) << "the workload keeps running";
  auto set = runtime::CgroupSet::create(runtime::CgroupLayout::detect(), cgroup_);
  ASSERT_TRUE(set.has_value());
  EXPECT_FALSE(set->frozen().value_or(true));
}

TEST_F(Cooperative, PausedWparMakesNoProgressUntilResumed) {
  start(counter());
  ASSERT_TRUE(wait_until([&] { return count() >= 5; }, 10s));
  auto done = checkpoint(request(After::kPause));
  ASSERT_TRUE(done.has_value()) << done.error().message;
  EXPECT_EQ(files().read_record()->state, WparState::kPaused);
  uint64_t at_pause = count();
  std::this_thread::sleep_for(200ms);  // the observation window
  EXPECT_EQ(count(), at_pause);
  ASSERT_TRUE(resume(root_, "w", cgroup_).has_value());
  EXPECT_TRUE(wait_until([&] { return count() > at_pause; }, 10s));
  EXPECT_EQ(files().read_record()->state, WparState::kActive);
}

TEST_F(Cooperative, FreezeThenCheckpointOfTheFrozenWparSavesTheState) {
  start(counter(8192));
  ASSERT_TRUE(wait_until([&] { return count() >= 10; }, 10s));
  ASSERT_TRUE(freeze(request(After::kContinue)).has_value());
  EXPECT_EQ(files().read_record()->state, WparState::kFrozen);
  EXPECT_EQ(frozen_state_dir(root_, "w"), dir_ + "/statefile");
  auto done = checkpoint(request(After::kKill));
  ASSERT_TRUE(done.has_value()) << done.error().message;
  EXPECT_EQ(done->files, 3u) << "the state the workload wrote at the freeze";
  EXPECT_TRUE(files().read_record()->ended) << "-k returns once the WPAR has ended";
  uint64_t saved = std::stoull(slurp(dir_ + "/statefile/state/count"));
  fs::remove(out_);
  ASSERT_TRUE(restart(RestartRequest{launch(), dir_ + "/statefile", false}).has_value());
  ASSERT_TRUE(wait_until([&] { return count() > 0; }, 10s));
  EXPECT_GT(count(), saved);
}

TEST_F(Cooperative, ACheckpointThatTimedOutCanRunAgainIntoTheSameDirectory) {
  start({"/bin/sh", "-c", "trap '' USR1; echo ready; while :; do sleep 0.1; done"});
  ASSERT_TRUE(wait_until([&] { return slurp(files().console_path()).find("ready") != std::string::npos; }, 10s));
  EXPECT_EQ(checkpoint(request(After::kContinue, 200ms)).error().exit_code, 6);
  EXPECT_EQ(checkpoint(request(After::kContinue, 200ms)).error().exit_code, 6)
      << "the leftover mcr.log does not make the directory 'not empty' (23)";
}

TEST_F(Cooperative, RefusalsCarryTheSeedsExitCodes) {
  start(counter(), /*checkpointable=*/false);
  auto not_ckpt = checkpoint(request(After::kContinue));
  ASSERT_FALSE(not_ckpt.has_value());
  EXPECT_EQ(not_ckpt.error().exit_code, 19);

  CheckpointRequest unknown = request(After::kContinue);
  unknown.name = "nope";
  EXPECT_EQ(checkpoint(unknown).error().exit_code, 16);
}

TEST_F(Cooperative, StateDirectoryMustBeEmptyAndAbsolute) {
  start(counter());
  fs::create_directories(dir_ + "/statefile");
  std::ofstream(dir_ + "/statefile/leftover") << "x";
  auto busy = checkpoint(request(After::kContinue));
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().exit_code, 23);
  CheckpointRequest relative = request(After::kContinue);
  relative.state_dir = "relative/dir";
  EXPECT_EQ(checkpoint(relative).error().exit_code, 21);
}

TEST_F(Cooperative, RestartRefusesAStateFileThatDoesNotMatchItsManifest) {
  start(counter(4096));
  ASSERT_TRUE(wait_until([&] { return count() >= 3; }, 10s));
  ASSERT_TRUE(checkpoint(request(After::kKill)).has_value());
  ASSERT_TRUE(wait_until([&] { return files().read_record().value_or(runtime::WparRecord{}).ended; }, 10s));
  {
    std::fstream f(dir_ + "/statefile/state/state.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x42');
  }
  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  ASSERT_FALSE(restarted.has_value());
  EXPECT_NE(restarted.error().message.find("does not match its manifest"), std::string::npos);
  fs::remove(dir_ + "/statefile/state/count");
  EXPECT_EQ(restart(RestartRequest{launch(), dir_ + "/statefile", false}).error().exit_code, 14);
  EXPECT_TRUE(files().read_record()->ended) << "nothing was started";
}

}  // namespace
}  // namespace wpm::checkpoint
