#include "services/gateway/model.h"

#include "services/kernel/snapshot_frames.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "schemas/codec.h"

namespace wpm::gateway {
namespace {

using kernel::Rejection;
using kernel::RejectionCode;

struct CommandAccess {
  std::string_view command;
  Access access;
};
constexpr std::array<CommandAccess, 59> kCommands = {{
    {"login", Access::kAnyone},
    {"version", Access::kAnyone},
    {"logout", Access::kSession},
    {"whoami", Access::kSession},
    {"system.list", Access::kRead},
    {"system.show", Access::kRead},
    {"system.metrics", Access::kRead},
    {"wpar.metrics", Access::kRead},
    {"wpar.list", Access::kRead},
    {"wpar.show", Access::kRead},
    {"group.list", Access::kRead},
    {"group.show", Access::kRead},
    {"settings.show", Access::kRead},
    {"domain.list", Access::kRead},
    {"compat.show", Access::kRead},
    {"compat.matrix", Access::kRead},
    {"events.read", Access::kRead},
    {"task.list", Access::kRead},
    {"task.show", Access::kRead},
    {"wpar.candidates", Access::kRead},
    {"wpar.relocate-check", Access::kRead},
    {"system.evacuate-check", Access::kRead},
    {"wpar.create", Access::kWparAction},
    {"wpar.modify", Access::kWparAction},
    {"wpar.remove", Access::kWparAction},
    {"wpar.deploy", Access::kWparAction},
    {"wpar.start", Access::kWparAction},
    {"wpar.stop", Access::kWparAction},
    {"wpar.pause", Access::kWparAction},
    {"wpar.resume", Access::kWparAction},
    {"wpar.freeze", Access::kWparAction},
    {"wpar.kill", Access::kWparAction},
    {"wpar.relocate", Access::kWparAction},
    {"system.evacuate", Access::kWparAction},
    {"task.cancel", Access::kWparAction},
    {"task.approve", Access::kWparAction},
    {"system.remove", Access::kFleetChange},
    {"system.mark-dead", Access::kFleetChange},
    {"system.discover", Access::kFleetChange},
    {"system.token-create", Access::kFleetChange},
    {"system.set-domain", Access::kFleetChange},
    {"system.update-profile", Access::kFleetChange},
    {"domain.create", Access::kFleetChange},
    {"domain.remove", Access::kFleetChange},
    {"group.create", Access::kFleetChange},
    {"group.modify", Access::kFleetChange},
    {"group.delete", Access::kFleetChange},
    {"group.add-wpar", Access::kFleetChange},
    {"group.remove-wpar", Access::kFleetChange},
    {"group.policy-set", Access::kFleetChange},
    {"group.state", Access::kRead},
    {"group.explain", Access::kRead},
    {"group.policy-show", Access::kRead},
    {"policy.simulate", Access::kRead},
    {"settings.set", Access::kFleetChange},
    {"role.add", Access::kRoleAdmin},
    {"role.remove", Access::kRoleAdmin},
    {"role.purge", Access::kRoleAdmin},
    {"role.query", Access::kRoleAdmin},
}};
constexpr std::array<std::string_view, kCommands.size()> kCommandNames = [] {
  std::array<std::string_view, kCommands.size()> names{};
  for (size_t i = 0; i < kCommands.size(); ++i) names[i] = kCommands[i].command;
  return names;
}();

std::unexpected<Rejection> reject(RejectionCode code, std::string message) {
  return std::unexpected(Rejection{code, std::move(message)});
}

bool valid_principal(std::string_view name) {
  return !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
  });
}

std::vector<std::string> sorted_unique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::optional<std::vector<std::string>> string_list(const nlohmann::json& args, const char* key) {
  if (!args.contains(key) || args[key].is_null()) return std::vector<std::string>{};
  const auto& v = args[key];
  if (!v.is_array() || !std::all_of(v.begin(), v.end(), [](const auto& x) { return x.is_string(); })) {
    return std::nullopt;
  }
  return v.get<std::vector<std::string>>();
}

}  // namespace

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kAdministrator: return "administrator";
    case Role::kWparAdministrator: return "WPARAdministrator";
    case Role::kWparUser: return "WPARUser";
    case Role::kWparMonitor: return "WPARMonitor";
  }
  return "unknown";
}

