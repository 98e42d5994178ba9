// Tests of wpm-demo-counter against the real binary: child processes, real
// signals, real files. Conditions are polled with deadlines; the only fixed
// waits are the measurement windows named as such.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "schemas/hash.h"
#include "wpm_version.h"

extern char** environ;

namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Env = std::map<std::string, std::string>;

constexpr uint64_t kMiB = uint64_t{1} << 20;

class TempDir {
 public:
  TempDir() {
    fs::create_directories(WPM_DEMO_COUNTER_TMP_DIR);
    std::string templ = std::string(WPM_DEMO_COUNTER_TMP_DIR) + "/demo-counter.XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    if (std::getenv("WPM_KEEP_TEST_DIRS") == nullptr) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Creates an empty subdirectory and returns its path.
  std::string subdir(const std::string& name) const {
    fs::create_directory(*this / name);
    return *this / name;
  }

 private:
  std::string path_;
};

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

// "digits\n" exactly, else nullopt.
std::optional<uint64_t> parse_count(const std::string& text) {
  if (text.size() < 2 || text.back() != '\n') return std::nullopt;
  uint64_t v = 0;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  return v;
}

// The count in a file the counter wrote; nullopt while it does not exist.
// A file that exists but does not parse fails the test.
std::optional<uint64_t> read_count(const std::string& path) {
  auto text = read_file(path);
  if (!text) return std::nullopt;
  auto v = parse_count(*text);
  EXPECT_TRUE(v.has_value()) << path << " holds '" << *text << "', not a count";
  return v;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = 2ms) {
  auto deadline = Clock::now() + timeout;
  for (;;) {  // bounded by the deadline
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
}

std::map<std::string, std::string> read_key_values(const std::string& path) {
  std::map<std::string, std::string> kv;
  std::istringstream in(read_file(path).value_or(""));
  for (std::string line; std::getline(in, line);) {
    auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return kv;
}

// One wpm-demo-counter child in its own process group, stdout and stderr in
// files; killed (the whole group) when the object goes.
class Counter {
 public:
  Counter(const std::vector<std::string>& args, const Env& env, const TempDir& dir,
          const std::string& name = "counter")
      : out_path_(dir / (name + ".stdout")), err_path_(dir / (name + ".stderr")) {
    std::vector<std::string> argv{WPM_DEMO_COUNTER};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<std::string> envs;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view kv(*e);
      // The protocol's variables come only from the test.
      if (kv.starts_with("WPM_STATE_DIR=") || kv.starts_with("WPM_RESTORE_DIR=")) continue;
      envs.emplace_back(kv);
    }
    for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
    std::vector<char*> cargv, cenv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    for (auto& e : envs) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    int out = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0 || err < 0) throw std::runtime_error("cannot open the child's output files");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      int devnull = ::open("/dev/null", O_RDONLY);
      ::dup2(devnull, 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::execve(cargv[0], cargv.data(), cenv.data());
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);  // also from here, so signals to the group work at once
    ::close(out);
    ::close(err);
  }
  ~Counter() {
    if (!exit_code_) {
      ::kill(-pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const { ASSERT_EQ(::kill(pid_, sig), 0) << std::strerror(errno); }

  // The exit code (128+N after signal N), or nullopt if still running at the deadline.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    if (exit_code_) return exit_code_;
    wait_until(
        [&] {
          int status = 0;
          pid_t r = ::waitpid(pid_, &status, WNOHANG);
          if (r != pid_) return false;
          exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          return true;
        },
        timeout);
    return exit_code_;
  }
  bool running() { return !wait_exit(0ms).has_value(); }
  void kill_and_reap() {
    ::kill(-pid_, SIGKILL);
    ASSERT_TRUE(wait_exit(10s).has_value());
  }

  std::string out() const { return read_file(out_path_).value_or(""); }
  std::string err() const { return read_file(err_path_).value_or(""); }

 private:
  std::string out_path_;
  std::string err_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

struct RunResult {
  std::optional<int> exit_code;
  std::string out;
  std::string err;
};

RunResult run_to_exit(const std::vector<std::string>& args, const Env& env, const TempDir& dir,
                      std::chrono::milliseconds timeout = 30s) {
  Counter c(args, env, dir, "run");
  auto code = c.wait_exit(timeout);
  return RunResult{code, c.out(), c.err()};
}

// Waits until the count file reaches at least `at_least`; returns the value seen.
std::optional<uint64_t> wait_for_count(const std::string& path, uint64_t at_least,
                                       std::chrono::milliseconds timeout = 10s) {
  std::optional<uint64_t> seen;
  wait_until(
      [&] {
        seen = read_count(path);
        return seen && *seen >= at_least;
      },
      timeout);
  return seen && *seen >= at_least ? seen : std::nullopt;
}

bool wait_for_file(const std::string& path, std::chrono::milliseconds timeout) {
  return wait_until([&] { return fs::exists(path); }, timeout);
}

// The CPU time (utime + stime) of a process, in seconds, from /proc/PID/stat.
double cpu_seconds(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat").value_or("");
  auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(stat.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(f);
  // Fields from 3 (state) on: utime is field 14, stime field 15.
  if (fields.size() < 13) return -1;
  double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

size_t line_count(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

// Checks a checkpoint directory's state files: meta fields and the CRC-32C.
void expect_state_files_consistent(const std::string& dir, uint64_t bytes) {
  auto state = read_file(dir + "/state.bin");
  ASSERT_TRUE(state.has_value()) << dir << "/state.bin is missing";
  EXPECT_EQ(state->size(), bytes);
  auto meta = read_key_values(dir + "/state.meta");
  EXPECT_EQ(meta["bytes"], std::to_string(bytes));
  EXPECT_FALSE(meta["seed"].empty());
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x", wpm::crc32c(state->data(), state->size()));
  EXPECT_EQ(meta["crc32c"], crc);
}

// Starts a counter, waits for a few increments, checkpoints it into a new
// directory and kills it. Returns the directory and the saved count.
std::pair<std::string, uint64_t> take_checkpoint(const TempDir& dir, uint64_t state_bytes) {
  std::string state_dir = dir.subdir("checkpoint");
  Counter c({"--out", dir / "ckpt-count", "--interval-ms", "10", "--state-bytes",
             std::to_string(state_bytes)},
            {{"WPM_STATE_DIR", state_dir}}, dir, "checkpointed");
  EXPECT_TRUE(wait_for_count(dir / "ckpt-count", 3).has_value()) << c.err();
  c.signal(SIGUSR1);
  EXPECT_TRUE(wait_for_file(state_dir + "/.complete", 30s)) << c.err();
  c.kill_and_reap();
  auto saved = read_count(state_dir + "/count");
  EXPECT_TRUE(saved.has_value());
  return {state_dir, saved.value_or(0)};
}

TEST(DemoCounter, CountsUpAndRewritesTheFileAtomically) {
  TempDir dir;
  std::string out = dir / "count";
  Counter c({"--out", out, "--interval-ms", "5"}, {}, dir);
  ASSERT_TRUE(wait_for_file(out, 10s)) << c.err();
  uint64_t last = 0;
  size_t reads = 0, increases = 0;
  bool reached = wait_until(
      [&] {
        auto text = read_file(out);
        // rename() replaces the file in one step: once written it never vanishes.
        EXPECT_TRUE(text.has_value()) << "the out file disappeared after " << reads << " reads";
        auto v = parse_count(text.value_or(""));
        EXPECT_TRUE(v.has_value()) << "read " << reads << " saw '" << text.value_or("") << "'";
        ++reads;
        if (!v) return true;  // already failed; stop
        EXPECT_GE(*v, last) << "the count went backwards";
        if (*v > last) ++increases;
        last = *v;
        return last >= 40;
      },
      20s, 0ms);
  ASSERT_TRUE(reached) << "the count reached only " << last << "; stderr: " << c.err();
  EXPECT_GE(increases, 5u);
  EXPECT_GT(reads, increases) << "reads should race with the rewrites";
  EXPECT_TRUE(c.running());
}

TEST(DemoCounter, WithoutOutPrintsNothing) {
  TempDir dir;
  Counter c({"--interval-ms", "5"}, {}, dir);
  std::this_thread::sleep_for(300ms);  // measurement window: about 60 ticks
  ASSERT_TRUE(c.running()) << c.err();
  c.signal(SIGTERM);
  EXPECT_EQ(c.wait_exit(5s), 0);
  EXPECT_EQ(c.out(), "");
  EXPECT_EQ(c.err(), "");
}

TEST(DemoCounter, SigtermAndSigintExitZeroPromptly) {
  for (int sig : {SIGTERM, SIGINT}) {
    TempDir dir;
    Counter c({"--out", dir / "count", "--burn", "20"}, {}, dir);
    ASSERT_TRUE(wait_for_count(dir / "count", 1).has_value()) << c.err();
    auto sent = Clock::now();
    c.signal(sig);
    EXPECT_EQ(c.wait_exit(5s), 0) << "signal " << sig << "; stderr: " << c.err();
    EXPECT_LT(Clock::now() - sent, 500ms) << "signal " << sig << " took too long";
  }
}

TEST(DemoCounter, CheckpointWritesCountStateAndCompleteMarker) {
  TempDir dir;
  std::string out = dir / "count";
  std::string state_dir = dir.subdir("state");
  Counter c({"--out", out, "--interval-ms", "10", "--state-bytes", "4096"},
            {{"WPM_STATE_DIR", state_dir}}, dir);
  auto before = wait_for_count(out, 3);
  ASSERT_TRUE(before.has_value()) << c.err();
  c.signal(SIGUSR1);
  ASSERT_TRUE(wait_for_file(state_dir + "/.complete", 10s)) << c.err();
  auto after = read_count(out);
  ASSERT_TRUE(after.has_value());

  auto saved = read_count(state_dir + "/count");
  ASSERT_TRUE(saved.has_value());
  EXPECT_GE(*saved, *before) << "the saved count is older than the signal";
  EXPECT_LE(*saved, *after) << "the saved count was never reached";
  EXPECT_EQ(read_file(state_dir + "/.complete"), "");
  expect_state_files_consistent(state_dir, 4096);
  // The log line follows the .complete marker: give it a moment on a busy machine.
  auto logged_by = Clock::now() + 5s;
  while (c.err().find("checkpoint_written") == std::string::npos && Clock::now() < logged_by) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_NE(c.err().find("checkpoint_written"), std::string::npos) << c.err();

  // It keeps running after the checkpoint (the agent freezes it afterwards).
  EXPECT_TRUE(wait_for_count(out, *after + 2).has_value()) << c.err();
  EXPECT_TRUE(c.running());
}

TEST(DemoCounter, CheckpointWithoutStateDirLogsAnErrorAndKeepsCounting) {
  TempDir dir;
  std::string out = dir / "count";
  Counter c({"--out", out, "--interval-ms", "10"}, {}, dir);
  auto before = wait_for_count(out, 1);
  ASSERT_TRUE(before.has_value()) << c.err();
  c.signal(SIGUSR1);
  ASSERT_TRUE(wait_until([&] { return c.err().find("WPM_STATE_DIR") != std::string::npos; }, 10s))
      << c.err();
  EXPECT_EQ(line_count(c.err()), 1u) << c.err();
  EXPECT_TRUE(wait_for_count(out, *before + 3).has_value());
  EXPECT_TRUE(c.running());
}

TEST(DemoCounter, CheckpointIntoAnUnusableDirectoryFailsAndKeepsCounting) {
  TempDir dir;
  std::string stale = dir.subdir("stale");
  write_file(stale + "/.complete", "");
  for (const std::string& state_dir : {stale, dir / "does-not-exist"}) {
    // A fresh out file per process: its first value says the process is listening.
    std::string out = state_dir + ".count";
    Counter c({"--out", out, "--interval-ms", "10", "--state-bytes", "4096"},
              {{"WPM_STATE_DIR", state_dir}}, dir);
    auto before = wait_for_count(out, 1);
    ASSERT_TRUE(before.has_value()) << c.err();
    c.signal(SIGUSR1);
    ASSERT_TRUE(
        wait_until([&] { return c.err().find("checkpoint_failed") != std::string::npos; }, 10s))
        << state_dir << ": " << c.err();
    EXPECT_EQ(line_count(c.err()), 1u) << c.err();
    EXPECT_FALSE(fs::exists(state_dir + "/count")) << "it wrote over an earlier checkpoint";
    EXPECT_TRUE(wait_for_count(out, *before + 3).has_value());
    EXPECT_TRUE(c.running());
  }
}

TEST(DemoCounter, UnwritableOutFileExitsOne) {
  TempDir dir;
  auto r = run_to_exit({"--out", dir / "no-such-dir/count", "--interval-ms", "5"}, {}, dir);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(line_count(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("no-such-dir/count.tmp"), std::string::npos) << r.err;
}

TEST(DemoCounter, RestartContinuesFromTheSavedCountWithStateIntact) {
  TempDir dir;
  const std::string bytes = std::to_string(kMiB);
  auto [saved_dir, saved] = take_checkpoint(dir, kMiB);
  ASSERT_GE(saved, 3u);
  expect_state_files_consistent(saved_dir, kMiB);

  // The default interval (100 ms) leaves the poll plenty of time to see the first value.
  std::string out = dir / "restarted-count";
  std::string second_dir = dir.subdir("second");
  Counter b({"--out", out, "--state-bytes", bytes},
            {{"WPM_RESTORE_DIR", saved_dir}, {"WPM_STATE_DIR", second_dir}}, dir, "restarted");
  std::optional<uint64_t> first;
  ASSERT_TRUE(wait_until([&] { return (first = read_count(out)).has_value(); }, 10s, 1ms))
      << b.err();
  EXPECT_EQ(*first, saved + 1);

  // A checkpoint of the restarted process holds the very same state.
  b.signal(SIGUSR1);
  ASSERT_TRUE(wait_for_file(second_dir + "/.complete", 10s)) << b.err();
  EXPECT_EQ(read_file(second_dir + "/state.bin"), read_file(saved_dir + "/state.bin"));
  EXPECT_EQ(read_file(second_dir + "/state.meta"), read_file(saved_dir + "/state.meta"));
  EXPECT_GE(read_count(second_dir + "/count").value_or(0), saved + 1);
}

TEST(DemoCounter, CorruptedRestoredStateExitsThree) {
  TempDir dir;
  auto [saved_dir, saved] = take_checkpoint(dir, 64 * 1024);
  std::string state = read_file(saved_dir + "/state.bin").value_or("");
  ASSERT_EQ(state.size(), 64u * 1024);
  state[state.size() / 2] = static_cast<char>(state[state.size() / 2] ^ 0x01);
  write_file(saved_dir + "/state.bin", state);

  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--state-bytes", "65536", "--out", dir / "restarted"}, {"--out", dir / "restarted"}}) {
    auto r = run_to_exit(args, {{"WPM_RESTORE_DIR", saved_dir}}, dir);
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_EQ(line_count(r.err), 1u) << r.err;
    EXPECT_NE(r.err.find("checksum"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "restarted")) << "it counted from a damaged state";
  }
}

TEST(DemoCounter, MissingRestoredStateExitsThree) {
  TempDir dir;
  auto [saved_dir, saved] = take_checkpoint(dir, 4096);
  struct Case {
    std::string name;
    std::function<void()> damage;
    std::string expected_in_message;
  };
  std::string empty_dir = dir.subdir("empty");
  std::vector<Case> cases{
      {"state.meta removed", [&] { fs::remove(saved_dir + "/state.meta"); }, "state.meta"},
      {"state.bin removed too", [&] { fs::remove(saved_dir + "/state.bin"); }, "state.bin"},
  };
  for (const auto& c : cases) {
    c.damage();
    auto r = run_to_exit({"--state-bytes", "4096"}, {{"WPM_RESTORE_DIR", saved_dir}}, dir);
    EXPECT_EQ(r.exit_code, 3) << c.name << ": " << r.err;
    EXPECT_EQ(line_count(r.err), 1u) << r.err;
    EXPECT_NE(r.err.find(c.expected_in_message), std::string::npos) << c.name << ": " << r.err;
  }
  for (const std::string& restore : {empty_dir, dir / "does-not-exist"}) {
    auto r = run_to_exit({}, {{"WPM_RESTORE_DIR", restore}}, dir);
    EXPECT_EQ(r.exit_code, 3) << restore << ": " << r.err;
    EXPECT_EQ(line_count(r.err), 1u) << r.err;
  }
  write_file(empty_dir + "/count", "twelve\n");
  auto r = run_to_exit({}, {{"WPM_RESTORE_DIR", empty_dir}}, dir);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("twelve"), std::string::npos) << r.err;
}

TEST(DemoCounter, DamagedStateMetaOrPatternExitsThree) {
  TempDir dir;
  auto [saved_dir, saved] = take_checkpoint(dir, 4096);
  const std::string meta_path = saved_dir + "/state.meta";
  const std::string good_meta = read_file(meta_path).value_or("");
  auto meta = read_key_values(meta_path);
  ASSERT_EQ(meta.size(), 4u) << good_meta;
  auto with = [&](const std::string& key, const std::string& value) {
    std::string text;
    for (const auto& [k, v] : meta) text += k + "=" + (k == key ? value : v) + "\n";
    return text;
  };
  struct Case {
    std::string meta;
    std::string expected_in_message;
  };
  const std::vector<Case> cases{
      {good_meta + "colour=blue\n", "colour"}, {good_meta + "seed=1\n", "twice"},
      {with("format", "2"), "format 2"},       {with("crc32c", "xyz"), "xyz"},
      {with("bytes", "4095"), "4095"},         {"", "missing"},
  };
  for (const auto& c : cases) {
    write_file(meta_path, c.meta);
    auto r = run_to_exit({}, {{"WPM_RESTORE_DIR", saved_dir}}, dir);
    EXPECT_EQ(r.exit_code, 3) << c.meta << r.err;
    EXPECT_EQ(line_count(r.err), 1u) << r.err;
    EXPECT_NE(r.err.find(c.expected_in_message), std::string::npos) << c.meta << r.err;
  }

  // Another pattern with a matching checksum: caught by the pattern of the seed.
  std::string state = read_file(saved_dir + "/state.bin").value_or("");
  state[100] = static_cast<char>(state[100] ^ 0x80);
  write_file(saved_dir + "/state.bin", state);
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x", wpm::crc32c(state.data(), state.size()));
  write_file(meta_path, with("crc32c", crc));
  auto r = run_to_exit({}, {{"WPM_RESTORE_DIR", saved_dir}}, dir);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("pattern"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("byte 96"), std::string::npos) << r.err;
}

TEST(DemoCounter, RestoredStateOfAnotherSizeExitsThree) {
  TempDir dir;
  auto [saved_dir, saved] = take_checkpoint(dir, 4096);
  auto r = run_to_exit({"--state-bytes", "8192"}, {{"WPM_RESTORE_DIR", saved_dir}}, dir);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_EQ(line_count(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("8192"), std::string::npos) << r.err;
}

TEST(DemoCounter, BurnFiftyUsesAboutHalfACpu) {
  TempDir dir;
  Counter c({"--out", dir / "count", "--burn", "50"}, {}, dir);
  ASSERT_TRUE(wait_for_count(dir / "count", 1).has_value()) << c.err();
  double cpu0 = cpu_seconds(c.pid());
  auto wall0 = Clock::now();
  std::this_thread::sleep_for(1s);  // measurement window
  double cpu1 = cpu_seconds(c.pid());
  double wall = std::chrono::duration<double>(Clock::now() - wall0).count();
  ASSERT_GE(cpu0, 0);
  double share = (cpu1 - cpu0) / wall;
  std::printf("[ measured ] --burn 50 used %.0f%% of a CPU over %.2f s\n", share * 100, wall);
  EXPECT_GE(share, 0.30);
  EXPECT_LE(share, 0.70);
}

TEST(DemoCounter, UsageErrorExitsTwo) {
  TempDir dir;
  const std::vector<std::vector<std::string>> bad{
      {"--burn", "150"},
      {"--interval-ms", "0"},
      {"--interval-ms", "abc"},
      {"--no-such-flag"},
      {"--state-bytes", "-1"},
      {"--state-bytes", "2000000000000"},
      {"unexpected"},
      {"--out"},
      {"--out", ""},
  };
  for (const auto& args : bad) {
    auto r = run_to_exit(args, {}, dir);
    std::string shown = args[0] + (args.size() > 1 ? " " + args[1] : "");
    EXPECT_EQ(r.exit_code, 2) << shown << ": " << r.err;
    EXPECT_EQ(line_count(r.err), 1u) << shown << ": " << r.err;
    EXPECT_TRUE(r.err.starts_with("wpm-demo-counter: ")) << shown << ": " << r.err;
    EXPECT_EQ(r.out, "") << shown;
  }
}

TEST(DemoCounter, HelpAndVersionExitZero) {
  TempDir dir;
  auto help = run_to_exit({"--help"}, {}, dir);
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_NE(help.out.find("--state-bytes"), std::string::npos) << help.out;
  auto version = run_to_exit({"--version"}, {}, dir);
  EXPECT_EQ(version.exit_code, 0) << version.err;
  EXPECT_NE(version.out.find(wpm::kVersion), std::string::npos) << version.out;
}

TEST(DemoCounter, HundredMiBStateCheckpointsQuickly) {
  TempDir dir;
  const uint64_t bytes = 100 * kMiB;
  std::string state_dir = dir.subdir("state");
  std::string out = dir / "count";
  Counter a({"--out", out, "--interval-ms", "10", "--state-bytes", std::to_string(bytes)},
            {{"WPM_STATE_DIR", state_dir}}, dir, "big");
  ASSERT_TRUE(wait_for_count(out, 1, 60s).has_value()) << a.err();
  auto signalled = Clock::now();
  a.signal(SIGUSR1);
  ASSERT_TRUE(wait_until([&] { return fs::exists(state_dir + "/.complete"); }, 60s, 1ms))
      << a.err();
  double checkpoint_s = std::chrono::duration<double>(Clock::now() - signalled).count();
  a.kill_and_reap();
  auto saved = read_count(state_dir + "/count");
  ASSERT_TRUE(saved.has_value());
  expect_state_files_consistent(state_dir, bytes);

  std::string restarted_out = dir / "restarted-count";
  auto started = Clock::now();
  Counter b({"--out", restarted_out, "--interval-ms", "1", "--state-bytes", std::to_string(bytes)},
            {{"WPM_RESTORE_DIR", state_dir}}, dir, "big-restarted");
  ASSERT_TRUE(wait_until([&] { return fs::exists(restarted_out); }, 60s, 1ms)) << b.err();
  double restore_s = std::chrono::duration<double>(Clock::now() - started).count();
  EXPECT_GT(read_count(restarted_out).value_or(0), *saved);

  std::printf(
      "[ measured ] 100 MiB state: checkpoint %.3f s (signal to .complete, fsynced), "
      "restore %.3f s (exec to first count, checksum and pattern verified)\n",
      checkpoint_s, restore_s);
  std::printf("[ measured ] counter's own log:\n%s%s", a.err().c_str(), b.err().c_str());
}

}  // namespace
