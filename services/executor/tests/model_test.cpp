// The executor's pure rules: which lifecycle commands become tasks, the
// placement epochs, what a running task does next (operations, retries only
// for the seed's "run again" codes, timeouts, the end and its recovery), and
// the fold (also from a snapshot).

#include "services/executor/model.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "services/compatibility/tests.h"
#include "services/executor/tests/fixture.h"

namespace wpm::executor {
namespace {

using nlohmann::json;
using kernel::RejectionCode;
using test_support::ExecutorModelTest;
using test_support::kSecond;

TEST_F(ExecutorModelTest, DeployPlacesWithANewEpochAndRunsOneOperation) {
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "web"}, {"system", "node1"}, {"start", true}}), std::nullopt);
  EXPECT_EQ(state_.placements.at("web1").epoch, 1u);
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "node1");
  EXPECT_EQ(state_.busy.at("web1"), "t1");
  EXPECT_EQ(state_.running, (std::set<std::string>{"t1"})) << "the index of running tasks";
  Step s = step("t1");
  auto* start = std::get_if<Start>(&s);
  ASSERT_NE(start, nullptr);
  EXPECT_EQ(start->event.operation_id, "t1.1");
  EXPECT_EQ(start->event.action, "deploy");
  EXPECT_EQ(start->event.epoch, 1u);
  EXPECT_EQ(start->event.deadline_ns, now_ + action_timeout_ns("deploy"));
  fold_inventory(task_stream("t1"), start->event);
  EXPECT_EQ(letter("web1"), "T") << "Transitional while the operation runs";
  EXPECT_TRUE(std::holds_alternative<Await>(step("t1")));
  fold_inventory(task_stream("t1"), OperationFinished{"t1.1", 1, "ok", 0, "WPAR web1 is active", "", "A"});
  EXPECT_EQ(letter("web1"), "A");
  EXPECT_EQ(finish("t1").state, "succeeded");
  EXPECT_FALSE(state_.busy.contains("web1"));
  EXPECT_TRUE(state_.running.empty());
  EXPECT_TRUE(state_.tasks.contains("t1")) << "kept, finished";
  // A second task on another WPAR placed later gets its own epoch line.
  ASSERT_EQ(run("t2", "wpar.deploy", {{"name", "app1"}, {"system", "node2"}}), std::nullopt);
  EXPECT_EQ(state_.placements.at("app1").epoch, 1u);
}

