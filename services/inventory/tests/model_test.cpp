#include "services/inventory/model.h"

#include <gtest/gtest.h>

namespace wpm::inventory {
namespace {

using kernel::RejectionCode;

// Folds `payload` on `stream` as the next event of the log.
void fold(Inventory& state, const std::string& stream, Payload payload) {
  Event e;
  e.sequence = state.applied + 1;
  e.timestamp_ns = 1000 + static_cast<int64_t>(e.sequence);
  e.stream_id = stream;
  e.stream_version = stream_version(state, stream) + 1;
  e.payload = std::move(payload);
  state = evolve(std::move(state), e);
}

// Decides and folds what was decided; returns the rejection, if any.
std::optional<kernel::Rejection> run(Inventory& state, const std::string& name, const nlohmann::json& args) {
  auto command = parse_command(name, args);
  if (!command) return command.error();
  auto changes = decide(state, *command, kernel::Context{});
  if (!changes) return changes.error();
  for (auto& c : *changes) fold(state, c.stream, c.payload);
  return std::nullopt;
}

Inventory fresh() {
  Inventory state;
  fold(state, "group/default", GroupDefined{"default", "", true});
  return state;
}

TEST(InventoryDecide, WparCommandsTableOfAllowedAndRefused) {
  struct Row {
    std::string command;
    nlohmann::json args;
    std::optional<RejectionCode> refused;  // nullopt: allowed
    std::string reason;                    // part of the message when refused
  };
  Inventory state = fresh();
  std::vector<Row> rows = {
      {"wpar.create", {{"name", "web1"}, {"type", "application"}, {"command", "/bin/sleep 100"}}, {}, ""},
      {"wpar.create", {{"name", "web1"}, {"type", "system"}}, RejectionCode::kAlreadyExists, "exists"},
      {"wpar.create", {{"name", "-bad"}}, RejectionCode::kInvalid, "not a valid WPAR name"},
      {"wpar.create", {{"name", "app"}, {"type", "application"}}, RejectionCode::kInvalid, "needs the command"},
      {"wpar.create", {{"name", "x"}, {"type", "vm"}}, RejectionCode::kInvalid, "unknown"},
      {"wpar.create", {{"name", "x"}, {"group", "nope"}}, RejectionCode::kNotFound, "group create nope"},
      {"wpar.create", {{"name", "x"}, {"trigger", "SIGUSR2"}}, RejectionCode::kInvalid, "--checkpoint"},
      {"wpar.create", {{"name", "x"}, {"checkpoint", true}, {"trigger", "SIGFOO"}}, RejectionCode::kInvalid, "SIGFOO"},
      {"wpar.create", {{"name", "x"}, {"cpuLimit", 150}}, RejectionCode::kInvalid, "above 100%"},
      {"wpar.create", {{"name", "x"}, {"memory", 1024}}, RejectionCode::kInvalid, "below 4 MiB"},
      {"wpar.create", {{"name", "x"}, {"address", "10.0.0.300/24"}}, RejectionCode::kInvalid, "not an IP address"},
      {"wpar.create", {{"name", "x"}, {"capabilities", "cap_fly"}}, RejectionCode::kInvalid, "not a Linux capability"},
      {"wpar.create", {{"name", "x"}, {"capabilities", "cap_chown,+cap_kill"}}, RejectionCode::kInvalid, "not both"},
      {"wpar.create", {{"name", "x"}, {"colour", "red"}}, RejectionCode::kInvalid, "unknown argument 'colour'"},
      {"wpar.create", {{"name", "x"}, {"cpuShares", "many"}}, RejectionCode::kInvalid, "wrong type"},
      {"wpar.create",
       {{"name", "db1"}, {"checkpoint", true}, {"cpuShares", 200}, {"address", "10.0.0.5/24"},
        {"capabilities", "+cap_net_admin"}},
       {},
       ""},
      {"wpar.create", {{"name", "db2"}, {"from", "db"}}, {}, ""},  // a prefix names the template
      {"wpar.create", {{"name", "w3"}, {"from", "nothing"}}, RejectionCode::kNotFound, "no WPAR named 'nothing'"},
      {"wpar.modify", {{"name", "db"}, {"cpuShares", 300}}, RejectionCode::kInvalid, "more than one WPAR"},
      {"wpar.modify", {{"name", "db1"}, {"cpuShares", 300}}, {}, ""},
      {"wpar.modify", {{"name", "zzz"}}, RejectionCode::kNotFound, "no WPAR named"},
      {"wpar.remove", {{"name", "db2"}}, {}, ""},
      {"wpar.remove", {{"name", "db2"}}, RejectionCode::kNotFound, "no WPAR named"},
      {"nothing.here", {}, RejectionCode::kInvalid, "no command"},
  };
  for (const auto& row : rows) {
    auto r = run(state, row.command, row.args);
    SCOPED_TRACE(row.command + " " + row.args.dump());
    ASSERT_EQ(r.has_value(), row.refused.has_value()) << (r ? r->message : "allowed");
    if (r) {
      EXPECT_EQ(r->code, *row.refused);
      EXPECT_NE(r->message.find(row.reason), std::string::npos) << r->message;
    }
  }
  ASSERT_TRUE(state.wpars.contains("db1"));
  const auto& db1 = state.wpars.at("db1").wpar;
  EXPECT_EQ(db1.cpu_shares, 300u);
  EXPECT_EQ(db1.trigger_signal, "SIGUSR1") << "checkpointing defaults to SIGUSR1";
  EXPECT_EQ(db1.group, "default");
  EXPECT_EQ(state.wpars.at("db1").version, 2u);
  EXPECT_FALSE(state.wpars.contains("db2"));
  EXPECT_EQ(wpar_state_letter(db1), "U");
}

TEST(InventoryDecide, APrivilegedWparIsAskedForByNameNeverByCopyAndNotTurnedOnWhereItRuns) {
  Inventory state = fresh();
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "raw"}, {"privileged", true}}));
  EXPECT_TRUE(state.wpars.at("raw").wpar.privileged);
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "copy"}, {"from", "raw"}}));
  EXPECT_FALSE(state.wpars.at("copy").wpar.privileged) << "a template's privilege is not copied";
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "copy2"}, {"from", "raw"}, {"privileged", true}}));
  EXPECT_TRUE(state.wpars.at("copy2").wpar.privileged);
  ASSERT_FALSE(run(state, "wpar.modify", {{"name", "copy2"}, {"privileged", false}}));
  EXPECT_FALSE(state.wpars.at("copy2").wpar.privileged) << "undeployed: it changes";
  WparDefinition w{"found", "system", "", false, "", "", 0, 0, 0, 0, "", "", "default", "node1", true, "A"};
  fold(state, "wpar/found", WparDefined{w, true});
  auto r = run(state, "wpar.modify", {{"name", "found"}, {"privileged", true}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, RejectionCode::kConflict);
  EXPECT_NE(r->message.find("its privileged mode cannot change there"), std::string::npos) << r->message;
}

