#pragma once
// The inventory's state and rules (DESIGN.md §2, §4; seed "Managing workload
// partitions", "Managed systems"): managed systems with their state, WPAR
// definitions, WPAR groups and settings, folded from the log; and the
// decisions on the commands users send through the gateway.
//
// Pure (STYLE.md §1): evolve() applies one event (model.cpp), decide() turns
// a command into the events to append, each with its stream, or a Rejection
// (decide.cpp). No I/O,
// no clock: the time comes in the Context. The service (service.h) loads,
// decides and appends; the gateway folds the same state to answer queries.
//
// Thread safety: plain values.

#include <cstdint>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "schemas/error.h"
#include "schemas/events.h"
#include "services/inventory/registry.h"
#include "services/kernel/decision.h"
#include "services/kernel/projection.h"

namespace wpm::inventory {

inline constexpr std::string_view kDefaultGroup = "default";
inline constexpr std::string_view kDefaultDomain = "default";

// Known settings with their defaults (`wpm settings show|set`).
struct SettingSpec {
  std::string_view key;
  std::string_view default_value;
  std::string_view description;
};
std::span<const SettingSpec> setting_specs();
// Parses "15s", "2m", "1h", "500ms" into nanoseconds.
std::optional<int64_t> parse_duration_ns(std::string_view text);

// A system's state beside its registration (stream system/<id>).
struct SystemStatus {
  std::string state = "online";  // online | offline | unreachable
  std::string reason;
  int64_t since_ns = 0;
  uint64_t version = 0;  // of stream system/<id>
  std::string domain = std::string(kDefaultDomain);  // its relocation domain
  bool operator==(const SystemStatus&) const = default;
};

struct WparRecord {
  WparDefinition wpar;
  uint64_t version = 0;  // of stream wpar/<name>
  int64_t created_ns = 0;
  int64_t changed_ns = 0;
  // When the executor last recorded something about it (a placement, an
  // operation): an agent's report taken before that is older news.
  int64_t executor_ns = 0;
  bool operator==(const WparRecord&) const = default;
};

struct GroupRecord {
  std::string name;
  std::string description;
  uint64_t version = 0;
  std::string policy;  // its relocation policy as JSON (services/policy/model.h); "" the default, disabled
  bool operator==(const GroupRecord&) const = default;
};

// A relocation domain (seed "Relocation domains and system profiles").
struct DomainRecord {
  std::string name;
  std::string description;
  uint64_t version = 0;  // of stream domain/<name>
  bool operator==(const DomainRecord&) const = default;
};

// A command for the inventory, recorded and not yet decided.
struct PendingCommand {
  std::string id;
  CommandRequested request;
  uint64_t sequence = 0;
  int64_t requested_ns = 0;
  bool operator==(const PendingCommand&) const = default;
};

// A running task of the executor, as the inventory needs it: which WPAR its
// operations change, and whether its end removes the WPAR's definition.
struct TaskRef {
  std::string kind;
  std::string wpar;
  bool keep_definition = false;
  std::string system;  // where its current operation runs (a relocation's move between two)
  bool waiting = false;  // waits for approval (nothing of it runs yet)
  bool operator==(const TaskRef&) const = default;
};

struct Inventory {
  Registry registry;  // the registered systems (stream registry)
  uint64_t registry_version = 0;
  std::map<std::string, SystemStatus> status;  // by system id; absent: online since registration
  std::map<std::string, WparRecord> wpars;
  // The WPARs placed on each system (an index of `wpars`, kept by the fold):
  // an agent's report is compared with its own system's WPARs only.
  std::map<std::string, std::set<std::string>> wpars_on;
  // The default group exists from the start, without an event: a new log
  // stays empty until someone changes something.
  std::map<std::string, GroupRecord> groups = {
      {std::string(kDefaultGroup), GroupRecord{std::string(kDefaultGroup), "WPARs not placed in another group", 0}}};
  // Every system is in the default domain until tagged otherwise.
  std::map<std::string, DomainRecord> domains = {
      {std::string(kDefaultDomain),
       DomainRecord{std::string(kDefaultDomain), "every system until tagged with another domain", 0}}};
  std::map<std::string, std::string> settings;  // only those set; defaults in setting_specs()
  uint64_t settings_version = 0;
  std::map<std::string, PendingCommand> pending;
  // The last version of streams whose object was removed (wpar/…, group/…, domain/…):
  // a name made again continues its stream, so a decision must expect it.
  std::map<std::string, uint64_t> removed;
  // When each removed WPAR's stream was removed (the removal's event time):
  // a report of it taken before that does not bring it back as discovered.
  std::map<std::string, int64_t> removed_ns;
  std::map<std::string, TaskRef> tasks;  // the executor's running tasks, by id
  uint64_t applied = 0;
  bool operator==(const Inventory&) const = default;

