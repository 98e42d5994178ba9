#include "agents/runtime/supervisor.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <linux/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>
#include <utility>

#include "agents/profile/profile.h"
#include "agents/runtime/capabilities.h"
#include "agents/runtime/seccomp.h"
#include "agents/runtime/system_wpar.h"

namespace wpm::runtime {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0 && errno != EINTR) return;
    if (n > 0) off += static_cast<size_t>(n);
  }
}

// The supervisor's report, line by line, each within the deadline.
class ReportReader {
 public:
  explicit ReportReader(int fd) : fd_(fd) {}
  // The next line; nothing at the deadline; the rest ("" at most) when the
  // writer is gone.
  std::optional<std::string> next(std::chrono::steady_clock::time_point deadline) {
    while (buf_.find('\n') == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r <= 0) continue;  // EINTR or the deadline: checked above
      char buf[512];
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n == 0) return std::exchange(buf_, "");  // the supervisor died before reporting
      if (n > 0) buf_.append(buf, static_cast<size_t>(n));
    }
    auto nl = buf_.find('\n');
    std::string line = buf_.substr(0, nl);
    buf_.erase(0, nl + 1);
    return line;
  }

 private:
  int fd_;
  std::string buf_;
};

void kill_group(CgroupSet& set, int signal) {
  auto pids = set.processes();
  if (!pids) return;
  for (pid_t p : *pids) ::kill(p, signal);
  // Frozen tasks do not die until thawed (v1 freezer).
  if (signal == SIGKILL) (void)set.thaw();
}

}  // namespace

Result<WparRecord> start_supervisor(const SupervisorLaunch& l) {
  int ready[2];
  // Close-on-exec from birth, so no other thread's child inherits it; the
  // child clears the flag on its own end (fcntl is async-signal-safe).
  if (::pipe2(ready, O_CLOEXEC) != 0) return fail(ErrorCode::kIo, fmt::format("pipe: {}", std::strerror(errno)));
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls until exec (the caller may have threads).
  std::vector<std::string> args = {l.supervisor_binary, "--wpars-root", l.wpars_root, "--name",
                                   l.name, "--cgroup", l.cgroup_relative, "--ready-fd",
                                   std::to_string(ready[1])};
  for (const auto& dir : l.masked_dirs) args.insert(args.end(), {"--mask", dir});
  if (!l.idmap_host_layers) args.push_back("--no-idmap");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t child = ::fork();
  if (child < 0) return fail(ErrorCode::kIo, fmt::format("fork: {}", std::strerror(errno)));
  if (child == 0) {
    ::setsid();
    if (::fork() != 0) ::_exit(0);  // the supervisor is reparented away from the caller
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::fcntl(ready[1], F_SETFD, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(ready[1]);
  int status = 0;
  ::waitpid(child, &status, 0);
  // First its pid, then "ok" or "error WHY".
  ReportReader reader(ready[0]);
  auto deadline = std::chrono::steady_clock::now() + l.ready_timeout;
  pid_t supervisor = 0;
  std::string line;
  bool reported = false;
  while (auto next = reader.next(deadline)) {
    if (next->starts_with("pid ")) {
      supervisor = static_cast<pid_t>(std::strtol(next->c_str() + 4, nullptr, 10));
      continue;
    }
    line = std::move(*next);
    reported = true;
    break;
  }
  ::close(ready[0]);
  if (!reported) {
    // A start that hangs (a slow mount, a stuck device) is ended rather than
    // left to come up later unannounced; what it made is cleaned like a
    // lost supervisor's.
    if (supervisor > 0 && supervisor_alive(supervisor)) ::kill(supervisor, SIGKILL);
    WparFiles files(l.wpars_root, l.name);
    (void)files.update_record([&](WparRecord& r) {
      if (r.supervisor_pid != supervisor || r.ended) return false;
      r.state = WparState::kBroken;
      r.error = fmt::format("its start did not complete within {} ms and was ended", l.ready_timeout.count());
      return true;
    });
    (void)cleanup_lost_wpar(files);
    return fail(ErrorCode::kTimeout, fmt::format("the supervisor of WPAR {} did not report within "
                                                 "{} ms; the start was ended; see {}/{}/console.log",
                                                 l.name, l.ready_timeout.count(), l.wpars_root, l.name));
  }
  if (line.starts_with("error ")) return fail(ErrorCode::kInternal, line.substr(6));
  if (!line.starts_with("ok")) {
    return fail(ErrorCode::kInternal,
                fmt::format("the supervisor of WPAR {} could not start ({}): is {} executable?",
                            l.name, line.empty() ? "no report" : line, l.supervisor_binary));
  }
  return WparFiles(l.wpars_root, l.name).read_record();
}

Result<void> stop_supervisor(const WparRecord& record, StopMode mode) {
  if (!supervisor_alive(record.supervisor_pid)) {
    return fail(ErrorCode::kNotFound, fmt::format("no supervisor runs as pid {}", record.supervisor_pid));
  }
  if (::kill(record.supervisor_pid, mode == StopMode::kGraceful ? SIGTERM : SIGQUIT) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot signal pid {}: {}", record.supervisor_pid,
                                            std::strerror(errno)));
  }
  return {};
}

