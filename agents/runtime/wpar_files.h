#pragma once
// A WPAR's files on the agent's disk (DESIGN.md §5): its spec, its status as
// the supervisor last wrote it, and its console log, all under one directory
// (DATA/wpars/NAME). They let a restarted agent re-attach to what runs and
// report what ended while it was away. Writes are atomic (temp + rename).

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agents/runtime/cgroups.h"
#include "agents/runtime/lifecycle.h"
#include "agents/runtime/id_map.h"
#include "agents/runtime/veth.h"
#include "schemas/error.h"

namespace wpm::runtime {

struct WparSpec {
  std::string name;
  WparType type = WparType::kApplication;
  // Application WPAR: what it runs. System WPAR: the optional command its
  // init starts (empty: the init alone, until the WPAR is stopped).
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  ResourceLimits limits;
  bool checkpointable = false;
  // Seconds between the graceful stop signal and SIGKILL. Default: 10.
  uint32_t stop_timeout_s = 10;
  // System WPAR: its hostname. Default: empty, meaning the WPAR's name.
  std::string hostname;
  // The capability set its processes keep (canonical names, capabilities.h).
  // Default: nullopt, the default set within the host's bounding set.
  std::optional<std::vector<std::string>> capabilities;
  // System WPAR: its IPv4 address (text, as given) on a routed veth into its
  // network namespace (veth.h); the host interface is the one whose subnet
  // holds it. Default: empty, no network but loopback.
  std::string address;
  // Privileged: no system call filter and no no_new_privs (seccomp.h), and an
  // application WPAR keeps the host's PID and IPC namespaces: today's
  // behaviour before hardening, for workloads that need it. Default: false.
  bool privileged = false;
  bool operator==(const WparSpec&) const = default;
};

// What the supervisor reports. `state` is the lifecycle state; an application
// WPAR whose command ended has `ended` set with how it ended.
struct WparRecord {
  WparState state = WparState::kDefined;
  pid_t supervisor_pid = 0;
  pid_t workload_pid = 0;
  int64_t started_at_ns = 0;
  bool ended = false;
  std::optional<int> exit_code;    // when the command exited
  std::optional<int> exit_signal;  // when a signal ended it
  int64_t ended_at_ns = 0;
  std::string error;               // why it is Broken
  // The capability set its running processes started with (written at
  // start). A change since (chwpar) applies to processes started later:
  // lswpar shows it as pending while this differs from the spec's.
  std::optional<std::vector<std::string>> running_capabilities;
  // The WPAR's veth while it is attached: written by the supervisor as soon
  // as attach succeeds and cleared once detached, so a stop, a crash of the
  // init or a restarted agent (cleanup_lost_wpar) knows what to detach.
  std::optional<VethPlan> network;
  // The WPAR's attach turned net.ipv4.ip_forward on (it was off on this
  // host); it stays on after detach.
  bool forwarding_enabled = false;
  // A system WPAR in its own user namespace (id_map.h), as last started: its
  // range of host ids, and whether the host's layers are idmapped (their
  // files show their real owners inside) or not, and why not (then they show
  // the overflow id and are read-only to the WPAR). nullopt: the host's ids.
  std::optional<IdRange> ids;
  bool idmapped = false;
  std::string ids_note;
  bool operator==(const WparRecord&) const = default;
};

class WparFiles {
 public:
  WparFiles(std::string root, std::string name);  // root = DATA/wpars
  const std::string& dir() const { return dir_; }
  std::string spec_path() const { return dir_ + "/spec.json"; }
  std::string record_path() const { return dir_ + "/status.json"; }
  std::string console_path() const { return dir_ + "/console.log"; }

  Result<void> create_dir() const;
  Result<void> write_spec(const WparSpec& spec) const;
  Result<WparSpec> read_spec() const;
  Result<void> write_record(const WparRecord& record) const;
  Result<WparRecord> read_record() const;
  // Re-reads the record, lets `change` edit it (return false to leave it) and
  // writes it, all under the record's lock. Returns whether it was written.
  Result<bool> update_record(const std::function<bool(WparRecord&)>& change) const;

 private:
  Result<void> write_record_unlocked(const WparRecord& record) const;
  std::string dir_;
};

// The stored JSON forms (spec.json, status.json), also what listings print.
nlohmann::json spec_to_json(const WparSpec& spec);
nlohmann::json record_to_json(const WparRecord& record);

// Waits until the record says the WPAR ended (or is Broken), up to `timeout`.
bool wait_until_ended(const WparFiles& files, std::chrono::milliseconds timeout);

// True when `pid` runs the supervisor binary (not a recycled pid).
bool supervisor_alive(pid_t pid);

}  // namespace wpm::runtime
