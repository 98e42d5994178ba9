// Cooperative checkpoint and restart with real processes, cgroups and the
// wpm-demo-counter workload (root).

#include "agents/checkpoint/cooperative.h"
#include "agents/runtime/system_wpar.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
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
    return start_spec(std::move(spec));
  }
  // Writes `spec` (with the trigger directory) and starts its supervisor.
  runtime::WparRecord start_spec(runtime::WparSpec spec) {
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
  // A checkpointable system WPAR whose init runs `sh -c SCRIPT` and then the
  // counter, writing its count to /home/count.txt.
  runtime::WparRecord start_system(const std::string& script, uint64_t state_bytes = 4096) {
    runtime::WparSpec spec;
    spec.name = "w";
    spec.type = runtime::WparType::kSystem;
    spec.command = {"/bin/sh",
                    "-c",
                    script + "\nexec \"$@\"",
                    "sh",
                    WPM_DEMO_COUNTER,
                    "--out",
                    "/home/count.txt",
                    "--interval-ms",
                    "20",
                    "--state-bytes",
                    std::to_string(state_bytes)};
    spec.checkpointable = true;
    // Changing the host's files in its upper layer (kChangeFileSystems) takes
    // a root that owns them inside: its own user namespace where the host can
    // idmap its layers, else (an overlayfs root) a privileged WPAR.
    if (auto idmap = runtime::can_idmap_host_layers(); !idmap) {
      std::printf("the host's layers cannot be idmapped here (%s): a privileged WPAR changes them\n",
                  idmap.error().message.c_str());
      spec.privileged = true;
    }
    return start_spec(std::move(spec));
  }
  // The counter's count as the system WPAR writes it: in its private /home.
  uint64_t count_inside() const {
    std::string s = slurp(files().dir() + "/fs/home/count.txt");
    return s.empty() ? 0 : std::stoull(s);
  }
  bool ended() const { return files().read_record().value_or(runtime::WparRecord{}).ended; }
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
  EXPECT_NE(slurp(dir_ + "/statefile/mcr.log").find("checkpoint_frozen"), std::string::npos);
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
  start_system(":");
  ASSERT_TRUE(wait_until([&] { return count_inside() >= 20; }, 10s)) << slurp(files().console_path());
  auto done = checkpoint(request(After::kKill));
  ASSERT_TRUE(done.has_value()) << done.error().message << "\n" << slurp(files().console_path());
  uint64_t saved = std::stoull(slurp(dir_ + "/statefile/state/count"));
  EXPECT_GE(saved, 20u);
  ASSERT_TRUE(wait_until([&] { return ended(); }, 10s));

  fs::remove(files().dir() + "/fs/home/count.txt");
  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  ASSERT_TRUE(restarted.has_value()) << restarted.error().message;
  // The restored file systems bring back the count file as it was at the freeze.
  ASSERT_TRUE(wait_until([&] { return count_inside() > saved; }, 10s))
      << slurp(files().console_path());
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
  char original = 0;
  {
    std::fstream f(dir_ + "/statefile/state/state.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    f.get(original);
    f.seekp(100);
    f.put(static_cast<char>(original ^ 0x42));
  }
  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  ASSERT_FALSE(restarted.has_value());
  EXPECT_EQ(restarted.error().exit_code, 25) << "corruption detected in the state file";
  EXPECT_NE(restarted.error().message.find("does not match its manifest"), std::string::npos);
  {
    // Mended again: a missing file alone (whatever order the manifest lists them in) is 14.
    std::fstream f(dir_ + "/statefile/state/state.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put(original);
  }
  fs::remove(dir_ + "/statefile/state/count");
  EXPECT_EQ(restart(RestartRequest{launch(), dir_ + "/statefile", false}).error().exit_code, 14);
  EXPECT_TRUE(files().read_record()->ended) << "nothing was started";
}

// What the system WPAR below does on its first start: a file in /etc, /home
// and /tmp, a lower-layer file deleted (a whiteout) and a lower-layer
// directory replaced (an opaque directory). After a restart it reports what it
// sees into /tmp/seen.
constexpr char kChangeFileSystems[] = R"(
if [ -z "$WPM_RESTORE_DIR" ]; then
  echo etc > /etc/wpm-ckpt && echo home > /home/wpm-ckpt && echo tmp > /tmp/wpm-ckpt &&
  ln -s /etc/wpm-ckpt /home/wpm-link && ln /home/wpm-ckpt /home/wpm-hard &&
  rm /etc/issue && rm -rf /etc/default && mkdir /etc/default && echo only > /etc/default/wpm-only ||
  exit 9
else
  { cat /etc/wpm-ckpt /home/wpm-ckpt /tmp/wpm-ckpt /home/wpm-link; ls /etc/default
    [ /home/wpm-ckpt -ef /home/wpm-hard ] && echo hard-linked
    [ -e /etc/issue ] && echo issue-back || echo issue-gone; } > /tmp/seen.tmp 2>&1
  mv /tmp/seen.tmp /tmp/seen
fi)";
constexpr char kSeenAfterRestart[] = "etc\nhome\ntmp\netc\nwpm-only\nhard-linked\nissue-gone\n";

TEST_F(Cooperative, ASystemWparsFileSystemsTravelInItsStateFileToAHostThatNeverHadIt) {
  ASSERT_TRUE(fs::exists("/etc/issue") && fs::exists("/etc/default")) << "the host's lower layer";
  start_system(kChangeFileSystems);
  ASSERT_TRUE(wait_until([&] { return count_inside() >= 20; }, 10s))
      << slurp(files().console_path());
  auto done = checkpoint(request(After::kKill));
  ASSERT_TRUE(done.has_value()) << done.error().message << "\n" << slurp(files().console_path());
  EXPECT_GT(done->fs_entries, 5u);
  EXPECT_EQ(done->fs_archive_bytes, fs::file_size(dir_ + "/statefile/fs.tar.zst"));
  std::ifstream manifest_in(dir_ + "/statefile/manifest.json");
  auto manifest = nlohmann::json::parse(manifest_in);
  EXPECT_EQ(manifest["filesystems"]["path"], "fs.tar.zst");
  EXPECT_EQ(manifest["filesystems"]["bytes"], done->fs_archive_bytes);
  EXPECT_EQ(manifest["filesystems"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_NE(slurp(dir_ + "/statefile/mcr.log").find("checkpoint_filesystems"), std::string::npos);
  uint64_t saved = std::stoull(slurp(dir_ + "/statefile/state/count"));
  ASSERT_TRUE(wait_until([&] { return ended(); }, 10s));

  // Another host: nothing of the WPAR here but the state file.
  fs::remove_all(files().dir());
  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  ASSERT_TRUE(restarted.has_value()) << restarted.error().message;
  ASSERT_TRUE(wait_until([&] { return count_inside() > saved; }, 10s))
      << slurp(files().console_path());
  EXPECT_LT(count_inside(), saved + 40) << "it did not start over";
  std::string seen_path = files().dir() + "/fs/tmp/seen";
  ASSERT_TRUE(wait_until([&] { return fs::exists(seen_path); }, 10s));
  EXPECT_EQ(slurp(seen_path), kSeenAfterRestart) << "as the WPAR sees its restored root";
  std::string upper = files().dir() + "/fs/upper";
  EXPECT_EQ(slurp(upper + "/etc/wpm-ckpt"), "etc\n");
  struct stat st {};
  ASSERT_EQ(::lstat((upper + "/etc/issue").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == 0) << "the whiteout";
  EXPECT_NE(slurp(dir_ + "/statefile/mcr.log").find("restart_filesystems"), std::string::npos);
}

TEST_F(Cooperative, RestartRefusesATamperedFileSystemsArchiveWithExitFourteen) {
  start_system(kChangeFileSystems);
  ASSERT_TRUE(wait_until([&] { return count_inside() >= 3; }, 10s))
      << slurp(files().console_path());
  ASSERT_TRUE(checkpoint(request(After::kKill)).has_value());
  ASSERT_TRUE(wait_until([&] { return ended(); }, 10s));
  std::string archive = dir_ + "/statefile/fs.tar.zst";
  {
    std::fstream f(archive, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(fs::file_size(archive) / 2));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(fs::file_size(archive) / 2));
    f.put(static_cast<char>(c ^ 0x01));
  }
  std::ofstream(files().dir() + "/fs/home/after") << "x";
  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  ASSERT_FALSE(restarted.has_value());
  EXPECT_EQ(restarted.error().exit_code, 25) << "corruption detected in the state file";
  EXPECT_NE(restarted.error().message.find("does not match its manifest"), std::string::npos)
      << restarted.error().message;
  EXPECT_TRUE(ended()) << "nothing was started";
  EXPECT_TRUE(fs::exists(files().dir() + "/fs/home/after")) << "fs/ was not touched";
  fs::remove(archive);
  EXPECT_EQ(restart(RestartRequest{launch(), dir_ + "/statefile", false}).error().exit_code, 14);
}

TEST_F(Cooperative, ResumeAfterAPauseLeavesTheFileSystemsButARestartPutsTheCheckpointedOnesBack) {
  start_system(kChangeFileSystems);
  ASSERT_TRUE(wait_until([&] { return count_inside() >= 3; }, 10s))
      << slurp(files().console_path());
  ASSERT_TRUE(checkpoint(request(After::kPause)).has_value());
  std::string home = files().dir() + "/fs/home";
  std::ofstream(home + "/after-pause") << "x";
  ASSERT_TRUE(resume(root_, "w", cgroup_).has_value());
  EXPECT_TRUE(fs::exists(home + "/after-pause")) << "resume never touches the file systems";
  EXPECT_EQ(slurp(home + "/wpm-ckpt"), "home\n");
  // Ended without a checkpoint: its file systems moved on since the state file.
  auto record = files().read_record();
  ASSERT_TRUE(record.has_value());
  ASSERT_TRUE(runtime::stop_supervisor(*record, runtime::StopMode::kForced).has_value());
  ASSERT_TRUE(wait_until([&] { return ended(); }, 10s));
  std::ofstream(files().dir() + "/fs/upper/etc/after-stop") << "x";

  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  ASSERT_TRUE(restarted.has_value()) << restarted.error().message;
  EXPECT_FALSE(fs::exists(home + "/after-pause")) << "the state file is the truth at restart";
  EXPECT_FALSE(fs::exists(files().dir() + "/fs/upper/etc/after-stop"));
  EXPECT_EQ(slurp(home + "/wpm-ckpt"), "home\n");
  ASSERT_TRUE(wait_until([&] { return fs::exists(files().dir() + "/fs/tmp/seen"); }, 10s));
  EXPECT_EQ(slurp(files().dir() + "/fs/tmp/seen"), kSeenAfterRestart);
}

// A figure, not a gate (STYLE.md §8): checkpoint (-k) and restart of a system
// WPAR with 100 MiB of incompressible data in /home, next to a plain copy of
// the same file on the same disk (the physical limit measured in this run).
TEST_F(Cooperative, ASystemWparWith100MiBInHomeCheckpointsAndRestartsPrintingTheTimes) {
  start_system(
      R"([ -n "$WPM_RESTORE_DIR" ] || head -c 104857600 /dev/urandom > /home/big || exit 9)");
  std::string big = files().dir() + "/fs/home/big";
  ASSERT_TRUE(wait_until([&] { return count_inside() >= 3; }, 30s))
      << slurp(files().console_path());
  ASSERT_EQ(fs::file_size(big), 100u << 20);
  auto t0 = std::chrono::steady_clock::now();
  auto done = checkpoint(request(After::kKill));
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(done.has_value()) << done.error().message;
  ASSERT_TRUE(ended());
  fs::remove_all(files().dir());
  auto restarted = restart(RestartRequest{launch(), dir_ + "/statefile", false});
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(restarted.has_value()) << restarted.error().message;
  ASSERT_EQ(fs::file_size(big), 100u << 20);
  auto t3 = std::chrono::steady_clock::now();
  fs::copy_file(big, dir_ + "/copy");
  ASSERT_TRUE(fs::exists(dir_ + "/copy"));
  int fd = ::open((dir_ + "/copy").c_str(), O_RDONLY | O_CLOEXEC);
  ::fsync(fd);
  ::close(fd);
  auto t4 = std::chrono::steady_clock::now();
  auto ms = [](auto d) {
    return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  std::printf(
      "system WPAR, 100 MiB in /home: checkpoint -k %lld ms (archive %llu bytes), restart "
      "%lld ms; copy + fsync of the 100 MiB file %lld ms\n",
      ms(t1 - t0), static_cast<unsigned long long>(done->fs_archive_bytes), ms(t2 - t1),
      ms(t4 - t3));
}

}  // namespace
}  // namespace wpm::checkpoint
