// wpm-demo-counter: the test workload of the cooperative checkpoint protocol
// (DESIGN.md §5). It counts upward every interval, optionally rewriting a file
// with the count, burning a share of a CPU and holding a checkable state of a
// chosen size. On SIGUSR1 it writes its state under $WPM_STATE_DIR and then the
// `.complete` marker; started with WPM_RESTORE_DIR it continues from that state.
// It must never create `.complete` before every state file is synced, and never
// start from a state that fails its checks. Single-threaded: signals are
// blocked and read from a signalfd by the main loop, which does all the work.

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "schemas/assert.h"
#include "schemas/error.h"
#include "schemas/hash.h"
#include "tools/wpm-demo-counter/state.h"
#include "wpm_version.h"

namespace wpm::demo_counter {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // the out file cannot be written, or the signalfd fails
constexpr int kExitUsage = 2;
constexpr int kExitRestore = 3;  // WPM_RESTORE_DIR holds no usable state

constexpr std::string_view kProgram = "wpm-demo-counter";
// Longest interval accepted by --interval-ms (one hour).
constexpr uint32_t kIntervalMsMax = 3'600'000;
// Bytes per write() of the state: large enough to stream at disk speed,
// bounded so a single call never holds the whole state.
constexpr size_t kWriteChunkBytes = size_t{8} << 20;
// --burn keeps the CPU busy for PCT% of each slice of this length and listens
// to signals for the rest: 10 ms keeps SIGTERM and checkpoints prompt.
constexpr int64_t kBurnSliceNs = 10'000'000;
// Busy-work iterations between two clock reads while burning (about 2 µs).
constexpr int kBurnSpinIterations = 4096;
// Signals read from the signalfd per wake-up; standard signals coalesce, so a
// handful is all that can be pending.
constexpr int kSignalsPerWakeMax = 64;

struct CounterOptions {
  // File rewritten atomically with the count after every increment.
  // Default: empty (nothing written per tick).
  std::string out_path;
  // Milliseconds between increments. Default: 100.
  uint32_t interval_ms = 100;
  // Percent of one CPU kept busy. Default: 0.
  uint32_t burn_pct = 0;
  // Bytes of checkable state held in memory and checkpointed. Default: 0 (none).
  uint64_t state_bytes = 0;
};

// The workload's state besides the count; empty when --state-bytes is 0.
struct State {
  uint64_t seed = 0;
  std::vector<uint8_t> bytes;
  uint32_t crc32c = 0;  // of `bytes`, taken when they were made or restored
};

struct Restored {
  uint64_t count = 0;
  State state;
};

// An owned file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    // The error of a close() nobody asked for is dropped: every file whose
    // contents matter is closed through close() below, which reports it.
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  [[nodiscard]] int close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

std::string errno_text(int err) { return std::generic_category().message(err); }

Error io_error(std::string_view what, int err) {
  return Error{err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
               fmt::format("{}: {}", what, errno_text(err))};
}

int64_t clock_ns(clockid_t clock) {
  timespec ts{};
  WPM_ASSERT(::clock_gettime(clock, &ts) == 0, "clock_gettime({}) failed", clock);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
int64_t mono_ns() { return clock_ns(CLOCK_MONOTONIC); }

[[nodiscard]] Result<void> write_all(int fd, std::span<const uint8_t> bytes,
                                     std::string_view what) {
  size_t done = 0;
  while (done < bytes.size()) {
    size_t chunk = std::min(kWriteChunkBytes, bytes.size() - done);
    ssize_t n = ::write(fd, bytes.data() + done, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(io_error(fmt::format("cannot write {}", what), errno));
    WPM_ASSERT(n > 0, "write({}) of {} bytes returned 0", what, chunk);
    done += static_cast<size_t>(n);
  }
  return {};
}

std::span<const uint8_t> as_bytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

// Creates or truncates DIR/NAME, writes it, fsyncs it and closes it.
[[nodiscard]] Result<void> write_synced_file(int dir_fd, const std::string& dir,
                                             std::string_view name,
                                             std::span<const uint8_t> bytes) {
  std::string what = fmt::format("{}/{}", dir, name);
  Fd fd(
      ::openat(dir_fd, std::string(name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return std::unexpected(io_error(fmt::format("cannot create {}", what), errno));
  if (auto written = write_all(fd.get(), bytes, what); !written) return written;
  if (::fsync(fd.get()) != 0)
    return std::unexpected(io_error(fmt::format("cannot fsync {}", what), errno));
  if (fd.close() != 0)
    return std::unexpected(io_error(fmt::format("cannot close {}", what), errno));
  return {};
}

// Readers see the old or the new count, never a torn one. Not fsynced: the
// file reports progress to observers; it is not state that must survive power loss.
[[nodiscard]] Result<void> write_file_atomically(const std::string& path, std::string_view text) {
  std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return std::unexpected(io_error(fmt::format("cannot create {}", tmp), errno));
  if (auto written = write_all(fd.get(), as_bytes(text), tmp); !written) return written;
  if (fd.close() != 0) return std::unexpected(io_error(fmt::format("cannot close {}", tmp), errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return std::unexpected(io_error(fmt::format("cannot rename {} to {}", tmp, path), errno));
  return {};
}

// Reads all of a small file; an error when it is longer than `max_bytes`.
[[nodiscard]] Result<std::string> read_small_file(int dir_fd, std::string_view name,
                                                  size_t max_bytes) {
  Fd fd(::openat(dir_fd, std::string(name).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::unexpected(io_error(fmt::format("cannot open {}", name), errno));
  std::string text(max_bytes + 1, '\0');
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::read(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(io_error(fmt::format("cannot read {}", name), errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > max_bytes)
    return fail(ErrorCode::kCorruption,
                fmt::format("{} is longer than {} bytes, so it is not ours", name, max_bytes));
  text.resize(done);
  return text;
}

[[nodiscard]] Result<std::vector<uint8_t>> read_exactly(int fd, uint64_t size,
                                                        std::string_view name) {
  std::vector<uint8_t> bytes(size);
  size_t done = 0;
  while (done < bytes.size()) {
    size_t chunk = std::min(kWriteChunkBytes, bytes.size() - done);
    ssize_t n = ::read(fd, bytes.data() + done, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(io_error(fmt::format("cannot read {}", name), errno));
    if (n == 0)
      return fail(ErrorCode::kCorruption,
                  fmt::format("{} ends after {} of its {} bytes", name, done, size));
    done += static_cast<size_t>(n);
  }
  return bytes;
}

State make_state(uint64_t size, uint64_t seed) {
  State state;
  state.seed = seed;
  state.bytes.resize(size);
  fill_pattern(seed, state.bytes);
  state.crc32c = crc32c(state.bytes.data(), state.bytes.size());
  return state;
}

// Reads and checks state.meta and state.bin (both present).
[[nodiscard]] Result<State> restore_state(int dir_fd, Fd state_fd, const CounterOptions& options) {
  auto meta_text = read_small_file(dir_fd, kMetaFile, kMetaFileBytesMax);
  if (!meta_text && meta_text.error().code == ErrorCode::kNotFound)
    return fail(ErrorCode::kCorruption,
                fmt::format("{} is there but {} is missing", kStateFile, kMetaFile));
  if (!meta_text) return std::unexpected(meta_text.error());
  auto meta = parse_meta(*meta_text);
  if (!meta)
    return fail(ErrorCode::kCorruption,
                fmt::format("{} is damaged ({})", kMetaFile, meta.error().message));
  if (meta->bytes > kStateBytesMax)
    return fail(ErrorCode::kCorruption, fmt::format("{} says the state has {} bytes, over the "
                                                    "limit of {}",
                                                    kMetaFile, meta->bytes, kStateBytesMax));
  if (options.state_bytes > 0 && meta->bytes != options.state_bytes)
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("the saved state has {} bytes but --state-bytes asks for {}",
                            meta->bytes, options.state_bytes));
  struct stat st {};
  if (::fstat(state_fd.get(), &st) != 0)
    return std::unexpected(io_error(fmt::format("cannot stat {}", kStateFile), errno));
  if (static_cast<uint64_t>(st.st_size) != meta->bytes)
    return fail(ErrorCode::kCorruption, fmt::format("{} has {} bytes but {} says {}", kStateFile,
                                                    st.st_size, kMetaFile, meta->bytes));
  auto bytes = read_exactly(state_fd.get(), meta->bytes, kStateFile);
  if (!bytes) return std::unexpected(bytes.error());
  uint32_t crc = crc32c(bytes->data(), bytes->size());
  if (crc != meta->crc32c)
    return fail(ErrorCode::kCorruption,
                fmt::format("{} fails its checksum (crc32c {:08x} in {}, {:08x} computed)",
                            kStateFile, meta->crc32c, kMetaFile, crc));
  if (auto off = first_pattern_mismatch(meta->seed, *bytes))
    return fail(ErrorCode::kCorruption,
                fmt::format("{} differs from the pattern of seed {} at byte {}", kStateFile,
                            meta->seed, *off));
  return State{meta->seed, std::move(*bytes), crc};
}

// Reads and checks the checkpoint in `dir` (DESIGN.md §5: WPM_RESTORE_DIR).
[[nodiscard]] Result<Restored> restore(const std::string& dir, const CounterOptions& options) {
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) return std::unexpected(io_error("cannot open the directory", errno));
  auto count_text = read_small_file(dir_fd.get(), kCountFile, kCountFileBytesMax);
  if (!count_text) return std::unexpected(count_text.error());
  auto count = parse_count(*count_text);
  if (!count)
    return fail(ErrorCode::kCorruption, fmt::format("{} holds '{}', not a decimal count",
                                                    kCountFile, count_text->substr(0, 24)));
  Fd state_fd(::openat(dir_fd.get(), std::string(kStateFile).c_str(), O_RDONLY | O_CLOEXEC));
  if (!state_fd.valid() && errno != ENOENT)
    return std::unexpected(io_error(fmt::format("cannot open {}", kStateFile), errno));
  if (!state_fd.valid()) {
    if (::faccessat(dir_fd.get(), std::string(kMetaFile).c_str(), F_OK, 0) == 0)
      return fail(ErrorCode::kCorruption,
                  fmt::format("{} is there but {} is missing", kMetaFile, kStateFile));
    if (options.state_bytes > 0)
      return fail(ErrorCode::kNotFound,
                  fmt::format("{} is missing but --state-bytes asks for a state of {} bytes",
                              kStateFile, options.state_bytes));
    return Restored{*count, State{}};
  }
  auto state = restore_state(dir_fd.get(), std::move(state_fd), options);
  if (!state) return std::unexpected(state.error());
  return Restored{*count, std::move(*state)};
}

// Writes the checkpoint into `dir` (DESIGN.md §5: WPM_STATE_DIR). The agent
// takes `.complete` as the promise that everything else is on disk, so it is
// created last, after the files and the directory are synced.
[[nodiscard]] Result<void> checkpoint(const std::string& dir, uint64_t count, const State& state) {
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) return std::unexpected(io_error("cannot open the directory", errno));
  std::string marker(kCompleteMarker);
  if (::faccessat(dir_fd.get(), marker.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0)
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("it already holds {} from an earlier checkpoint; the agent must "
                            "hand over an empty directory",
                            kCompleteMarker));
  if (auto r = write_synced_file(dir_fd.get(), dir, kCountFile, as_bytes(encode_count(count))); !r)
    return r;
  if (!state.bytes.empty()) {
    uint32_t crc = crc32c(state.bytes.data(), state.bytes.size());
    WPM_ASSERT(crc == state.crc32c, "the state in memory changed: crc32c {:08x}, made as {:08x}",
               crc, state.crc32c);
    if (auto r = write_synced_file(dir_fd.get(), dir, kStateFile, state.bytes); !r) return r;
    std::string meta = encode_meta(StateMeta{kStateFormat, state.seed, state.bytes.size(), crc});
    if (auto r = write_synced_file(dir_fd.get(), dir, kMetaFile, as_bytes(meta)); !r) return r;
  }
  if (::fsync(dir_fd.get()) != 0) return std::unexpected(io_error("cannot fsync it", errno));
  if (auto r = write_synced_file(dir_fd.get(), dir, kCompleteMarker, {}); !r) return r;
  if (::fsync(dir_fd.get()) != 0) return std::unexpected(io_error("cannot fsync it", errno));
  return {};
}

// Handles SIGUSR1. A failure is logged and leaves no `.complete`: the agent's
// wait times out and the WPAR stays Active (DESIGN.md §5), while we keep counting.
void on_checkpoint_signal(uint64_t count, const State& state) {
  const char* dir = std::getenv("WPM_STATE_DIR");
  if (dir == nullptr || *dir == '\0') {
    fmt::print(stderr,
               "{}: checkpoint_ignored error=\"SIGUSR1 received but WPM_STATE_DIR is not set\" "
               "hint=\"start the workload with WPM_STATE_DIR naming an empty directory\"\n",
               kProgram);
    return;
  }
  int64_t start = mono_ns();
  auto done = checkpoint(dir, count, state);
  double seconds = static_cast<double>(mono_ns() - start) / 1e9;
  if (!done) {
    fmt::print(stderr,
               "{}: checkpoint_failed dir={} count={} error=\"{}\" hint=\"no {} was written, so "
               "the agent's wait times out; it must hand over an existing, empty directory\"\n",
               kProgram, dir, count, done.error().message, kCompleteMarker);
    return;
  }
  fmt::print(stderr, "{}: checkpoint_written dir={} count={} state_bytes={} seconds={:.3f}\n",
             kProgram, dir, count, state.bytes.size(), seconds);
}

// Keeps the CPU busy until this thread used `cpu_ns` of CPU time or the wall
// clock reaches `deadline_ns`, whichever comes first. Counting CPU time rather
// than wall time keeps the share right when other processes compete for the CPU.
void burn(int64_t cpu_ns, int64_t deadline_ns) {
  const int64_t cpu_start = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  uint64_t x = detail::first_xorshift_state(static_cast<uint64_t>(cpu_start));
  // Bounded by the deadline: mono_ns() grows.
  while (mono_ns() < deadline_ns && clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu_start < cpu_ns) {
    for (int i = 0; i < kBurnSpinIterations; ++i) detail::xorshift64(x);
  }
  // Keeps the busy work from being optimised away.
  volatile uint64_t sink = x;
  static_cast<void>(sink);
}

struct Signals {
  bool terminate = false;
  bool checkpoint = false;
};

// Waits until `deadline_ns` or until a signal is pending, then reads them all.
[[nodiscard]] Result<Signals> wait_for_signals(int signal_fd, int64_t deadline_ns) {
  int64_t wait = std::max<int64_t>(0, deadline_ns - mono_ns());
  timespec timeout{static_cast<time_t>(wait / 1'000'000'000),
                   static_cast<long>(wait % 1'000'000'000)};
  pollfd pfd{signal_fd, POLLIN, 0};
  int ready = ::ppoll(&pfd, 1, &timeout, nullptr);
  if (ready < 0 && errno != EINTR) return std::unexpected(io_error("ppoll on the signalfd", errno));
  Signals signals;
  if (ready <= 0) return signals;
  for (int i = 0; i < kSignalsPerWakeMax; ++i) {
    signalfd_siginfo info{};
    ssize_t n = ::read(signal_fd, &info, sizeof info);
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(io_error("cannot read the signalfd", errno));
    WPM_ASSERT(n == sizeof info, "short read of {} bytes from the signalfd", n);
    if (info.ssi_signo == SIGUSR1)
      signals.checkpoint = true;
    else
      signals.terminate = true;  // SIGTERM or SIGINT, the only others in the mask
  }
  return signals;
}

// The main loop: returns the exit code after SIGTERM/SIGINT or a failure.
int run(const CounterOptions& options, uint64_t count, const State& state, int signal_fd) {
  const int64_t interval_ns = int64_t{options.interval_ms} * 1'000'000;
  const int64_t burn_ns = kBurnSliceNs * options.burn_pct / 100;
  int64_t now = mono_ns();
  int64_t next_tick_ns = now + interval_ns;
  int64_t slice_end_ns = now + kBurnSliceNs;
  bool burned_this_slice = false;
  for (;;) {  // infinite by design: ends on SIGTERM/SIGINT or a failure
    if (burn_ns > 0 && !burned_this_slice) {
      burn(burn_ns, slice_end_ns);
      burned_this_slice = true;
    }
    int64_t wake_ns = burn_ns > 0 ? std::min(next_tick_ns, slice_end_ns) : next_tick_ns;
    auto signals = wait_for_signals(signal_fd, wake_ns);
    if (!signals) {
      fmt::print(stderr, "{}: signal_wait_failed error=\"{}\"\n", kProgram,
                 signals.error().message);
      return kExitFailure;
    }
    if (signals->terminate) return kExitOk;
    if (signals->checkpoint) on_checkpoint_signal(count, state);
    now = mono_ns();
    if (now >= next_tick_ns) {
      WPM_ASSERT(count < UINT64_MAX, "the count overflows");
      ++count;
      if (!options.out_path.empty()) {
        if (auto w = write_file_atomically(options.out_path, encode_count(count)); !w) {
          fmt::print(stderr,
                     "{}: out_write_failed count={} error=\"{}\" hint=\"check that the "
                     "directory of --out exists and is writable\"\n",
                     kProgram, count, w.error().message);
          return kExitFailure;
        }
      }
      // After a long checkpoint, resume the pace rather than catching up in a burst.
      next_tick_ns += interval_ns;
      if (next_tick_ns <= now) next_tick_ns = now + interval_ns;
    }
    if (burn_ns > 0 && now >= slice_end_ns) {
      slice_end_ns += kBurnSliceNs;
      if (slice_end_ns <= now) slice_end_ns = now + kBurnSliceNs;
      burned_this_slice = false;
    }
  }
}

// Returns the options, or the exit code when main must stop (help, version, usage error).
std::expected<CounterOptions, int> parse_options(int argc, char** argv) {
  CounterOptions options;
  CLI::App app{
      "wpm-demo-counter: a test workload that counts, burns CPU and checkpoints its "
      "state cooperatively (SIGUSR1 with WPM_STATE_DIR; restart with WPM_RESTORE_DIR)",
      std::string(kProgram)};
  app.set_version_flag("--version", fmt::format("{} {}", kProgram, wpm::kVersion));
  app.add_option("--out", options.out_path,
                 "file rewritten atomically with the count after every increment")
      ->check([](const std::string& v) { return v.empty() ? "must not be empty" : ""; });
  app.add_option("--interval-ms", options.interval_ms,
                 "milliseconds between increments (default 100)")
      ->check(CLI::Range(uint32_t{1}, kIntervalMsMax));
  app.add_option("--burn", options.burn_pct, "percent of one CPU kept busy, 0-100 (default 0)")
      ->check(CLI::Range(uint32_t{0}, uint32_t{100}));
  app.add_option("--state-bytes", options.state_bytes,
                 "bytes of checkable state held and checkpointed (default 0); on restore, "
                 "the saved state must have this size (0: any)")
      ->check(CLI::Range(uint64_t{0}, kStateBytesMax));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return std::unexpected(app.exit(e));  // --help, --version
    std::string message = e.what();
    std::replace(message.begin(), message.end(), '\n', ' ');
    fmt::print(stderr, "{}: {}; run with --help for usage\n", kProgram, message);
    return std::unexpected(kExitUsage);
  }
  return options;
}

// Blocks the signals the loop reads from a signalfd. Done first in main so
// none arriving during start-up (a long restore) is lost or kills the process.
[[nodiscard]] Result<Fd> open_signal_fd() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGUSR1, SIGTERM, SIGINT}) sigaddset(&set, sig);
  WPM_ASSERT(::sigprocmask(SIG_BLOCK, &set, nullptr) == 0, "sigprocmask failed");
  // An ignored disposition inherited through exec would discard the signals
  // before they reach the signalfd.
  for (int sig : {SIGUSR1, SIGTERM, SIGINT}) ::signal(sig, SIG_DFL);
  Fd fd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd.valid()) return std::unexpected(io_error("cannot create a signalfd", errno));
  return fd;
}

int main_impl(int argc, char** argv) {
  auto signal_fd = open_signal_fd();
  if (!signal_fd) {
    fmt::print(stderr, "{}: start_failed error=\"{}\"\n", kProgram, signal_fd.error().message);
    return kExitFailure;
  }
  auto options = parse_options(argc, argv);
  if (!options) return options.error();

  Restored start;
  const char* restore_dir = std::getenv("WPM_RESTORE_DIR");
  if (restore_dir != nullptr && *restore_dir != '\0') {
    int64_t begin = mono_ns();
    auto restored = restore(restore_dir, *options);
    if (!restored) {
      fmt::print(stderr,
                 "{}: cannot restore from WPM_RESTORE_DIR={}: {}; the checkpoint is unusable: "
                 "take a new one, or start without WPM_RESTORE_DIR to count from 0\n",
                 kProgram, restore_dir, restored.error().message);
      return kExitRestore;
    }
    start = std::move(*restored);
    fmt::print(stderr, "{}: restored dir={} count={} state_bytes={} seconds={:.3f}\n", kProgram,
               restore_dir, start.count, start.state.bytes.size(),
               static_cast<double>(mono_ns() - begin) / 1e9);
  } else if (options->state_bytes > 0) {
    std::random_device entropy;
    uint64_t seed = (uint64_t{entropy()} << 32) | entropy();
    start.state = make_state(options->state_bytes, seed);
  }
  return run(*options, start.count, start.state, signal_fd->get());
}

}  // namespace
}  // namespace wpm::demo_counter

int main(int argc, char** argv) { return wpm::demo_counter::main_impl(argc, argv); }
