#pragma once
// A WPAR's capability set (DESIGN.md §5 "Privileges"): which Linux
// capabilities the processes of a WPAR keep, chosen from the host's bounding
// set. The set is fixed when a process starts: apply_capabilities() drops the
// bounding set and sets the effective, permitted and inheritable sets (and
// clears the ambient set) of the calling process, so everything it execs as
// root has exactly that set and can never gain more.
//
// Parsing and resolving a request are pure (names in, names out, host set
// passed in); applying and reading the host's set touch the kernel.
// Never: grant a capability the host's bounding set lacks (refused with a
// message naming it). Thread safety: the functions keep no state;
// apply_capabilities acts on the calling thread and is meant for a child
// between fork and exec.

#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agents/runtime/lifecycle.h"
#include "schemas/error.h"

namespace wpm::runtime {

// The default set of a WPAR, like the default of container runtimes (Docker,
// Podman): enough for ordinary daemons and package tools, nothing that
// changes the host (no sys_admin, net_admin, sys_module, sys_time, …).
inline constexpr const char* kDefaultCapabilities[] = {
    "cap_chown",      "cap_dac_override", "cap_fowner",      "cap_fsetid",           "cap_kill",
    "cap_setgid",     "cap_setuid",       "cap_setpcap",     "cap_net_bind_service", "cap_net_raw",
    "cap_sys_chroot", "cap_audit_write",  "cap_setfcap",
};
// Not in the default: cap_mknod. The device limit (devices.h) refuses a node
// for a host disk anyway, and the WPAR's file systems are mounted nodev
// besides; a privileged WPAR has no device limit, so a granted cap_mknod
// there is raw access to the host's disks.

// Exit codes of a refused request (the local commands return them).
inline constexpr int kExitCapabilitySyntax = 2;     // unknown name, mixed list and edits
inline constexpr int kExitCapabilityNotOnHost = 1;  // the host's bounding set lacks it

// The canonical name ("cap_net_admin") of `name` given as "CAP_NET_ADMIN",
// "net_admin" or "cap_net_admin"; nullopt when the kernel has no such
// capability.
std::optional<std::string> canonical_capability(std::string_view name);

// The set a request names, checked against `host` (canonical names):
//   ""                   the default set, without what the host lacks;
//   "cap_a,cap_b"        exactly these;
//   "+cap_a,-cap_b"      the default set with these edits;
//   "none" / "all"       no capability / every capability of the host.
// A named capability the host lacks is refused (exit 1); an unknown name or a
// list mixing plain names and edits is refused as a usage error (exit 2).
// The result is sorted by capability number.
std::expected<std::vector<std::string>, Refusal> resolve_capabilities(
    std::string_view request, const std::vector<std::string>& host);

// The set a stored spec gives (nullopt: the default), checked against the
// host it starts on: a spec made on another host may name a capability this
// host lacks, which is refused.
std::expected<std::vector<std::string>, Refusal> wpar_capabilities(
    const std::optional<std::vector<std::string>>& stored, const std::vector<std::string>& host);

// The bounding set of this process (canonical names): what the host, as the
// agent sees it, allows.
Result<std::vector<std::string>> host_bounding_set();

// Makes `names` the calling process's bounding, effective, permitted and
// inheritable sets and clears its ambient set.
Result<void> apply_capabilities(const std::vector<std::string>& names);

}  // namespace wpm::runtime
