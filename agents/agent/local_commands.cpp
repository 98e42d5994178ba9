#include "agents/agent/local_commands.h"

#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "agents/agent/agent_config.h"
#include "agents/agent/transfer.h"
#include "agents/checkpoint/cooperative.h"
#include "agents/runtime/capabilities.h"
#include "agents/runtime/lifecycle.h"
#include "agents/runtime/supervisor.h"
#include "agents/runtime/system_fs.h"
#include "agents/runtime/system_wpar.h"
#include "schemas/hash.h"

namespace wpm::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using runtime::WparState;

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kNotFound = 3;

int error(int code, const std::string& message) {
  std::fprintf(stderr, "wpm-agent: %s\n", message.c_str());
  return code;
}

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 63 || n.front() == '.' || n.front() == '-') return false;
  return n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") ==
         std::string::npos;
}

runtime::SupervisorLaunch launch_of(const AgentPaths& p, const std::string& name) {
  runtime::SupervisorLaunch launch{p.supervisor_binary, p.wpars_root, name, p.cgroup_of(name)};
  // A system WPAR sees neither the agent's files (keys, registration) nor
  // any WPAR's directory.
  launch.masked_dirs = {p.data_dir, p.wpars_root};
  launch.idmap_host_layers = p.idmap_host_layers;
  return launch;
}

// The WPAR's state as the lifecycle sees it: an application WPAR whose
// command ended is no longer running.
WparState effective_state(const runtime::WparRecord& r) { return r.ended ? WparState::kDefined : r.state; }


// The whole WPAR: its spec and record, with the state as the lifecycle sees it.
json wpar_json(const runtime::WparSpec& s, const runtime::WparRecord& r) {
  json j = runtime::spec_to_json(s);
  j.update(runtime::record_to_json(r));
  j["state"] = state_name(effective_state(r));
  j["stateLetter"] = std::string(1, state_letter(effective_state(r)));
  // A capability set changed while it runs (chwpar) applies to processes
  // started from then on: the running ones keep the set they started with.
  j["capabilitiesPending"] = false;
  if (r.running_capabilities && effective_state(r) != WparState::kDefined) {
    auto host = runtime::host_bounding_set();
    auto now = host ? runtime::wpar_capabilities(s.capabilities, *host)
                    : std::expected<std::vector<std::string>, runtime::Refusal>{};
    j["capabilitiesPending"] = now && *now != *r.running_capabilities;
  }
  return j;
}

// ---- the commands ------------------------------------------------------------------------

// What wparexec and mkwpar share.
struct ExecOptions {
  std::string name;
  bool checkpointable = false;
  runtime::ResourceLimits limits;
  std::string capabilities;  // --capabilities: a set or +/- edits of the default
  bool privileged = false;   // --privileged: no system call filter, the host's PID and IPC namespaces
  std::vector<std::string> command;
};

// The spec of a new WPAR, or the exit code of why not (printed).
std::expected<runtime::WparSpec, int> new_spec(const AgentPaths& p, const ExecOptions& o,
                                               runtime::WparType type) {
  if (!valid_name(o.name)) {
    return std::unexpected(
        error(kUsage, fmt::format("'{}' is not a valid WPAR name: use 1-63 letters, "
                                  "digits, '-', '_' or '.'",
                                  o.name)));
  }
  if (fs::exists(runtime::WparFiles(p.wpars_root, o.name).spec_path())) {
    return std::unexpected(
        error(kFailed, fmt::format("WPAR {} already exists on this host; remove it "
                                   "with `wpm-agent rmwpar {}` or choose another name",
                                   o.name, o.name)));
  }
  auto host = runtime::host_bounding_set();
  if (!host) return std::unexpected(error(kFailed, host.error().message));
  auto caps = runtime::resolve_capabilities(o.capabilities, *host);
  if (!caps) return std::unexpected(error(caps.error().exit_code, caps.error().message));
  runtime::WparSpec spec;
  spec.name = o.name;
  spec.type = type;
  spec.command = o.command;
  spec.limits = o.limits;
  spec.checkpointable = o.checkpointable;
  spec.privileged = o.privileged;
  // The default set stays "default" (resolved where it starts); a chosen set is stored.
  if (!o.capabilities.empty()) spec.capabilities = *caps;
  if (o.checkpointable) spec.env["WPM_STATE_DIR"] = checkpoint::trigger_dir(p.wpars_root, o.name);
  return spec;
}

int write_new(const AgentPaths& p, const runtime::WparSpec& spec) {
  runtime::WparFiles files(p.wpars_root, spec.name);
  if (auto r = files.create_dir(); !r) return error(kFailed, r.error().message);
  if (auto r = files.write_spec(spec); !r) return error(kFailed, r.error().message);
  return kOk;
}