TEST_F(ExecutorModelTest, CommandsAreCheckedAgainstTheLifecycleTableBeforeAnythingIsSent) {
  struct Row {
    std::string command;
    json args;
    std::optional<RejectionCode> code;
    std::string says;
  };
  std::vector<Row> rows = {
      {"wpar.start", {{"name", "web1"}}, RejectionCode::kConflict, "not deployed"},
      {"wpar.deploy", {{"name", "web1"}}, RejectionCode::kInvalid, "--system"},
      {"wpar.deploy", {{"name", "nope"}, {"system", "node1"}}, RejectionCode::kNotFound, "no WPAR"},
      {"wpar.deploy", {{"name", "web1"}, {"system", "node9"}}, RejectionCode::kNotFound, "no system"},
      {"wpar.deploy", {{"name", "app1"}, {"system", "node1"}, {"start", true}}, RejectionCode::kInvalid, "drop --start"},
      {"wpar.deploy", {{"name", "web1"}, {"system", "node1"}, {"color", "red"}}, RejectionCode::kInvalid, "unknown"},
      {"wpar.stop", {{"name", "web1"}, {"force", "yes"}}, RejectionCode::kInvalid, "true or false"},
  };
  for (const auto& r : rows) {
    auto refused = run("x", r.command, r.args);
    ASSERT_EQ(refused.has_value(), r.code.has_value()) << r.command << " " << r.args.dump();
    EXPECT_EQ(refused->code, *r.code) << r.command;
    EXPECT_NE(refused->message.find(r.says), std::string::npos) << refused->message;
  }
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}}), std::nullopt);
  auto busy = run("t2", "wpar.start", {{"name", "web1"}});
  ASSERT_TRUE(busy);
  EXPECT_NE(busy->message.find("has a task running"), std::string::npos) << "one task per WPAR at a time";
  answer("t1", 0, "D");
  finish("t1");
  // The agent's table: a Defined system WPAR starts; it cannot be stopped, paused, resumed or killed.
  EXPECT_NE(run("a", "wpar.stop", {{"name", "web1"}})->message.find("only an active WPAR"), std::string::npos);
  EXPECT_NE(run("b", "wpar.resume", {{"name", "web1"}})->message.find("paused or frozen"), std::string::npos);
  EXPECT_NE(run("c", "wpar.kill", {{"name", "web1"}})->message.find("killwpar ends a paused WPAR"), std::string::npos);
  EXPECT_EQ(run("d", "wpar.deploy", {{"name", "web1"}, {"system", "node2"}})->code, RejectionCode::kConflict)
      << "already deployed";
  ASSERT_EQ(run("t3", "wpar.start", {{"name", "web1"}}), std::nullopt);
  answer("t3", 0, "A");
  finish("t3");
  ASSERT_EQ(run("t4", "wpar.pause", {{"name", "web1"}}), std::nullopt) << "checkpoint enabled";
  answer("t4", 0, "P");
  finish("t4");
  EXPECT_NE(run("e", "wpar.stop", {{"name", "web1"}})->message.find("killwpar"), std::string::npos)
      << "a paused WPAR is not stopped: it is killed";
  ASSERT_EQ(run("t5", "wpar.kill", {{"name", "web1"}}), std::nullopt);
  // An application WPAR has nothing to start, and no checkpoint unless enabled.
  ASSERT_EQ(run("t6", "wpar.deploy", {{"name", "app1"}, {"system", "node1"}}), std::nullopt);
  answer("t6", 0, "A");
  finish("t6");
  EXPECT_NE(run("f", "wpar.start", {{"name", "app1"}})->message.find("nothing to start"), std::string::npos);
  EXPECT_NE(run("g", "wpar.pause", {{"name", "app1"}})->message.find("checkpoint enabled"), std::string::npos);
}

TEST_F(ExecutorModelTest, DeployChecksTheAddressAndCapabilitiesAgainstTheSystem) {
  define("outside", "system", false, "10.9.0.5/24");
  define("hostsown", "system", false, "10.1.0.2");
  define("net1", "system", false, "10.1.0.7/24");
  define("net2", "system", false, "10.1.0.7/24");
  auto outside = run("a", "wpar.deploy", {{"name", "outside"}, {"system", "node1"}});
  ASSERT_TRUE(outside);
  EXPECT_NE(outside->message.find("outside every subnet of node1 (eth0 10.1.0.2/24)"), std::string::npos)
      << outside->message;
  EXPECT_NE(run("b", "wpar.deploy", {{"name", "hostsown"}, {"system", "node1"}})->message.find("interface eth0"),
            std::string::npos);
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "net1"}, {"system", "node1"}}), std::nullopt);
  auto taken = run("c", "wpar.deploy", {{"name", "net2"}, {"system", "node1"}});
  ASSERT_TRUE(taken);
  EXPECT_NE(taken->message.find("already used on node1 by WPAR net1"), std::string::npos);
  // The same address on another system: accepted with a warning (node2's subnet differs, so it is refused there;
  // a system whose subnet holds it warns).
  SystemProfileChanged moved{"node2", {}};
  moved.profile.network_interfaces = {{"eth0", {"10.1.0.3/24"}, true}};
  fold_inventory("registry", moved);
  std::string warning;
  ASSERT_EQ(run("t2", "wpar.deploy", {{"name", "net2"}, {"system", "node2"}}, &warning), std::nullopt);
  EXPECT_NE(warning.find("also deployed on node1 (WPAR net1)"), std::string::npos) << warning;
  WparDefinition caps;
  caps.name = "caps";
  caps.type = "system";
  caps.capabilities = "+cap_sys_admin,-cap_kill";
  fold_inventory("wpar/caps", WparDefined{caps, true});
  auto lacking = run("d", "wpar.deploy", {{"name", "caps"}, {"system", "node1"}});
  ASSERT_TRUE(lacking);
  EXPECT_NE(lacking->message.find("lacks: cap_sys_admin"), std::string::npos) << lacking->message;
}