std::optional<Role> role_from_name(std::string_view name) {
  for (Role r : kRoles) {
    auto n = role_name(r);
    if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        })) {
      return r;
    }
  }
  return std::nullopt;
}

std::vector<std::string> role_names(const Roles& roles) {
  std::vector<std::string> names;
  for (Role r : roles) names.emplace_back(role_name(r));
  return names;
}

std::string_view access_name(Access access) {
  switch (access) {
    case Access::kAnyone: return "anyone";
    case Access::kSession: return "any logged-in user";
    case Access::kRead: return "read";
    case Access::kWparAction: return "WPAR action";
    case Access::kFleetChange: return "fleet change";
    case Access::kRoleAdmin: return "role administration";
  }
  return "unknown";
}

std::optional<Access> command_access(std::string_view command) {
  for (const auto& c : kCommands) {
    if (c.command == command) return c.access;
  }
  return std::nullopt;
}

Access access_of(std::string_view command, const nlohmann::json& args, Access access, bool privileged_target) {
  // A privileged WPAR runs without the system call filter: asking for one
  // (or turning it off), or changing what one runs, is a change to what the
  // fleet lets WPARs do.
  if ((command == "wpar.create" || command == "wpar.modify") && args.is_object() && args.contains("privileged")) {
    return std::max(access, Access::kFleetChange);
  }
  if (command == "wpar.modify" && privileged_target) return std::max(access, Access::kFleetChange);
  return access;
}

bool allowed(const Roles& roles, Access access) {
  auto has = [&](Role r) { return roles.contains(r); };
  switch (access) {
    case Access::kAnyone:
    case Access::kSession: return true;
    case Access::kRead: return has(Role::kWparAdministrator) || has(Role::kWparUser) || has(Role::kWparMonitor);
    case Access::kWparAction: return has(Role::kWparAdministrator) || has(Role::kWparUser);
    case Access::kFleetChange: return has(Role::kWparAdministrator);
    case Access::kRoleAdmin: return has(Role::kAdministrator);
  }
  return false;
}

std::span<const std::string_view> gateway_commands() { return kCommandNames; }

bool is_change(std::string_view command) {
  auto a = command_access(command);
  return a && (*a == Access::kWparAction || *a == Access::kFleetChange ||
               (*a == Access::kRoleAdmin && command != "role.query"));
}

std::string session_stream(const std::string& token_hash) { return "session/" + token_hash.substr(0, 16); }

GatewayState evolve(GatewayState state, const Event& e) {
  if (e.sequence != 0 && e.sequence <= state.applied) return state;
  if (const auto* m = std::get_if<RoleMappingChanged>(&e.payload)) {
    if (auto role = role_from_name(m->role)) {
      state.roles[*role] = RoleMapping{sorted_unique(m->users), sorted_unique(m->groups), e.stream_version};
    }
  } else if (const auto* s = std::get_if<SessionOpened>(&e.payload)) {
    // Sessions expired by the time of this event are dropped: the map
    // holds open sessions only, whatever the number of logins so far.
    std::erase_if(state.sessions, [&](const auto& kv) { return kv.second.expires_ns <= e.timestamp_ns; });
    state.sessions[s->token_hash] = Session{s->user, s->expires_ns, s->address};
  } else if (const auto* c = std::get_if<SessionClosed>(&e.payload)) {
    state.sessions.erase(c->token_hash);
  } else if (const auto* a = std::get_if<CompatibilityAnalyzed>(&e.payload)) {
    state.compat[{a->departure_properties, a->arrival_properties}] = a->results;
  }
  if (e.sequence != 0) state.applied = e.sequence;
  return state;
}