ResourceLimits cgroup_limits(const WparSpec& spec) {
  ResourceLimits l = spec.limits;
  if (spec.type == WparType::kApplication && !spec.privileged && l.max_processes) *l.max_processes += 1;
  return l;
}

namespace {

// An application WPAR that is not privileged runs in its own PID, IPC and
// mount namespaces, keeping the host's file systems, network and user ids
// (the seed's application WPAR sees no process outside itself): a fresh
// /proc of its PID namespace (its mounts slaves of the host's, so nothing
// goes back), /proc/sys read-only. Its command is the child of a small init,
// PID 1 there, that passes the supervisor's signals on, reaps what is
// orphaned inside, and when the command ends reports its wait status on a
// pipe and exits (the kernel then ends whatever the command left).
constexpr int kAppNamespaces = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNS;

struct Application {
  pid_t pid = -1;       // the command's, or its init's (what the supervisor signals and reaps)
  int status_fd = -1;   // the init's report of the command's wait status (-1: no init)
};

// The init's own mounts: /proc of the new PID namespace, /proc/sys read-only.
std::string mount_own_proc() {
  // The host's mounts still reach the WPAR; none of its own goes back.
  if (::mount(nullptr, "/", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    return fmt::format("cannot make the WPAR's mounts its own: {}", std::strerror(errno));
  }
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    return fmt::format("cannot mount the WPAR's /proc: {}", std::strerror(errno));
  }
  if (::mount("/proc/sys", "/proc/sys", nullptr, MS_BIND | MS_REC, nullptr) != 0 ||
      ::mount(nullptr, "/proc/sys", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              nullptr) != 0) {
    return fmt::format("cannot make the WPAR's /proc/sys read-only: {}", std::strerror(errno));
  }
  if (::mount("/proc/sysrq-trigger", "/proc/sysrq-trigger", nullptr, MS_BIND, nullptr) == 0) {
    (void)::mount(nullptr, "/proc/sysrq-trigger", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr);
  }
  // The host's /sys (and the cgroup trees below it) read-only: its root may
  // read the kernel's settings, never change them.
  mount_attr sys_attr{};
  sys_attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
  if (::mount("/sys", "/sys", nullptr, MS_BIND | MS_REC, nullptr) != 0 ||
      ::syscall(SYS_mount_setattr, AT_FDCWD, "/sys", AT_RECURSIVE, &sys_attr, sizeof sys_attr) != 0) {
    return fmt::format("cannot make the WPAR's /sys read-only: {}", std::strerror(errno));
  }
  // POSIX shared memory and message queues of its own IPC namespace.
  struct stat st {};
  if (::stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
      ::mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k") != 0) {
    return fmt::format("cannot mount the WPAR's /dev/shm: {}", std::strerror(errno));
  }
  if (::stat("/dev/mqueue", &st) == 0 && S_ISDIR(st.st_mode) &&
      ::mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    return fmt::format("cannot mount the WPAR's /dev/mqueue: {}", std::strerror(errno));
  }
  return {};
}

// PID 1 of an application WPAR: runs the command, passes the stop and
// checkpoint signals on, reaps, reports how the command ended and exits.
[[noreturn]] void application_init(char* const* argv, int exec_fd, int status_fd) {
  // Nothing of the supervisor's stays open here (its lock, the console's
  // read end, its signalfd): the init never execs, so close-on-exec is not
  // enough. Stdio and the two pipes are kept.
  int keep[2] = {std::min(exec_fd, status_fd), std::max(exec_fd, status_fd)};
  if (keep[0] > 3) ::close_range(3, static_cast<unsigned>(keep[0]) - 1, 0);
  if (keep[1] > keep[0] + 1) ::close_range(static_cast<unsigned>(keep[0]) + 1, static_cast<unsigned>(keep[1]) - 1, 0);
  ::close_range(static_cast<unsigned>(keep[1]) + 1, ~0U, 0);
  // Nothing in the WPAR may inspect it (its memory is the supervisor's copy).
  ::prctl(PR_SET_DUMPABLE, 0);
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD}) sigaddset(&signals, s);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC);
  if (sfd < 0) {
    write_all(exec_fd, fmt::format("signalfd: {}", std::strerror(errno)));
    ::_exit(127);
  }
  pid_t command = ::fork();
  if (command < 0) {
    write_all(exec_fd, fmt::format("fork: {}", std::strerror(errno)));
    ::_exit(127);
  }
  if (command == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(argv[0], argv);
    write_all(exec_fd, fmt::format("cannot run '{}': {}", argv[0], std::strerror(errno)));
    ::_exit(127);
  }
  ::close(exec_fd);  // the supervisor hears the end of it once the command has exec'd
  ::prctl(PR_SET_NAME, "wpm-init");
  for (;;) {  // ends with _exit when the command has ended
    signalfd_siginfo info{};
    if (::read(sfd, &info, sizeof info) != sizeof info) continue;
    if (info.ssi_signo != SIGCHLD) ::kill(command, static_cast<int>(info.ssi_signo));
    int status = 0;
    pid_t done;
    while ((done = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (done != command) continue;  // an orphan of the WPAR
      (void)::write(status_fd, &status, sizeof status);
      ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
  }
}

// Starts an application WPAR's command in its cgroups (and namespaces), or
// says why it cannot run.
Result<Application> start_application(const WparSpec& spec, CgroupSet& set, int console,
                                      const std::vector<std::string>& capabilities) {
  // The system call filter, made before fork (the child only loads it).
  std::optional<SyscallFilter> filter;
  if (!spec.privileged) {
    auto made = SyscallFilter::wpar_default();
    if (!made) return std::unexpected(made.error());
    filter = std::move(*made);
  }
  const bool own_namespaces = !spec.privileged;
  int exec_pipe[2];
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) return fail(ErrorCode::kIo, "pipe failed");
  int status_pipe[2] = {-1, -1};
  if (own_namespaces && ::pipe2(status_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    ::close(exec_pipe[0]);
    ::close(exec_pipe[1]);
    return fail(ErrorCode::kIo, "pipe failed");
  }
  // Prepared before fork; the child reports a failure as text on the pipe.
  std::vector<std::string> command = spec.command;
  std::vector<char*> argv;
  for (auto& a : command) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Like fork; with namespaces the child is PID 1 of its own.
  pid_t workload = static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD | (own_namespaces ? kAppNamespaces : 0), 0, 0, 0, 0));
  if (workload < 0) {
    const int err = errno;
    for (int fd : {exec_pipe[0], exec_pipe[1], status_pipe[0], status_pipe[1]}) {
      if (fd >= 0) ::close(fd);
    }
    return fail(ErrorCode::kIo, fmt::format("cannot start the WPAR's process: {}", std::strerror(err)));
  }
  if (workload == 0) {
    ::close(exec_pipe[0]);
    if (status_pipe[0] >= 0) ::close(status_pipe[0]);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    std::string why;
    // Its pid as the kernel reads cgroup.procs: in the writer's namespace.
    if (auto r = set.add_process(::getpid()); !r) why = "cannot move the workload into its cgroups";
    if (why.empty() && own_namespaces) why = mount_own_proc();
    int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ::dup2(devnull, 0);
    ::dup2(console, 1);
    ::dup2(console, 2);
    // Nothing of ours beyond stdio reaches the workload.
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    ::setsid();
    for (const auto& [k, v] : spec.env) ::setenv(k.c_str(), v.c_str(), 1);
    if (why.empty()) {
      if (auto r = apply_capabilities(capabilities); !r) why = r.error().message;
    }
    if (why.empty() && filter) {
      if (auto r = filter->apply(); !r) why = r.error().message;
    }
    if (why.empty() && own_namespaces) application_init(argv.data(), exec_pipe[1], status_pipe[1]);
    if (why.empty()) {
      ::execvp(argv[0], argv.data());
      why = fmt::format("cannot run '{}': {}", argv[0], std::strerror(errno));
    }
    write_all(exec_pipe[1], why);
    ::_exit(127);
  }
  ::close(exec_pipe[1]);
  if (status_pipe[1] >= 0) ::close(status_pipe[1]);
  std::string why;
  char buf[256];
  ssize_t n;
  while ((n = ::read(exec_pipe[0], buf, sizeof buf)) > 0) why.append(buf, static_cast<size_t>(n));
  ::close(exec_pipe[0]);
  if (!why.empty()) {
    ::waitpid(workload, nullptr, 0);
    if (status_pipe[0] >= 0) ::close(status_pipe[0]);
    return fail(ErrorCode::kInvalidRequest, why);
  }
  return Application{workload, status_pipe[0]};
}

