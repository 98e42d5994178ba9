#pragma once
// The gateway's state and rules (DESIGN.md §8; seed "Security for WPAR
// Manager", "User authentication"): the four roles and which commands each
// may send (the role × command matrix), the role mappings of users and
// Linux groups (as the seed's lwiMapRole, effective at once), the login
// sessions (kept by the hash of their token only), and the recorded
// compatibility results it answers `wpm compat` from.
//
// Pure (STYLE.md §1): evolve() folds one event, decide_role() turns a role
// command into events or a Rejection. Thread safety: plain values.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schemas/error.h"
#include "schemas/events.h"
#include "services/kernel/decision.h"
#include "services/kernel/projection.h"

namespace wpm::gateway {

enum class Role : uint8_t { kAdministrator, kWparAdministrator, kWparUser, kWparMonitor };
inline constexpr std::array<Role, 4> kRoles = {Role::kAdministrator, Role::kWparAdministrator, Role::kWparUser,
                                               Role::kWparMonitor};
std::string_view role_name(Role role);  // "administrator", "WPARAdministrator", …
// Case-insensitive: "wparuser" names WPARUser.
std::optional<Role> role_from_name(std::string_view name);
using Roles = std::set<Role>;
std::vector<std::string> role_names(const Roles& roles);

// What a command needs (README "Roles").
enum class Access : uint8_t {
  kAnyone,       // login, version: no session needed
  kSession,      // logout, whoami: any logged-in user, even with no role
  kRead,         // every query: every role but a bare administrator
  kWparAction,   // WPAR definitions: WPARUser and WPARAdministrator
  kFleetChange,  // systems, groups, settings: WPARAdministrator
  kRoleAdmin,    // role mappings: administrator
};
std::string_view access_name(Access access);
std::optional<Access> command_access(std::string_view command);
// What a command with these arguments needs: more than the command's own
// access where an argument asks for more (a privileged WPAR: WPARAdministrator),
// or where it changes a WPAR that is privileged (`privileged_target`).
Access access_of(std::string_view command, const nlohmann::json& args, Access access, bool privileged_target = false);
bool allowed(const Roles& roles, Access access);
// Every command the gateway serves, in the order of the README's matrix.
std::span<const std::string_view> gateway_commands();
// Whether a command changes something (and is recorded) or only reads.
bool is_change(std::string_view command);

struct Session {
  std::string user;
  int64_t expires_ns = 0;
  std::string address;
  bool operator==(const Session&) const = default;
};

struct RoleMapping {
  std::vector<std::string> users;   // sorted, unique
  std::vector<std::string> groups;  // sorted, unique
  uint64_t version = 0;             // of stream role/<role>
  bool operator==(const RoleMapping&) const = default;
};

struct GatewayState {
  // Until a role is first changed, its mapping is the first start's: root is
  // administrator and WPARAdministrator (no event: a new log stays empty).
  std::map<Role, RoleMapping> roles = {{Role::kAdministrator, RoleMapping{{"root"}, {}, 0}},
                                       {Role::kWparAdministrator, RoleMapping{{"root"}, {}, 0}}};
  std::map<std::string, Session> sessions;  // by token hash; closed and expired ones dropped
  // Recorded compatibility results, by (departure, arrival) properties digest.
  std::map<std::pair<std::string, std::string>, std::vector<CompatResult>> compat;
  uint64_t applied = 0;
  bool operator==(const GatewayState&) const = default;
};

GatewayState evolve(GatewayState state, const Event& event);

// The roles of `user`, directly and through its Linux groups.
Roles roles_of(const GatewayState& state, const std::string& user, const std::vector<std::string>& groups);

// The session a token hash names, if it is open at `now_ns`.
std::optional<Session> session_of(const GatewayState& state, const std::string& token_hash, int64_t now_ns);
std::string session_stream(const std::string& token_hash);

// Role commands: role.add / role.remove {role, users, groups}, role.purge {role}.
struct RoleChange {
  std::string stream;
  RoleMappingChanged event;
};
std::expected<std::optional<RoleChange>, kernel::Rejection> decide_role(const GatewayState& state,
                                                                        std::string_view command,
                                                                        const nlohmann::json& args);
// role.query {query, name}: getRoles, getRolesByUser, getRolesByGroup,
// getUsersByRole, getGroupsByRole.
std::expected<nlohmann::json, kernel::Rejection> query_roles(const GatewayState& state, const nlohmann::json& args);

// Whether a user with `roles` may see `event` in the event stream:
// sessions and refused logins only administrators; everything else every
// role that may read.
bool may_see(const Roles& roles, const Event& event);

struct GatewayModel {
  using State = GatewayState;
  static constexpr std::string_view kName = "gateway";
  static constexpr std::string_view kStream = "";
  static constexpr kernel::UnknownEvents kUnknown = kernel::UnknownEvents::kSkip;
  static State initial() { return {}; }
  static State evolve(State state, const Event& event) { return gateway::evolve(std::move(state), event); }
  static bool wants(EventType type) {
    return type == EventType::kRoleMappingChanged || type == EventType::kSessionOpened ||
           type == EventType::kSessionClosed || type == EventType::kCompatibilityAnalyzed;
  }
  static std::string encode(const State& state);
  static Result<State> decode(std::string_view bytes);
};

}  // namespace wpm::gateway