Roles roles_of(const GatewayState& state, const std::string& user, const std::vector<std::string>& groups) {
  Roles roles;
  for (const auto& [role, m] : state.roles) {
    if (std::binary_search(m.users.begin(), m.users.end(), user)) {
      roles.insert(role);
      continue;
    }
    for (const auto& g : groups) {
      if (std::binary_search(m.groups.begin(), m.groups.end(), g)) {
        roles.insert(role);
        break;
      }
    }
  }
  return roles;
}

std::optional<Session> session_of(const GatewayState& state, const std::string& token_hash, int64_t now_ns) {
  auto it = state.sessions.find(token_hash);
  if (it == state.sessions.end() || it->second.expires_ns <= now_ns) return std::nullopt;
  return it->second;
}

std::expected<std::optional<RoleChange>, Rejection> decide_role(const GatewayState& state, std::string_view command,
                                                                const nlohmann::json& args) {
  if (!args.is_object()) return reject(RejectionCode::kInvalid, "arguments must be a JSON object");
  for (const auto& [key, value] : args.items()) {
    if (key != "role" && key != "users" && key != "groups") {
      return reject(RejectionCode::kInvalid, fmt::format("unknown argument '{}'", key));
    }
  }
  std::string name = args.value("role", "");
  auto role = role_from_name(name);
  if (!role) {
    return reject(RejectionCode::kNotFound,
                  fmt::format("no role '{}'; the roles are administrator, WPARAdministrator, WPARUser, WPARMonitor",
                              name));
  }
  auto users = string_list(args, "users");
  auto groups = string_list(args, "groups");
  if (!users || !groups) return reject(RejectionCode::kInvalid, "users and groups are lists of names");
  for (const auto& n : *users) {
    if (!valid_principal(n)) return reject(RejectionCode::kInvalid, fmt::format("'{}' is not a user name", n));
  }
  for (const auto& n : *groups) {
    if (!valid_principal(n)) return reject(RejectionCode::kInvalid, fmt::format("'{}' is not a group name", n));
  }
  RoleMapping current;
  if (auto it = state.roles.find(*role); it != state.roles.end()) current = it->second;
  RoleMapping next = current;
  if (command == "role.add") {
    if (users->empty() && groups->empty()) return reject(RejectionCode::kInvalid, "name users (--user) or groups (--group)");
    next.users.insert(next.users.end(), users->begin(), users->end());
    next.groups.insert(next.groups.end(), groups->begin(), groups->end());
  } else if (command == "role.remove") {
    if (users->empty() && groups->empty()) return reject(RejectionCode::kInvalid, "name users (--user) or groups (--group)");
    for (const auto& u : *users) {
      if (!std::binary_search(current.users.begin(), current.users.end(), u)) {
        return reject(RejectionCode::kNotFound, fmt::format("user '{}' does not have role {}", u, role_name(*role)));
      }
    }
    for (const auto& g : *groups) {
      if (!std::binary_search(current.groups.begin(), current.groups.end(), g)) {
        return reject(RejectionCode::kNotFound, fmt::format("group '{}' does not have role {}", g, role_name(*role)));
      }
    }
    std::erase_if(next.users, [&](const auto& u) { return std::find(users->begin(), users->end(), u) != users->end(); });
    std::erase_if(next.groups,
                  [&](const auto& g) { return std::find(groups->begin(), groups->end(), g) != groups->end(); });
  } else if (command == "role.purge") {
    if (!users->empty() || !groups->empty()) return reject(RejectionCode::kInvalid, "role purge takes only --role");
    next.users.clear();
    next.groups.clear();
  } else {
    return reject(RejectionCode::kInvalid, fmt::format("no role command '{}'", command));
  }
  next.users = sorted_unique(std::move(next.users));
  next.groups = sorted_unique(std::move(next.groups));
  if (*role == Role::kAdministrator && next.users.empty() && next.groups.empty()) {
    return reject(RejectionCode::kConflict,
                  "this would leave no administrator: nobody could map roles any more; add another first");
  }
  if (next.users == current.users && next.groups == current.groups) return std::optional<RoleChange>{};
  return std::optional<RoleChange>{
      RoleChange{fmt::format("role/{}", role_name(*role)),
                 RoleMappingChanged{std::string(role_name(*role)), next.users, next.groups}}};
}

