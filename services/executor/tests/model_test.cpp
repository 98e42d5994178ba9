// The executor's pure rules: which lifecycle commands become tasks, the
// placement epochs, what a running task does next (operations, retries only
// for the seed's "run again" codes, timeouts, the end and its recovery), and
// the fold (also from a snapshot).

#include "services/executor/model.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "services/compatibility/tests.h"

namespace wpm::executor {
namespace {

using nlohmann::json;
using kernel::RejectionCode;

constexpr int64_t kSecond = 1'000'000'000;

class ExecutorModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two systems, one WPAR of each kind, undeployed.
    for (const char* id : {"node1", "node2"}) {
      SystemRegistered r;
      r.system_id = id;
      r.hostname = id;
      r.address = "127.0.0.1";
      r.public_key = std::string(39, 'k') + id[4];
      r.profile.network_interfaces = {{"eth0", {std::string(id) == "node1" ? "10.1.0.2/24" : "10.2.0.2/24"}, true}};
      r.profile.capabilities = {"chown", "kill", "net_raw"};  // as libcap-ng names them
      fold_inventory("registry", r);
    }
    define("web1", "system", true);
    define("app1", "application", false);
  }

  template <typename P>
  void fold_inventory(const std::string& stream, P payload) {
    Event e;
    e.sequence = ++sequence_;
    e.stream_id = stream;
    e.stream_version = ++versions_[stream];
    e.timestamp_ns = now_;
    e.payload = std::move(payload);
    inv_ = inventory::evolve(std::move(inv_), e);
    state_ = evolve(std::move(state_), e);
  }

  void define(const std::string& name, const std::string& type, bool checkpointable, std::string address = "") {
    WparDefinition w;
    w.name = name;
    w.type = type;
    w.command = "sleep 100";
    w.checkpointable = checkpointable;
    w.group = "default";
    w.address = std::move(address);
    fold_inventory("wpar/" + name, WparDefined{w, true});
  }

  // Decides and folds a command; the rejection when refused.
  std::optional<kernel::Rejection> run(const std::string& id, const std::string& name, const json& args,
                                       std::string* warning = nullptr) {
    auto command = parse_command(name, args);
    if (!command) return command.error();
    kernel::Context context{now_, "user:alice", kernel::CommandId(id), id};
    auto decided = decide(state_, inv_, *command, context);
    if (!decided) return decided.error();
    if (warning != nullptr) *warning = decided->warning;
    for (auto& c : decided->changes) fold_inventory(c.stream, c.payload);
    return std::nullopt;
  }

  Step step(const std::string& task) { return next_step(state_, state_.tasks.at(task), inv_, now_); }

  // Runs the task's next operation with the agent's answer.
  void answer(const std::string& task, int exit_code, const std::string& wpar_state, bool refused = false) {
    Step s = step(task);
    auto* start = std::get_if<Start>(&s);
    ASSERT_NE(start, nullptr) << "the task starts an operation";
    fold_inventory(task_stream(task), start->event);
    OperationFinished f{start->event.operation_id, start->event.attempt,
                        refused ? "refused" : exit_code == 0 ? "ok" : "failed", exit_code, "", exit_code ? "boom" : "",
                        wpar_state};
    fold_inventory(task_stream(task), f);
  }

  // Ends the task as next_step says; its TaskFinished.
  TaskFinished finish(const std::string& task) {
    Step s = step(task);
    auto* f = std::get_if<Finish>(&s);
    EXPECT_NE(f, nullptr) << "the task ends";
    if (f == nullptr) return {};
    if (f->placed) fold_inventory(placement_stream(f->placed->wpar), *f->placed);
    if (f->defined) fold_inventory("wpar/" + f->defined->wpar.name, *f->defined);
    fold_inventory(task_stream(task), f->event);
    return f->event;
  }

  std::string letter(const std::string& wpar) { return inventory::wpar_state_letter(inv_.wpars.at(wpar).wpar); }

  inventory::Inventory inv_;
  Executor state_;
  int64_t now_ = 1000 * kSecond;
  uint64_t sequence_ = 0;
  std::map<std::string, uint64_t> versions_;
};