TEST_F(ExecutorModelTest, OnlyTheSeedsRunAgainCodesAreRetriedWithTheSameOperationId) {
  for (int code : {3, 5, 6, 17}) EXPECT_TRUE(run_again_code(code)) << code;
  for (int code : {1, 4, 14, 16, 19, 25}) EXPECT_FALSE(run_again_code(code)) << code;
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}, {"start", true}}), std::nullopt);
  answer("t1", 0, "A");
  finish("t1");
  ASSERT_EQ(run("t2", "wpar.pause", {{"name", "web1"}}), std::nullopt);
  answer("t2", 6, "A");  // the workload did not write its state in time: run again
  EXPECT_TRUE(std::holds_alternative<Idle>(step("t2"))) << "a retry waits its delay";
  now_ += kRetryDelayNs;
  Step s = step("t2");
  auto* again = std::get_if<Start>(&s);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->event.operation_id, "t2.1") << "the same operation id";
  EXPECT_EQ(again->event.attempt, 2u);
  fold_inventory(task_stream("t2"), again->event);
  fold_inventory(task_stream("t2"), OperationFinished{"t2.1", 2, "failed", 6, "", "again", "A"});
  now_ += kRetryDelayNs;
  answer("t2", 6, "A");  // attempt 3, the last
  now_ += kRetryDelayNs;
  auto ended = finish("t2");
  EXPECT_EQ(ended.state, "failed");
  EXPECT_NE(ended.error.find("exit code 6"), std::string::npos) << ended.error;
  EXPECT_NE(ended.recovery.find("as it was (A)"), std::string::npos) << ended.recovery;
  EXPECT_EQ(state_.tasks.at("t2").operations.size(), 1u) << "one operation, three attempts";
  // 17 from killwpar or resumewpar ("not paused") is a state, not a busy
  // agent: final at once; the agent's own "busy" refusal is tried again.
  auto op = [](std::string action, std::string outcome, int code) {
    Operation o;
    o.action = std::move(action);
    o.outcome = std::move(outcome);
    o.exit_code = code;
    return o;
  };
  EXPECT_FALSE(run_again(op("kill", "failed", 17)));
  EXPECT_FALSE(run_again(op("resume", "failed", 17)));
  EXPECT_FALSE(run_again(op("stop", "failed", 6)));
  EXPECT_TRUE(run_again(op("freeze", "failed", 17)));
  EXPECT_TRUE(run_again(op("pause", "failed", 3)));
  EXPECT_TRUE(run_again(op("start", "refused", 17)));
  EXPECT_FALSE(run_again(op("start", "refused", 1)));
  // Exit 1 is final at once.
  ASSERT_EQ(run("t3", "wpar.stop", {{"name", "web1"}}), std::nullopt);
  answer("t3", 1, "B");
  ended = finish("t3");
  EXPECT_EQ(ended.state, "failed");
  EXPECT_NE(ended.recovery.find("Broken"), std::string::npos);
  EXPECT_EQ(letter("web1"), "B");
  EXPECT_EQ(inv_.wpars.at("web1").wpar.cause, "boom") << "Broken, with the cause";
}

