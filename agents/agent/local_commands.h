#pragma once
// The agent's local WPAR commands, named and flagged after the seed's AIX
// commands (mkwpar/wparexec, lswpar, stopwpar, rmwpar, chkptwpar,
// restartwpar, resumewpar, killwpar). Each returns its exit code and prints
// to stdout/stderr. For now they act on the host directly through the
// runtime; the agent daemon will run the same functions behind its local
// socket.

#include <CLI/CLI.hpp>
#include <string>

namespace wpm::agent {

// Where an agent keeps everything, all derived from its data directory.
struct AgentPaths {
  std::string data_dir;            // --data (default /var/lib/wpm-agent or WPM_AGENT_DATA)
  std::string wpars_root;          // DATA/wpars
  std::string cgroup_root;         // wpm/<agent id>: this agent's cgroups
  std::string supervisor_binary;   // wpm-wpar-supervisor beside wpm-agent
  bool idmap_host_layers = true;   // [agent] idmap_host_layers

  static AgentPaths from_data_dir(const std::string& data_dir);
  // The same, with the roots DATA/agent.toml sets ([agent] wpar_root,
  // cgroup_root); a configuration that cannot be read changes nothing here
  // (the daemon reports it).
  static AgentPaths configured(const std::string& data_dir);
  std::string cgroup_of(const std::string& wpar) const { return cgroup_root + "/" + wpar; }
};

enum class OutputFormat { kTable, kJson };

// Adds the local commands to `app`; the chosen one stores its exit code in `exit_code`.
// `paths` is filled in before any callback runs (the --data option is global).
void add_local_commands(CLI::App& app, const AgentPaths& paths, OutputFormat& format,
                        int& exit_code);

// Exit code for a parse error of subcommand `name`: the seed's commands use 1
// for invalid arguments, ours use 2.
int usage_exit_code(const std::string& name);

}  // namespace wpm::agent