// Console log per file; two files at most (console.log and console.log.1).
constexpr uint64_t kConsoleBytesMax = 8u << 20;

// The console log (DESIGN.md §5: size-capped): the WPAR writes into a pipe
// the supervisor drains into console.log; past kConsoleBytesMax the file
// becomes console.log.1 (the older one goes), so a WPAR's output never
// takes more than twice that on the host.
class ConsoleLog {
 public:
  ConsoleLog(std::string path, int read_fd) : path_(std::move(path)), read_fd_(read_fd) {}
  ~ConsoleLog() {
    if (fd_ >= 0) ::close(fd_);
    if (read_fd_ >= 0) ::close(read_fd_);
  }
  ConsoleLog(const ConsoleLog&) = delete;
  ConsoleLog& operator=(const ConsoleLog&) = delete;

  bool open() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    struct stat st {};
    size_ = fd_ >= 0 && ::fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    return fd_ >= 0;
  }
  int read_fd() const { return read_fd_; }
  // Moves what the pipe holds now into the file; false once every writer is gone.
  bool drain() {
    char buf[65536];
    for (int i = 0; i < 64; ++i) {  // bounded per call: signals get their turn
      ssize_t n = ::read(read_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno == EAGAIN;
      if (n == 0) return false;
      if (size_ + static_cast<uint64_t>(n) > kConsoleBytesMax) rotate();
      write_all(fd_, std::string(buf, static_cast<size_t>(n)));
      size_ += static_cast<uint64_t>(n);
    }
    return true;
  }

 private:
  void rotate() {
    std::rename(path_.c_str(), (path_ + ".1").c_str());
    ::close(fd_);
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
    size_ = 0;
  }
  std::string path_;
  int read_fd_ = -1;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Until the workload (an application WPAR's command, a system WPAR's init)
// has ended: signals drive everything, and the console is drained as it
// comes. The loop ends when it is reaped; the stop deadline bounds a
// graceful stop.
// `status_fd`: where an application WPAR's init reports how its command
// ended (-1: none; the workload's own status is the answer).
void supervise(int sfd, pid_t workload, int status_fd, CgroupSet& set, const WparSpec& spec, WparRecord& record,
               ConsoleLog& console) {
  bool stopping = false;
  bool console_open = true;
  auto kill_at = std::chrono::steady_clock::now();
  while (!record.ended) {
    int timeout_ms = -1;
    if (stopping) {
      timeout_ms = static_cast<int>(std::max<int64_t>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(kill_at - std::chrono::steady_clock::now()).count()));
    }
    pollfd p[2] = {{sfd, POLLIN, 0}, {console_open ? console.read_fd() : -1, POLLIN, 0}};
    int r = ::poll(p, 2, timeout_ms);
    if (r == 0 && stopping) {
      kill_group(set, SIGKILL);
      stopping = false;
      continue;
    }
    if (r > 0 && (p[1].revents & (POLLIN | POLLHUP))) console_open = console.drain();
    if (r <= 0 || !(p[0].revents & POLLIN)) continue;
    signalfd_siginfo info{};
    if (::read(sfd, &info, sizeof info) != sizeof info) continue;
    if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT || info.ssi_signo == SIGHUP) {
      // A system WPAR's init passes the stop on to every process inside.
      ::kill(workload, SIGTERM);
      if (!stopping) {  // a repeated request does not push the deadline back
        stopping = true;
        kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(spec.stop_timeout_s);
      }
    } else if (info.ssi_signo == SIGQUIT) {
      kill_group(set, SIGKILL);  // a system WPAR's init dies, and with it its PID namespace
    }
    // Reap everything that ended (signals coalesce).
    int status = 0;
    pid_t done;
    while ((done = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (done != workload) continue;
      int relayed = 0;
      if (status_fd >= 0 && ::read(status_fd, &relayed, sizeof relayed) == sizeof relayed) status = relayed;
      record.ended = true;
      record.ended_at_ns = now_ns();
      if (WIFEXITED(status)) record.exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) record.exit_signal = WTERMSIG(status);
    }
  }
  // What the workload wrote last (what it left running may write on until
  // it is killed; that is drained no further).
  if (console_open) (void)console.drain();
}

