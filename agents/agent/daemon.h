#pragma once
// The wpm-agent daemon (DESIGN.md §1, §5, §8): registration state, Started
// and heartbeats to the manager over the CURVE agent channel, the agent port
// for the manager's commands (only the pinned manager key is admitted), the
// agent's /metrics, and the local socket through which `wpm-agent` commands
// run on the daemon's behalf (root only). Unconfigured, it runs standalone
// and starts reporting once `wpm-agent configure` has registered it.
//
// Thread safety: run_daemon() owns the calling thread.

#include <string>

#include "agents/agent/agent_config.h"
#include "agents/agent/local_commands.h"

namespace wpm::agent {

struct DaemonOptions {
  AgentPaths paths;
  AgentConfig config;
  bool foreground = true;  // also log to stderr
};

// Runs until SIGTERM/SIGINT; returns the process exit code.
int run_daemon(const DaemonOptions& options);

// The daemon's pid when one runs on `data_dir` (its pid file is locked), else 0.
int running_daemon_pid(const std::string& data_dir);

// The local socket, DATA/agent.sock.
std::string socket_path(const std::string& data_dir);

// Runs the command `args` (wpm-agent's arguments after the program name) in
// the daemon behind `data_dir`, with this process's stdin, stdout and stderr.
// Returns its exit code, or nothing when no daemon answers (run it here).
std::optional<int> forward_to_daemon(const std::string& data_dir, const std::vector<std::string>& args);

// Set in a command the daemon runs, so that it runs rather than forwards.
inline constexpr const char* kDirectEnv = "WPM_AGENT_DIRECT";

}  // namespace wpm::agent