TEST_F(ExecutorModelTest, DeployPlacesWithANewEpochAndRunsOneOperation) {
  ASSERT_EQ(run("t1", "wpar.deploy", {{"name", "web"}, {"system", "node1"}, {"start", true}}), std::nullopt);
  EXPECT_EQ(state_.placements.at("web1").epoch, 1u);
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "node1");
  EXPECT_EQ(state_.busy.at("web1"), "t1");
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

// ---- relocation: the saga as a table --------------------------------------

class RelocationTest : public ExecutorModelTest {
 protected:
  void SetUp() override {
    ExecutorModelTest::SetUp();
    // web1 (system, checkpoint enabled) Active on node1 at epoch 1.
    ASSERT_EQ(run("d1", "wpar.deploy", {{"name", "web1"}, {"system", "node1"}, {"start", true}}), std::nullopt);
    answer("d1", 0, "A");
    finish("d1");
  }
  struct Answer {
    std::string outcome = "ok";
    int exit_code = 0;
    std::string wpar_state;
  };
  // Runs relocate task `task` to its end: each operation answered as
  // `answers` says for its step (.N), else ok; returns what it did, in order.
  std::vector<std::string> drive(const std::string& task, const std::map<int, Answer>& answers,
                                 TaskFinished* end = nullptr) {
    std::vector<std::string> did;
    for (int turn = 0; turn < 30; ++turn) {
      Step s = step(task);
      if (auto* start = std::get_if<Start>(&s)) {
        fold_inventory(task_stream(task), start->event);
        did.push_back(start->event.action + "@" + start->event.system);
        int n = std::stoi(start->event.operation_id.substr(start->event.operation_id.rfind('.') + 1));
        Answer a = answers.contains(n) ? answers.at(n) : Answer{};
        if (a.outcome == "ok" && a.wpar_state.empty()) {
          a.wpar_state = start->event.action == "remove" ? "" : start->event.action == "pause" ? "P" : "A";
        }
        fold_inventory(task_stream(task),
                       OperationFinished{start->event.operation_id, start->event.attempt, a.outcome, a.exit_code, "",
                                         a.outcome == "ok" ? "" : "boom", a.wpar_state});
      } else if (auto* place = std::get_if<Place>(&s)) {
        fold_inventory(placement_stream(place->event.wpar), place->event);
        did.push_back("place@" + place->event.system);
      } else if (auto* f = std::get_if<Finish>(&s)) {
        fold_inventory(task_stream(task), f->event);
        if (end != nullptr) *end = f->event;
        did.push_back(f->event.state);
        return did;
      } else {
        ADD_FAILURE() << "the saga stalls at turn " << turn;
        return did;
      }
    }
    ADD_FAILURE() << "the saga does not end";
    return did;
  }
  using Steps = std::vector<std::string>;
};

TEST_F(RelocationTest, EveryStepRecordedAndThePlacementMovesOnceTheDepartureIsFrozen) {
  ASSERT_EQ(run("r1", "wpar.relocate", {{"name", "web1"}, {"to", "node2"}}), std::nullopt);
  EXPECT_EQ(state_.tasks.at("r1").options.target, "node2");
  TaskFinished end;
  EXPECT_EQ(drive("r1", {}, &end),
            (Steps{"pause@node1", "place@node2", "receive@node2", "restore@node2", "remove@node1", "succeeded"}));
  EXPECT_EQ(state_.placements.at("web1").system, "node2");
  EXPECT_EQ(state_.placements.at("web1").epoch, 2u);
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "node2");
  EXPECT_EQ(letter("web1"), "A");
  EXPECT_EQ(relocation_state_id(state_.tasks.at("r1")), "r1.1");
}