// The addresses of the agent's WPARs other than `except`, from their specs.
std::map<uint32_t, std::string> addresses_in_use(const std::string& wpars_root,
                                                 const std::string& except) {
  std::map<uint32_t, std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(wpars_root, ec)) {
    std::string name = e.path().filename().string();
    if (name == except || !e.is_directory(ec)) continue;
    auto spec = WparFiles(wpars_root, name).read_spec();
    if (!spec || spec->address.empty()) continue;
    if (auto a = parse_ipv4(spec->address)) out.emplace(*a, spec->name);
  }
  return out;
}

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "(this host)";
  return name;
}

// A network this WPAR's record still names, left by a supervisor that died
// before detaching (or whose detach failed), goes before a new attach.
Result<void> detach_left_over(const WparFiles& files) {
  auto cleaned = cleanup_lost_wpar(files);
  if (!cleaned) return std::unexpected(cleaned.error());
  return {};
}

// The network of a WPAR that ends: detached once its processes are gone (its
// namespace has gone with them, and with it the peer); on failure the record
// keeps it, so the next start or cleanup_lost_wpar detaches it again.
void detach_at_end(WparRecord& record) {
  if (!record.network) return;
  if (auto d = detach_veth(*record.network); !d) {
    // Added to why it is Broken, if it is: that reason stays first.
    record.error += fmt::format("{}the WPAR's network is still attached: {}; the next start or "
                                "rmwpar detaches it again",
                                record.error.empty() ? "" : "; ", d.error().message);
    return;
  }
  record.network.reset();
}

}  // namespace