TEST_F(ExecutorModelTest, AFailedDeployWithdrawsItsPlacementAndATimeoutIsRecorded) {
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}}), std::nullopt);
  answer("t1", 1, "");
  auto ended = finish("t1");
  EXPECT_EQ(ended.state, "failed");
  EXPECT_NE(ended.recovery.find("withdrawn"), std::string::npos);
  EXPECT_EQ(state_.placements.at("web1").system, "");
  EXPECT_EQ(state_.placements.at("web1").epoch, 2u) << "the withdrawal is a placement too";
  EXPECT_EQ(letter("web1"), "U");
  // A deploy whose agent never answers times out at its recorded deadline.
  ASSERT_EQ(run("t2", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}}), std::nullopt);
  EXPECT_EQ(state_.placements.at("web1").epoch, 3u);
  Step s = step("t2");
  fold_inventory(task_stream("t2"), std::get<Start>(s).event);
  now_ += action_timeout_ns("deploy") + 1;
  s = step("t2");
  auto* timed_out = std::get_if<TimedOut>(&s);
  ASSERT_NE(timed_out, nullptr);
  EXPECT_EQ(timed_out->event.outcome, "timeout");
  fold_inventory(task_stream("t2"), timed_out->event);
  auto unknown = finish("t2");
  EXPECT_EQ(unknown.state, "failed");
  EXPECT_NE(unknown.recovery.find("outcome on node1 is unknown"), std::string::npos) << unknown.recovery;
  EXPECT_EQ(state_.placements.at("web1").system, "node1") << "it may exist there: never placed twice";
  EXPECT_EQ(state_.placements.at("web1").epoch, 3u);
  EXPECT_EQ(run("t3", "wpar.deploy", {{"name", "web1"}, {"system", "node2"}})->code, RejectionCode::kConflict);
  EXPECT_EQ(run("t4", "wpar.start", {{"name", "web1"}})->code, RejectionCode::kConflict) << "its state is unknown";
  ASSERT_EQ(run("t5", "wpar.remove", {{"name", "web1"}, {"keepDefinition", true}}), std::nullopt)
      << "removing it settles it";
  answer("t5", 16, "", true);  // the agent never made it
  EXPECT_EQ(finish("t5").state, "succeeded");
  EXPECT_EQ(letter("web1"), "U");
  // An operation that never left the manager made nothing: the deploy's placement is withdrawn.
  ASSERT_EQ(run("t6", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}}), std::nullopt);
  Step u = step("t6");
  fold_inventory(task_stream("t6"), std::get<Start>(u).event);
  fold_inventory(task_stream("t6"), OperationFinished{"t6.1", 1, "unsent", -1, "", "node1 is Offline", ""});
  auto unsent = finish("t6");
  EXPECT_NE(unsent.error.find("was not sent"), std::string::npos) << unsent.error;
  EXPECT_EQ(letter("web1"), "U");
}

TEST_F(ExecutorModelTest, RemoveTakesTheDefinitionUnlessKeptAndCancelStopsATask) {
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}}), std::nullopt);
  answer("t1", 0, "D");
  finish("t1");
  ASSERT_EQ(run("t2", "wpar.remove", {{"name", "web1"}, {"keepDefinition", true}, {"preserveFs", true}}), std::nullopt);
  EXPECT_TRUE(state_.tasks.at("t2").options.preserve_fs);
  answer("t2", 0, "");
  finish("t2");
  EXPECT_EQ(letter("web1"), "U") << "kept, Undeployed";
  EXPECT_EQ(state_.placements.at("web1").epoch, 2u);
  // Undeployed: only the definition goes, by the inventory's rule, with no operation.
  ASSERT_EQ(run("t3", "wpar.remove", {{"name", "web1"}}), std::nullopt);
  EXPECT_FALSE(inv_.wpars.contains("web1"));
  EXPECT_EQ(state_.tasks.at("t3").state, "succeeded");
  EXPECT_TRUE(state_.tasks.at("t3").operations.empty());
  // A removal that finds nothing on the system (exit 16) achieved what it wanted.
  ASSERT_EQ(run("t4", "wpar.deploy", {{"name", "app1"}, {"system", "node1"}}), std::nullopt);
  answer("t4", 0, "A");
  finish("t4");
  ASSERT_EQ(run("t5", "wpar.remove", {{"name", "app1"}}), std::nullopt);
  answer("t5", 16, "", true);
  EXPECT_EQ(finish("t5").state, "succeeded");
  EXPECT_FALSE(inv_.wpars.contains("app1"));
  // Cancel: between operations the task ends cancelled and nothing further
  // starts (a deploy that made nothing withdraws its placement); an
  // operation running on its agent cannot be called back.
  define("web2", "system", false);
  ASSERT_EQ(run("t6", "wpar.deploy", {{"name", "web2"}, {"system", "node2"}}), std::nullopt);
  Step s = step("t6");
  fold_inventory(task_stream("t6"), std::get<Start>(s).event);
  auto running = run("c0", "task.cancel", {{"task", "t6"}});
  ASSERT_TRUE(running);
  EXPECT_NE(running->message.find("cannot be called back"), std::string::npos) << running->message;
  fold_inventory(task_stream("t6"), OperationFinished{"t6.1", 1, "refused", 17, "", "busy", ""});
  ASSERT_EQ(run("c1", "task.cancel", {{"task", "t6"}}), std::nullopt);
  EXPECT_EQ(state_.tasks.at("t6").state, "cancelled");
  EXPECT_EQ(state_.placements.at("web2").system, "") << "withdrawn";
  EXPECT_EQ(letter("web2"), "U");
  EXPECT_TRUE(std::holds_alternative<Idle>(step("t6")));
  EXPECT_EQ(run("c2", "task.cancel", {{"task", "t6"}})->code, RejectionCode::kConflict) << "already ended";
}

