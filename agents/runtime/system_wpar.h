#pragma once
// System WPARs on real namespaces (DESIGN.md §5): the WPAR's init, started
// by its supervisor in new PID, mount, UTS, IPC and network namespaces, and
// `clogin`, which runs a command inside a running WPAR.
//
// The init (PID 1 inside) builds the WPAR's root from system_fs.h's plan in
// its own mount namespace (all mounts private, so nothing reaches the host
// and everything goes when the namespace dies with its processes), sets the
// hostname, pivots into the root, enters its own user namespace (unless
// privileged; id_map.h), drops to the WPAR's capability set, runs
// the WPAR's optional command and then reaps whatever ends. On SIGTERM it
// passes the stop to every process of the WPAR and exits once its children
// are gone; the supervisor forces (SIGKILL) after the spec's stop timeout.
// SIGUSR1 (the cooperative checkpoint trigger) goes on to the command.
//
// Never: mount anything in the host's mount namespace, or leave a process
// of the WPAR outside its cgroups. errno stays inside this component.
// Thread safety: start_system_init clones the calling process, which must
// be single-threaded (the supervisor is); login likewise (setns of a mount
// namespace needs a single-threaded caller).

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "agents/runtime/cgroups.h"
#include "agents/runtime/id_map.h"
#include "agents/runtime/veth.h"
#include "agents/runtime/wpar_files.h"
#include "schemas/error.h"

namespace wpm::runtime {

// A WPAR in its own user namespace, as started.
struct UserNamespaceReport {
  // The host's layers are idmapped copies (their files show their real owners
  // inside); false: they show the overflow id inside and are read-only to
  // the WPAR, for `note`'s reason (an overlay root, a kernel without it).
  bool idmapped = false;
  std::string note;
};

struct SystemInitRequest {
  const WparFiles* files = nullptr;  // the WPAR's directory
  const WparSpec* spec = nullptr;
  CgroupSet* cgroups = nullptr;           // the init joins them before it does anything
  int console_fd = -1;                    // the init's and the command's stdout and stderr
  std::vector<std::string> capabilities;  // resolved (capabilities.h)
  std::string shared_dir;                 // bound at the same path inside; empty: none
  // The WPAR's veth (veth.h), attached into the init's network namespace
  // while the init waits, before it builds its root. Null: only loopback.
  const VethPlan* network = nullptr;
  // Called once the veth is attached, before the init goes on, so that the
  // caller records what to detach even if it dies right after.
  std::function<void(const VethAttachment&)> on_network_attached;
  // The state a restarted WPAR restores from (WPM_RESTORE_DIR), bound
  // read-only at the same path inside; empty: none.
  std::string restore_dir;
  // Host directories hidden inside (system_fs.h); empty: the parent of the
  // WPAR root (an agent's data directory by default).
  std::vector<std::string> masked_dirs;
  // Its own user namespace with this range of host ids (id_map.h); nullopt:
  // the host's user namespace (a privileged WPAR).
  std::optional<IdRange> ids;
  // Idmapped copies of the host's layers where the host supports them;
  // false: never ([agent] idmap_host_layers = false).
  bool idmap_host_layers = true;
  // Filled in when `ids` is set: how the host's layers appear inside.
  UserNamespaceReport* user_namespace = nullptr;
};

// Whether this host can show its layers to a system WPAR through idmapped
// copies (else they appear as owned by the overflow id, read-only): the
// reason when not.
Result<void> can_idmap_host_layers();

// Creates the WPAR's directories, clones the init and returns its pid (in the
// caller's PID namespace) once the WPAR's root is built and its command runs,
// or why it could not start (the init is then gone and its veth detached).
Result<pid_t> start_system_init(const SystemInitRequest& request);

// The hostname of a system WPAR: its spec's, or its name.
std::string wpar_hostname(const WparSpec& spec);

struct LoginRequest {
  WparSpec spec;
  WparRecord record;  // of the running WPAR
  std::string cgroup_relative;
  std::vector<std::string> command;       // empty: /bin/sh
  std::vector<std::string> capabilities;  // resolved
};

// clogin: runs `command` inside the running WPAR (its namespaces for a system
// WPAR, its cgroups and capability set for both types) with the caller's
// stdin, stdout and stderr, and returns its exit code (128+N when signal N
// ended it; 126 when it cannot run, 127 when it is not found). An error when
// the WPAR cannot be entered.
Result<int> login(const LoginRequest& request);

}  // namespace wpm::runtime