std::expected<VethPlan, Refusal> plan_wpar_network(const std::string& wpars_root,
                                                   const WparSpec& spec) {
  auto interfaces = host_interfaces();
  if (!interfaces) {
    return std::unexpected(Refusal{
        kExitFailed, fmt::format("cannot read this host's interfaces to place address {}: {}",
                                 spec.address, interfaces.error().message)});
  }
  auto plan = plan_veth(wpars_root, spec.name, spec.address, this_host(), *interfaces,
                        addresses_in_use(wpars_root, spec.name));
  if (!plan) return plan;
  // Another machine's address is not free just because no WPAR holds it.
  if (auto taken = check_address_free_on_link(plan->address, plan->host_interface,
                                              parse_default_gateways(profile::read_text("/proc/net/route")),
                                              parse_arp_neighbours(profile::read_text("/proc/net/arp")))) {
    return std::unexpected(*taken);
  }
  return plan;
}

Result<bool> cleanup_lost_wpar(const WparFiles& files) {
  auto record = files.read_record();
  if (!record) {
    if (record.error().code == ErrorCode::kNotFound) return false;  // never started
    return std::unexpected(record.error());
  }
  if (!record->network || supervisor_alive(record->supervisor_pid)) return false;
  const VethPlan plan = *record->network;
  if (auto d = detach_veth(plan); !d) return std::unexpected(d.error());
  auto cleared = files.update_record([&](WparRecord& r) {
    if (r.network != plan || supervisor_alive(r.supervisor_pid)) return false;
    r.network.reset();
    return true;
  });
  if (!cleared) return std::unexpected(cleared.error());
  return true;
}