// A relocation asked for with --approval waits (its WPAR claimed) until
// someone approves it, and ends cancelled when nobody did in time.
TEST_F(RelocationTest, ARelocationWithApprovalWaitsForItAndExpires) {
  auto bad = run("r0", "wpar.relocate", {{"name", "web1"}, {"to", "node2"}, {"approval", "5s"}});
  ASSERT_TRUE(bad);
  EXPECT_NE(bad->message.find("from 1m to 7d"), std::string::npos) << bad->message;
  ASSERT_EQ(run("r1", "wpar.relocate", {{"name", "web1"}, {"to", "node2"}, {"approval", "10m"}}), std::nullopt);
  const Task& t = state_.tasks.at("r1");
  EXPECT_EQ(t.state, "waiting");
  EXPECT_FALSE(t.finished());
  EXPECT_EQ(t.options.approval_expires_ns, now_ + 600 * kSecond);
  EXPECT_TRUE(std::holds_alternative<Idle>(step("r1"))) << "nothing starts before the approval";
  auto busy = run("x1", "wpar.stop", {{"name", "web1"}});
  ASSERT_TRUE(busy) << "its WPAR is claimed while it waits";
  EXPECT_NE(busy->message.find("has a task running"), std::string::npos);
  auto not_waiting = run("a0", "task.approve", {{"task", "d1"}});
  ASSERT_TRUE(not_waiting);
  EXPECT_NE(not_waiting->message.find("does not wait for approval"), std::string::npos) << not_waiting->message;
  // The snapshot keeps it waiting.
  auto back = ExecutorModel::decode(ExecutorModel::encode(state_));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->tasks.at("r1"), t);

  ASSERT_EQ(run("a1", "task.approve", {{"task", "r1"}}), std::nullopt);
  EXPECT_EQ(state_.tasks.at("r1").state, "running");
  EXPECT_EQ(state_.tasks.at("r1").approved_by, "alice");
  auto twice = run("a2", "task.approve", {{"task", "r1"}});
  ASSERT_TRUE(twice);
  EXPECT_NE(twice->message.find("approved already by alice"), std::string::npos) << twice->message;
  back = ExecutorModel::decode(ExecutorModel::encode(state_));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->tasks.at("r1"), state_.tasks.at("r1")) << "the approval too";
  EXPECT_EQ(drive("r1", {}), (Steps{"pause@node1", "place@node2", "receive@node2", "restore@node2", "remove@node1",
                                    "succeeded"}));

  // Back the other way, never approved: it ends cancelled at its time, having done nothing.
  ASSERT_EQ(run("r2", "wpar.relocate", {{"name", "web1"}, {"to", "node1"}, {"approval", "1m"}}), std::nullopt);
  now_ += 59 * kSecond;
  EXPECT_TRUE(std::holds_alternative<Idle>(step("r2")));
  now_ += 2 * kSecond;
  auto late = run("a3", "task.approve", {{"task", "r2"}});
  ASSERT_TRUE(late);
  EXPECT_NE(late->message.find("expired"), std::string::npos);
  TaskFinished end = finish("r2");
  EXPECT_EQ(end.state, "cancelled");
  EXPECT_NE(end.error.find("nobody approved it in time"), std::string::npos);
  EXPECT_TRUE(state_.tasks.at("r2").operations.empty());
  EXPECT_FALSE(state_.busy.contains("web1"));
  EXPECT_EQ(state_.placements.at("web1").system, "node2");
}

TEST_F(RelocationTest, WithASharedStateRootNothingIsTransferred) {
  fold_inventory("settings", SettingChanged{"statefile.shared-root", "/mnt/wpm", ""});
  ASSERT_EQ(run("r1", "wpar.relocate", {{"name", "web1"}, {"to", "node2"}}), std::nullopt);
  EXPECT_EQ(state_.tasks.at("r1").options.shared_root, "/mnt/wpm") << "fixed when decided";
  EXPECT_EQ(drive("r1", {}), (Steps{"pause@node1", "place@node2", "restore@node2", "remove@node1", "succeeded"}));
  EXPECT_EQ(letter("web1"), "A");
  // A failed restore comes back the same way, without a transfer to undo.
  fold_inventory("settings", SettingChanged{"statefile.shared-root", "/mnt/wpm2", "/mnt/wpm"});
  ASSERT_EQ(run("r2", "wpar.relocate", {{"name", "web1"}, {"to", "node1"}}), std::nullopt);
  EXPECT_EQ(drive("r2", {{3, Answer{"failed", 25, ""}}}),
            (Steps{"pause@node2", "place@node1", "restore@node1", "place@node2", "remove@node1", "resume@node2",
                   "failed"}));
  EXPECT_EQ(state_.placements.at("web1").system, "node2");
  EXPECT_EQ(options_from_json(options_to_json(state_.tasks.at("r2").options).dump()).shared_root, "/mnt/wpm2");
}