TEST(InventoryDecide, ANameRemovedAndMadeAgainContinuesItsStream) {
  Inventory state = fresh();
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "aa"}}));
  ASSERT_FALSE(run(state, "wpar.remove", {{"name", "aa"}}));
  EXPECT_EQ(stream_version(state, "wpar/aa"), 2u) << "the removed WPAR's stream is still there";
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "aa"}}));
  EXPECT_EQ(state.wpars.at("aa").version, 3u);
  ASSERT_FALSE(run(state, "group.create", {{"name", "g"}}));
  ASSERT_FALSE(run(state, "group.delete", {{"name", "g"}}));
  EXPECT_EQ(stream_version(state, "group/g"), 2u);
  ASSERT_FALSE(run(state, "wpar.remove", {{"name", "aa"}}));
  auto back = InventoryModel::decode(InventoryModel::encode(state));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->removed, state.removed) << "the snapshot keeps them";
}

TEST(InventoryDecide, ADeployedOrDiscoveredWparIsNotChangedOrRemoved) {
  Inventory state = fresh();
  WparDefinition w{"found", "system", "", false, "", "", 0, 0, 0, 0, "", "", "default", "node1", true, "A"};
  fold(state, "wpar/found", WparDefined{w, true});
  // On its system only its capabilities, limits and group change (wpar.modify is the executor's, by this rule).
  auto r = run(state, "wpar.modify", {{"name", "found"}, {"command", "/bin/true"}, {"cpuShares", 5}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, RejectionCode::kConflict);
  EXPECT_NE(r->message.find("deployed on node1: its command cannot change there"), std::string::npos) << r->message;
  auto limits = modified_definition(state, ModifyWpar{"found", WparFields{.cpu_shares = 5}});
  ASSERT_TRUE(limits) << limits.error().message;
  EXPECT_EQ(limits->cpu_shares, 5u);
  EXPECT_TRUE(changes_on_system(state.wpars.at("found").wpar, *limits));
  EXPECT_FALSE(is_inventory_command("wpar.modify"));
  r = run(state, "wpar.remove", {{"name", "found"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, RejectionCode::kConflict);
  EXPECT_EQ(wpar_state_name(state.wpars.at("found").wpar), "Active");
}

TEST(InventoryDecide, GroupsAndTheDefaultGroup) {
  Inventory state = fresh();
  EXPECT_FALSE(run(state, "group.create", {{"name", "web"}, {"description", "front ends"}}));
  EXPECT_EQ(run(state, "group.create", {{"name", "web"}})->code, RejectionCode::kAlreadyExists);
  EXPECT_FALSE(run(state, "wpar.create", {{"name", "w1"}, {"group", "web"}}));
  EXPECT_FALSE(run(state, "wpar.create", {{"name", "w2"}}));
  auto r = run(state, "group.delete", {{"name", "web"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, RejectionCode::kConflict);
  EXPECT_NE(r->message.find("1 WPAR"), std::string::npos) << r->message;
  EXPECT_EQ(run(state, "group.delete", {{"name", "default"}})->code, RejectionCode::kConflict);
  EXPECT_FALSE(run(state, "group.add-wpar", {{"name", "web"}, {"wpars", {"w2"}}}));
  EXPECT_EQ(state.wpars_in_group("web"), 2u);
  EXPECT_EQ(run(state, "group.remove-wpar", {{"name", "default"}, {"wpars", {"w1"}}})->code,
            RejectionCode::kConflict);
  EXPECT_FALSE(run(state, "group.remove-wpar", {{"name", "web"}, {"wpars", {"w1", "w2"}}}));
  EXPECT_EQ(state.wpars.at("w1").wpar.group, "default");
  EXPECT_FALSE(run(state, "group.delete", {{"name", "web"}}));
  EXPECT_FALSE(state.groups.contains("web"));
}

TEST(InventoryDecide, AGroupsPolicyIsValidatedKeptWhenItsDescriptionChangesAndSurvivesASnapshot) {
  Inventory state = fresh();
  EXPECT_FALSE(run(state, "group.create", {{"name", "web"}}));
  auto bad = run(state, "group.policy-set", {{"name", "web"}, {"changes", {{"metrics", {"cpu:weight=0"}}}}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->code, RejectionCode::kInvalid);
  EXPECT_EQ(run(state, "group.policy-set", {{"name", "web"}, {"changes", {{"domain", "nowhere"}}}})->code,
            RejectionCode::kNotFound);
  EXPECT_EQ(run(state, "group.policy-set", {{"name", "web"}, {"changes", {{"optionalTests", {"kernel"}}}}})->code,
            RejectionCode::kInvalid)
      << "a critical test is not optional";
  EXPECT_EQ(run(state, "group.policy-set", {{"name", "web"}})->code, RejectionCode::kInvalid) << "nothing to change";
  EXPECT_FALSE(run(state, "group.policy-set", {{"name", "web"}, {"changes", {{"enabled", true}, {"max", 70}}}}));
  const std::string policy = state.groups.at("web").policy;
  EXPECT_NE(policy.find("\"max\":70"), std::string::npos) << policy;
  // A change of the description keeps the policy.
  EXPECT_FALSE(run(state, "group.modify", {{"name", "web"}, {"description", "front ends"}}));
  EXPECT_EQ(state.groups.at("web").policy, policy);
  // As does a snapshot.
  auto back = InventoryModel::decode(InventoryModel::encode(state));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->groups.at("web").policy, policy);
  EXPECT_EQ(back->groups.at("web").description, "front ends");
}

TEST(InventoryDecide, SettingsAreCheckedAndAChangeToTheSameValueWritesNothing) {
  Inventory state = fresh();
  EXPECT_EQ(state.setting("heartbeat.timeout"), "15s");
  EXPECT_EQ(run(state, "settings.set", {{"key", "heartbeat.timeout"}, {"value", "0s"}})->code, RejectionCode::kInvalid);
  EXPECT_EQ(run(state, "settings.set", {{"key", "nope"}, {"value", "1"}})->code, RejectionCode::kNotFound);
  EXPECT_EQ(run(state, "settings.set", {{"key", "statefile.shared-root"}, {"value", "relative"}})->code,
            RejectionCode::kInvalid);
  EXPECT_EQ(run(state, "settings.set", {{"key", "statefile.shared-root"}, {"value", "/"}})->code, RejectionCode::kInvalid);
  EXPECT_FALSE(run(state, "settings.set", {{"key", "statefile.shared-root"}, {"value", "/mnt/wpm"}}));
  EXPECT_FALSE(run(state, "settings.set", {{"key", "statefile.shared-root"}, {"value", ""}})) << "none again";
  EXPECT_FALSE(run(state, "settings.set", {{"key", "heartbeat.timeout"}, {"value", "30s"}}));
  EXPECT_EQ(state.setting("heartbeat.timeout"), "30s");
  auto changes = decide(state, *parse_command("settings.set", {{"key", "heartbeat.timeout"}, {"value", "30s"}}), {});
  ASSERT_TRUE(changes);
  EXPECT_TRUE(changes->empty());
  EXPECT_EQ(parse_duration_ns("2m"), 120'000'000'000);
  EXPECT_EQ(parse_duration_ns("500ms"), 500'000'000);
  EXPECT_FALSE(parse_duration_ns("soon"));
}

TEST(InventoryDecide, ASystemWithWparsIsNotRemoved) {
  Inventory state = fresh();
  fold(state, "registry", SystemRegistered{"node1", "node1", "10.0.0.1", "key1", {}, 9510});
  WparDefinition w{"found", "system", "", false, "", "", 0, 0, 0, 0, "", "", "default", "node1", true, "A"};
  fold(state, "wpar/found", WparDefined{w, true});
  EXPECT_EQ(run(state, "system.remove", {{"name", "node"}})->code, RejectionCode::kConflict);
  fold(state, "wpar/found", WparRemoved{"found", ""});
  EXPECT_FALSE(run(state, "system.remove", {{"name", "node"}}));
  EXPECT_EQ(state.registry.size(), 0u);
  EXPECT_EQ(state.registry_version, 2u);
}

TEST(InventoryDecide, ASystemWithWparsIsRemovedWithThemLeftThereUnmanagedWhenAsked) {
  Inventory state = fresh();
  fold(state, "registry", SystemRegistered{"node1", "node1", "10.0.0.1", "key1", {}, 9510});
  WparDefinition found{"found", "system", "", false, "", "", 0, 0, 0, 0, "", "", "default", "node1", true, "A"};
  fold(state, "wpar/found", WparDefined{found, true});
  WparDefinition web{"web", "system", "", false, "", "", 0, 0, 0, 0, "", "", "default", "", false, ""};
  fold(state, "wpar/web", WparDefined{web, true});
  fold(state, "placement/web", WparPlaced{"web", "node1", 1, ""});
  fold(state, "task/t1", OperationFinished{"t1.1", 1, "ok", 0, "", "", "A"});
  auto refused = run(state, "system.remove", {{"name", "node"}});
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->message.find("--keep-wpars"), std::string::npos) << refused->message;
  EXPECT_NE(refused->message.find("--remove-wpars"), std::string::npos) << refused->message;
  const uint64_t found_version = state.wpars.at("found").version;
  EXPECT_FALSE(run(state, "system.remove", {{"name", "node"}, {"keepWpars", true}}));
  EXPECT_EQ(state.registry.size(), 0u);
  EXPECT_FALSE(state.wpars.contains("found")) << "discovered there: it was the host's own";
  EXPECT_EQ(stream_version(state, "wpar/found"), found_version) << "its stream goes on if the name comes back";
  ASSERT_TRUE(state.wpars.contains("web")) << "its definition stays";
  EXPECT_EQ(wpar_state_letter(state.wpars.at("web").wpar), "U");
  EXPECT_EQ(run(state, "system.remove", {{"name", "node"}, {"keepWpars", "yes"}})->code, RejectionCode::kInvalid)
      << "a flag is true or false";
}

TEST(InventoryDecide, RelocationDomainsTableOfAllowedAndRefused) {
  Inventory state = fresh();
  profile::SystemProfile big;
  big.architecture = "x86_64";
  big.cpu_cores = 8;
  big.memory_bytes = 16ULL << 30;
  fold(state, "registry", SystemRegistered{"node1", "node1", "10.0.0.1", "key1", big, 9510});
  fold(state, "registry", SystemRegistered{"node2", "node2", "10.0.0.2", "key2", big, 9510});
  EXPECT_EQ(state.system_status("node1").domain, "default");
  EXPECT_EQ(state.systems_in_domain("default"), (std::vector<std::string>{"node1", "node2"}));
  EXPECT_EQ(state.system_profile_name("node1"), state.system_profile_name("node2")) << "same domain, same hardware";
  struct Row {
    std::string command;
    nlohmann::json args;
    std::optional<RejectionCode> refused;
    std::string says;  // part of the reason
  };
  std::vector<Row> rows = {
      {"domain.create", {{"name", "banking"}, {"description", "payments"}}, std::nullopt, ""},
      {"domain.create", {{"name", "banking"}}, RejectionCode::kAlreadyExists, "exists"},
      {"domain.create", {{"name", "-bad"}}, RejectionCode::kInvalid, "not a valid relocation domain name"},
      {"domain.create", {{"name", "hr"}, {"colour", "red"}}, RejectionCode::kInvalid, "colour"},
      {"system.set-domain", {{"name", "node1"}, {"domain", "bank"}}, std::nullopt, ""},
      {"system.set-domain", {{"name", "node1"}, {"domain", "banking"}}, std::nullopt, ""},  // no change: nothing written
      {"system.set-domain", {{"name", "node9"}, {"domain", "banking"}}, RejectionCode::kNotFound, "no system"},
      {"system.set-domain", {{"name", "node2"}, {"domain", "nowhere"}}, RejectionCode::kNotFound, "wpm domain create"},
      {"system.set-domain", {{"name", "node"}, {"domain", "banking"}}, RejectionCode::kInvalid, "more than one"},
      {"domain.remove", {{"name", "banking"}}, RejectionCode::kConflict, "node1"},
      {"domain.remove", {{"name", "default"}}, RejectionCode::kConflict, "cannot be removed"},
      {"domain.remove", {{"name", "nowhere"}}, RejectionCode::kNotFound, "no relocation domain"},
      {"system.update-profile", {{"name", "node2"}}, std::nullopt, ""},
      {"system.update-profile", {{"name", "node9"}}, RejectionCode::kNotFound, "no system"},
  };
  for (const auto& row : rows) {
    auto r = run(state, row.command, row.args);
    if (!row.refused) {
      EXPECT_FALSE(r) << row.command << " " << row.args.dump() << ": " << (r ? r->message : "");
      continue;
    }
    ASSERT_TRUE(r) << row.command << " " << row.args.dump() << " was allowed";
    EXPECT_EQ(r->code, *row.refused) << row.command << " " << row.args.dump() << ": " << r->message;
    EXPECT_NE(r->message.find(row.says), std::string::npos) << r->message;
  }
  EXPECT_EQ(state.system_status("node1").domain, "banking");
  EXPECT_EQ(state.system_status("node1").version, 1u) << "the second set-domain wrote nothing";
  EXPECT_NE(state.system_profile_name("node1"), state.system_profile_name("node2"))
      << "systems in different domains never share a profile";
  EXPECT_TRUE(state.system_profile_name("node1").starts_with("banking/x86_64-8c-16g-"));
  // A state change keeps the domain; moving back empties the domain, which can then go.
  fold(state, "system/node1", SystemStateChanged{"node1", "offline", "no heartbeat"});
  EXPECT_EQ(state.system_status("node1").domain, "banking");
  EXPECT_EQ(run(state, "system.update-profile", {{"name", "node1"}})->code, RejectionCode::kConflict)
      << "an offline agent cannot be asked";
  EXPECT_FALSE(run(state, "system.set-domain", {{"name", "node1"}, {"domain", "default"}}));
  EXPECT_FALSE(run(state, "domain.remove", {{"name", "banking"}}));
  EXPECT_FALSE(state.domains.contains("banking"));
  EXPECT_FALSE(run(state, "domain.create", {{"name", "banking"}}));
  EXPECT_EQ(state.domains.at("banking").version, 3u) << "a name made again continues its stream";
}

TEST(InventoryReconcile, APlacedWparItsAgentNoLongerHasIsBrokenWithTheCause) {
  Inventory state = fresh();
  fold(state, "registry", SystemRegistered{"node1", "node1", "a", "k1", {}, 9510});
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "web1"}}));
  fold(state, "placement/web1", WparPlaced{"web1", "node1", 1, ""});  // events at 1000 + their sequence
  fold(state, "task/t1", TaskCreated{"deploy", "web1", "node1", "{}", "", "root"});
  fold(state, "task/t1", OperationStarted{"t1.1", "node1", "web1", "deploy", 1, 1, 10});
  EXPECT_TRUE(reconcile(state, "node1", {}, 100'000).empty()) << "not while an operation runs";
  fold(state, "task/t1", OperationFinished{"t1.1", 1, "ok", 0, "", "", "A"});
  EXPECT_TRUE(reconcile(state, "node1", {}, 100'000).empty()) << "not while its task runs";
  fold(state, "task/t1", TaskFinished{"succeeded", "", ""});
  EXPECT_TRUE(reconcile(state, "node1", {{"web1", "system", "A"}}, 100'000).empty()) << "as recorded";
  auto changes = reconcile(state, "node1", {}, 100'000);
  ASSERT_EQ(changes.size(), 1u);
  const auto& w = std::get<WparDefined>(changes[0].payload).wpar;
  EXPECT_EQ(w.reported_state, "B");
  EXPECT_NE(w.cause.find("no longer has it (it was A)"), std::string::npos) << w.cause;
  // A task waiting for approval has done nothing: the report counts (until it is approved).
  fold(state, "task/t2", TaskCreated{"relocate", "web1", "node1", R"({"to":"node2","approvalExpiresNs":9})", "", "root"});
  EXPECT_EQ(reconcile(state, "node1", {}, 100'000).size(), 1u) << "its WPAR is still watched";
  fold(state, "task/t2", TaskApproved{"bob"});
  EXPECT_TRUE(reconcile(state, "node1", {}, 100'000).empty()) << "approved: the executor's";
  auto back = InventoryModel::decode(InventoryModel::encode(state));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->tasks, state.tasks);
  fold(state, "task/t2", TaskFinished{"cancelled", "", ""});
  // A report older than the executor's last word on it changes nothing.
  state.wpars.at("web1").executor_ns = 200'000;
  EXPECT_TRUE(reconcile(state, "node1", {}, 100'000).empty());
}

TEST(InventoryReconcile, AReportTakenBeforeTheExecutorsLastWordNeitherBringsAWparBackNorRefusesItsCopy) {
  Inventory state = fresh();
  fold(state, "registry", SystemRegistered{"node1", "node1", "a", "k1", {}, 9510});
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "web1"}}));
  fold(state, "placement/web1", WparPlaced{"web1", "node1", 1, ""});  // events at 1000 + their sequence
  fold(state, "task/t1", TaskCreated{"remove", "web1", "node1", "{}", "", "root"});
  fold(state, "task/t1", OperationStarted{"t1.1", "node1", "web1", "remove", 1, 1, 10});
  fold(state, "task/t1", OperationFinished{"t1.1", 1, "ok", 0, "", "", ""});
  fold(state, "placement/web1", WparPlaced{"web1", "", 2, "node1"});
  fold(state, "task/t1", TaskFinished{"succeeded", "", ""});
  ASSERT_FALSE(state.wpars.contains("web1")) << "removed with its definition";
  const int64_t removed_at = state.removed_ns.at("wpar/web1");
  EXPECT_GT(removed_at, 0);
  EXPECT_TRUE(reconcile(state, "node1", {{"web1", "system", "D"}}, removed_at - 1).empty())
      << "listed before it was removed there";
  auto later = reconcile(state, "node1", {{"web1", "system", "D"}}, removed_at + 1);
  ASSERT_EQ(later.size(), 1u) << "made again by hand after the removal: discovered";
  EXPECT_TRUE(std::get<WparDefined>(later[0].payload).wpar.discovered);
  // A copy listed elsewhere before the executor's last word on the WPAR
  // (a relocation's departure, listed before its removal) is not refused;
  // one listed after is.
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "app1"}}));
  fold(state, "placement/app1", WparPlaced{"app1", "node2", 2, ""});
  const int64_t placed_at = state.wpars.at("app1").executor_ns;
  EXPECT_TRUE(reconcile(state, "node1", {{"app1", "system", "P"}}, placed_at - 1).empty());
  auto refused = reconcile(state, "node1", {{"app1", "system", "P"}}, placed_at + 1);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<AgentReportRefused>(refused[0].payload));
  // The snapshot keeps when it was removed.
  auto back = InventoryModel::decode(InventoryModel::encode(state));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, state);
}

TEST(InventoryModel, TheWparsOfEachSystemAreIndexedThroughEveryMove) {
  Inventory state = fresh();
  fold(state, "registry", SystemRegistered{"node1", "node1", "a", "k1", {}, 9510});
  fold(state, "registry", SystemRegistered{"node2", "node2", "b", "k2", {}, 9510});
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "web1"}}));
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "web2"}}));
  EXPECT_TRUE(state.wpars_on.empty()) << "undeployed: on no system";
  using Names = std::set<std::string>;
  fold(state, "placement/web1", WparPlaced{"web1", "node1", 1, ""});
  fold(state, "placement/web2", WparPlaced{"web2", "node1", 1, ""});
  EXPECT_EQ(state.wpars_on.at("node1"), (Names{"web1", "web2"}));
  fold(state, "placement/web1", WparPlaced{"web1", "node2", 2, ""});  // relocated
  EXPECT_EQ(state.wpars_on.at("node1"), (Names{"web2"}));
  EXPECT_EQ(state.wpars_on.at("node2"), (Names{"web1"}));
  // A hand-made WPAR reported by node2, then removed with its task.
  for (auto& c : reconcile(state, "node2", {{"web1", "system", "A"}, {"hand", "system", "A"}}, 1'000'000)) {
    fold(state, c.stream, c.payload);
  }
  EXPECT_EQ(state.wpars_on.at("node2"), (Names{"hand", "web1"}));
  fold(state, "task/t1", TaskCreated{"remove", "web1", "node2", "{}", "", "root"});
  fold(state, "placement/web1", WparPlaced{"web1", "", 3, "node2"});
  fold(state, "task/t1", TaskFinished{"succeeded", "", ""});
  EXPECT_EQ(state.wpars_on.at("node2"), (Names{"hand"}));
  auto back = InventoryModel::decode(InventoryModel::encode(state));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->wpars_on, state.wpars_on) << "rebuilt from the snapshot";
  fold(state, "registry", SystemRemoved{"node2", "removed by request"});
  EXPECT_FALSE(state.wpars_on.contains("node2"));
  EXPECT_EQ(state.wpars_on.at("node1"), (Names{"web2"}));
  // Whatever the path, the index is what a scan of the WPARs gives.
  std::map<std::string, Names> scanned;
  for (const auto& [name, r] : state.wpars) {
    if (!r.wpar.system.empty()) scanned[r.wpar.system].insert(name);
  }
  EXPECT_EQ(state.wpars_on, scanned);
}