std::expected<nlohmann::json, Rejection> query_roles(const GatewayState& state, const nlohmann::json& args) {
  std::string query = args.is_object() ? args.value("query", "") : "";
  std::string name = args.is_object() ? args.value("name", "") : "";
  auto mapping = [&](Role r) {
    auto it = state.roles.find(r);
    return it == state.roles.end() ? RoleMapping{} : it->second;
  };
  nlohmann::json out = nlohmann::json::array();
  if (query == "getRoles") {
    for (Role r : kRoles) {
      auto m = mapping(r);
      out.push_back({{"role", role_name(r)}, {"users", m.users}, {"groups", m.groups}});
    }
    return out;
  }
  if (query == "getRolesByUser" || query == "getRolesByGroup") {
    if (name.empty()) return reject(RejectionCode::kInvalid, fmt::format("{} needs a name", query));
    for (Role r : kRoles) {
      auto m = mapping(r);
      const auto& list = query == "getRolesByUser" ? m.users : m.groups;
      if (std::binary_search(list.begin(), list.end(), name)) out.push_back(role_name(r));
    }
    return out;
  }
  if (query == "getUsersByRole" || query == "getGroupsByRole") {
    auto r = role_from_name(name);
    if (!r) return reject(RejectionCode::kNotFound, fmt::format("no role '{}'", name));
    auto m = mapping(*r);
    return nlohmann::json(query == "getUsersByRole" ? m.users : m.groups);
  }
  return reject(RejectionCode::kInvalid,
                fmt::format("no role query '{}': use getRoles, getRolesByUser U, getRolesByGroup G, getUsersByRole "
                            "R or getGroupsByRole R",
                            query));
}

bool may_see(const Roles& roles, const Event& event) {
  auto t = event.type();
  if (t == EventType::kSessionOpened || t == EventType::kSessionClosed || t == EventType::kLoginRefused) {
    return roles.contains(Role::kAdministrator);
  }
  return allowed(roles, Access::kRead) || roles.contains(Role::kAdministrator);
}

// Snapshot form: the last sequence applied, then the events that rebuild
// the state, each framed by a 4-byte length.
std::string GatewayModel::encode(const State& state) {
  kernel::SnapshotWriter out;
  out.word(state.applied);
  for (const auto& [role, m] : state.roles) {
    out.event(fmt::format("role/{}", role_name(role)), m.version, 0,
              RoleMappingChanged{std::string(role_name(role)), m.users, m.groups});
  }
  for (const auto& [hash, s] : state.sessions) {
    out.event(session_stream(hash), 1, 0, SessionOpened{s.user, hash, s.expires_ns, s.address});
  }
  for (const auto& [pair, results] : state.compat) {
    out.event("compat/" + pair.first + "/" + pair.second, 1, 0, CompatibilityAnalyzed{pair.first, pair.second, results});
  }
  return out.take();
}

Result<GatewayState> GatewayModel::decode(std::string_view bytes) {
  kernel::SnapshotReader in(bytes, "gateway snapshot");
  auto applied = in.word();
  if (!applied) return std::unexpected(applied.error());
  GatewayState state;
  state.roles.clear();  // the snapshot lists every mapping
  while (!in.done()) {  // bounded: every round consumes at least 4 bytes
    auto e = in.event();
    if (!e) return std::unexpected(e.error());
    if (auto* s = std::get_if<SessionOpened>(&e->payload)) {
      state.sessions[s->token_hash] = Session{s->user, s->expires_ns, s->address};
      continue;
    }
    state = evolve(std::move(state), *e);
  }
  state.applied = *applied;
  return state;
}

}  // namespace wpm::gateway