TEST_F(RelocationTest, AFailureAtEachStepEndsOnExactlyOneSystemAndSaysWhatRecoveryDid) {
  struct Case {
    const char* name;
    std::map<int, Answer> answers;
    Steps steps;
    std::string placed;    // where it ends
    std::string letter;    // its state there
    std::string recovery;  // part of the task's recovery
  };
  const Answer failed_receive{"failed", 25, ""};
  const Answer gone{"refused", 16, ""};  // an agent that has nothing of it
  const Answer unreachable{"unreachable", -1, ""};
  std::vector<Case> cases = {
      {"pause refused (not checkpointable now)", {{1, {"failed", 19, "A"}}}, {"pause@node1", "failed"}, "node1", "A",
       "none needed"},
      {"pause without an answer", {{1, unreachable}}, {"pause@node1", "resume@node1", "failed"}, "node1", "A",
       "Active on node1 again; nothing was sent to node2"},
      {"state file damaged in transfer",
       {{2, failed_receive}, {5, gone}},
       {"pause@node1", "place@node2", "receive@node2", "place@node1", "remove@node2", "resume@node1", "failed"},
       "node1", "A", "nothing of it is left on node2"},
      {"restore failed",
       {{3, {"failed", 14, ""}}},
       {"pause@node1", "place@node2", "receive@node2", "restore@node2", "place@node1", "remove@node2",
        "resume@node1", "failed"},
       "node1", "A", "Active on node1 again"},
      {"arrival gone during restore and clean-up: the departure stays frozen",
       {{3, unreachable}, {5, unreachable}},
       {"pause@node1", "place@node2", "receive@node2", "restore@node2", "place@node1", "remove@node2", "failed"},
       "node1", "P", "never runs twice"},
      {"restore refused, arrival gone for clean-up: nothing ran there, so resumed",
       {{3, {"failed", 14, ""}}, {5, unreachable}},
       {"pause@node1", "place@node2", "receive@node2", "restore@node2", "place@node1", "remove@node2",
        "resume@node1", "failed"},
       "node1", "A", "could not be removed"},
      {"departure gone at the resume: Broken with the cause",
       {{2, failed_receive}, {5, gone}, {6, unreachable}},
       {"pause@node1", "place@node2", "receive@node2", "place@node1", "remove@node2", "resume@node1", "failed"},
       "node1", "B", "Broken on node1"},
      {"departure's copy not removed: moved, fenced",
       {{4, unreachable}},
       {"pause@node1", "place@node2", "receive@node2", "restore@node2", "remove@node1", "succeeded"},
       "node2", "A", "fenced"},
  };
  int n = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string id = fmt::format("r{}", ++n);
    // Every case starts Active on node1 (the one that moves is the last).
    ASSERT_EQ(run(id, "wpar.relocate", {{"name", "web1"}, {"to", "node2"}}), std::nullopt);
    TaskFinished end;
    EXPECT_EQ(drive(id, c.answers, &end), c.steps);
    EXPECT_EQ(state_.placements.at("web1").system, c.placed);
    EXPECT_EQ(inv_.wpars.at("web1").wpar.system, c.placed);
    EXPECT_EQ(letter("web1"), c.letter);
    EXPECT_NE(end.recovery.find(c.recovery), std::string::npos) << end.recovery;
    if (c.letter == "B") {
      EXPECT_NE(inv_.wpars.at("web1").wpar.cause.find("did not answer"), std::string::npos);
    }
    EXPECT_FALSE(state_.busy.contains("web1"));
    if (c.letter != "A") {  // Active again for the next case, as its agent would report it
      WparDefinition w = inv_.wpars.at("web1").wpar;
      w.reported_state = "A";
      w.cause.clear();
      fold_inventory("wpar/web1", WparDefined{w, false});
    }
  }
}