TEST_F(ExecutorModelTest, AnApplicationWparWhoseCommandEndedIsTakenOffItsSystem) {
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "app1"}, {"system", "node1"}}), std::nullopt);
  answer("t1", 0, "A");
  finish("t1");
  EXPECT_TRUE(ended_application_tasks(state_, inv_).empty()) << "it runs";
  // Its agent reports it Defined: its command ended.
  auto report = [&](const std::string& letter) {
    WparDefinition w = inv_.wpars.at("app1").wpar;
    w.reported_state = letter;
    fold_inventory("wpar/app1", WparDefined{w, false});
  };
  report("D");
  auto ended = ended_application_tasks(state_, inv_);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].child, "ended-app1-1") << "named by the placement epoch";
  EXPECT_EQ(ended[0].created.kind, "remove");
  EXPECT_EQ(ended[0].created.system, "node1");
  fold_inventory(task_stream(ended[0].child), ended[0].created);
  EXPECT_TRUE(ended_application_tasks(state_, inv_).empty()) << "once: it has its task";
  answer(ended[0].child, 0, "");
  EXPECT_EQ(finish(ended[0].child).state, "succeeded");
  EXPECT_EQ(letter("app1"), "U") << "Undeployed, as the seed says";
  EXPECT_TRUE(inv_.wpars.contains("app1")) << "its definition stays";
  EXPECT_TRUE(ended_application_tasks(state_, inv_).empty());

  // When the removal there fails it is Undeployed all the same (nothing of
  // it runs); what is left there is fenced.
  ASSERT_EQ(run("t2", "wpar.deploy", {{"name", "app1"}, {"system", "node2"}}), std::nullopt);
  answer("t2", 0, "A");
  finish("t2");
  report("D");
  ended = ended_application_tasks(state_, inv_);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].child, "ended-app1-3");
  fold_inventory(task_stream(ended[0].child), ended[0].created);
  answer(ended[0].child, 1, "D");
  auto failed = finish(ended[0].child);
  EXPECT_EQ(failed.state, "failed");
  EXPECT_NE(failed.recovery.find("fence"), std::string::npos) << failed.recovery;
  EXPECT_EQ(letter("app1"), "U");
  EXPECT_TRUE(ended_application_tasks(state_, inv_).empty()) << "not tried again";

  // A system WPAR that is Defined stays deployed, and so does an
  // application WPAR whose system cannot take commands now.
  ASSERT_EQ(run("t3", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}}), std::nullopt);
  answer("t3", 0, "D");
  finish("t3");
  ASSERT_EQ(run("t4", "wpar.deploy", {{"name", "app1"}, {"system", "node2"}}), std::nullopt);
  answer("t4", 0, "D");
  finish("t4");
  fold_inventory("system/node2", SystemStateChanged{"node2", "offline", "no heartbeat"});
  EXPECT_TRUE(ended_application_tasks(state_, inv_).empty());
  fold_inventory("system/node2", SystemStateChanged{"node2", "online", "heartbeat"});
  ASSERT_EQ(ended_application_tasks(state_, inv_).size(), 1u);
}

