#include "agents/runtime/seccomp.h"

#include <fmt/format.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>

namespace wpm::runtime {
namespace {

constexpr std::array kFiltered{
    FilteredCall{"init_module", EPERM, "loads a kernel module"},
    FilteredCall{"finit_module", EPERM, "loads a kernel module"},
    FilteredCall{"delete_module", EPERM, "unloads a kernel module"},
    FilteredCall{"create_module", EPERM, "kernel modules (old call)"},
    FilteredCall{"kexec_load", EPERM, "replaces the running kernel"},
    FilteredCall{"kexec_file_load", EPERM, "replaces the running kernel"},
    FilteredCall{"bpf", EPERM, "loads programs into the kernel"},
    FilteredCall{"perf_event_open", EPERM, "observes the host's processes and kernel"},
    FilteredCall{"add_key", EPERM, "the kernel's keyrings are not namespaced"},
    FilteredCall{"request_key", EPERM, "the kernel's keyrings are not namespaced"},
    FilteredCall{"keyctl", EPERM, "the kernel's keyrings are not namespaced"},
    FilteredCall{"io_uring_setup", EPERM, "a second path into the kernel that the filter cannot see"},
    FilteredCall{"io_uring_enter", EPERM, "a second path into the kernel that the filter cannot see"},
    FilteredCall{"io_uring_register", EPERM, "a second path into the kernel that the filter cannot see"},
    FilteredCall{"userfaultfd", EPERM, "stalls the kernel at will (exploit aid)"},
    FilteredCall{"settimeofday", EPERM, "the clock is the host's"},
    FilteredCall{"stime", EPERM, "the clock is the host's"},
    FilteredCall{"clock_settime", EPERM, "the clock is the host's"},
    FilteredCall{"clock_settime64", EPERM, "the clock is the host's"},
    FilteredCall{"clock_adjtime", EPERM, "the clock is the host's"},
    FilteredCall{"clock_adjtime64", EPERM, "the clock is the host's"},
    FilteredCall{"adjtimex", EPERM, "the clock is the host's"},
    FilteredCall{"swapon", EPERM, "swap is the host's"},
    FilteredCall{"swapoff", EPERM, "swap is the host's"},
    FilteredCall{"reboot", EPERM, "the host's power"},
    FilteredCall{"acct", EPERM, "process accounting is the host's"},
    FilteredCall{"open_by_handle_at", EPERM, "opens any file of a host file system by its handle"},
    FilteredCall{"lookup_dcookie", EPERM, "kernel profiling"},
    FilteredCall{"quotactl", EPERM, "the host's disk quotas"},
    FilteredCall{"nfsservctl", EPERM, "the host's NFS server"},
    FilteredCall{"syslog", EPERM, "the host's kernel log"},
    FilteredCall{"uselib", EPERM, "obsolete, a past exploit path"},
    FilteredCall{"vm86", EPERM, "obsolete, a past exploit path"},
    FilteredCall{"vm86old", EPERM, "obsolete, a past exploit path"},
    FilteredCall{"iopl", EPERM, "the host's I/O ports"},
    FilteredCall{"ioperm", EPERM, "the host's I/O ports"},
    FilteredCall{"mount", EPERM, "the WPAR's mounts are made before it runs"},
    FilteredCall{"umount", EPERM, "the WPAR's mounts are made before it runs"},
    FilteredCall{"umount2", EPERM, "the WPAR's mounts are made before it runs (and mask the host's secrets)"},
    FilteredCall{"pivot_root", EPERM, "the WPAR's mounts are made before it runs"},
    FilteredCall{"fsopen", EPERM, "the mount API"},
    FilteredCall{"fsconfig", EPERM, "the mount API"},
    FilteredCall{"fsmount", EPERM, "the mount API"},
    FilteredCall{"fspick", EPERM, "the mount API"},
    FilteredCall{"move_mount", EPERM, "the mount API"},
    FilteredCall{"open_tree", EPERM, "the mount API"},
    FilteredCall{"mount_setattr", EPERM, "the mount API"},
    FilteredCall{"clone3", ENOSYS, "its flags cannot be read by the filter: the C library falls back to clone"},
};

struct Release {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

std::string text(const char* what, int rc) { return fmt::format("seccomp: {}: {}", what, std::strerror(-rc)); }

}  // namespace

std::span<const FilteredCall> filtered_calls() { return kFiltered; }

Result<SyscallFilter> SyscallFilter::wpar_default() {
  std::unique_ptr<void, Release> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return fail(ErrorCode::kInternal, "seccomp: cannot make a filter");
  // The other ABIs this machine runs (an i386 binary on x86-64): the same
  // rules for them, not an open door (an ABI the filter lacks is killed).
  for (uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
    if (seccomp_arch_native() != SCMP_ARCH_X86_64) break;
    if (int rc = seccomp_arch_add(ctx.get(), arch); rc != 0 && rc != -EEXIST) return fail(ErrorCode::kInternal, text("arch", rc));
  }
  for (const auto& call : kFiltered) {
    int nr = seccomp_syscall_resolve_name(std::string(call.name).c_str());
    if (nr == __NR_SCMP_ERROR) continue;  // not a call of this machine
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(static_cast<uint32_t>(call.error)), nr, 0);
    if (rc != 0 && rc != -EDOM) return fail(ErrorCode::kInternal, text(std::string(call.name).c_str(), rc));
  }
  // No new user namespace: clone and unshare with CLONE_NEWUSER (their first
  // argument on the ABIs we run: x86-64, i386, x32, arm64).
  for (const char* call : {"clone", "unshare"}) {
    int nr = seccomp_syscall_resolve_name(call);
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), nr, 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    if (rc != 0) return fail(ErrorCode::kInternal, text(call, rc));
  }
  // No keystrokes pushed into a terminal (TIOCSTI: a process left in the
  // WPAR typing into the operator's shell after clogin), no console switch.
  for (unsigned long request : {static_cast<unsigned long>(TIOCSTI), static_cast<unsigned long>(TIOCLINUX)}) {
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, request));
    if (rc != 0) return fail(ErrorCode::kInternal, text("ioctl", rc));
  }
  // The compiled program, through a memory file (libseccomp 2.5 exports to a descriptor).
  int fd = ::memfd_create("wpm-seccomp", MFD_CLOEXEC);
  if (fd < 0) return fail(ErrorCode::kIo, fmt::format("seccomp: memfd: {}", std::strerror(errno)));
  std::string bytes;
  int rc = seccomp_export_bpf(ctx.get(), fd);
  if (rc == 0 && ::lseek(fd, 0, SEEK_SET) == 0) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (rc != 0) return fail(ErrorCode::kInternal, text("export", rc));
  if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0) {
    return fail(ErrorCode::kInternal, fmt::format("seccomp: a program of {} bytes", bytes.size()));
  }
  SyscallFilter f;
  f.program_.resize(bytes.size() / sizeof(sock_filter));
  std::memcpy(f.program_.data(), bytes.data(), bytes.size());
  return f;
}

Result<void> SyscallFilter::apply() const {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return fail(ErrorCode::kInternal, fmt::format("cannot set no_new_privs: {}", std::strerror(errno)));
  }
  sock_fprog prog{static_cast<unsigned short>(program_.size()), const_cast<sock_filter*>(program_.data())};
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
    return fail(ErrorCode::kInternal, fmt::format("cannot load the system call filter: {}", std::strerror(errno)));
  }
  return {};
}

}  // namespace wpm::runtime