TEST_F(RelocationTest, OnlyAnActiveCheckpointableWparGoesAndOnlyToACompatibleAnalysedSystem) {
  // A third system whose glibc differs: Pending until analysed, then incompatible.
  SystemRegistered r;
  r.system_id = "node3";
  r.hostname = "node3";
  r.address = "127.0.0.1";
  r.public_key = std::string(39, 'k') + "3";
  r.profile.glibc_version = "2.99";
  r.profile.network_interfaces = {{"eth0", {"10.3.0.2/24"}, true}};
  fold_inventory("registry", r);
  auto pending = run("x1", "wpar.relocate", {{"name", "web1"}, {"to", "node3"}, {"force", true}});
  ASSERT_TRUE(pending.has_value());
  EXPECT_NE(pending->message.find("Pending"), std::string::npos) << pending->message;
  auto digest = [&](const std::string& id) {
    return compatibility::properties_digest(compatibility::compared_properties_key(inv_.registry.by_id(id)->profile));
  };
  fold_inventory("compat/x", CompatibilityAnalyzed{digest("node1"), digest("node3"),
                                                    {CompatResult{"glibc", false, "", "2.99", "use the same glibc"},
                                                     CompatResult{"ntp", false, "no", "no", ""}}});
  EXPECT_EQ(direction_compat(state_, inv_, "node1", "node3").state, "incompatible");
  ASSERT_EQ(direction_compat(state_, inv_, "node1", "node3").failed.size(), 1u) << "critical tests only";
  auto refused = run("x2", "wpar.relocate", {{"name", "web1"}, {"to", "node3"}});
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->message.find("glibc"), std::string::npos) << refused->message;

  // The ranking: node2 (compatible) before node3 (incompatible).
  auto ranked = rank_candidates(state_, inv_, "web1", {{"node2", 0.5}});
  ASSERT_EQ(ranked.size(), 2u);
  EXPECT_EQ(ranked[0].system, "node2");
  EXPECT_TRUE(ranked[0].eligible);
  EXPECT_EQ(ranked[1].system, "node3");
  EXPECT_FALSE(ranked[1].eligible);
  EXPECT_NE(ranked[1].reason.find("glibc"), std::string::npos);

  std::string warning;
  ASSERT_EQ(run("x3", "wpar.relocate", {{"name", "web1"}, {"to", "node3"}, {"force", true}}, &warning), std::nullopt);
  EXPECT_NE(warning.find("--force"), std::string::npos) << warning;
  // Started: not cancelled halfway.
  Step s = step("x3");
  fold_inventory(task_stream("x3"), std::get<Start>(s).event);
  fold_inventory(task_stream("x3"), OperationFinished{"x3.1", 1, "ok", 0, "", "", "P"});
  auto cancel = run("x4", "task.cancel", {{"task", "x3"}});
  ASSERT_TRUE(cancel.has_value());
  EXPECT_NE(cancel->message.find("not cancelled halfway"), std::string::npos);
  EXPECT_NE(run("x5", "wpar.relocate", {{"name", "web1"}, {"to", "node1"}})->message.find("task running"),
            std::string::npos);

  // Not checkpointable; already there.
  ASSERT_EQ(run("d2", "wpar.deploy", {{"name", "app1"}, {"system", "node2"}}), std::nullopt);
  answer("d2", 0, "A");
  finish("d2");
  EXPECT_NE(run("x6", "wpar.relocate", {{"name", "app1"}, {"to", "node1"}})->message.find("checkpoint"),
            std::string::npos);
  EXPECT_NE(run("x7", "wpar.relocate", {{"name", "app1"}, {"to", "node2"}})->message.find("already on"),
            std::string::npos);
}

