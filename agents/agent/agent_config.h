#pragma once
// The agent's configuration and registration, all under its data directory:
//   DATA/agent.toml         the operator's settings (optional; defaults below)
//   DATA/registration.json  what `wpm-agent configure` learned: the manager, its
//                           pinned key, this system's id (absent: standalone)
//   DATA/keys/agent.key     the agent's CURVE key pair (mode 0600)
//   DATA/status.json        what the running daemon last knew (for `status`)
//   DATA/endpoints          the ports the daemon bound
//   DATA/agent.pid, DATA/agent.sock (root only), DATA/logs/agent.log
// Parsing is pure where it can be; the files are read and written atomically.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "schemas/error.h"
#include "schemas/profile.h"

namespace wpm::agent {

// Logging, with the seed's keys (log.enabled, log.append, log.count,
// log.level, log.limit) under [log].
struct LoggingConfig {
  bool enabled = true;
  bool append = false;                 // append to the existing log, or start a new one
  uint32_t count = 5;                  // files kept
  std::string level = "info";          // spdlog level (seed names are mapped)
  uint64_t limit_bytes = 1'000'000;    // size of each file
};

// Facts of the system profile set by hand ([profile] in agent.toml), for
// labs and tests: hosts on one machine can then differ, e.g. to try the
// compatibility tests. Every override is logged as a warning at start and
// travels in the profile (overriddenFacts), so the manager shows it.
struct ProfileOverrides {
  std::optional<std::string> distribution, distribution_version, kernel_version, base_system_version,
      glibc_version, architecture, isa_level, agent_version;
  std::optional<std::vector<std::string>> cpu_flags;
  std::optional<double> cpu_mhz;
  std::optional<uint64_t> memory_bytes;
  std::optional<bool> memory_protection_keys, ntp;
  bool empty() const;
  // Applies them and lists their names in profile.overridden_facts.
  void apply(profile::SystemProfile& profile) const;
};

struct AgentConfig {
  // The agent port: commands from the manager and, later, state-file
  // transfer (CURVE). Port 0 picks one. Default: tcp://0.0.0.0:9510.
  std::string agent_endpoint = "tcp://0.0.0.0:9510";
  // Prometheus /metrics. Default: 0.0.0.0:9511.
  std::string metrics_listen = "0.0.0.0:9511";
  // Seconds between heartbeats. Default: 5.
  uint32_t heartbeat_s = 5;
  // Where the WPARs' files live (absolute). Default: DATA/wpars.
  std::string wpar_root;
  // The agent's cgroup subtree, relative to each hierarchy's root.
  // Default: wpm/<data directory name>-<hash of its path>.
  std::string cgroup_root;
  // [agent] idmap_host_layers: a system WPAR in its own user namespace sees
  // the host's layers through idmapped copies (their files with their real
  // owners) where the host supports them. false: never (they then show the
  // overflow id inside and are read-only to the WPAR). Default: true.
  bool idmap_host_layers = true;
  LoggingConfig logging;
  ProfileOverrides profile;
  // [metrics] host_scope: "host" (default) reports the host's own CPU,
  // memory and processes; "wpars" reports the sum of this agent's WPARs as
  // the host's, for labs and tests where several agents share one machine
  // (logged as a warning, shown by `wpm system show`).
  std::string metrics_host_scope = "host";
};

// The seed's levels (ERROR, WARNING, INFO, VERBOSE, FINE, FINER, FINEST) and
// spdlog's own names, to an spdlog level name; empty when unknown.
std::string map_log_level(std::string_view level);

// Parses agent.toml text; unknown keys are errors (a typo never falls back to
// a default silently). `origin` names the file in messages.
Result<AgentConfig> parse_agent_config(std::string_view toml_text, const std::string& origin);
// DATA/agent.toml, or the defaults when there is none.
Result<AgentConfig> load_agent_config(const std::string& data_dir);

struct Registration {
  std::string manager_host;
  uint16_t public_port = 9513;
  uint16_t channel_port = 9514;
  std::string manager_public_key;   // Z85, pinned at configure
  std::string manager_fingerprint;
  std::string system_id;
  int64_t registered_at_ns = 0;
  bool operator==(const Registration&) const = default;
};

Result<std::optional<Registration>> read_registration(const std::string& data_dir);
Result<void> write_registration(const std::string& data_dir, const Registration& registration);
Result<void> remove_registration(const std::string& data_dir);

// What the daemon last knew, for `wpm-agent status`.
struct AgentStatus {
  int pid = 0;
  int64_t started_at_ns = 0;
  int64_t last_contact_ns = 0;   // last reply from the manager
  std::string last_error;        // why the manager was not reached, if so
  std::string system_id;
  std::string manager;
  bool operator==(const AgentStatus&) const = default;
};
Result<void> write_status(const std::string& data_dir, const AgentStatus& status);
Result<AgentStatus> read_status(const std::string& data_dir);

// Writes `content` to `path` atomically (temp + fsync + rename) with `mode`.
Result<void> write_file_atomic(const std::string& path, const std::string& content, unsigned mode);

}  // namespace wpm::agent
