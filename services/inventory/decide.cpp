#include "services/inventory/model.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <set>

#include "agents/runtime/capabilities.h"
#include "services/compatibility/tests.h"
#include "services/policy/model.h"

// The inventory's commands (model.h): reading them from their JSON
// arguments, deciding them on the state, and reconciling what agents report.
// Pure: the state is model.cpp's.

namespace wpm::inventory {
namespace {

using kernel::Rejection;
using kernel::RejectionCode;

// wpar.remove is the executor's (it removes a deployed WPAR from its system
// first); it applies decide_remove's rule to an undeployed one. So is
// wpar.modify (a deployed WPAR's change runs on its agent), by
// modified_definition's rules.
constexpr std::array<std::string_view, 15> kCommands = {
    "wpar.create",         "group.create",      "group.policy-set",
    "group.modify",        "group.delete",      "group.add-wpar",    "group.remove-wpar",
    "settings.set",        "system.remove",     "system.discover",   "system.token-create",
    "system.set-domain",   "system.update-profile", "domain.create", "domain.remove"};

std::unexpected<Rejection> reject(RejectionCode code, std::string message) {
  return std::unexpected(Rejection{code, std::move(message)});
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 63 || std::isalnum(static_cast<unsigned char>(name[0])) == 0) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
  });
}

std::string name_rule(std::string_view what) {
  return fmt::format("a {} name is 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", what);
}

bool valid_signal(std::string_view s) {
  static constexpr std::array<std::string_view, 12> kSignals = {
      "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM",
      "SIGALRM", "SIGCONT", "SIGPWR", "SIGWINCH", "SIGURG", "SIGTSTP"};
  return std::find(kSignals.begin(), kSignals.end(), s) != kSignals.end();
}

bool valid_address(std::string_view cidr) {
  std::string address(cidr);
  int prefix = -1;
  if (auto slash = cidr.find('/'); slash != std::string_view::npos) {
    address = std::string(cidr.substr(0, slash));
    auto digits = cidr.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
    prefix = std::stoi(std::string(digits));
  }
  unsigned char buf[16];
  if (::inet_pton(AF_INET, address.c_str(), buf) == 1) return prefix <= 32;
  if (::inet_pton(AF_INET6, address.c_str(), buf) == 1) return prefix <= 128;
  return false;
}