TEST_F(ExecutorModelTest, TheInventorysOwnWritesKeepWhereTheExecutorPlacedAWpar) {
  WparDefinition before = inv_.wpars.at("web1").wpar;  // as a modify decided before the deploy saw it
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}}), std::nullopt);
  before.cpu_shares = 300;
  fold_inventory("wpar/web1", WparDefined{before, false});
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "node1") << "a racing definition does not move it";
  EXPECT_EQ(inv_.wpars.at("web1").wpar.epoch, 1u);
  EXPECT_EQ(inv_.wpars.at("web1").wpar.cpu_shares, 300u);
  EXPECT_EQ(run("t2", "wpar.deploy", {{"name", "web1"}, {"system", "node2"}})->code, RejectionCode::kConflict)
      << "so it is never placed twice";
  // A report about a WPAR removed meanwhile does not bring it back.
  WparDefinition gone = before;
  gone.name = "nothere";
  fold_inventory("wpar/nothere", WparDefined{gone, false});
  EXPECT_FALSE(inv_.wpars.contains("nothere"));
  // A discovered WPAR the executor acted on stays discovered through a snapshot.
  WparDefinition hand;
  hand.name = "hand1";
  hand.type = "system";
  hand.system = "node2";
  hand.discovered = true;
  hand.reported_state = "A";
  fold_inventory("wpar/hand1", WparDefined{hand, true});
  ASSERT_EQ(run("t3", "wpar.stop", {{"name", "hand1"}}), std::nullopt);
  answer("t3", 0, "D");
  finish("t3");
  EXPECT_TRUE(inv_.wpars.at("hand1").wpar.discovered);
  auto back = inventory::InventoryModel::decode(inventory::InventoryModel::encode(inv_));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, inv_);
}

TEST_F(ExecutorModelTest, AnOperationWaitsForReconciliationOnlyWhereAProbeCanEndTheWait) {
  EXPECT_TRUE(held_for_reconciliation(inv_, "node1", false, 9510)) << "reachable, not reconciled, port known";
  EXPECT_FALSE(held_for_reconciliation(inv_, "node1", true, 9510)) << "reconciled since it connected";
  EXPECT_FALSE(held_for_reconciliation(inv_, "node1", false, 0)) << "no port to probe: it fails at once instead";
  EXPECT_FALSE(held_for_reconciliation(inv_, "nodeX", false, 9510)) << "not a registered system";
  fold_inventory("system/node1", SystemStateChanged{"node1", "offline", "no heartbeat for 15 s"});
  EXPECT_FALSE(held_for_reconciliation(inv_, "node1", false, 9510)) << "Offline: it fails at once, saying why";
}

TEST_F(ExecutorModelTest, AnUnreachableSystemIsNamedAndTheSnapshotRebuildsTheState) {
  EXPECT_FALSE(system_problem(inv_, "node1"));
  fold_inventory("system/node1", SystemStateChanged{"node1", "offline", "no heartbeat for 15 s"});
  auto problem = system_problem(inv_, "node1");
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("Offline (no heartbeat for 15 s)"), std::string::npos);
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "web1"}, {"system", "node2"}}), std::nullopt);
  answer("t1", 0, "D");
  finish("t1");
  ASSERT_EQ(run("t2", "wpar.start", {{"name", "web1"}}), std::nullopt);
  Step s = step("t2");
  fold_inventory(task_stream("t2"), std::get<Start>(s).event);
  fold_inventory("command/p1", CommandRequested{"wpar.stop", R"({"name":"web1"})", "bob", {}, ""});
  auto back = ExecutorModel::decode(ExecutorModel::encode(state_));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, state_);
  // And the inventory's snapshot keeps the running task it must finish.
  auto inv_back = inventory::InventoryModel::decode(inventory::InventoryModel::encode(inv_));
  ASSERT_TRUE(inv_back);
  EXPECT_EQ(*inv_back, inv_);
}