TEST(InventoryReconcile, HandMadeWparsAppearFollowTheirStateAndGoAndOthersAreRefused) {
  Inventory state = fresh();
  fold(state, "registry", SystemRegistered{"node1", "node1", "a", "k1", {}, 9510});
  fold(state, "registry", SystemRegistered{"node2", "node2", "b", "k2", {}, 9510});
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "planned"}}));
  auto apply = [&](const std::string& system, std::vector<ReportedWpar> reported) {
    auto changes = reconcile(state, system, reported);
    for (auto& c : changes) fold(state, c.stream, c.payload);
    return changes;
  };
  auto first = apply("node1", {{"hand1", "system", "A"}, {"app1", "application", "D"}});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_TRUE(state.wpars.at("hand1").wpar.discovered);
  EXPECT_EQ(state.wpars.at("hand1").wpar.system, "node1");
  EXPECT_EQ(wpar_state_letter(state.wpars.at("app1").wpar), "D");
  EXPECT_TRUE(apply("node1", {{"hand1", "system", "A"}, {"app1", "application", "D"}}).empty())
      << "nothing changed, nothing written";
  auto moved = apply("node1", {{"hand1", "system", "B"}});
  ASSERT_EQ(moved.size(), 2u);
  EXPECT_EQ(wpar_state_name(state.wpars.at("hand1").wpar), "Broken");
  EXPECT_FALSE(state.wpars.contains("app1")) << "a discovered WPAR that is gone is removed";
  // node2 reports node1's WPAR and the undeployed definition: refused, nothing changes.
  auto refused = apply("node2", {{"hand1", "system", "A"}, {"planned", "system", "A"}});
  ASSERT_EQ(refused.size(), 2u);
  for (const auto& c : refused) {
    EXPECT_EQ(c.stream, "agent-report-refusals");
    EXPECT_TRUE(std::holds_alternative<AgentReportRefused>(c.payload));
  }
  EXPECT_NE(std::get<AgentReportRefused>(refused[0].payload).reason.find("is on node1"), std::string::npos);
  EXPECT_EQ(state.wpars.at("hand1").wpar.system, "node1");
  EXPECT_TRUE(state.wpars.at("planned").wpar.system.empty());
}

