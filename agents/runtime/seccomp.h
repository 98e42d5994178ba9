#pragma once
// The system call filter of a WPAR (DESIGN.md §5 "Privileges";
// agents/README.md "What keeps the host safe from a WPAR's root user"), in
// the spirit of the container runtimes' default profiles: every call is
// allowed but those that reach past the WPAR into the host's kernel state
// (modules, kexec, BPF, perf events, keyrings, io_uring, userfaultfd, the
// clock, swap, reboot, accounting, file handles of the host's file systems),
// mounts (a WPAR's are made before it runs; with cap_sys_admin granted it
// could otherwise unmask the host's secrets), pushing input into a terminal
// (TIOCSTI: a process left in the WPAR typing into the operator's shell after
// clogin) and the making of user namespaces, which would hand the WPAR's
// root a fresh set of capabilities. Those fail with EPERM; clone3, whose flags live in
// memory a filter cannot read, fails with ENOSYS so the C library falls back
// to clone, whose flags it can.
//
// no_new_privs is set with it: nothing a WPAR execs gains privileges (a setuid
// binary runs with its caller's ids, file capabilities are not granted).
// A privileged WPAR (--privileged) gets neither.
//
// Thread safety: a filter is a plain value. apply() acts on the calling
// thread (inherited by its children, kept across exec) and allocates
// nothing: made before fork, applied in the child before exec.

#include <linux/filter.h>

#include <span>
#include <string_view>
#include <vector>

#include "schemas/error.h"

namespace wpm::runtime {

struct FilteredCall {
  std::string_view name;  // as the kernel's tables name it
  int error;              // what the call returns (errno)
  std::string_view why;   // for the documentation and refusals
};

// The calls the filter refuses outright (clone and unshare are refused only
// with CLONE_NEWUSER among their flags).
std::span<const FilteredCall> filtered_calls();

class SyscallFilter {
 public:
  // The WPAR filter, compiled for every system call ABI of the machine (on
  // x86-64 also i386 and x32 calls, refused alike).
  static Result<SyscallFilter> wpar_default();
  // Sets no_new_privs and loads the filter on the calling thread.
  Result<void> apply() const;
  size_t instructions() const { return program_.size(); }

 private:
  std::vector<sock_filter> program_;
};

}  // namespace wpm::runtime
