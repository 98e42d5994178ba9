#pragma once
// The supervisor of a deployed WPAR (DESIGN.md §5, like Podman's conmon): a
// small process, separate from the agent and outliving it, that puts the
// workload in the WPAR's cgroups, starts it with its console log, reaps it and
// everything it leaves behind, and writes the WPAR's record (status.json).
// The agent starts it detached and re-attaches later by reading the record.
//
// An application WPAR's workload is its command; a system WPAR's is its init
// (system_wpar.h), in the WPAR's own namespaces, with the veth of its address
// (veth.h) if it has one: planned again at each start, recorded as soon as it
// is attached, detached once the WPAR's processes are gone. Until the agent's
// local socket exists, a supervisor takes SIGTERM as "stop gracefully" and
// SIGQUIT as "stop now".

#include <chrono>
#include <expected>
#include <string>
#include <vector>

#include "agents/runtime/lifecycle.h"
#include "agents/runtime/veth.h"
#include "agents/runtime/wpar_files.h"
#include "schemas/error.h"

namespace wpm::runtime {

struct SupervisorLaunch {
  std::string supervisor_binary;  // path of wpm-wpar-supervisor
  std::string wpars_root;         // DATA/wpars; the spec is in wpars_root/NAME/spec.json
  std::string name;
  std::string cgroup_relative;    // e.g. "wpm/<agent>/<name>"
  // How long to wait for the supervisor to report the workload running.
  // Default: 10 s.
  std::chrono::milliseconds ready_timeout{10'000};
  // Host directories a system WPAR must not see (the agent's data directory,
  // its WPAR root). Empty: the parent of wpars_root.
  std::vector<std::string> masked_dirs;
  // A system WPAR in its own user namespace sees the host's layers through
  // idmapped copies where the host supports them (system_wpar.h).
  bool idmap_host_layers = true;
};

// Starts the supervisor detached from the caller (its own session, reparented
// away from the caller) and returns once the workload runs, with its record,
// or why it could not start.
Result<WparRecord> start_supervisor(const SupervisorLaunch& launch);

enum class StopMode { kGraceful, kForced };
// Asks a WPAR's supervisor to stop it.
Result<void> stop_supervisor(const WparRecord& record, StopMode mode);

// The veth plan of system WPAR `spec` (its `address`) on this host: the host's
// interfaces now, and the addresses of the agent's other WPARs (their specs
// under `wpars_root`, which also names the agent in the host end's name). A
// refusal (exit code and message of check_wpar_address) when the address is
// outside every subnet, the host's own, or another WPAR's; also when the
// host's interfaces cannot be read. mkwpar and startwpar check with it, and
// the supervisor plans with it again when it starts the WPAR.
std::expected<VethPlan, Refusal> plan_wpar_network(const std::string& wpars_root,
                                                   const WparSpec& spec);

// For a WPAR whose supervisor is gone (killed, or the host restarted): detaches
// the network its record says is attached and clears it from the record.
// Returns whether it detached one; nothing is done while the supervisor runs.
// Idempotent; a restarted agent calls it for every WPAR it finds lost, and
// rmwpar before removing a WPAR.
Result<bool> cleanup_lost_wpar(const WparFiles& files);

// The supervisor process itself (wpm-wpar-supervisor's main).
int supervisor_main(const std::string& wpars_root, const std::string& name,
                    const std::string& cgroup_relative, int ready_fd,
                    const std::vector<std::string>& masked_dirs = {}, bool idmap_host_layers = true);

// The limits its cgroups get: the spec's, with a process more for the init
// of an application WPAR's PID namespace (it counts as one of them).
ResourceLimits cgroup_limits(const WparSpec& spec);

}  // namespace wpm::runtime