TEST(JoinTokens, ATokenIsMadeWithItsExpiryAndRefusedWhenUnknownUsedOrExpired) {
  kernel::SimulatedClock clock;
  Inventory state = fresh();
  std::string hash(64, 'a');
  kernel::Context context{clock.wall_ns(), "user:root", kernel::CommandId("c"), "c"};
  auto made = decide(state, *parse_command("system.token-create", {{"tokenHash", hash}, {"ttl", "2h"}}), context);
  ASSERT_TRUE(made) << made.error().message;
  ASSERT_EQ(made->size(), 1u);
  EXPECT_EQ(made->at(0).stream, "token/" + hash.substr(0, 16));
  const auto& created = std::get<JoinTokenCreated>(made->at(0).payload);
  EXPECT_EQ(created.expires_ns, clock.wall_ns() + 7'200'000'000'000);
  EXPECT_EQ(decide(state, *parse_command("system.token-create", {{"tokenHash", hash}, {"ttl", "5s"}}), context).error().code,
            RejectionCode::kInvalid);
  EXPECT_EQ(decide(state, *parse_command("system.token-create", {{"tokenHash", "xyz"}}), context).error().code,
            RejectionCode::kInvalid);
  Event e;
  e.payload = created;
  std::vector<Event> stream = {e};
  EXPECT_FALSE(join_token_problem(stream, clock.wall_ns()));
  clock.advance_ns(7'200'000'000'000);
  auto expired = join_token_problem(stream, clock.wall_ns());
  ASSERT_TRUE(expired);
  EXPECT_NE(expired->find("expired"), std::string::npos);
  Event used;
  used.payload = JoinTokenUsed{hash, "node1"};
  stream.push_back(used);
  EXPECT_NE(join_token_problem(stream, 0)->find("already used (by system node1)"), std::string::npos);
  EXPECT_NE(join_token_problem({}, 0)->find("unknown join token"), std::string::npos);
}