TEST_F(RelocationTest, EvacuationMovesEachMobileWparOneAfterAnotherAndSaysWhatStayed) {
  define("web2", "system", true);
  define("web3", "system", false);
  for (const char* w : {"web2", "web3"}) {
    std::string id = std::string("d-") + w;
    ASSERT_EQ(run(id, "wpar.deploy", {{"name", w}, {"system", "node1"}, {"start", true}}), std::nullopt);
    answer(id, 0, "A");
    finish(id);
  }
  auto plan = plan_evacuation(state_, inv_, "node1", {});
  EXPECT_EQ(plan.moves, (std::vector<std::pair<std::string, std::string>>{{"web1", "node2"}, {"web2", "node2"}}));
  ASSERT_EQ(plan.skipped.size(), 1u);
  EXPECT_EQ(plan.skipped[0].first, "web3");
  EXPECT_NE(plan.skipped[0].second.find("not checkpoint enabled"), std::string::npos);
  EXPECT_NE(run("e0", "system.evacuate", {{"name", "node2"}})->message.find("nothing to evacuate"), std::string::npos);

  std::string warning;
  ASSERT_EQ(run("e1", "system.evacuate", {{"name", "node1"}}, &warning), std::nullopt);
  EXPECT_NE(warning.find("web3"), std::string::npos) << warning;
  EXPECT_NE(run("e2", "system.evacuate", {{"name", "node1"}})->message.find("being evacuated"), std::string::npos);
  std::vector<std::string> moved;
  for (int turn = 0; turn < 5; ++turn) {
    Step s = step("e1");
    if (auto* spawn = std::get_if<Spawn>(&s)) {
      EXPECT_FALSE(spawn->ended.has_value());
      if (moved.empty()) {
        // A child that cannot start (its WPAR busy) neither takes nor frees the WPAR's lock.
        Executor copy = state_;
        Event created;
        created.sequence = 0;
        created.stream_id = task_stream("other");
        created.payload = TaskCreated{"stop", spawn->created.wpar, "node1", "{}", "", "root"};
        fold_into(copy, Event(created));
        Event child = created;
        child.stream_id = task_stream("ended-child");
        child.payload = TaskCreated{"relocate", spawn->created.wpar, "node1", "{}", "e1", "root"};
        fold_into(copy, Event(child));
        child.payload = TaskFinished{"failed", "busy", ""};
        fold_into(copy, Event(child));
        EXPECT_EQ(copy.busy.at(spawn->created.wpar), "other");
      }
      EXPECT_EQ(spawn->created.parent, "e1");
      fold_inventory(task_stream(spawn->child), spawn->created);
      EXPECT_TRUE(std::holds_alternative<Idle>(step("e1"))) << "one relocation at a time";
      EXPECT_EQ(drive(spawn->child, {}).back(), "succeeded");
      moved.push_back(spawn->created.wpar);
      continue;
    }
    auto* f = std::get_if<Finish>(&s);
    ASSERT_NE(f, nullptr);
    fold_inventory(task_stream("e1"), f->event);
    EXPECT_EQ(f->event.state, "failed") << "web3 stayed";
    EXPECT_NE(f->event.error.find("1 of 3 WPAR(s) of node1 could not move: web3"), std::string::npos) << f->event.error;
    EXPECT_NE(f->event.recovery.find("2 moved"), std::string::npos) << f->event.recovery;
    break;
  }
  EXPECT_EQ(moved, (std::vector<std::string>{"web1", "web2"}));
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "node2");
  EXPECT_EQ(inv_.wpars.at("web2").wpar.system, "node2");
  EXPECT_EQ(inv_.wpars.at("web3").wpar.system, "node1");
  EXPECT_EQ(children_of(state_, "e1").size(), 2u);
}