int wparexec(const AgentPaths& p, const ExecOptions& o) {
  if (o.command.empty()) return error(kUsage, "no command given; put it after --");
  auto spec = new_spec(p, o, runtime::WparType::kApplication);
  if (!spec) return spec.error();
  if (int rc = write_new(p, *spec)) return rc;
  auto started = runtime::start_supervisor(launch_of(p, o.name));
  if (!started) return error(kFailed, fmt::format("WPAR {} did not start: {}", o.name, started.error().message));
  std::printf("WPAR %s is running: pid %d\n", o.name.c_str(), started->workload_pid);
  return kOk;
}

struct SystemOptions {
  ExecOptions exec;
  std::string hostname;
  uint32_t stop_timeout_s = 10;
  bool start = false;
  std::string address;               // --address
  std::vector<std::string> network;  // -N attribute=value (the seed's mkwpar)
};

// The WPAR's address from --address and the seed's `-N address=A`, or the
// usage error (printed). The interface and the netmask are the host
// interface's whose subnet holds the address, so -N takes nothing else.
std::expected<std::string, int> address_of(const SystemOptions& o) {
  std::string address = o.address;
  for (const auto& attribute : o.network) {
    auto eq = attribute.find('=');
    std::string key = attribute.substr(0, eq);
    if (eq == std::string::npos || key != "address") {
      return std::unexpected(
          error(kUsage, fmt::format("-N {}: only address=A is supported; the WPAR's interface and "
                                    "netmask are those of the host interface whose subnet holds A",
                                    attribute)));
    }
    std::string value = attribute.substr(eq + 1);
    if (!address.empty() && value != address) {
      return std::unexpected(error(
          kUsage, fmt::format("two addresses given ({} and {}); a WPAR has one", address, value)));
    }
    address = value;
  }
  return address;
}

// Checks a system WPAR's address on this host (mkwpar, startwpar): the
// refusal's message and exit code (the seed's 1) when it cannot have it.
int check_address(const AgentPaths& p, const runtime::WparSpec& spec, const char* doing) {
  if (spec.address.empty()) return kOk;
  auto plan = runtime::plan_wpar_network(p.wpars_root, spec);
  if (!plan) {
    return error(plan.error().exit_code,
                 fmt::format("cannot {} WPAR {}: {}", doing, spec.name, plan.error().message));
  }
  return kOk;
}

int startwpar(const AgentPaths& p, const std::string& name);

int mkwpar(const AgentPaths& p, const SystemOptions& o) {
  auto address = address_of(o);
  if (!address) return address.error();
  auto spec = new_spec(p, o.exec, runtime::WparType::kSystem);
  if (!spec) return spec.error();
  spec->hostname = o.hostname;
  spec->stop_timeout_s = o.stop_timeout_s;
  spec->address = *address;
  // Refused before anything is written: a refused WPAR does not exist.
  if (int rc = check_address(p, *spec, "create")) return rc;
  bool preserved = fs::exists(
      runtime::SystemFsPaths::of(runtime::WparFiles(p.wpars_root, o.exec.name).dir()).upper);
  if (int rc = write_new(p, *spec)) return rc;
  if (preserved) std::printf("WPAR %s reuses its preserved file systems\n", o.exec.name.c_str());
  if (o.start) return startwpar(p, o.exec.name);
  std::printf("WPAR %s is defined; start it with `wpm-agent startwpar %s`\n", o.exec.name.c_str(),
              o.exec.name.c_str());
  return kOk;
}

int lswpar(const AgentPaths& p, const std::vector<std::string>& names, bool all, OutputFormat format) {
  std::vector<std::string> wanted = names;
  if (wanted.empty()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(p.wpars_root, ec)) {
      if (fs::exists(e.path() / "spec.json")) wanted.push_back(e.path().filename());
    }
    std::sort(wanted.begin(), wanted.end());
  }
  json list = json::array();
  int rc = kOk;
  for (const auto& n : wanted) {
    runtime::WparFiles files(p.wpars_root, n);
    auto spec = files.read_spec();
    if (!spec) {
      rc = error(kNotFound, fmt::format("unknown WPAR {}; list them with `wpm-agent lswpar`", n));
      continue;
    }
    list.push_back(wpar_json(*spec, files.read_record().value_or(runtime::WparRecord{})));
  }
  if (format == OutputFormat::kJson) {
    std::puts(list.dump(2).c_str());
    return rc;
  }
  if (all) {
    for (const auto& w : list) std::printf("%s\n", w.dump(2).c_str());
    return rc;
  }
  std::printf("%-24s %-5s %-4s %-4s %-8s %s\n", "NAME", "STATE", "TYPE", "PRIV", "PID", "EXIT");
  for (const auto& w : list) {
    std::string exit = w.contains("exitCode")     ? std::to_string(w["exitCode"].get<int>())
                       : w.contains("exitSignal") ? fmt::format("signal {}", w["exitSignal"].get<int>())
                                                  : "-";
    std::printf("%-24s %-5s %-4s %-4s %-8d %s\n", w["name"].get<std::string>().c_str(),
                w["stateLetter"].get<std::string>().c_str(),
                w["type"].get<std::string>() == "system" ? "S" : "A", w.value("privileged", false) ? "yes" : "-",
                w["workloadPid"].get<int>(), exit.c_str());
  }
  return rc;
}

