// wpm-test-syscalls: calls each system call a WPAR's filter refuses, with
// arguments that change nothing when the call is allowed (an invalid file
// descriptor, a missing path, a query), and prints one line per call:
// "NAME ERRNO" (0: it returned without error). Run inside a filtered WPAR
// and a privileged one with the same capabilities, the two lists differ
// exactly where the filter answers (tests/integration/hardening_test.cpp).
#include <linux/sched.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <string_view>
#include <utility>
#include <vector>

namespace {

long sys(long nr, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0) {
  return ::syscall(nr, a, b, c, d, e);
}

// Runs `call` in a child (a call that could change the caller, such as a
// new user namespace, changes only the child) and returns its errno.
int in_child(const std::function<long()>& call) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) _exit(call() < 0 ? (errno & 0xff) : 0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

int main() {
  const long missing = reinterpret_cast<long>("/nonexistent/wpm-test");
  std::vector<std::pair<const char*, std::function<long()>>> calls = {
      {"init_module", [] { return sys(SYS_init_module, 0, 0, reinterpret_cast<long>("")); }},
      {"finit_module", [] { return sys(SYS_finit_module, -1, reinterpret_cast<long>(""), 0); }},
      {"delete_module", [] { return sys(SYS_delete_module, reinterpret_cast<long>("wpm_no_such_module"), 0); }},
      {"kexec_load", [] { return sys(SYS_kexec_load, 0, 0, 0, 0); }},
      {"kexec_file_load", [] { return sys(SYS_kexec_file_load, -1, -1, 0, 0, 0); }},
      {"bpf", [] { return sys(SYS_bpf, -1, 0, 0); }},
      {"perf_event_open", [] { return sys(SYS_perf_event_open, 0, 0, -1, -1, 0); }},
      {"add_key", [] { return sys(SYS_add_key, 0, 0, 0, 0, 0); }},
      {"request_key", [] { return sys(SYS_request_key, 0, 0, 0, 0); }},
      {"keyctl", [] { return sys(SYS_keyctl, -1, 0, 0, 0, 0); }},
      {"io_uring_setup", [] { return sys(SYS_io_uring_setup, 0, 0); }},
      {"io_uring_enter", [] { return sys(SYS_io_uring_enter, -1, 0, 0, 0, 0); }},
      {"io_uring_register", [] { return sys(SYS_io_uring_register, -1, 0, 0, 0); }},
      {"userfaultfd", [] { return sys(SYS_userfaultfd, -1); }},
      {"settimeofday", [] { return sys(SYS_settimeofday, 0, 0); }},
      {"clock_settime", [] { return sys(SYS_clock_settime, -1, 0); }},
      {"clock_adjtime", [] { return sys(SYS_clock_adjtime, -1, 0); }},
      {"adjtimex", [] { return sys(SYS_adjtimex, 0); }},
      {"swapon", [missing] { return sys(SYS_swapon, missing, 0); }},
      {"swapoff", [missing] { return sys(SYS_swapoff, missing); }},
      {"reboot", [] { return sys(SYS_reboot, 0, 0, 0, 0); }},
      {"acct", [missing] { return sys(SYS_acct, missing); }},
      {"open_by_handle_at", [] { return sys(SYS_open_by_handle_at, -1, 0, 0); }},
      {"quotactl", [] { return sys(SYS_quotactl, 0, 0, 0, 0); }},
      {"syslog", [] { return sys(SYS_syslog, 10, 0, 0); }},  // the size of the kernel's log
      {"iopl", [] { return sys(SYS_iopl, 0); }},
      {"ioperm", [] { return sys(SYS_ioperm, 0, 0, 0); }},
      {"mount", [] { return sys(SYS_mount, 0, 0, 0, 0, 0); }},
      {"umount2", [missing] { return sys(SYS_umount2, missing, 0); }},
      {"pivot_root", [] { return sys(SYS_pivot_root, 0, 0); }},
      {"fsopen", [] { return sys(SYS_fsopen, 0, 0); }},
      {"open_tree", [] { return sys(SYS_open_tree, -1, 0, 0); }},
      {"move_mount", [] { return sys(SYS_move_mount, -1, 0, -1, 0, 0); }},
      {"mount_setattr", [] { return sys(SYS_mount_setattr, -1, 0, 0, 0, 0); }},
      {"ioctl(TIOCSTI)", [] {
         char c = 0;
         return sys(SYS_ioctl, 0, TIOCSTI, reinterpret_cast<long>(&c));  // stdin: /dev/null, not a terminal
       }},
      {"clone3", [] { return sys(SYS_clone3, 0, 0); }},
      {"unshare(CLONE_NEWUSER)", [] { return static_cast<long>(in_child([] { return sys(SYS_unshare, CLONE_NEWUSER); })); }},
      {"clone(CLONE_NEWUSER)",
       [] {
         return static_cast<long>(in_child([] {
           long pid = sys(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
           if (pid == 0) _exit(0);
           if (pid > 0) ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
           return pid;
         }));
       }},
      // Not refused: a plain fork still works.
      {"fork", [] { return static_cast<long>(in_child([] { return 0L; })); }},
  };
  for (const auto& [name, call] : calls) {
    errno = 0;
    long rc = call();
    int err = 0;
    if (std::string_view(name).find("CLONE_NEWUSER") != std::string_view::npos || std::string_view(name) == "fork") {
      err = static_cast<int>(rc);  // the child's errno
    } else if (rc < 0) {
      err = errno;
    }
    std::printf("%s %d\n", name, err);
  }
  // How the kernel sees this process: "NoNewPrivs 1", "Seccomp 2" (a filter).
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      int v = 0;
      if (std::sscanf(line, "NoNewPrivs: %d", &v) == 1) std::printf("NoNewPrivs %d\n", v);
      if (std::sscanf(line, "Seccomp: %d", &v) == 1) std::printf("Seccomp %d\n", v);
    }
    std::fclose(f);
  }
  std::fflush(stdout);
  return 0;
}