TEST_F(RelocationTest, AStaleCopyIsFencedOnceAndMarkDeadTakesTheWparsOffAGoneSystem) {
  // web1 is Active on node1. node2 reports a copy of it: fenced there.
  fold_inventory("agent-report-refusals", AgentReportRefused{"node2", "wpar/web1", "is on node1"});
  auto fences = fence_tasks(state_, inv_, now_);
  ASSERT_EQ(fences.size(), 1u);
  EXPECT_EQ(fences[0].created.kind, "fence");
  EXPECT_EQ(fences[0].created.system, "node2");
  fold_inventory(task_stream(fences[0].child), fences[0].created);
  EXPECT_TRUE(fence_tasks(state_, inv_, now_).empty()) << "once";
  EXPECT_TRUE(state_.stale.empty());
  EXPECT_EQ(letter("web1"), "A") << "the copy elsewhere is not the WPAR";
  Step s = step(fences[0].child);
  auto* start = std::get_if<Start>(&s);
  ASSERT_NE(start, nullptr);
  EXPECT_EQ(start->event.action, "remove");
  EXPECT_EQ(start->event.system, "node2");
  EXPECT_EQ(start->event.epoch, 1u) << "the current epoch: newer than the stale copy's";
  fold_inventory(task_stream(fences[0].child), start->event);
  EXPECT_EQ(letter("web1"), "A") << "not Transitional: its placed copy is untouched";
  fold_inventory(task_stream(fences[0].child), OperationFinished{start->event.operation_id, 1, "ok", 0, "", "", ""});
  EXPECT_EQ(finish(fences[0].child).state, "succeeded");
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "node1");
  EXPECT_EQ(letter("web1"), "A");
  // A report of a WPAR this manager never placed is not its business.
  fold_inventory("agent-report-refusals", AgentReportRefused{"node2", "wpar/app1", "is defined here"});
  EXPECT_TRUE(fence_tasks(state_, inv_, now_).empty());

  // mark-dead: only an Offline system, only after the grace.
  EXPECT_NE(run("m1", "system.mark-dead", {{"name", "node1"}})->message.find("not Offline"), std::string::npos);
  fold_inventory("system/node1", SystemStateChanged{"node1", "offline", "no heartbeat"});
  EXPECT_NE(run("m2", "system.mark-dead", {{"name", "node1"}})->message.find("try again later"), std::string::npos);
  now_ += 31 * kSecond;
  ASSERT_EQ(run("m3", "system.mark-dead", {{"name", "node1"}}), std::nullopt);
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "") << "Undeployed: deployable elsewhere";
  EXPECT_EQ(state_.placements.at("web1").epoch, 2u);
  EXPECT_EQ(state_.tasks.at("m3").state, "succeeded");
  EXPECT_NE(state_.tasks.at("m3").recovery.find("web1"), std::string::npos);
  // node1 comes back running it: its copy is stale.
  fold_inventory("agent-report-refusals", AgentReportRefused{"node1", "wpar/web1", "is defined here and not deployed"});
  EXPECT_TRUE(fence_tasks(state_, inv_, now_).empty()) << "not while node1 is Offline";
  fold_inventory("system/node1", SystemStateChanged{"node1", "online", "heartbeat"});
  auto again = fence_tasks(state_, inv_, now_);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].created.system, "node1");
  // A fence that fails is tried again, as a new task, after a pause.
  fold_inventory(task_stream(again[0].child), again[0].created);
  fold_inventory(task_stream(again[0].child), TaskFinished{"failed", "agent busy", ""});
  EXPECT_TRUE(fence_tasks(state_, inv_, now_).empty()) << "not at once";
  auto retried = fence_tasks(state_, inv_, now_ + kFenceRetryDelayNs);
  ASSERT_EQ(retried.size(), 1u);
  EXPECT_NE(retried[0].child, again[0].child);
  // Placed there again: that copy is the WPAR, nothing to fence.
  fold_inventory(placement_stream("web1"), WparPlaced{"web1", "node1", 3, ""});
  EXPECT_TRUE(fence_tasks(state_, inv_, now_ + kFenceRetryDelayNs).empty());
  // A relocation whose WPAR left its departure meanwhile (an evacuation's
  // older plan) does nothing.
  fold_inventory(task_stream("late"), TaskCreated{"relocate", "web1", "node2", R"({"to":"node1"})", "", "root"});
  TaskFinished end;
  EXPECT_EQ(drive("late", {}, &end), (Steps{"failed"}));
  EXPECT_NE(end.error.find("no longer placed on node2"), std::string::npos) << end.error;
  EXPECT_EQ(state_.busy.count("web1"), 0u);
}

}  // namespace
}  // namespace wpm::executor
namespace wpm::kernel {
void PrintTo(const Rejection& r, std::ostream* os) { *os << rejection_code_name(r.code) << ": " << r.message; }
}  // namespace wpm::kernel