// Loads a WPAR and checks `op` against its state; fills spec and record.
int load(const AgentPaths& p, const std::string& name, runtime::Operation op, runtime::WparSpec& spec,
         runtime::WparRecord& record, int unknown_code = kNotFound) {
  runtime::WparFiles files(p.wpars_root, name);
  auto s = files.read_spec();
  if (!s) return error(unknown_code, fmt::format("unknown WPAR {}; list them with `wpm-agent lswpar`", name));
  spec = *s;
  record = files.read_record().value_or(runtime::WparRecord{});
  auto decision = runtime::decide({effective_state(record), spec.type, spec.checkpointable}, op);
  if (!decision) return error(decision.error().exit_code, decision.error().message);
  return kOk;
}

int stopwpar(const AgentPaths& p, const std::string& name, bool force) {
  runtime::WparSpec spec;
  runtime::WparRecord record;
  if (int rc = load(p, name, force ? runtime::Operation::kForceStop : runtime::Operation::kStop, spec, record)) {
    return rc;
  }
  if (auto r = runtime::stop_supervisor(record, force ? runtime::StopMode::kForced : runtime::StopMode::kGraceful); !r) {
    return error(kFailed, r.error().message);
  }
  if (!runtime::wait_until_ended(runtime::WparFiles(p.wpars_root, name), std::chrono::seconds(spec.stop_timeout_s + 10))) {
    return error(kFailed, fmt::format("WPAR {} did not stop in time; try `wpm-agent stopwpar -F {}`", name, name));
  }
  return kOk;
}

int startwpar(const AgentPaths& p, const std::string& name) {
  runtime::WparSpec spec;
  runtime::WparRecord record;
  if (int rc = load(p, name, runtime::Operation::kStart, spec, record)) return rc;
  // Checked again: another WPAR may have taken the address since mkwpar, or
  // the host's interfaces changed. A refusal leaves the WPAR Defined.
  if (int rc = check_address(p, spec, "start")) return rc;
  auto started = runtime::start_supervisor(launch_of(p, name));
  if (!started)
    return error(kFailed, fmt::format("WPAR {} did not start: {}", name, started.error().message));
  std::printf("WPAR %s is active: init pid %d\n", name.c_str(), started->workload_pid);
  if (const auto& n = started->network) {
    std::printf("WPAR %s has address %s on %s (host end %s)\n", name.c_str(),
                runtime::format_ipv4(n->address).c_str(), n->host_interface.c_str(),
                n->host_ifname.c_str());
  }
  if (started->forwarding_enabled) {
    std::printf(
        "note: IPv4 forwarding was off on this host; the WPAR's network turned it on "
        "(net.ipv4.ip_forward=1)\n");
  }
  return kOk;
}

// rmwpar -p keeps a system WPAR's file systems (DIR/fs: its root's upper
// layer, /tmp and /home) and removes everything else, the definition
// included; `mkwpar` of the same name later picks them up again.
int rmwpar(const AgentPaths& p, const std::string& name, bool preserve, bool force) {
  if (force) {
    // -F (wpm extension): whatever runs ends first, also in a paused,
    // frozen or broken WPAR (a relocation's departure, or its clean-up).
    runtime::WparFiles files(p.wpars_root, name);
    if (files.read_spec()) {
      auto s = effective_state(files.read_record().value_or(runtime::WparRecord{}));
      if (s == WparState::kPaused || s == WparState::kFrozen || s == WparState::kBroken || s == WparState::kActive) {
        if (int rc = stopwpar(p, name, true)) return rc;
      }
      if (!files.read_spec()) return kOk;  // an application WPAR ends with its processes
    }
  }
  runtime::WparSpec spec;
  runtime::WparRecord record;
  if (int rc = load(p, name, runtime::Operation::kRemove, spec, record)) return rc;
  if (effective_state(record) == WparState::kActive) {
    if (int rc = stopwpar(p, name, false)) return rc;
  }
  // A network its lost supervisor left attached goes before the record that names it.
  if (auto cleaned = runtime::cleanup_lost_wpar(runtime::WparFiles(p.wpars_root, name)); !cleaned) {
    return error(kFailed, fmt::format("cannot remove WPAR {}: {}; retry `wpm-agent rmwpar {}`",
                                      name, cleaned.error().message, name));
  }
  fs::path dir = runtime::WparFiles(p.wpars_root, name).dir();
  std::error_code ec;
  if (!preserve) {
    fs::remove_all(dir, ec);
    // Its range of host ids is free again once its files are gone (id_map.h).
    if (!ec) {
      if (auto released = runtime::release_id_range(runtime::id_registry_dir(), dir.string()); !released) {
        std::fprintf(stderr, "wpm-agent: warning: %s\n", released.error().message.c_str());
      }
    }
  } else {
    fs::remove(dir / "spec.json", ec);  // first: without it the WPAR is gone
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().filename() != "fs") fs::remove_all(e.path(), ec);
      if (ec) break;
    }
  }
  if (ec)
    return error(kFailed,
                 fmt::format("cannot remove WPAR {} ({}): {}", name, dir.string(), ec.message()));
  return kOk;
}