std::optional<std::string> capability_problem(std::string_view spec) {
  if (spec.empty() || spec == "none" || spec == "all") return std::nullopt;
  bool edits = false, plain = false;
  size_t start = 0;
  while (start <= spec.size()) {  // bounded: start advances past each comma
    size_t comma = spec.find(',', start);
    std::string_view item = spec.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (!item.empty() && (item[0] == '+' || item[0] == '-')) {
      edits = true;
      item.remove_prefix(1);
    } else {
      plain = true;
    }
    if (!runtime::canonical_capability(item)) return fmt::format("'{}' is not a Linux capability", item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (edits && plain) return "a capability list is either names (cap_a,cap_b) or edits (+cap_a,-cap_b), not both";
  return std::nullopt;
}

// Reads typed members of a JSON object; remembers the first problem and the
// members it did not ask for (refused: a typo must not be ignored).
class ArgReader {
 public:
  explicit ArgReader(const nlohmann::json& args) : args_(args) {}

  template <typename T>
  std::optional<T> get(const char* key) {
    seen_.insert(key);
    if (!args_.is_object() || !args_.contains(key) || args_[key].is_null()) return std::nullopt;
    const auto& v = args_[key];
    if constexpr (std::is_same_v<T, std::string>) {
      if (v.is_string()) return v.get<std::string>();
    } else if constexpr (std::is_same_v<T, bool>) {
      if (v.is_boolean()) return v.get<bool>();
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (v.is_array() && std::all_of(v.begin(), v.end(), [](const auto& x) { return x.is_string(); })) {
        return v.get<std::vector<std::string>>();
      }
    } else {
      if (v.is_number_unsigned() && v.get<uint64_t>() <= std::numeric_limits<T>::max()) return v.get<T>();
      if (v.is_number_integer() && v.get<int64_t>() >= 0 &&
          static_cast<uint64_t>(v.get<int64_t>()) <= std::numeric_limits<T>::max()) {
        return static_cast<T>(v.get<int64_t>());
      }
    }
    problem(fmt::format("argument '{}' has the wrong type", key));
    return std::nullopt;
  }
  std::string text(const char* key) { return get<std::string>(key).value_or(""); }
  // A member as it is, for a reader that checks it itself.
  nlohmann::json raw(const char* key) {
    seen_.insert(key);
    return args_.is_object() && args_.contains(key) ? args_[key] : nlohmann::json();
  }

  void problem(std::string message) {
    if (problem_.empty()) problem_ = std::move(message);
  }
  // The first problem, or a member nobody asked for.
  std::optional<Rejection> finish() {
    if (!args_.is_object() && !args_.is_null()) return Rejection{RejectionCode::kInvalid, "arguments must be a JSON object"};
    if (problem_.empty() && args_.is_object()) {
      for (const auto& [key, value] : args_.items()) {
        if (!seen_.contains(key)) {
          problem_ = fmt::format("unknown argument '{}'", key);
          break;
        }
      }
    }
    if (problem_.empty()) return std::nullopt;
    return Rejection{RejectionCode::kInvalid, problem_};
  }

 private:
  const nlohmann::json& args_;
  std::set<std::string, std::less<>> seen_;
  std::string problem_;
};

WparFields read_fields(ArgReader& a) {
  WparFields f;
  f.type = a.get<std::string>("type");
  f.command = a.get<std::string>("command");
  f.checkpointable = a.get<bool>("checkpoint");
  f.privileged = a.get<bool>("privileged");
  f.trigger_signal = a.get<std::string>("trigger");
  f.trigger_command = a.get<std::string>("triggerCommand");
  f.cpu_shares = a.get<uint32_t>("cpuShares");
  f.cpu_limit_percent = a.get<uint32_t>("cpuLimit");
  f.memory_bytes = a.get<uint64_t>("memory");
  f.processes_max = a.get<uint32_t>("procs");
  f.address = a.get<std::string>("address");
  f.capabilities = a.get<std::string>("capabilities");
  f.group = a.get<std::string>("group");
  return f;
}

void apply_fields(WparDefinition& w, const WparFields& f) {
  if (f.type) w.type = *f.type;
  if (f.command) w.command = *f.command;
  if (f.checkpointable) w.checkpointable = *f.checkpointable;
  if (f.privileged) w.privileged = *f.privileged;
  if (f.trigger_signal) {
    w.trigger_signal = *f.trigger_signal;
    if (!f.trigger_command) w.trigger_command.clear();
  }
  if (f.trigger_command) {
    w.trigger_command = *f.trigger_command;
    if (!f.trigger_signal) w.trigger_signal.clear();
  }
  if (f.cpu_shares) w.cpu_shares = *f.cpu_shares;
  if (f.cpu_limit_percent) w.cpu_limit_percent = *f.cpu_limit_percent;
  if (f.memory_bytes) w.memory_bytes = *f.memory_bytes;
  if (f.processes_max) w.processes_max = *f.processes_max;
  if (f.address) w.address = *f.address;
  if (f.capabilities) w.capabilities = *f.capabilities;
  if (f.group) w.group = *f.group;
}

}  // namespace

WparDefinition with_fields(WparDefinition w, const WparFields& f) {
  apply_fields(w, f);
  if (w.checkpointable && w.trigger_signal.empty() && w.trigger_command.empty()) w.trigger_signal = "SIGUSR1";
  if (w.group.empty()) w.group = std::string(kDefaultGroup);
  return w;
}

bool changes_on_system(const WparDefinition& before, const WparDefinition& after) {
  return before.capabilities != after.capabilities || before.cpu_shares != after.cpu_shares ||
         before.cpu_limit_percent != after.cpu_limit_percent || before.memory_bytes != after.memory_bytes ||
         before.processes_max != after.processes_max;
}

namespace {

// What is wrong with a whole definition, if anything.
std::optional<Rejection> check_definition(const Inventory& state, WparDefinition& w) {
  auto invalid = [](std::string m) { return Rejection{RejectionCode::kInvalid, std::move(m)}; };
  if (!valid_name(w.name)) return invalid(fmt::format("'{}' is not a valid WPAR name: {}", w.name, name_rule("WPAR")));
  if (w.type != "system" && w.type != "application") {
    return invalid(fmt::format("WPAR type '{}' is unknown: use system or application", w.type));
  }
  if (w.type == "application" && w.command.empty()) {
    return invalid("an application WPAR needs the command it runs (--command \"CMD\")");
  }
  if (!w.trigger_signal.empty() && !valid_signal(w.trigger_signal)) {
    return invalid(fmt::format("'{}' is not a checkpoint trigger signal: use SIGUSR1, SIGUSR2, SIGHUP, …",
                               w.trigger_signal));
  }
  if ((!w.trigger_signal.empty() || !w.trigger_command.empty()) && !w.checkpointable) {
    return invalid("a checkpoint trigger needs checkpointing enabled (--checkpoint)");
  }
  if (w.checkpointable && w.trigger_signal.empty() && w.trigger_command.empty()) w.trigger_signal = "SIGUSR1";
  if (w.cpu_shares > 262'144) return invalid(fmt::format("CPU shares {} is above 262144", w.cpu_shares));
  if (w.cpu_limit_percent > 100) {
    return invalid(fmt::format("a CPU limit of {}% is above 100%", w.cpu_limit_percent));
  }
  if (w.memory_bytes != 0 && w.memory_bytes < (4u << 20)) {
    return invalid(fmt::format("a memory limit of {} bytes is below 4 MiB: the WPAR could not start",
                               w.memory_bytes));
  }
  if (!w.address.empty() && !valid_address(w.address)) {
    return invalid(fmt::format("'{}' is not an IP address (give 10.0.0.5/24 or fd00::5/64)", w.address));
  }
  if (auto p = capability_problem(w.capabilities)) return invalid(*p);
  if (w.group.empty()) w.group = std::string(kDefaultGroup);
  if (!state.groups.contains(w.group)) {
    return Rejection{RejectionCode::kNotFound,
                     fmt::format("WPAR group '{}' does not exist; create it with `wpm group create {}`", w.group,
                                 w.group)};
  }
  return std::nullopt;
}


}  // namespace

std::expected<WparDefinition, Rejection> modified_definition(const Inventory& state, const ModifyWpar& c) {
  auto name = resolve_prefix(state.wpars, c.name, "WPAR");
  if (!name) return std::unexpected(name.error());
  const WparDefinition& before = state.wpars.at(*name).wpar;
  WparDefinition w = with_fields(before, c.fields);
  if (auto problem = check_definition(state, w)) return std::unexpected(*problem);
  if (!before.system.empty()) {
    // On its system only what its agent can change there (chwpar): the
    // capability set, the limits, and the group (the manager's alone).
    std::vector<std::string> fixed;
    if (w.type != before.type) fixed.push_back("type");
    if (w.command != before.command) fixed.push_back("command");
    if (w.checkpointable != before.checkpointable || w.trigger_signal != before.trigger_signal ||
        w.trigger_command != before.trigger_command) {
      fixed.push_back("checkpointing");
    }
    if (w.address != before.address) fixed.push_back("address");
    if (w.privileged != before.privileged) fixed.push_back("privileged mode");
    if (!fixed.empty()) {
      return reject(RejectionCode::kConflict,
                    fmt::format("WPAR '{}' is deployed on {}: its {} cannot change there (only its capabilities, "
                                "limits and group can); take it off its system first (wpm wpar remove {} "
                                "--keep-definition), change it, and deploy it again",
                                *name, before.system, fmt::join(fixed, ", "), *name));
    }
  }
  return w;
}

namespace {

Changes decide_create(const Inventory& state, const CreateWpar& c) {
  if (state.wpars.contains(c.name)) {
    return reject(RejectionCode::kAlreadyExists,
                  fmt::format("WPAR '{}' exists; choose another name or change it with `wpm wpar modify {}`", c.name,
                              c.name));
  }
  WparDefinition w;
  if (!c.from.empty()) {
    auto from = resolve_prefix(state.wpars, c.from, "WPAR");
    if (!from) return std::unexpected(from.error());
    w = state.wpars.at(*from).wpar;
    w.system.clear();
    w.discovered = false;
    w.reported_state.clear();
    w.privileged = false;  // never by copy: a privileged WPAR is asked for by name (--privileged)
  } else {
    w.type = "system";
  }
  w.name = c.name;
  apply_fields(w, c.fields);
  if (auto problem = check_definition(state, w)) return std::unexpected(*problem);
  return std::vector<Change>{{wpar_stream(w.name), WparDefined{w, true}}};
}

Changes decide_modify(const Inventory& state, const ModifyWpar& c) {
  auto w = modified_definition(state, c);
  if (!w) return std::unexpected(w.error());
  if (*w == state.wpars.at(w->name).wpar) return std::vector<Change>{};
  return std::vector<Change>{{wpar_stream(w->name), WparDefined{*w, false}}};
}

Changes decide_remove(const Inventory& state, const RemoveWpar& c) {
  auto name = resolve_prefix(state.wpars, c.name, "WPAR");
  if (!name) return std::unexpected(name.error());
  const auto& record = state.wpars.at(*name);
  if (!record.wpar.system.empty()) {
    return reject(RejectionCode::kConflict,
                  fmt::format("WPAR '{}' is deployed on {}: remove it from the system first (wpm wpar remove "
                              "does both)",
                              *name, record.wpar.system));
  }
  return std::vector<Change>{{wpar_stream(*name), WparRemoved{*name, "removed by request"}}};
}

// Why `name` cannot name a new `what` among `existing` (a WPAR group, a
// relocation domain), if anything.
template <typename Map>
std::optional<Rejection> new_name_problem(const Map& existing, const std::string& name, std::string_view what,
                                          std::string_view short_what) {
  if (!valid_name(name)) {
    return Rejection{RejectionCode::kInvalid,
                     fmt::format("'{}' is not a valid {} name: {}", name, what, name_rule(short_what))};
  }
  if (existing.contains(name)) return Rejection{RejectionCode::kAlreadyExists, fmt::format("{} '{}' exists", what, name)};
  return std::nullopt;
}

Changes decide_group(const Inventory& state, const CreateGroup& c) {
  if (auto problem = new_name_problem(state.groups, c.name, "WPAR group", "group")) return std::unexpected(*problem);
  return std::vector<Change>{{group_stream(c.name), GroupDefined{c.name, c.description, true}}};
}

// seed "Policy-based relocation": the group's policy, validated as a whole.
Changes decide_group(const Inventory& state, const SetGroupPolicy& c) {
  auto name = resolve_prefix(state.groups, c.name, "WPAR group");
  if (!name) return std::unexpected(name.error());
  const auto& g = state.groups.at(*name);
  policy::GroupPolicy current;
  if (!g.policy.empty()) {
    auto stored = policy::policy_from_json(nlohmann::json::parse(g.policy, nullptr, false));
    if (!stored) return reject(RejectionCode::kInvalid, "the group's stored policy is unreadable: " + stored.error());
    current = *stored;
  }
  if (!c.changes.is_object() || c.changes.empty()) {
    return reject(RejectionCode::kInvalid, "nothing to change: give at least one setting (wpm group policy set --help)");
  }
  auto changed = policy::apply_changes(current, c.changes);
  if (!changed) return reject(RejectionCode::kInvalid, fmt::format("group {}: {}", *name, changed.error()));
  if (!state.domains.contains(changed->domain)) {
    return reject(RejectionCode::kNotFound, fmt::format("no relocation domain '{}' (wpm domain list)", changed->domain));
  }
  for (const auto& t : changed->optional_tests) {
    auto test = compatibility::test_from_name(t);
    if (!test || compatibility::is_critical(*test)) {
      return reject(RejectionCode::kInvalid,
                    fmt::format("'{}' is not an optional compatibility test (wpm compat show lists them)", t));
    }
  }
  std::string text = policy::to_json(*changed).dump();
  if (text == g.policy) return std::vector<Change>{};
  return std::vector<Change>{{group_stream(*name), GroupPolicySet{*name, text}}};
}

Changes decide_group(const Inventory& state, const ModifyGroup& c) {
  auto name = resolve_prefix(state.groups, c.name, "WPAR group");
  if (!name) return std::unexpected(name.error());
  const auto& g = state.groups.at(*name);
  if (g.description == c.description) return std::vector<Change>{};
  return std::vector<Change>{{group_stream(*name), GroupDefined{*name, c.description, false}}};
}

Changes decide_group(const Inventory& state, const DeleteGroup& c) {
  auto name = resolve_prefix(state.groups, c.name, "WPAR group");
  if (!name) return std::unexpected(name.error());
  if (*name == kDefaultGroup) {
    return reject(RejectionCode::kConflict, "the default group cannot be deleted: every WPAR belongs to a group");
  }
  if (size_t n = state.wpars_in_group(*name); n > 0) {
    return reject(RejectionCode::kConflict,
                  fmt::format("WPAR group '{}' still holds {} WPAR(s); move them out first (`wpm group remove-wpar "
                              "{} NAME…`)",
                              *name, n, *name));
  }
  return std::vector<Change>{{group_stream(*name), GroupDeleted{*name}}};
}

Changes decide_move(const Inventory& state, const MoveWpars& c) {
  auto group = resolve_prefix(state.groups, c.group, "WPAR group");
  if (!group) return std::unexpected(group.error());
  if (c.wpars.empty()) return reject(RejectionCode::kInvalid, "name at least one WPAR");
  std::vector<Change> changes;
  std::set<std::string> done;
  for (const auto& given : c.wpars) {
    auto name = resolve_prefix(state.wpars, given, "WPAR");
    if (!name) return std::unexpected(name.error());
    if (!done.insert(*name).second) continue;
    WparDefinition w = state.wpars.at(*name).wpar;
    if (c.remove) {
      if (w.group != *group) {
        return reject(RejectionCode::kConflict,
                      fmt::format("WPAR '{}' is in group '{}', not '{}'", *name, w.group, *group));
      }
      w.group = std::string(kDefaultGroup);
    } else {
      if (w.group == *group) continue;
      w.group = *group;
    }
    changes.push_back({wpar_stream(*name), WparDefined{w, false}});
  }
  return changes;
}

Changes decide_setting(const Inventory& state, const SetSetting& c) {
  auto settings = setting_specs();
  auto spec = std::find_if(settings.begin(), settings.end(), [&](const auto& s) { return s.key == c.key; });
  if (spec == settings.end()) {
    std::vector<std::string_view> keys;
    for (const auto& s : settings) keys.push_back(s.key);
    return reject(RejectionCode::kNotFound,
                  fmt::format("no setting '{}'; the settings are {}", c.key, fmt::join(keys, ", ")));
  }
  if (c.key == "heartbeat.timeout" || c.key == "mark-dead.grace") {
    auto ns = parse_duration_ns(c.value);
    if (!ns || *ns < 1'000'000'000 || *ns > 3'600'000'000'000) {
      return reject(RejectionCode::kInvalid,
                    fmt::format("{} '{}' must be a duration from 1s to 1h (e.g. 15s, 2m)", c.key, c.value));
    }
  } else if (c.key == "policy.interval") {
    auto ns = parse_duration_ns(c.value);
    if (!ns || *ns < 1'000'000'000 || *ns > 3'600'000'000'000 || *ns % 1'000'000'000 != 0) {
      return reject(RejectionCode::kInvalid,
                    fmt::format("policy.interval '{}' must be whole seconds from 1s to 1h (e.g. 60s, 5m)", c.value));
    }
  } else if (c.key == "policy.domain-concurrency") {
    if (c.value.empty() || c.value.size() > 3 ||
        !std::all_of(c.value.begin(), c.value.end(), [](char x) { return std::isdigit(static_cast<unsigned char>(x)) != 0; }) ||
        std::stoi(c.value) < 1) {
      return reject(RejectionCode::kInvalid,
                    fmt::format("policy.domain-concurrency '{}' must be a whole number from 1 to 999", c.value));
    }
  } else if (c.key == "metrics.interval") {
    auto ns = parse_duration_ns(c.value);
    if (!ns || *ns < 1'000'000'000 || *ns > 3'600'000'000'000 || *ns % 1'000'000'000 != 0) {
      return reject(RejectionCode::kInvalid,
                    fmt::format("metrics.interval '{}' must be whole seconds from 1s to 1h (e.g. 10s, 2s, 1m)",
                                c.value));
    }
  } else if (c.key == "statefile.shared-root") {
    if (!c.value.empty() && (!c.value.starts_with('/') || c.value.find("..") != std::string::npos || c.value == "/")) {
      return reject(RejectionCode::kInvalid,
                    fmt::format("statefile.shared-root '{}' must be an absolute path without '..' other than /, or "
                                "empty (none)",
                                c.value));
    }
  }
  std::string previous = state.setting(c.key);
  if (previous == c.value) return std::vector<Change>{};
  return std::vector<Change>{{"settings", SettingChanged{c.key, c.value, previous}}};
}

Changes decide_system(const Inventory& state, const RemoveSystem& c) {
  auto id = resolve_prefix(state.registry.systems(), c.name, "system");
  if (!id) return std::unexpected(id.error());
  if (size_t n = state.wpars_on_system(*id); n > 0 && !c.keep_wpars) {
    return reject(RejectionCode::kConflict,
                  fmt::format("system '{}' holds {} WPAR(s): remove them (wpm system remove {} --remove-wpars), "
                              "move them (wpm system evacuate {}), or leave them on it, unmanaged, with their "
                              "definitions kept here (--keep-wpars)",
                              *id, n, *id, *id));
  }
  for (const auto& [tid, t] : state.tasks) {
    auto w = state.wpars.find(t.wpar);
    if (w != state.wpars.end() && w->second.wpar.system == *id) {
      return reject(RejectionCode::kConflict, fmt::format("WPAR {} on {} has a task running ({}); wait for it "
                                                          "(wpm task wait {})",
                                                          t.wpar, *id, tid, tid));
    }
  }
  return std::vector<Change>{{"registry", SystemRemoved{*id, "removed by request"}}};
}

Changes decide_domain(const Inventory& state, const CreateDomain& c) {
  if (auto problem = new_name_problem(state.domains, c.name, "relocation domain", "domain")) {
    return std::unexpected(*problem);
  }
  return std::vector<Change>{{domain_stream(c.name), DomainDefined{c.name, c.description, true}}};
}

Changes decide_domain(const Inventory& state, const RemoveDomain& c) {
  auto name = resolve_prefix(state.domains, c.name, "relocation domain");
  if (!name) return std::unexpected(name.error());
  if (*name == kDefaultDomain) {
    return reject(RejectionCode::kConflict,
                  "the default relocation domain cannot be removed: systems are placed in it when they register");
  }
  if (auto systems = state.systems_in_domain(*name); !systems.empty()) {
    return reject(RejectionCode::kConflict,
                  fmt::format("relocation domain '{}' still holds {} system(s) ({}{}); move them first (`wpm system "
                              "set-domain SYSTEM default`)",
                              *name, systems.size(),
                              fmt::join(std::vector<std::string>(systems.begin(),
                                                                 systems.begin() + std::min<size_t>(systems.size(), 5)),
                                        ", "),
                              systems.size() > 5 ? ", …" : ""));
  }
  return std::vector<Change>{{domain_stream(*name), DomainRemoved{*name}}};
}

Changes decide_domain(const Inventory& state, const SetSystemDomain& c) {
  auto id = resolve_prefix(state.registry.systems(), c.name, "system");
  if (!id) return std::unexpected(id.error());
  auto domain = resolve_prefix(state.domains, c.domain, "relocation domain");
  if (!domain) {
    if (domain.error().code == RejectionCode::kNotFound) {
      domain.error().message += fmt::format("; make it first with `wpm domain create {}`", c.domain);
    }
    return std::unexpected(domain.error());
  }
  std::string previous = state.system_status(*id).domain;
  if (previous == *domain) return std::vector<Change>{};
  return std::vector<Change>{{"system/" + *id, SystemDomainSet{*id, *domain, previous}}};
}

Changes decide_update_profile(const Inventory& state, const UpdateProfile& c) {
  auto id = resolve_prefix(state.registry.systems(), c.name, "system");
  if (!id) return std::unexpected(id.error());
  auto status = state.system_status(*id);
  if (status.state != "online") {
    return reject(RejectionCode::kConflict,
                  fmt::format("system '{}' is {} ({}): its agent cannot be asked now; the agent sends its profile "
                              "when it is back",
                              *id, status.state, status.reason));
  }
  return std::vector<Change>{};
}

}  // namespace

bool is_inventory_command(std::string_view name) {
  return std::find(kCommands.begin(), kCommands.end(), name) != kCommands.end();
}

std::expected<Command, Rejection> parse_command(std::string_view name, const nlohmann::json& args) {
  ArgReader a(args);
  Command command;
  if (name == "wpar.create") {
    CreateWpar c;
    c.name = a.text("name");
    c.from = a.text("from");
    c.fields = read_fields(a);
    command = std::move(c);
  } else if (name == "wpar.modify") {
    ModifyWpar c;
    c.name = a.text("name");
    c.fields = read_fields(a);
    command = std::move(c);
  } else if (name == "wpar.remove") {
    command = RemoveWpar{a.text("name")};
  } else if (name == "group.create") {
    command = CreateGroup{a.text("name"), a.text("description")};
  } else if (name == "group.modify") {
    command = ModifyGroup{a.text("name"), a.text("description")};
  } else if (name == "group.delete") {
    command = DeleteGroup{a.text("name")};
  } else if (name == "group.policy-set") {
    command = SetGroupPolicy{a.text("name"), a.raw("changes")};
  } else if (name == "group.add-wpar" || name == "group.remove-wpar") {
    command = MoveWpars{a.text("name"), a.get<std::vector<std::string>>("wpars").value_or(std::vector<std::string>{}),
                        name == "group.remove-wpar"};
  } else if (name == "settings.set") {
    command = SetSetting{a.text("key"), a.text("value")};
  } else if (name == "system.remove") {
    command = RemoveSystem{a.text("name"), a.get<bool>("keepWpars").value_or(false)};
  } else if (name == "system.discover") {
    command = Discover{};
  } else if (name == "system.token-create") {
    command = CreateJoinToken{a.text("tokenHash"), a.text("ttl")};
  } else if (name == "system.set-domain") {
    command = SetSystemDomain{a.text("name"), a.text("domain")};
  } else if (name == "system.update-profile") {
    command = UpdateProfile{a.text("name")};
  } else if (name == "domain.create") {
    command = CreateDomain{a.text("name"), a.text("description")};
  } else if (name == "domain.remove") {
    command = RemoveDomain{a.text("name")};
  } else {
    return reject(RejectionCode::kInvalid, fmt::format("the inventory has no command '{}'", name));
  }
  if (auto problem = a.finish()) return std::unexpected(*problem);
  return command;
}

Changes decide(const Inventory& state, const Command& command, const kernel::Context& context) {
  return std::visit(
      [&](const auto& c) -> Changes {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, CreateWpar>) {
          return decide_create(state, c);
        } else if constexpr (std::is_same_v<T, ModifyWpar>) {
          return decide_modify(state, c);
        } else if constexpr (std::is_same_v<T, RemoveWpar>) {
          return decide_remove(state, c);
        } else if constexpr (std::is_same_v<T, MoveWpars>) {
          return decide_move(state, c);
        } else if constexpr (std::is_same_v<T, SetSetting>) {
          return decide_setting(state, c);
        } else if constexpr (std::is_same_v<T, RemoveSystem>) {
          return decide_system(state, c);
        } else if constexpr (std::is_same_v<T, Discover>) {
          return std::vector<Change>{};
        } else if constexpr (std::is_same_v<T, CreateDomain> || std::is_same_v<T, RemoveDomain> ||
                             std::is_same_v<T, SetSystemDomain>) {
          return decide_domain(state, c);
        } else if constexpr (std::is_same_v<T, UpdateProfile>) {
          return decide_update_profile(state, c);
        } else if constexpr (std::is_same_v<T, CreateJoinToken>) {
          std::string ttl = c.ttl.empty() ? "1h" : c.ttl;
          auto ns = parse_duration_ns(ttl);
          if (!ns || *ns < 60'000'000'000 || *ns > 7 * 86'400'000'000'000) {
            return reject(RejectionCode::kInvalid, fmt::format("a token's --ttl '{}' must be from 1m to 7d (e.g. 1h; "
                                                               "units ms, s, m, h)",
                                                               ttl));
          }
          if (c.token_hash.size() != 64 ||
              !std::all_of(c.token_hash.begin(), c.token_hash.end(), [](char x) { return std::isxdigit(x) != 0; })) {
            return reject(RejectionCode::kInvalid, "the token's hash is not 64 hex digits");
          }
          return std::vector<Change>{{join_token_stream(c.token_hash), JoinTokenCreated{c.token_hash, context.now_ns + *ns}}};
        } else {
          return decide_group(state, c);
        }
      },
      command);
}

std::vector<Change> reconcile(const Inventory& state, const std::string& system_id,
                              const std::vector<ReportedWpar>& reported, int64_t reported_ns) {
  std::vector<Change> changes;
  std::set<std::string> seen;
  // A WPAR with a task running is the executor's until it ends (a
  // relocation has it on two systems for a while).
  // One waiting for approval has done nothing yet: its WPAR is as reported.
  std::set<std::string> busy;
  for (const auto& [id, t] : state.tasks) {
    if (!t.waiting) busy.insert(t.wpar);
  }
  for (const auto& r : reported) {
    if (!valid_name(r.name) || !seen.insert(r.name).second) continue;
    if (busy.contains(r.name)) continue;
    // The state is one of lswpar's letters; anything else is shown as unknown.
    const std::string letter =
        r.state.size() == 1 && std::string_view("DAPFLTBM").find(r.state[0]) != std::string_view::npos ? r.state : "?";
    auto it = state.wpars.find(r.name);
    if (it == state.wpars.end()) {
      // Removed since the report was taken: the report is older than that.
      if (auto gone = state.removed_ns.find(wpar_stream(r.name));
          gone != state.removed_ns.end() && gone->second >= reported_ns) {
        continue;
      }
      WparDefinition w;
      w.name = r.name;
      w.type = r.type == "application" ? "application" : "system";
      w.group = std::string(kDefaultGroup);
      w.system = system_id;
      w.discovered = true;
      w.reported_state = letter;
      changes.push_back({wpar_stream(r.name), WparDefined{w, true}});
      continue;
    }
    const WparDefinition& known = it->second.wpar;
    if (known.system != system_id) {
      // Listed before the executor's last word on it (a relocation's
      // departure, listed before its removal there): a later report says
      // whether a copy is still there.
      if (it->second.executor_ns >= reported_ns) continue;
      std::string where = known.system.empty() ? "is defined here and not deployed there"
                                               : fmt::format("is on {}", known.system);
      changes.push_back({"agent-report-refusals",
                         AgentReportRefused{system_id, wpar_stream(r.name),
                                            fmt::format("system {} reported WPAR {}, which {}; an agent speaks only "
                                                        "for its own system",
                                                        system_id, r.name, where)}});
      continue;
    }
    if (!known.operation.empty() || it->second.executor_ns >= reported_ns) continue;
    if (known.reported_state != letter) {
      WparDefinition w = known;
      w.reported_state = letter;
      changes.push_back({wpar_stream(r.name), WparDefined{w, false}});
    }
  }
  static const std::set<std::string> kNone;
  const auto on = state.wpars_on.find(system_id);
  for (const auto& name : on == state.wpars_on.end() ? kNone : on->second) {  // its own WPARs, not every one
    const WparRecord& record = state.wpars.at(name);
    if (record.wpar.system != system_id || seen.contains(name) || busy.contains(name)) continue;
    if (record.wpar.discovered) {
      changes.push_back({wpar_stream(name), WparRemoved{name, fmt::format("no longer on {}", system_id)}});
      continue;
    }
    // Placed here by the executor, and its agent does not have it: Broken,
    // with the cause (the seed's recovery goal: the view matches the system).
    if (!record.wpar.operation.empty() || record.executor_ns >= reported_ns || record.wpar.reported_state.empty() ||
        record.wpar.reported_state == "B") {
      continue;
    }
    WparDefinition w = record.wpar;
    w.cause = fmt::format("its agent on {} no longer has it (it was {}); remove it (wpm wpar remove {} "
                          "--keep-definition) and deploy it again",
                          system_id, record.wpar.reported_state, name);
    w.reported_state = "B";
    changes.push_back({wpar_stream(name), WparDefined{w, false}});
  }
  return changes;
}

std::string join_token_stream(const std::string& token_hash) { return "token/" + token_hash.substr(0, 16); }

std::optional<std::string> join_token_problem(const std::vector<Event>& stream, int64_t now_ns) {
  if (stream.empty()) return "unknown join token: make one with `wpm system token create` on the manager";
  for (const auto& e : stream) {
    if (const auto* used = std::get_if<JoinTokenUsed>(&e.payload)) {
      return fmt::format("this join token was already used (by system {}); a token registers one agent: make "
                         "another with `wpm system token create`",
                         used->system_id);
    }
  }
  const auto* created = std::get_if<JoinTokenCreated>(&stream.front().payload);
  if (created == nullptr) return "unknown join token";
  if (created->expires_ns <= now_ns) {
    return fmt::format("this join token expired {} s ago; make another with `wpm system token create`",
                       (now_ns - created->expires_ns) / 1'000'000'000);
  }
  return std::nullopt;
}

}  // namespace wpm::inventory