// wpm wpar modify (the seed's chwpar): an undeployed definition changes at
// once; a deployed WPAR's capabilities and limits change on its system
// first, and the definition only once that succeeded.
TEST_F(ExecutorModelTest, ModifyChangesADeployedWparOnItsSystemFirst) {
  // Undeployed: a task that ends at once; the definition is changed.
  ASSERT_EQ(run("m1", "wpar.modify", {{"name", "web1"}, {"memory", 64 << 20}, {"address", "10.1.0.9/24"}}),
            std::nullopt);
  EXPECT_EQ(state_.tasks.at("m1").state, "succeeded");
  EXPECT_EQ(inv_.wpars.at("web1").wpar.memory_bytes, 64u << 20);
  EXPECT_EQ(inv_.wpars.at("web1").wpar.address, "10.1.0.9/24");
  auto refused = run("m0", "wpar.modify", {{"name", "web1"}, {"colour", "red"}});
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->message.find("unknown argument 'colour'"), std::string::npos) << refused->message;

  ASSERT_EQ(run("d1", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}, {"start", true}}), std::nullopt);
  answer("d1", 0, "A");
  finish("d1");
  struct Row {
    json args;
    RejectionCode code;
    std::string says;
  };
  for (const Row& row : std::vector<Row>{
           {{{"name", "web1"}, {"address", "10.1.0.7/24"}}, RejectionCode::kConflict, "its address cannot change"},
           {{{"name", "web1"}, {"command", "/bin/true"}, {"type", "application"}}, RejectionCode::kConflict,
            "type, command"},
           {{{"name", "web1"}, {"capabilities", "cap_sys_admin"}}, RejectionCode::kConflict, "bounding set lacks"},
           {{{"name", "web1"}, {"cpuLimit", 500}}, RejectionCode::kInvalid, "above 100%"},
       }) {
    SCOPED_TRACE(row.args.dump());
    auto r = run("x", "wpar.modify", row.args);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code, row.code);
    EXPECT_NE(r->message.find(row.says), std::string::npos) << r->message;
  }
  EXPECT_FALSE(state_.tasks.contains("x"));

  // Only the group: the manager's own, nothing runs on node1.
  fold_inventory("group/web", GroupDefined{"web", "", true});
  ASSERT_EQ(run("m2", "wpar.modify", {{"name", "web1"}, {"group", "web"}}), std::nullopt);
  EXPECT_EQ(state_.tasks.at("m2").state, "succeeded");
  EXPECT_TRUE(state_.tasks.at("m2").operations.empty());
  EXPECT_EQ(inv_.wpars.at("web1").wpar.group, "web");
  std::string warning;
  ASSERT_EQ(run("m3", "wpar.modify", {{"name", "web1"}, {"group", "web"}}, &warning), std::nullopt);
  EXPECT_NE(warning.find("nothing to change"), std::string::npos) << warning;

  // Capabilities and a limit: one modify operation on node1; the definition waits for it.
  ASSERT_EQ(run("m4", "wpar.modify", {{"name", "web1"}, {"capabilities", "cap_kill"}, {"procs", 50}}, &warning),
            std::nullopt);
  EXPECT_NE(warning.find("processes started from now on"), std::string::npos) << warning;
  EXPECT_EQ(state_.tasks.at("m4").options.changes, (json{{"capabilities", "cap_kill"}, {"procs", 50}}));
  EXPECT_EQ(state_.busy.at("web1"), "m4");
  EXPECT_EQ(inv_.wpars.at("web1").wpar.capabilities, "") << "not before its system has it";
  Step s = step("m4");
  ASSERT_TRUE(std::holds_alternative<Start>(s));
  EXPECT_EQ(std::get<Start>(s).event.action, "modify");
  EXPECT_EQ(std::get<Start>(s).event.system, "node1");
  answer("m4", 0, "A");
  EXPECT_EQ(finish("m4").state, "succeeded");
  EXPECT_EQ(inv_.wpars.at("web1").wpar.capabilities, "cap_kill");
  EXPECT_EQ(inv_.wpars.at("web1").wpar.processes_max, 50u);
  EXPECT_EQ(inv_.wpars.at("web1").wpar.memory_bytes, 64u << 20) << "the rest as it was";
  EXPECT_EQ(letter("web1"), "A");
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "node1") << "where it is stays the executor's";
  // Decided on the answer before the inventory folded it (the service's one
  // append): the definition written carries the state that answer reported.
  ASSERT_EQ(run("m11", "wpar.modify", {{"name", "web1"}, {"cpuShares", 250}}), std::nullopt);
  fold_inventory(task_stream("m11"), std::get<Start>(step("m11")).event);
  const auto& m11 = state_.tasks.at("m11");
  Task answered = with_event(m11, OperationFinished{m11.operations.back().id, 1, "ok", 0, "", "", "P"}, now_);
  Step ended = next_step(state_, answered, inv_, now_);
  ASSERT_TRUE(std::holds_alternative<Finish>(ended));
  ASSERT_TRUE(std::get<Finish>(ended).defined);
  EXPECT_EQ(std::get<Finish>(ended).defined->wpar.reported_state, "P");
  EXPECT_EQ(std::get<Finish>(ended).defined->wpar.cpu_shares, 250u);
  fold_inventory(task_stream("m11"), OperationFinished{m11.operations.back().id, 1, "ok", 0, "", "", "A"});
  EXPECT_EQ(finish("m11").state, "succeeded");
  const uint64_t written = inv_.wpars.at("web1").version;

  // No answer: whether it took the change is unknown, and the task says how to send it again.
  ASSERT_EQ(run("m8", "wpar.modify", {{"name", "web1"}, {"procs", 60}}), std::nullopt);
  Step started = step("m8");
  fold_inventory(task_stream("m8"), std::get<Start>(started).event);
  now_ += action_timeout_ns("modify") + kSecond;
  Step late = step("m8");
  ASSERT_TRUE(std::holds_alternative<TimedOut>(late));
  fold_inventory(task_stream("m8"), std::get<TimedOut>(late).event);
  TaskFinished unknown = finish("m8");
  EXPECT_NE(unknown.recovery.find("is unknown"), std::string::npos) << unknown.recovery;
  EXPECT_NE(unknown.recovery.find("sends it again"), std::string::npos) << unknown.recovery;
  EXPECT_EQ(inv_.wpars.at("web1").version, written);
  EXPECT_EQ(inv_.wpars.at("web1").wpar.processes_max, 50u);

  // Refused there: the definition stays as it was, and the task says so.
  ASSERT_EQ(run("m5", "wpar.modify", {{"name", "web1"}, {"memory", 8 << 20}}), std::nullopt);
  answer("m5", 1, "A");
  TaskFinished failed = finish("m5");
  EXPECT_EQ(failed.state, "failed");
  EXPECT_NE(failed.recovery.find("definition here is unchanged"), std::string::npos) << failed.recovery;
  EXPECT_EQ(inv_.wpars.at("web1").wpar.memory_bytes, 64u << 20);
  // And the inventory's snapshot keeps a running change it must apply when it ends.
  ASSERT_EQ(run("m6", "wpar.modify", {{"name", "web1"}, {"cpuShares", 300}}), std::nullopt);
  auto inv_back = inventory::InventoryModel::decode(inventory::InventoryModel::encode(inv_));
  ASSERT_TRUE(inv_back);
  EXPECT_EQ(*inv_back, inv_);
  // A WPAR made by hand on a host: the manager does not know its set and limits.
  WparDefinition found{"found", "system", "", false, "", "", 0, 0, 0, 0, "", "", "default", "node1", true, "A"};
  fold_inventory("wpar/found", WparDefined{found, true});
  auto discovered = run("m9", "wpar.modify", {{"name", "found"}, {"cpuShares", 300}});
  ASSERT_TRUE(discovered);
  EXPECT_NE(discovered->message.find("wpm-agent chwpar found"), std::string::npos) << discovered->message;
  ASSERT_EQ(run("m10", "wpar.modify", {{"name", "found"}, {"group", "web"}}), std::nullopt) << "its group is ours";
  EXPECT_EQ(inv_.wpars.at("found").wpar.group, "web");
  // A Broken WPAR is not changed.
  answer("m6", 0, "B");
  finish("m6");
  auto broken = run("m7", "wpar.modify", {{"name", "web1"}, {"cpuShares", 400}});
  ASSERT_TRUE(broken);
  EXPECT_NE(broken->message.find("broken"), std::string::npos) << broken->message;
}

}  // namespace
}  // namespace wpm::executor