// clogin's own failures; the command's exit code otherwise.
constexpr int kLoginFailed = 125;

int clogin(const AgentPaths& p, const std::string& name, const std::vector<std::string>& command) {
  runtime::WparFiles files(p.wpars_root, name);
  auto spec = files.read_spec();
  if (!spec)
    return error(kNotFound,
                 fmt::format("unknown WPAR {}; list them with `wpm-agent lswpar`", name));
  auto record = files.read_record().value_or(runtime::WparRecord{});
  if (effective_state(record) != WparState::kActive ||
      !runtime::supervisor_alive(record.supervisor_pid)) {
    return error(kLoginFailed, fmt::format("WPAR {} is not active ({}); start it with `wpm-agent "
                                           "startwpar {}`",
                                           name, state_name(effective_state(record)), name));
  }
  auto host = runtime::host_bounding_set();
  if (!host) return error(kLoginFailed, host.error().message);
  auto caps = runtime::wpar_capabilities(spec->capabilities, *host);
  if (!caps) return error(kLoginFailed, caps.error().message);
  auto rc = runtime::login(runtime::LoginRequest{*spec, record, p.cgroup_of(name), command, *caps});
  if (!rc)
    return error(kLoginFailed, fmt::format("cannot enter WPAR {}: {}", name, rc.error().message));
  return *rc;
}

int report(const checkpoint::Failure& f) { return error(f.exit_code, f.message); }

struct CheckpointOptions {
  std::string state_dir;
  std::string log_file;
  std::string log_level = "error";
  bool freeze = false;
  bool kill = false;
  bool pause = false;
  uint32_t timeout_s = 30;
  std::string name;
};

int chkptwpar(const AgentPaths& p, const CheckpointOptions& o) {
  if (o.kill && o.pause) return error(1, "-k and -p exclude each other");
  if (!o.log_file.empty() && o.log_level != "debug" && o.log_level != "error") {
    return error(1, fmt::format("-l {} is not debug or error", o.log_level));
  }
  checkpoint::CheckpointRequest r{p.wpars_root, o.name, p.cgroup_of(o.name), o.state_dir,
                                  o.kill ? checkpoint::After::kKill
                                  : o.pause ? checkpoint::After::kPause
                                            : checkpoint::After::kContinue,
                                  std::chrono::seconds(o.timeout_s)};
  if (o.freeze) {
    if (o.state_dir.empty()) return error(1, "-f needs -d DIR (where the later checkpoint goes)");
    auto f = checkpoint::freeze(r);
    return f ? kOk : report(f.error());
  }
  if (!fs::exists(runtime::WparFiles(p.wpars_root, o.name).spec_path())) {
    return error(checkpoint::kExitUnknownWpar, fmt::format("unknown WPAR {}; list them with `wpm-agent lswpar`", o.name));
  }
  if (r.state_dir.empty()) r.state_dir = checkpoint::frozen_state_dir(p.wpars_root, o.name);
  if (r.state_dir.empty()) return error(1, "-d DIR is required unless the WPAR was frozen with -f -d DIR");
  auto done = checkpoint::checkpoint(r);
  if (!done) return report(done.error());
  std::printf("checkpointed WPAR %s into %s: %llu files, %llu bytes; now %s\n", o.name.c_str(),
              r.state_dir.c_str(), static_cast<unsigned long long>(done->files),
              static_cast<unsigned long long>(done->bytes), state_name(done->state_after));
  return kOk;
}

int killwpar(const AgentPaths& p, const std::string& name);

