#include "services/gateway/model.h"

#include <gtest/gtest.h>

namespace wpm::gateway {
namespace {

void fold(GatewayState& state, const std::string& stream, Payload payload, int64_t ts = 1000) {
  Event e;
  e.sequence = state.applied + 1;
  e.timestamp_ns = ts;
  e.stream_id = stream;
  e.stream_version = 1;
  if (auto* m = std::get_if<RoleMappingChanged>(&payload)) {
    auto role = role_from_name(m->role);
    if (role && state.roles.contains(*role)) e.stream_version = state.roles.at(*role).version + 1;
  }
  e.payload = std::move(payload);
  state = evolve(std::move(state), e);
}

// The role × command matrix of the README, row by row: which roles may send each command.
TEST(RoleMatrix, EveryCommandAsTheReadmeTableSays) {
  using R = Role;
  struct Row {
    std::string_view command;
    std::set<Role> may;  // roles that may (alone)
  };
  const std::set<Role> all = {R::kAdministrator, R::kWparAdministrator, R::kWparUser, R::kWparMonitor};
  const std::set<Role> readers = {R::kWparAdministrator, R::kWparUser, R::kWparMonitor};
  const std::set<Role> wpar_actors = {R::kWparAdministrator, R::kWparUser};
  const std::set<Role> fleet = {R::kWparAdministrator};
  const std::set<Role> admins = {R::kAdministrator};
  std::vector<Row> rows = {
      {"login", all},          {"version", all},         {"logout", all},          {"whoami", all},
      {"system.list", readers}, {"system.show", readers}, {"wpar.list", readers},   {"wpar.show", readers},
      {"group.list", readers}, {"group.show", readers},   {"settings.show", readers}, {"compat.show", readers},
      {"compat.matrix", readers}, {"events.read", readers}, {"domain.list", readers},
      {"task.list", readers}, {"task.show", readers}, {"wpar.candidates", readers}, {"wpar.relocate-check", readers},
      {"system.evacuate-check", readers}, {"system.evacuate", wpar_actors},
      {"system.metrics", readers}, {"wpar.metrics", readers}, {"group.state", readers}, {"group.explain", readers},
      {"group.policy-show", readers}, {"group.policy-set", fleet}, {"policy.simulate", readers},
      {"wpar.create", wpar_actors}, {"wpar.modify", wpar_actors}, {"wpar.remove", wpar_actors},
      {"wpar.deploy", wpar_actors}, {"wpar.start", wpar_actors}, {"wpar.stop", wpar_actors},
      {"wpar.pause", wpar_actors}, {"wpar.resume", wpar_actors}, {"wpar.freeze", wpar_actors},
      {"wpar.kill", wpar_actors}, {"wpar.relocate", wpar_actors}, {"task.cancel", wpar_actors},
      {"task.approve", wpar_actors},
      {"system.remove", fleet}, {"system.mark-dead", fleet}, {"system.discover", fleet}, {"system.token-create", fleet}, {"group.create", fleet}, {"group.modify", fleet}, {"group.delete", fleet},
      {"group.add-wpar", fleet}, {"group.remove-wpar", fleet}, {"settings.set", fleet},
      {"system.set-domain", fleet}, {"system.update-profile", fleet}, {"domain.create", fleet}, {"domain.remove", fleet},
      {"role.add", admins}, {"role.remove", admins}, {"role.purge", admins}, {"role.query", admins},
  };
  ASSERT_EQ(rows.size(), gateway_commands().size()) << "every command has a row";
  for (const auto& row : rows) {
    auto access = command_access(row.command);
    ASSERT_TRUE(access) << row.command;
    for (Role r : kRoles) {
      EXPECT_EQ(allowed({r}, *access), row.may.contains(r)) << row.command << " by " << role_name(r);
    }
    EXPECT_EQ(allowed({}, *access), *access == Access::kAnyone || *access == Access::kSession)
        << "a user with no role logs in and sees nothing: " << row.command;
  }
  EXPECT_FALSE(command_access("wpar.launch"));
  // A privileged WPAR (no system call filter) is the WPARAdministrator's to ask for, or to turn off.
  for (const char* command : {"wpar.create", "wpar.modify"}) {
    for (bool value : {true, false}) {
      Access a = access_of(command, {{"name", "w"}, {"privileged", value}}, *command_access(command));
      EXPECT_TRUE(allowed({Role::kWparAdministrator}, a)) << command;
      EXPECT_FALSE(allowed({Role::kWparUser}, a)) << command << " privileged=" << value;
    }
    EXPECT_EQ(access_of(command, {{"name", "w"}}, Access::kWparAction), Access::kWparAction);
  }
  EXPECT_EQ(access_of("wpar.list", {{"privileged", true}}, Access::kRead), Access::kRead);
  // Changing what a privileged WPAR runs, too.
  EXPECT_FALSE(allowed({Role::kWparUser}, access_of("wpar.modify", {{"name", "w"}, {"command", "sh"}},
                                                     Access::kWparAction, true)));
  EXPECT_TRUE(allowed({Role::kWparUser}, access_of("wpar.modify", {{"name", "w"}, {"command", "sh"}},
                                                    Access::kWparAction, false)));
  EXPECT_TRUE(is_change("wpar.create"));
  EXPECT_FALSE(is_change("role.query"));
  EXPECT_FALSE(is_change("wpar.list"));
}

TEST(Roles, MappingsForUsersAndGroupsTakeEffectAtOnce) {
  GatewayState state;
  EXPECT_EQ(roles_of(state, "root", {}), (Roles{Role::kAdministrator, Role::kWparAdministrator}))
      << "root is mapped from the first start, before any event";
  fold(state, "role/administrator", RoleMappingChanged{"administrator", {"root"}, {}});
  auto add = decide_role(state, "role.add", {{"role", "wparuser"}, {"users", {"alice", "bob"}}, {"groups", {"ops"}}});
  ASSERT_TRUE(add && *add);
  EXPECT_EQ((*add)->stream, "role/WPARUser");
  fold(state, (*add)->stream, (*add)->event);
  EXPECT_EQ(roles_of(state, "alice", {}), Roles{Role::kWparUser});
  EXPECT_EQ(roles_of(state, "carol", {"staff", "ops"}), Roles{Role::kWparUser}) << "through a Linux group";
  EXPECT_TRUE(roles_of(state, "carol", {"staff"}).empty());
  // Adding what is there writes nothing.
  auto again = decide_role(state, "role.add", {{"role", "WPARUser"}, {"users", {"alice"}}});
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  auto removed = decide_role(state, "role.remove", {{"role", "WPARUser"}, {"users", {"dave"}}});
  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().code, kernel::RejectionCode::kNotFound);
  EXPECT_EQ(decide_role(state, "role.add", {{"role", "boss"}, {"users", {"x"}}}).error().code,
            kernel::RejectionCode::kNotFound);
  EXPECT_EQ(decide_role(state, "role.add", {{"role", "WPARUser"}, {"users", {"bad name"}}}).error().code,
            kernel::RejectionCode::kInvalid);
  EXPECT_EQ(decide_role(state, "role.add", {{"role", "WPARUser"}, {"colour", 1}}).error().code,
            kernel::RejectionCode::kInvalid);
  auto purge = decide_role(state, "role.purge", {{"role", "WPARUser"}});
  ASSERT_TRUE(purge && *purge);
  fold(state, (*purge)->stream, (*purge)->event);
  EXPECT_TRUE(roles_of(state, "alice", {"ops"}).empty());
  // The last administrator stays.
  auto orphan = decide_role(state, "role.purge", {{"role", "administrator"}});
  ASSERT_FALSE(orphan);
  EXPECT_EQ(orphan.error().code, kernel::RejectionCode::kConflict);
  auto q = query_roles(state, {{"query", "getRolesByUser"}, {"name", "root"}});
  ASSERT_TRUE(q);
  EXPECT_EQ(*q, nlohmann::json({"administrator", "WPARAdministrator"}));
  EXPECT_FALSE(query_roles(state, {{"query", "getEverything"}}));
}

TEST(Sessions, ATokenExpiresOnTheClockAndALogoutEndsIt) {
  GatewayState state;
  const int64_t t0 = 1'700'000'000'000'000'000;
  fold(state, session_stream("aaaa0000aaaa0000ff"), SessionOpened{"alice", "aaaa0000aaaa0000ff", t0 + 100, "127.0.0.1"}, t0);
  fold(state, session_stream("bbbb"), SessionOpened{"bob", "bbbb", t0 + 1000, ""}, t0);
  EXPECT_TRUE(session_of(state, "aaaa0000aaaa0000ff", t0 + 99));
  EXPECT_FALSE(session_of(state, "aaaa0000aaaa0000ff", t0 + 100)) << "expired at its time";
  EXPECT_FALSE(session_of(state, "nope", t0));
  fold(state, session_stream("bbbb"), SessionClosed{"bbbb", "logout"}, t0 + 1);
  EXPECT_FALSE(session_of(state, "bbbb", t0 + 2));
  // A later login drops the sessions expired by then: the map stays bounded.
  fold(state, session_stream("cccc"), SessionOpened{"carol", "cccc", t0 + 10'000, ""}, t0 + 500);
  EXPECT_EQ(state.sessions.size(), 1u);
  auto back = GatewayModel::decode(GatewayModel::encode(state));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, state);
}

TEST(Visibility, SessionsAndRefusedLoginsOnlyForAdministrators) {
  Event login;
  login.payload = SessionOpened{"alice", "h", 1, ""};
  Event wpar;
  wpar.payload = WparRemoved{"w", ""};
  EXPECT_FALSE(may_see({Role::kWparMonitor}, login));
  EXPECT_TRUE(may_see({Role::kAdministrator}, login));
  EXPECT_TRUE(may_see({Role::kWparMonitor}, wpar));
  EXPECT_FALSE(may_see({}, wpar));
}

}  // namespace
}  // namespace wpm::gateway