TEST(InventoryModel, PendingCommandsComeAndGoWithTheirDecision) {
  Inventory state = fresh();
  fold(state, "command/c1", CommandRequested{"wpar.create", "{}", "alice", {}, ""});
  fold(state, "command/c2", CommandRequested{"role.add", "{}", "alice", {}, ""});  // not the inventory's
  ASSERT_EQ(state.pending.size(), 1u);
  EXPECT_EQ(state.pending.begin()->first, "c1");
  fold(state, "command/c1", CommandDecided{true, "", "", "service:inventory"});
  EXPECT_TRUE(state.pending.empty());
}

TEST(InventoryModel, TheSnapshotRebuildsTheSameState) {
  Inventory state = fresh();
  fold(state, "registry", SystemRegistered{"node1", "node1", "10.0.0.1", "key1", {}, 9510});
  fold(state, "system/node1", SystemStateChanged{"node1", "offline", "no heartbeat"});
  ASSERT_FALSE(run(state, "group.create", {{"name", "web"}, {"description", "d"}}));
  ASSERT_FALSE(run(state, "wpar.create", {{"name", "w1"}, {"group", "web"}, {"checkpoint", true}}));
  ASSERT_FALSE(run(state, "wpar.modify", {{"name", "w1"}, {"cpuShares", 7}}));
  ASSERT_FALSE(run(state, "settings.set", {{"key", "heartbeat.timeout"}, {"value", "20s"}}));
  fold(state, "command/c9", CommandRequested{"wpar.remove", R"({"name":"w1"})", "bob", {"WPARUser"}, "1.2.3.4"});
  ASSERT_FALSE(run(state, "domain.create", {{"name", "hr"}, {"description", "people"}}));
  ASSERT_FALSE(run(state, "domain.create", {{"name", "gone"}}));
  ASSERT_FALSE(run(state, "domain.remove", {{"name", "gone"}}));
  ASSERT_FALSE(run(state, "system.set-domain", {{"name", "node1"}, {"domain", "hr"}}));
  fold(state, "registry", SystemRegistered{"node2", "node2", "10.0.0.2", "key2", {}, 9510});
  ASSERT_FALSE(run(state, "system.set-domain", {{"name", "node2"}, {"domain", "hr"}}));
  auto back = InventoryModel::decode(InventoryModel::encode(state));
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(back->wpars, state.wpars);
  EXPECT_EQ(back->groups, state.groups);
  EXPECT_EQ(back->status, state.status);
  EXPECT_EQ(back->pending, state.pending);
  EXPECT_EQ(back->domains, state.domains);
  EXPECT_EQ(back->removed, state.removed);
  EXPECT_EQ(*back, state);
  EXPECT_FALSE(InventoryModel::decode("short").has_value());
  // A snapshot written before relocation domains existed lists none: the
  // default domain is there after it is read.
  Inventory old = fresh();
  old.domains.clear();
  auto upgraded = InventoryModel::decode(InventoryModel::encode(old));
  ASSERT_TRUE(upgraded.has_value());
  EXPECT_TRUE(upgraded->domains.contains("default"));
}

}  // namespace
}  // namespace wpm::inventory
