// The relocation saga as a table over every step and every failure (what it
// compensates, what it resumes), tasks that wait for approval, candidate
// ranking, evacuation and fencing; docs/relocation.md.

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

// The departure's frozen copy, reported by its agent between the placement
// and the removal, is refused as a stale copy; the saga's own removal
// settles it, so no fence follows the relocation.
TEST_F(RelocationTest, TheDeparturesCopyReportedDuringTheRelocationIsNotFencedAfterIt) {
  ASSERT_EQ(run("r1", "wpar.relocate", {{"name", "web1"}, {"to", "node2"}}), std::nullopt);
  answer("r1", 0, "P");
  Step s = step("r1");
  ASSERT_TRUE(std::holds_alternative<Place>(s));
  fold_inventory(placement_stream("web1"), std::get<Place>(s).event);
  fold_inventory("agent-report-refusals", AgentReportRefused{"node1", "wpar/web1", "is on node2"});
  EXPECT_TRUE(state_.stale.contains({"web1", "node1"}));
  EXPECT_TRUE(fence_tasks(state_, inv_, now_).empty()) << "not while the relocation runs";
  EXPECT_EQ(drive("r1", {}), (Steps{"receive@node2", "restore@node2", "remove@node1", "succeeded"}));
  EXPECT_FALSE(state_.stale.contains({"web1", "node1"}));
  EXPECT_TRUE(fence_tasks(state_, inv_, now_).empty()) << "the relocation removed that copy itself";
  // A copy reported after its removal (a late report) is still fenced.
  fold_inventory("agent-report-refusals", AgentReportRefused{"node1", "wpar/web1", "is on node2"});
  EXPECT_EQ(fence_tasks(state_, inv_, now_).size(), 1u);
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

namespace wpm::executor {
namespace {

// A manager restored from a backup: web1 was relocated to node2 after it
// (epoch 2 there), and node1 still has a copy from before (epoch 1). The
// agent's newer placement is adopted, never fenced; the older copy is.
TEST_F(RelocationTest, AnAgentsNewerPlacementIsAdoptedAndTheOlderCopyFenced) {
  ASSERT_EQ(state_.placements.at("web1").system, "node1");
  const uint64_t known = state_.placements.at("web1").epoch;
  std::map<std::string, std::vector<inventory::ReportedWpar>> reports = {
      {"node1", {{"web1", "system", "A", known}}},
      {"node2", {{"web1", "system", "A", known + 1}, {"other", "system", "A", 0}}}};
  auto adopted = adopted_placements(state_, reports);
  ASSERT_EQ(adopted.adopted.size(), 1u) << "a WPAR without an epoch is no placement of this manager's";
  EXPECT_TRUE(adopted.ambiguous.empty());
  EXPECT_EQ(adopted.adopted[0], (WparPlaced{"web1", "node2", known + 1, ""}));
  EXPECT_TRUE(adopted_placements(state_, {{"node1", {{"web1", "system", "A", known}}}}).adopted.empty())
      << "not newer than the log";
  fold_inventory(placement_stream("web1"), adopted.adopted[0]);
  EXPECT_EQ(state_.placements.at("web1").system, "node2");
  EXPECT_EQ(inv_.wpars.at("web1").wpar.system, "node2");
  EXPECT_TRUE(adopted_placements(state_, reports).adopted.empty()) << "adopted once";
  // node1's copy is now a stale one: fenced (its removal carries the newer epoch).
  fold_inventory("agent-report-refusals", AgentReportRefused{"node1", "wpar/web1", "is on node2"});
  auto fences = fence_tasks(state_, inv_, now_);
  ASSERT_EQ(fences.size(), 1u);
  EXPECT_EQ(fences[0].created.system, "node1");
  // Not while a task runs on the WPAR.
  ASSERT_EQ(run("r9", "wpar.relocate", {{"name", "web1"}, {"to", "node1"}}), std::nullopt);
  EXPECT_TRUE(adopted_placements(state_, {{"node1", {{"web1", "system", "A", known + 5}}}}).adopted.empty());
}

// Two copies at the same newer epoch (a relocation after the backup whose
// departure's removal failed: a paused copy there, the Active one at the
// arrival): the Active one is the WPAR; with no way to tell, none is adopted.
TEST_F(RelocationTest, OfTwoCopiesAtTheSameNewerEpochTheActiveOneIsAdoptedElseNone) {
  const uint64_t e = state_.placements.at("web1").epoch + 1;
  auto chosen = adopted_placements(state_, {{"node1", {{"web1", "system", "P", e}}}, {"node2", {{"web1", "system", "A", e}}}});
  ASSERT_EQ(chosen.adopted.size(), 1u);
  EXPECT_EQ(chosen.adopted[0].system, "node2");
  auto higher = adopted_placements(state_, {{"node1", {{"web1", "system", "P", e + 1}}}, {"node2", {{"web1", "system", "A", e}}}});
  ASSERT_EQ(higher.adopted.size(), 1u);
  EXPECT_EQ(higher.adopted[0].system, "node1") << "the higher epoch is the later placement";
  auto unclear = adopted_placements(state_, {{"node1", {{"web1", "system", "A", e}}}, {"node2", {{"web1", "system", "A", e}}}});
  EXPECT_TRUE(unclear.adopted.empty());
  EXPECT_EQ(unclear.ambiguous, std::vector<std::string>{"web1"});
}

}  // namespace
}  // namespace wpm::executor