  // A setting's value, or its default.
  std::string setting(std::string_view key) const;
  SystemStatus system_status(const std::string& system_id) const;
  size_t wpars_in_group(const std::string& group) const;
  size_t wpars_on_system(const std::string& system) const;
  // The registered systems tagged with a domain.
  std::vector<std::string> systems_in_domain(const std::string& domain) const;
  // The name of a registered system's profile: its domain and hardware
  // (profile::profile_name); "" for an unknown system.
  std::string system_profile_name(const std::string& system_id) const;
};

Inventory evolve(Inventory state, const Event& event);
// The same, in place, taking the event's values (what a projection of the
// whole log folds with: no move of the whole state, no copy of the event's
// strings).
void fold_into(Inventory& state, Event&& event);

// A WPAR as an agent reports it (its list on the agent port).
struct ReportedWpar {
  std::string name;
  std::string type;   // "system" | "application"
  std::string state;  // the state letter of lswpar
  uint64_t epoch = 0;  // the highest placement epoch its agent holds for it (0: none)
  bool operator==(const ReportedWpar&) const = default;
};



// The seed's state letter of a WPAR (lswpar): U while undeployed, T while an
// operation of the executor runs on it, else as its agent reported it.
std::string wpar_state_letter(const WparDefinition& wpar);
std::string wpar_state_name(const WparDefinition& wpar);

// ---- commands ---------------------------------------------------------------

// Optional fields of a WPAR definition, as create and modify give them.
struct WparFields {
  std::optional<std::string> type, command, trigger_signal, trigger_command, address, capabilities, group;
  std::optional<bool> checkpointable, privileged;
  std::optional<uint32_t> cpu_shares, cpu_limit_percent, processes_max;
  std::optional<uint64_t> memory_bytes;
};
struct CreateWpar {
  std::string name;
  std::string from;  // a template WPAR whose definition the fields change
  WparFields fields;
};
struct ModifyWpar {
  std::string name;  // any unique prefix
  WparFields fields;
};
struct RemoveWpar {
  std::string name;
};
struct CreateGroup {
  std::string name;
  std::string description;
};
struct ModifyGroup {
  std::string name;
  std::string description;
};
struct DeleteGroup {
  std::string name;
};
// wpm group policy set: the changes as policy::apply_changes reads them.
struct SetGroupPolicy {
  std::string name;
  nlohmann::json changes;
};
struct MoveWpars {  // group add-wpar (to = group) and remove-wpar (to = default)
  std::string group;
  std::vector<std::string> wpars;
  bool remove = false;
};
struct SetSetting {
  std::string key;
  std::string value;
};
struct RemoveSystem {
  std::string name;
  // The seed's "preserving WPARs deployed on the system": the WPARs on it
  // stay there, unmanaged; their definitions here become Undeployed (the
  // ones discovered on it go). Without it a system with WPARs is refused.
  bool keep_wpars = false;
};
struct Discover {};  // ask every agent again (the service kicks the prober); writes nothing itself
struct CreateDomain {
  std::string name;
  std::string description;
};
struct RemoveDomain {
  std::string name;
};
struct SetSystemDomain {
  std::string name;    // the system, any unique prefix
  std::string domain;  // any unique prefix
};
struct UpdateProfile {  // ask one agent to send its profile again; writes nothing itself
  std::string name;
};
struct CreateJoinToken {
  std::string token_hash;  // made by the gateway, which alone sees the token
  std::string ttl;         // "1h" (default), from 1m to 7d
};
using Command = std::variant<CreateWpar, ModifyWpar, RemoveWpar, CreateGroup, ModifyGroup, DeleteGroup, MoveWpars,
                             SetSetting, RemoveSystem, Discover, CreateJoinToken, CreateDomain, RemoveDomain,
                             SetSystemDomain, UpdateProfile, SetGroupPolicy>;

// The definition a wpar.modify makes (the WPAR named by any unique prefix),
// checked as a whole; a deployed WPAR may change only its capability set,
// limits and group (the rest is refused, with what to do). The executor
// decides wpar.modify by this rule.
std::expected<WparDefinition, kernel::Rejection> modified_definition(const Inventory& state, const ModifyWpar& c);
// A definition with the fields set (and the defaults a definition gets: the
// checkpoint trigger, the group), unchecked: a modify task's end.
WparDefinition with_fields(WparDefinition w, const WparFields& f);
// Whether a change of a deployed WPAR must be applied on its system (its
// capability set or a limit differs), not only recorded here.
bool changes_on_system(const WparDefinition& before, const WparDefinition& after);

// The commands the inventory decides, by their gateway names.
bool is_inventory_command(std::string_view name);
// Reads a command from its name and JSON arguments; unknown members refused.
std::expected<Command, kernel::Rejection> parse_command(std::string_view name, const nlohmann::json& args);

// One event to append and its stream.
struct Change {
  std::string stream;
  Payload payload;
  bool operator==(const Change&) const = default;
};
using Changes = std::expected<std::vector<Change>, kernel::Rejection>;

Changes decide(const Inventory& state, const Command& command, const kernel::Context& context);

// What an agent's list of its WPARs changes (the seed's discovery): WPARs
// made by hand appear as discovered, their states follow, discovered WPARs
// that are gone are removed. A reported WPAR that is defined here but not on
// that system is refused (an agent speaks only for its own system), as an
// AgentReportRefused on stream agent-report-refusals.
// `reported_ns` is when the report was taken (wall clock): a WPAR the
// executor changed since, or is changing, keeps the state the executor recorded.
std::vector<Change> reconcile(const Inventory& state, const std::string& system_id,
                              const std::vector<ReportedWpar>& reported, int64_t reported_ns = INT64_MAX);

// Join tokens (wpm system token create): the stream of one token, and what
// is wrong with registering with it at `now_ns` (unknown, used, expired), if
// anything. Pure; the agent channel reads the stream and appends the use.
std::string join_token_stream(const std::string& token_hash);
std::optional<std::string> join_token_problem(const std::vector<Event>& stream, int64_t now_ns);

// The streams of one WPAR, WPAR group and relocation domain.
std::string wpar_stream(const std::string& name);
std::string group_stream(const std::string& name);
std::string domain_stream(const std::string& name);

// The stream version a decision was made on (0: the stream does not exist).
uint64_t stream_version(const Inventory& state, const std::string& stream);

// Finds a key by a unique prefix: an exact match wins; none is kNotFound,
// several kInvalid naming some of them.
template <typename Map>
std::expected<std::string, kernel::Rejection> resolve_prefix(const Map& map, const std::string& prefix,
                                                             std::string_view what);

// The inventory as a projection of the whole log, snapshotted as the
// events that rebuild it.
struct InventoryModel {
  using State = Inventory;
  static constexpr std::string_view kName = "inventory";
  static constexpr std::string_view kStream = "";
  static constexpr kernel::UnknownEvents kUnknown = kernel::UnknownEvents::kSkip;
  static State initial() { return {}; }
  static State evolve(State state, const Event& event) { return inventory::evolve(std::move(state), event); }
  static void fold_into(State& state, Event&& event) { inventory::fold_into(state, std::move(event)); }
  static bool wants(EventType type);
  static std::string encode(const State& state);
  static Result<State> decode(std::string_view bytes);
};

// ---- templates ----------------------------------------------------------------

template <typename Map>
std::expected<std::string, kernel::Rejection> resolve_prefix(const Map& map, const std::string& prefix,
                                                             std::string_view what) {
  if (prefix.empty()) {
    return std::unexpected(kernel::Rejection{kernel::RejectionCode::kInvalid, fmt::format("no {} named", what)});
  }
  if (map.contains(prefix)) return prefix;
  std::vector<std::string> found;
  for (auto it = map.lower_bound(prefix); it != map.end() && it->first.starts_with(prefix); ++it) {
    found.push_back(it->first);
    if (found.size() > 5) break;
  }
  if (found.empty()) {
    return std::unexpected(kernel::Rejection{kernel::RejectionCode::kNotFound,
                                             fmt::format("no {} named '{}'", what, prefix)});
  }
  if (found.size() > 1) {
    return std::unexpected(kernel::Rejection{
        kernel::RejectionCode::kInvalid,
        fmt::format("'{}' names more than one {} ({}{}); give more of the name", prefix, what,
                    fmt::join(std::vector<std::string>(found.begin(), found.begin() + std::min<size_t>(found.size(), 5)),
                              ", "),
                    found.size() > 5 ? ", …" : "")});
  }
  return found.front();
}

}  // namespace wpm::inventory