// restartwpar -u: the user command runs with the WPAR's name as its only
// argument, on the host, with this command's standard streams. Its exit
// status, or -1 when it could not be run.
int run_user_command(const std::string& command, const std::string& name) {
  std::vector<char*> argv = {const_cast<char*>(command.c_str()), const_cast<char*>(name.c_str()), nullptr};
  pid_t child = -1;
  if (::posix_spawn(&child, command.c_str(), nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int restartwpar(const AgentPaths& p, const std::string& state_dir, bool pause, const std::string& user_command,
                const std::string& name) {
  if (!user_command.empty() && !pause) {
    return error(1, "-u needs -p: the user command runs while the restarted WPAR is paused");
  }
  if (!user_command.empty() && (!fs::path(user_command).is_absolute() || ::access(user_command.c_str(), X_OK) != 0)) {
    return error(1, fmt::format("user command {} is not an executable file given by its absolute path",
                                user_command));
  }
  if (!valid_name(name)) return error(1, fmt::format("'{}' is not a valid WPAR name", name));
  auto started = checkpoint::restart(checkpoint::RestartRequest{launch_of(p, name), state_dir, pause});
  if (!started) return report(started.error());
  std::printf("WPAR %s restarted from %s: pid %d%s\n", name.c_str(), state_dir.c_str(),
              started->workload_pid, pause ? " (paused)" : "");
  if (user_command.empty()) return kOk;
  std::fflush(stdout);
  // The seed's rule: the user command's status is restartwpar's; a failure
  // ends the WPAR, and a status of 100 or less (which could be taken for
  // one of restartwpar's own) becomes 13.
  const int status = run_user_command(user_command, name);
  if (status == 0) {
    std::printf("user command %s succeeded; WPAR %s stays paused (resumewpar %s)\n", user_command.c_str(),
                name.c_str(), name.c_str());
    return kOk;
  }
  killwpar(p, name);
  if (status > 100 && status < 256) {
    return error(status, fmt::format("user command {} exited with {}: WPAR {} was ended", user_command, status, name));
  }
  return error(13, fmt::format("user command {} {} (a failure must exit above 100): WPAR {} was ended", user_command,
                               status < 0 ? "could not be run" : fmt::format("exited with {}", status), name));
}

int resumewpar(const AgentPaths& p, const std::string& name) {
  auto r = checkpoint::resume(p.wpars_root, name, p.cgroup_of(name));
  return r ? kOk : report(r.error());
}

int killwpar(const AgentPaths& p, const std::string& name) {
  runtime::WparSpec spec;
  runtime::WparRecord record;
  if (int rc = load(p, name, runtime::Operation::kKill, spec, record, checkpoint::kExitUnknownWpar)) return rc;
  if (auto r = runtime::stop_supervisor(record, runtime::StopMode::kForced); !r) return error(4, r.error().message);
  if (!runtime::wait_until_ended(runtime::WparFiles(p.wpars_root, name), std::chrono::seconds(10))) {
    return error(4, fmt::format("WPAR {} did not end", name));
  }
  return kOk;
}

// chwpar (the seed's, for what wpm changes on a deployed WPAR): its
// capability set and resource limits. An option not given keeps its value;
// a limit of 0 lifts it; --capabilities default goes back to the default
// set. Limits change on the running cgroups at once; the capability set
// applies to processes started from then on (DESIGN.md §5), which lswpar -L
// shows as capabilitiesPending until the WPAR starts again.
struct ChangeOptions {
  std::string name;
  std::optional<std::string> capabilities;
  std::optional<uint64_t> shares, cpu, mem, procs;
};

int chwpar(const AgentPaths& p, const ChangeOptions& o) {
  runtime::WparSpec spec;
  runtime::WparRecord record;
  if (int rc = load(p, o.name, runtime::Operation::kChange, spec, record)) return rc;
  runtime::WparSpec changed = spec;
  if (o.capabilities && *o.capabilities == "default") {
    changed.capabilities.reset();
  } else if (o.capabilities) {
    auto host = runtime::host_bounding_set();
    if (!host) return error(kFailed, host.error().message);
    auto caps = runtime::resolve_capabilities(*o.capabilities, *host);
    if (!caps) return error(caps.error().exit_code, caps.error().message);
    changed.capabilities = *caps;
  }
  auto set = [](auto& field, const std::optional<uint64_t>& v) {
    using T = typename std::remove_reference_t<decltype(field)>::value_type;
    if (v) field = *v == 0 ? std::optional<T>() : std::optional<T>(static_cast<T>(*v));
  };
  if (o.shares && *o.shares > 262'144) return error(kUsage, fmt::format("CPU shares {} is above 262144", *o.shares));
  if (o.cpu && *o.cpu > 100'000) return error(kUsage, fmt::format("a CPU limit of {}% is too high", *o.cpu));
  set(changed.limits.cpu_shares, o.shares);
  set(changed.limits.cpu_limit_percent, o.cpu);
  set(changed.limits.memory_bytes, o.mem);
  set(changed.limits.max_processes, o.procs);
  if (changed == spec) {
    std::printf("WPAR %s: nothing to change\n", o.name.c_str());
    return kOk;
  }
  const WparState state = effective_state(record);
  const bool running = state != WparState::kDefined && runtime::supervisor_alive(record.supervisor_pid);
  if (running && changed.limits != spec.limits) {
    // First on the running cgroups (a memory limit below what it uses may be
    // refused there): a change that cannot apply leaves the spec as it was.
    auto cgroups = runtime::CgroupSet::open(runtime::CgroupLayout::detect(), p.cgroup_of(o.name));
    if (!cgroups) return error(kFailed, fmt::format("cannot open WPAR {}'s cgroups: {}", o.name, cgroups.error().message));
    // cgroup v2 takes a memory limit below what the WPAR uses and then kills
    // inside it: refused here instead, whatever the hierarchy.
    if (const auto& limit = changed.limits.memory_bytes; limit && limit != spec.limits.memory_bytes) {
      auto used = cgroups->memory_usage();
      if (used && *used && **used > *limit) {
        return error(kFailed, fmt::format("WPAR {} uses {} bytes of memory now, more than the {} asked for: lowering "
                                          "it there would end its processes; it keeps its limits (free memory in it "
                                          "first, or change it while it is stopped)",
                                          o.name, **used, *limit));
      }
    }
    if (auto r = cgroups->apply_exactly(runtime::cgroup_limits(changed)); !r) {
      (void)cgroups->apply_exactly(spec.limits);
      return error(kFailed, fmt::format("WPAR {}'s limits cannot change while it runs: {}; it keeps its limits",
                                        o.name, r.error().message));
    }
  }
  if (auto r = runtime::WparFiles(p.wpars_root, o.name).write_spec(changed); !r) {
    return error(kFailed, r.error().message);
  }
  std::printf("WPAR %s changed%s\n", o.name.c_str(), running && changed.limits != spec.limits ? "; its limits apply now" : "");
  if (running && changed.capabilities != spec.capabilities) {
    std::printf("WPAR %s: the new capability set applies to processes started from now on; the running ones keep "
                "theirs until it starts again\n",
                o.name.c_str());
  }
  return kOk;
}

// Resource limits as options; 0 means "not set".
struct LimitOptions {
  uint64_t shares = 0, cpu = 0, mem = 0, procs = 0;
  void add_to(CLI::App& cmd) {
    cmd.add_option("--cpu-shares", shares, "relative CPU weight (2..262144)");
    cmd.add_option("--cpu-limit", cpu, "hard CPU cap, percent of one CPU");
    cmd.add_option("--memory", mem, "memory limit in bytes");
    cmd.add_option("--max-processes", procs, "process limit");
  }
  runtime::ResourceLimits limits() const {
    runtime::ResourceLimits l;
    if (shares) l.cpu_shares = shares;
    if (cpu) l.cpu_limit_percent = static_cast<uint32_t>(cpu);
    if (mem) l.memory_bytes = mem;
    if (procs) l.max_processes = procs;
    return l;
  }
};

constexpr char kCapabilitiesHelp[] =
    "capability set: cap_a,cap_b,… (exactly these), +cap_x,-cap_y (edits of the default), none "
    "or all; default: chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap, "
    "net_bind_service, net_raw, sys_chroot, audit_write, setfcap (within the host's "
    "bounding set)";

constexpr char kPrivilegedHelp[] =
    "without the system call filter, no_new_privs and the device limit (and an application WPAR in the host's "
    "PID and IPC namespaces): for workloads that need what these refuse (agents/README.md)";

void add_system_commands(CLI::App& app, const AgentPaths& paths, int& exit_code) {
  auto* mk = app.add_subcommand("mkwpar", "create a system WPAR (Defined; -s also starts it)");
  static SystemOptions m;
  static LimitOptions mk_limits;
  mk->add_option("-n,--name", m.exec.name, "WPAR name")->required();
  mk->add_flag("-c,--checkpoint", m.exec.checkpointable, "enable checkpoint (cooperative)");
  mk->add_option("--hostname", m.hostname, "hostname inside the WPAR (default: its name)");
  mk->add_option("--capabilities", m.exec.capabilities, kCapabilitiesHelp);
  mk->add_flag("--privileged", m.exec.privileged, kPrivilegedHelp);
  mk->add_option("--address", m.address,
                 "IPv4 address on a routed veth; the host interface whose subnet holds it "
                 "carries it (default: no network but loopback)");
  mk->add_option("-N", m.network, "seed-style network attribute: address=A (as --address)");
  mk->add_option("--stop-timeout", m.stop_timeout_s,
                 "seconds a graceful stop waits before it forces (default 10)");
  mk->add_flag("-s,--start", m.start, "start the WPAR once created");
  mk_limits.add_to(*mk);
  mk->add_option("command", m.exec.command, "optional command the WPAR's init runs, after --");
  mk->callback([&] {
    m.exec.limits = mk_limits.limits();
    exit_code = mkwpar(paths, m);
  });

  auto* start = app.add_subcommand("startwpar", "start a defined system WPAR");
  static std::string start_name;
  start->add_option("name", start_name, "WPAR name")->required();
  start->callback([&] { exit_code = startwpar(paths, start_name); });

  auto* login = app.add_subcommand("clogin", "run a shell or a command inside a running WPAR");
  static std::string login_name;
  static std::vector<std::string> login_command;
  login->add_option("name", login_name, "WPAR name")->required();
  login->add_option("command", login_command,
                    "the command and its arguments, after -- (default /bin/sh)");
  login->callback([&] { exit_code = clogin(paths, login_name, login_command); });
}

}  // namespace

AgentPaths AgentPaths::from_data_dir(const std::string& data_dir) {
  AgentPaths p;
  p.data_dir = fs::absolute(data_dir).lexically_normal().string();
  while (p.data_dir.size() > 1 && p.data_dir.back() == '/') p.data_dir.pop_back();
  p.wpars_root = p.data_dir + "/wpars";
  // One cgroup subtree per agent, named after its data directory, so two
  // agents on one host never touch each other's groups.
  std::string base = fs::path(p.data_dir).filename().string();
  for (char& c : base) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  }
  p.cgroup_root = fmt::format("wpm/{}-{:08x}", base.substr(0, 32), crc32c(p.data_dir));
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  p.supervisor_binary = (self.parent_path() / "wpm-wpar-supervisor").string();
  return p;
}

AgentPaths AgentPaths::configured(const std::string& data_dir) {
  AgentPaths p = from_data_dir(data_dir);
  if (auto config = load_agent_config(p.data_dir)) {
    if (!config->wpar_root.empty()) p.wpars_root = config->wpar_root;
    if (!config->cgroup_root.empty()) p.cgroup_root = config->cgroup_root;
    p.idmap_host_layers = config->idmap_host_layers;
  }
  return p;
}

int usage_exit_code(const std::string& name) {
  static const std::set<std::string> seed = {"chkptwpar", "restartwpar", "resumewpar", "killwpar"};
  return seed.contains(name) ? 1 : kUsage;
}

void add_local_commands(CLI::App& app, const AgentPaths& paths, OutputFormat& format, int& exit_code) {
  auto* exec = app.add_subcommand("wparexec", "run a command as an application WPAR (returns once it runs)");
  static ExecOptions e;
  static LimitOptions exec_limits;
  exec->add_option("-n,--name", e.name, "WPAR name")->required();
  exec->add_flag("-c,--checkpoint", e.checkpointable, "enable checkpoint (cooperative)");
  exec->add_option("--capabilities", e.capabilities, kCapabilitiesHelp);
  exec->add_flag("--privileged", e.privileged, kPrivilegedHelp);
  exec_limits.add_to(*exec);
  exec->add_option("command", e.command, "the command and its arguments, after --")->required();
  exec->callback([&] {
    e.limits = exec_limits.limits();
    exit_code = wparexec(paths, e);
  });
  add_system_commands(app, paths, exit_code);

  auto* ls = app.add_subcommand("lswpar", "list WPARs: name, state letter (D A P F L T B), type");
  static std::vector<std::string> ls_names;
  static bool ls_all = false;
  ls->add_flag("-L,--long", ls_all, "all properties");
  ls->add_option("names", ls_names, "WPAR names (default: all)");
  ls->callback([&] { exit_code = lswpar(paths, ls_names, ls_all, format); });

  auto* stop = app.add_subcommand("stopwpar", "stop a WPAR (graceful, then forced after its timeout)");
  static std::string stop_name;
  static bool stop_force = false;
  stop->add_flag("-F,--force", stop_force, "stop at once");
  stop->add_option("name", stop_name, "WPAR name")->required();
  stop->callback([&] { exit_code = stopwpar(paths, stop_name, stop_force); });

  auto* rm = app.add_subcommand("rmwpar", "remove a WPAR (an active one is stopped first)");
  static std::string rm_name;
  static bool rm_preserve = false, rm_force = false;
  rm->add_flag("-F,--force", rm_force, "end its processes first, whatever its state (paused and frozen too)");
  rm->add_flag("-p,--preserve", rm_preserve,
               "keep a system WPAR's file systems (DATA/wpars/NAME/fs)");
  rm->add_option("name", rm_name, "WPAR name")->required();
  rm->callback([&] { exit_code = rmwpar(paths, rm_name, rm_preserve, rm_force); });

  auto* ck = app.add_subcommand("chkptwpar", "checkpoint a WPAR into a state file (seed chkptwpar)");
  static CheckpointOptions c;
  ck->add_option("-d", c.state_dir, "state file directory (created if missing, must be empty)");
  ck->add_option("-o", c.log_file, "log file");
  ck->add_option("-l", c.log_level, "log level: debug or error (needs -o)");
  ck->add_flag("-f", c.freeze, "freeze without checkpointing");
  ck->add_flag("-k", c.kill, "stop the WPAR after the checkpoint");
  ck->add_flag("-p", c.pause, "pause the WPAR after the checkpoint");
  ck->add_option("--timeout", c.timeout_s,
                 "seconds the workload has to write its state (wpm extension; default 30)");
  ck->add_option("name", c.name, "WPAR name")->required();
  ck->callback([&] { exit_code = chkptwpar(paths, c); });

  auto* rs = app.add_subcommand("restartwpar", "restart a WPAR from a state file (seed restartwpar)");
  static std::string rs_dir, rs_log, rs_level, rs_user, rs_name;
  static bool rs_all = false, rs_pause = false;
  rs->add_flag("-a", rs_all, "accepted for compatibility");
  rs->add_option("-d", rs_dir, "state file directory")->required();
  rs->add_option("-o", rs_log, "log file");
  rs->add_option("-l", rs_level, "log level: debug or error");
  rs->add_flag("-p", rs_pause, "stay paused after the restart");
  rs->add_option("-u", rs_user, "with -p: run this command (absolute path) with the WPAR's name once it is restarted and paused; a failure ends the WPAR");
  rs->add_option("name", rs_name, "WPAR name")->required();
  rs->callback([&] { exit_code = restartwpar(paths, rs_dir, rs_pause, rs_user, rs_name); });

  auto* rsm = app.add_subcommand("resumewpar", "resume a paused or frozen WPAR (seed resumewpar)");
  static std::string rsm_name;
  rsm->add_option("name", rsm_name, "WPAR name")->required();
  rsm->callback([&] { exit_code = resumewpar(paths, rsm_name); });

  auto* rv = app.add_subcommand("receivestate",
                                "pull a state file from another agent and verify it (relocation; the manager runs "
                                "it, the departure agent must have been told this agent's key)");
  static ReceiveRequest rv_req;
  rv->add_option("--from", rv_req.endpoint, "the departure agent's port, tcp://host:port")->required();
  rv->add_option("--key", rv_req.server_key, "the departure agent's public key (Z85)")->required();
  rv->add_option("--state", rv_req.state_id, "the state file's id (its checkpoint's operation id)")->required();
  rv->add_option("-d", rv_req.dest_dir, "where it goes (absolute; must not exist or be whole already)")->required();
  rv->add_option("name", rv_req.wpar, "WPAR name")->required();
  rv->callback([&] { exit_code = receive_state(paths, rv_req); });

  auto* ch = app.add_subcommand("chwpar",
                                "change a WPAR's capability set and resource limits (limits apply at once, the "
                                "capability set to processes started from then on)");
  static ChangeOptions ch_opts;
  ch->add_option("--capabilities", ch_opts.capabilities, std::string(kCapabilitiesHelp) + "; default: the default set");
  ch->add_option("--cpu-shares", ch_opts.shares, "relative CPU weight (2..262144; 0 lifts it)");
  ch->add_option("--cpu-limit", ch_opts.cpu, "hard CPU cap, percent of one CPU (0 lifts it)");
  ch->add_option("--memory", ch_opts.mem, "memory limit in bytes (0 lifts it)");
  ch->add_option("--max-processes", ch_opts.procs, "process limit (0 lifts it)");
  ch->add_option("name", ch_opts.name, "WPAR name")->required();
  ch->callback([&] { exit_code = chwpar(paths, ch_opts); });

  auto* kl = app.add_subcommand("killwpar", "end the processes of a paused WPAR (seed killwpar)");
  static std::string kl_name;
  kl->add_option("name", kl_name, "WPAR name")->required();
  kl->callback([&] { exit_code = killwpar(paths, kl_name); });
}

}  // namespace wpm::agent