int supervisor_main(const std::string& wpars_root, const std::string& name,
                    const std::string& cgroup_relative, int ready_fd,
                    const std::vector<std::string>& masked_dirs, bool idmap_host_layers) {
  WparFiles files(wpars_root, name);
  WparRecord record;
  record.supervisor_pid = ::getpid();
  auto broken = [&](const std::string& why) {
    record.state = WparState::kBroken;
    record.error = why;
    detach_at_end(record);  // start_system_init detached already: repeating is harmless
    (void)files.write_record(record);
    write_all(ready_fd, "error " + why + "\n");
    ::close(ready_fd);
    return 1;
  };
  ::fcntl(ready_fd, F_SETFD, FD_CLOEXEC);  // never inherited by the workload
  // One supervisor per WPAR, whatever races to start it: the lock is held for
  // this process's life (the record is left to the one that holds it).
  int lock_fd = ::open((files.dir() + "/supervisor.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    write_all(ready_fd, fmt::format("error WPAR {} is being started or runs already (its supervisor holds {}/"
                                    "supervisor.lock); check with lswpar\n",
                                    name, files.dir()));
    ::close(ready_fd);
    return 1;
  }
  write_all(ready_fd, fmt::format("pid {}\n", ::getpid()));
  // Dispositions survive exec: start from the defaults whatever the caller set.
  for (int s : {SIGCHLD, SIGPIPE, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2})
    ::signal(s, SIG_DFL);
  auto spec = files.read_spec();
  if (!spec) return broken(spec.error().message);
  const bool system = spec->type == WparType::kSystem;
  if (!system && spec->command.empty()) return broken("the WPAR has no command to run");
  if (!system && !spec->address.empty()) {
    return broken(
        fmt::format("an application WPAR shares the host's network and cannot have "
                    "address {}; make it a system WPAR (mkwpar)",
                    spec->address));
  }
  if (auto left = detach_left_over(files); !left) return broken(left.error().message);
  // Planned again at start: another WPAR may have taken the address, or the
  // host's interfaces changed, since mkwpar checked.
  std::optional<VethPlan> network;
  if (!spec->address.empty()) {
    auto plan = plan_wpar_network(wpars_root, *spec);
    if (!plan) return broken(plan.error().message);
    network = *plan;
  }
  auto host = host_bounding_set();
  if (!host) return broken(host.error().message);
  auto capabilities = wpar_capabilities(spec->capabilities, *host);
  if (!capabilities) return broken(capabilities.error().message);
  // Orphans of the workload come to us, so nothing is left unreaped.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGQUIT, SIGCHLD, SIGINT, SIGHUP}) sigaddset(&signals, s);
  // A reader gone from the report pipe (an agent that gave up or died) must
  // not kill the supervisor: the write fails with EPIPE instead. Children
  // start from an empty mask.
  sigset_t blocked = signals;
  sigaddset(&blocked, SIGPIPE);
  ::sigprocmask(SIG_BLOCK, &blocked, nullptr);
  int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC);
  if (sfd < 0) return broken(fmt::format("signalfd: {}", std::strerror(errno)));

  auto set = CgroupSet::create(CgroupLayout::detect(), cgroup_relative);
  if (!set) return broken(set.error().message);
  if (auto r = set->apply(cgroup_limits(*spec)); !r) {
    (void)set->remove();
    return broken(r.error().message);
  }
  // Only the minimal /dev's devices, whatever nodes the WPAR can reach (an
  // application WPAR sees the host's /dev).
  if (!spec->privileged) {
    if (auto r = set->restrict_devices(minimal_devices(spec->type == WparType::kSystem)); !r) {
      (void)set->remove();
      return broken(fmt::format("cannot limit the WPAR's devices: {}", r.error().message));
    }
  }
  int console_pipe[2];
  if (::pipe2(console_pipe, O_CLOEXEC) != 0) {
    (void)set->remove();
    return broken(fmt::format("pipe: {}", std::strerror(errno)));
  }
  ::fcntl(console_pipe[0], F_SETFL, O_NONBLOCK);
  ConsoleLog console_log(files.console_path(), console_pipe[0]);
  int console = console_pipe[1];
  if (!console_log.open()) {
    ::close(console);
    (void)set->remove();
    return broken(fmt::format("cannot open {}: {}", files.console_path(), std::strerror(errno)));
  }
  // The checkpoint trigger directory, if any, is shared with a system WPAR at
  // the same path, so WPM_STATE_DIR means the same inside and out.
  auto state_dir = spec->env.find("WPM_STATE_DIR");
  // Recorded as soon as it is attached, so that a crash from here on leaves
  // the record naming what cleanup_lost_wpar detaches.
  auto on_attached = [&](const VethAttachment& attachment) {
    record.state = WparState::kTransitional;
    record.network = network;
    record.forwarding_enabled = attachment.forwarding_enabled;
    // Intentionally unchecked: a record we cannot write now we cannot write
    // later either, and this process detaches on its own when the WPAR ends.
    (void)files.write_record(record);
  };
  auto restore_dir = spec->env.find("WPM_RESTORE_DIR");
  SystemInitRequest init_request{&files, &*spec, &*set, console, *capabilities,
                                 state_dir == spec->env.end() ? "" : state_dir->second,
                                 network ? &*network : nullptr, on_attached};
  init_request.restore_dir = restore_dir == spec->env.end() ? "" : restore_dir->second;
  init_request.masked_dirs = masked_dirs;
  // A system WPAR's root is not the host's: its own user namespace, with a
  // range of host ids of its own (a privileged one keeps the host's ids).
  UserNamespaceReport userns_report;
  if (system && !spec->privileged) {
    auto ids = claim_id_range(id_registry_dir(), files.dir());
    if (!ids) {
      ::close(console);
      (void)set->remove();
      return broken(fmt::format("cannot claim a range of host ids for the WPAR: {}", ids.error().message));
    }
    init_request.ids = *ids;
    init_request.idmap_host_layers = idmap_host_layers;
    init_request.user_namespace = &userns_report;
  }
  int status_fd = -1;  // an application WPAR's init's report
  Result<pid_t> workload = [&]() -> Result<pid_t> {
    if (system) return start_system_init(init_request);
    auto app = start_application(*spec, *set, console, *capabilities);
    if (!app) return std::unexpected(app.error());
    status_fd = app->status_fd;
    return app->pid;
  }();
  ::close(console);
  if (!workload) {
    (void)set->remove();
    return broken(workload.error().message);
  }
  record.state = WparState::kActive;
  record.workload_pid = *workload;
  record.started_at_ns = now_ns();
  record.running_capabilities = *capabilities;
  record.ids = init_request.ids;
  record.idmapped = userns_report.idmapped;
  record.ids_note = userns_report.note;
  (void)files.write_record(record);
  write_all(ready_fd, fmt::format("ok {}\n", *workload));
  ::close(ready_fd);

  supervise(sfd, *workload, status_fd, *set, *spec, record, console_log);
  if (status_fd >= 0) ::close(status_fd);
  // The WPAR ends with its workload: whatever it left goes too.
  // Bounded: 500 rounds of 10 ms; each round kills again what forked meanwhile.
  for (int i = 0; i < 500 && !set->processes().value_or(std::vector<pid_t>{}).empty(); ++i) {
    kill_group(*set, SIGKILL);
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  (void)set->remove();
  detach_at_end(record);
  record.state = WparState::kDefined;
  record.running_capabilities.reset();
  (void)files.write_record(record);
  return 0;
}

}  // namespace wpm::runtime
