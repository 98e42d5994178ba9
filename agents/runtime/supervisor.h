#pragma once
// The supervisor of a deployed WPAR (DESIGN.md §5, like Podman's conmon): a
// small process, separate from the agent and outliving it, that puts the
// workload in the WPAR's cgroups, starts it with its console log, reaps it and
// everything it leaves behind, and writes the WPAR's record (status.json).
// The agent starts it detached and re-attaches later by reading the record.
//
// An application WPAR's workload is its command; a system WPAR's is its init
// (system_wpar.h), in the WPAR's own namespaces. Until the agent's local
// socket exists, a supervisor takes SIGTERM as "stop gracefully" and SIGQUIT
// as "stop now".

#include <chrono>
#include <string>

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
};

// Starts the supervisor detached from the caller (its own session, reparented
// away from the caller) and returns once the workload runs, with its record,
// or why it could not start.
Result<WparRecord> start_supervisor(const SupervisorLaunch& launch);

enum class StopMode { kGraceful, kForced };
// Asks a WPAR's supervisor to stop it.
Result<void> stop_supervisor(const WparRecord& record, StopMode mode);

// The supervisor process itself (wpm-wpar-supervisor's main).
int supervisor_main(const std::string& wpars_root, const std::string& name,
                    const std::string& cgroup_relative, int ready_fd);

}  // namespace wpm::runtime
