// WPAR lifecycle across the fleet (DESIGN.md §4, §5; docs/executor.md): a
// real wpmd and three real wpm-agents in network namespaces. Every command
// is a task of operations the executor sends to the agent's port; the WPAR
// goes through the seed's states; a failure says which operation failed and
// what recovery did; an operation asked for again after the agent and wpmd
// were both restarted in its middle runs once.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <regex>
#include <thread>

#include "tests/integration/fleet_fixture.h"

namespace wpm::testing {
namespace {

class Lifecycle : public FleetOnThreeHosts {
 protected:
  void SetUp() override {
    FleetOnThreeHosts::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_EQ(as_root({"settings", "set", "heartbeat.timeout", "3s"}).exit_code, 0);
    for (int i = 1; i <= 3; ++i) {
      write_agent_toml(i, "");
      auto configured = configure(i, "");
      ASSERT_EQ(configured.exit_code, 0) << configured.err;
      agents_.push_back(data(i));
      auto started = in_host(i, {bin("wpm-agent"), "--data", data(i), "start"}, 30s);
      ASSERT_EQ(started.exit_code, 0) << started.err;
    }
    for (int i = 1; i <= 3; ++i) {
      ASSERT_TRUE(wait_until([&] { return system(i).value("state", "") == "online"; }, 20s, 200ms));
    }
  }
  json wpar(const std::string& name) {
    auto r = as_root({"-o", "json", "wpar", "show", name});
    return r.exit_code == 0 ? json::parse(r.out) : json::object();
  }
  std::string state(const std::string& name) { return wpar(name).value("state", "?"); }
  // The WPAR as the agent of host i lists it ("" when it has none).
  std::string agent_state(int i, const std::string& name) {
    auto r = in_host(i, {bin("wpm-agent"), "--data", data(i), "lswpar", "-o", "json"});
    json list = json::parse(r.out, nullptr, false);
    if (!list.is_array()) return "";
    for (const auto& w : list) {
      if (w.value("name", "") == name) return w.value("stateLetter", "");
    }
    return "";
  }
  // wpmd killed outright and started again on the same ports (the agents
  // know them), with `env` (a kill point, or nothing).
  void restart_wpmd(std::map<std::string, std::string> env) {
    const std::string agent_public = wpmd_->agent_public(), agent_channel = wpmd_->agent_channel();
    if (wpmd_->running()) wpmd_->kill(SIGKILL);
    auto& args = wpmd_->options().extra_args;
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "--agent-public-endpoint") args[i + 1] = agent_public;
      if (args[i] == "--agent-channel-endpoint") args[i + 1] = agent_channel;
    }
    env["WPM_TEST_PROBE_INTERVAL_MS"] = "500";
    wpmd_->options().env = std::move(env);
    ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  }
  // The task a command started with --no-wait printed.
  std::string no_wait(std::vector<std::string> args) {
    args.push_back("--no-wait");
    auto r = as_root(args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }
  // Whether relocation `task`'s receive started (within 30 s); then 600 ms
  // more, so that the transfer is underway.
  bool transfer_underway(const std::string& task) {
    bool started = wait_until(
        [&] {
          json t = json::parse(as_root({"-o", "json", "task", "show", task}).out, nullptr, false);
          if (!t.is_object()) return false;
          for (const auto& op : t["operations"]) {
            if (op["action"] == "receive" && !op["finished"].get<bool>()) return true;
          }
          return false;
        },
        30s, 100ms);
    std::this_thread::sleep_for(600ms);
    return started;
  }
  // A lifecycle command as root; asserts its exit code.
  void act(std::vector<std::string> args, int expected = 0) {
    auto r = as_root(args);
    std::string log = wpmd_->running() ? "" : wpmd_->log();
    if (log.size() > 3000) log.erase(0, log.size() - 3000);
    ASSERT_EQ(r.exit_code, expected) << fmt::format("{}", fmt::join(args, " ")) << "\n"
                                     << r.out << r.err << (log.empty() ? "" : "\nwpmd ended; its log ends:\n" + log);
  }
};

TEST_F(Lifecycle, SystemAndApplicationWparsGoThroughTheSeedsStatesOnTheirHosts) {
  // (--out names a file the counter replaces atomically: never a device.)
  const std::string counter =
      fmt::format("{} --out {} --interval-ms 50", bin("wpm-demo-counter"), dir_ / "count");
  ASSERT_EQ(as_root({"wpar", "create", "sys1", "--command", "sleep 1000"}).exit_code, 0);
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--checkpoint", "--command", counter}).exit_code, 0);

  // A system WPAR: deployed Defined on h1, started, stopped, started again.
  act({"wpar", "deploy", "sys1", "--system", "h1"});
  EXPECT_EQ(state("sys1"), "D");
  EXPECT_EQ(wpar("sys1")["system"], "h1");
  EXPECT_EQ(wpar("sys1")["epoch"], 1);
  EXPECT_EQ(agent_state(1, "sys1"), "D") << "made on h1 by its agent";
  EXPECT_EQ(agent_state(2, "sys1"), "");
  act({"wpar", "start", "sys1"});
  EXPECT_EQ(state("sys1"), "A");
  EXPECT_EQ(agent_state(1, "sys1"), "A");
  // The seed's rules are checked before anything is sent: no pause without checkpoint.
  auto refused = as_root({"wpar", "pause", "sys1"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("checkpoint enabled"), std::string::npos) << refused.err;
  act({"wpar", "stop", "sys1"});
  EXPECT_EQ(state("sys1"), "D");
  // Not deployed twice.
  auto twice = as_root({"wpar", "deploy", "sys1", "--system", "h2"});
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_NE(twice.err.find("already deployed on h1"), std::string::npos) << twice.err;

  // An application WPAR with checkpoint: deployed running on h2, paused,
  // resumed, frozen, resumed, paused and killed, removed with its definition.
  act({"wpar", "deploy", "app1", "--system", "h2"});
  EXPECT_EQ(state("app1"), "A");
  EXPECT_EQ(agent_state(2, "app1"), "A");
  act({"wpar", "pause", "app1"});
  EXPECT_EQ(state("app1"), "P");
  EXPECT_EQ(agent_state(2, "app1"), "P");
  auto stop_paused = as_root({"wpar", "stop", "app1"});
  EXPECT_EQ(stop_paused.exit_code, 1) << "a paused WPAR is not stopped: it is killed";
  act({"wpar", "resume", "app1"});
  EXPECT_EQ(state("app1"), "A");
  act({"wpar", "freeze", "app1"});
  EXPECT_EQ(state("app1"), "F");
  act({"wpar", "resume", "app1"});
  act({"wpar", "pause", "app1"});
  act({"wpar", "kill", "app1"});
  // Its processes ended: as the seed's application WPAR, it returns to
  // Undeployed by itself, through a recorded removal from h2.
  EXPECT_TRUE(wait_until([&] { return state("app1") == "U"; }, 20s)) << state("app1");
  EXPECT_EQ(agent_state(2, "app1"), "") << "removed from h2";
  auto tasks = as_root({"-o", "json", "task", "list"});
  EXPECT_NE(tasks.out.find("ended-app1-"), std::string::npos) << tasks.out;
  act({"wpar", "remove", "app1"});
  EXPECT_EQ(as_root({"wpar", "show", "app1"}).exit_code, 3) << "the definition went too";
  EXPECT_EQ(agent_state(2, "app1"), "");

  // --no-wait prints the task; task wait, show and list follow it.
  auto started = as_root({"wpar", "start", "sys1", "--no-wait"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  std::string task = started.out.substr(0, started.out.find('\n'));
  ASSERT_FALSE(task.empty());
  act({"task", "wait", task.substr(0, 10)});
  json shown = json::parse(as_root({"-o", "json", "task", "show", task}).out);
  EXPECT_EQ(shown["state"], "succeeded");
  ASSERT_EQ(shown["operations"].size(), 1u);
  EXPECT_EQ(shown["operations"][0]["action"], "start");
  EXPECT_EQ(shown["operations"][0]["exitCode"], 0);
  EXPECT_NE(shown["operations"][0]["output"].get<std::string>().find("is active"), std::string::npos)
      << shown.dump();
  json listed = json::parse(as_root({"-o", "json", "task", "list", "--wpar", "sys1"}).out);
  ASSERT_GE(listed.size(), 4u);
  EXPECT_EQ(listed[0]["id"], task) << "newest first";

  // Removal keeping the definition and the file systems: Undeployed, nothing on h1.
  act({"wpar", "remove", "sys1", "--keep-definition", "--preserve-fs"});
  EXPECT_EQ(state("sys1"), "U");
  EXPECT_EQ(agent_state(1, "sys1"), "");
  EXPECT_TRUE(fs::exists(data(1) + "/wpars/sys1/fs")) << "its file systems were kept";
  EXPECT_EQ(wpar("sys1")["epoch"], 2) << "the removal is a placement too";

  // An Offline system fails the operation at once, saying why; the deploy's placement is withdrawn.
  auto stopped = in_host(3, {bin("wpm-agent"), "--data", data(3), "stop"});
  ASSERT_EQ(stopped.exit_code, 0) << stopped.err;
  ASSERT_TRUE(wait_until([&] { return system(3).value("state", "") == "offline"; }, 20s, 200ms));
  auto offline = as_root({"wpar", "deploy", "sys1", "--system", "h3"});
  EXPECT_EQ(offline.exit_code, 1);
  EXPECT_NE(offline.err.find("h3 is Offline"), std::string::npos) << offline.err;
  EXPECT_NE(offline.err.find("recovery: "), std::string::npos) << offline.err;
  EXPECT_EQ(state("sys1"), "U");
}

// wpm wpar modify of a deployed, running WPAR: its limits change on h1 at
// once and its capability set for processes started from then on (the
// seed's chwpar through the agent); what cannot change there is refused.
TEST_F(Lifecycle, ModifyOfARunningWparChangesItOnItsHost) {
  ASSERT_EQ(as_root({"wpar", "create", "sys2", "--memory", "67108864"}).exit_code, 0);
  act({"wpar", "deploy", "sys2", "--system", "h1", "--start"});
  auto changed = as_root({"wpar", "modify", "sys2", "--memory", "33554432", "--capabilities", "cap_kill,cap_chown"});
  ASSERT_EQ(changed.exit_code, 0) << changed.out << changed.err;
  EXPECT_NE(changed.err.find("processes started from now on"), std::string::npos) << changed.err;
  json w = wpar("sys2");
  EXPECT_EQ(w["memoryBytes"], 33554432);
  EXPECT_EQ(w["capabilities"], "cap_kill,cap_chown");
  EXPECT_EQ(w["state"], "A") << "it ran on: nothing stopped";
  auto listed = in_host(1, {bin("wpm-agent"), "--data", data(1), "lswpar", "-o", "json", "sys2"});
  json on_host = json::parse(listed.out, nullptr, false);
  ASSERT_TRUE(on_host.is_array() && on_host.size() == 1) << listed.out << listed.err;
  EXPECT_EQ(on_host[0]["limits"]["memoryBytes"], 33554432);
  EXPECT_EQ(on_host[0]["capabilities"], json({"cap_chown", "cap_kill"}));
  EXPECT_EQ(on_host[0]["capabilitiesPending"], true);
  json tasks = json::parse(as_root({"-o", "json", "task", "list", "--wpar", "sys2"}).out);
  ASSERT_FALSE(tasks.empty());
  EXPECT_EQ(tasks[0]["kind"], "modify");
  ASSERT_EQ(tasks[0]["operations"].size(), 1u);
  EXPECT_EQ(tasks[0]["operations"][0]["action"], "modify");
  EXPECT_EQ(tasks[0]["operations"][0]["system"], "h1");
  // What only another deploy could change is refused, with the way to do it.
  auto address = as_root({"wpar", "modify", "sys2", "--address", "10.99.0.5/24"});
  EXPECT_EQ(address.exit_code, 1);
  EXPECT_NE(address.err.find("--keep-definition"), std::string::npos) << address.err;
  // A stopped WPAR starts with its new set: nothing pending on h1.
  act({"wpar", "stop", "sys2"});
  act({"wpar", "start", "sys2"});
  listed = in_host(1, {bin("wpm-agent"), "--data", data(1), "lswpar", "-o", "json", "sys2"});
  EXPECT_NE(listed.out.find("\"capabilitiesPending\": false"), std::string::npos) << listed.out;
  act({"wpar", "remove", "sys2"});
}

TEST_F(Lifecycle, AnOperationAskedForAgainAfterItsAgentAndWpmdRestartedRunsOnce) {
  // A checkpoint that takes its workload 3 s: long enough to restart both sides in its middle.
  const std::string slow =
      "trap 'sleep 3; echo 1 > $WPM_STATE_DIR/s; touch $WPM_STATE_DIR/.complete' USR1; while :; do sleep 0.2; done";
  ASSERT_EQ(as_root({"wpar", "create", "slow1", "--type", "application", "--checkpoint", "--command", slow}).exit_code, 0);
  act({"wpar", "deploy", "slow1", "--system", "h1"});
  auto paused = as_root({"wpar", "pause", "slow1", "--no-wait"});
  ASSERT_EQ(paused.exit_code, 0) << paused.err;
  std::string task = paused.out.substr(0, paused.out.find('\n'));
  std::string op = task + ".1";
  // The agent has it journaled and running.
  ASSERT_TRUE(wait_until([&] { return fs::exists(data(1) + "/operations/" + op + ".json"); }, 10s, 50ms));
  EXPECT_EQ(state("slow1"), "T") << "Transitional while the operation runs";
  auto starts_in = [&](const std::string& log) {
    size_t n = 0;
    for (size_t at = log.find("operation_started id=" + op + " "); at != std::string::npos;
         at = log.find("operation_started id=" + op + " ", at + 1)) {
      ++n;
    }
    return n;
  };
  // (The agent's log file starts over when it restarts: counted before and after.)
  size_t started_before = starts_in(read_file(data(1) + "/logs/agent.log"));
  EXPECT_EQ(started_before, 1u);
  // Both restart while it runs: the agent (its runner goes on), and wpmd killed outright.
  auto restarted = in_host(1, {bin("wpm-agent"), "--data", data(1), "restart"}, 30s);
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  const std::string agent_public = wpmd_->agent_public(), agent_channel = wpmd_->agent_channel();
  wpmd_->kill(SIGKILL);
  auto& args = wpmd_->options().extra_args;
  for (size_t i = 0; i + 1 < args.size(); ++i) {  // the same ports again: the agents know them
    if (args[i] == "--agent-public-endpoint") args[i + 1] = agent_public;
    if (args[i] == "--agent-channel-endpoint") args[i + 1] = agent_channel;
  }
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  auto waited = as_root({"task", "wait", task, "--timeout", "60"});
  ASSERT_EQ(waited.exit_code, 0) << waited.out << waited.err;
  EXPECT_EQ(state("slow1"), "P");
  // Asked for again after both restarts, run once: no second start in the restarted agent's log.
  std::string agent_log = read_file(data(1) + "/logs/agent.log");
  EXPECT_EQ(starts_in(agent_log), 0u) << agent_log;
  EXPECT_NE(agent_log.find("agent_ready"), std::string::npos) << "the log of the restarted agent";
  json shown = json::parse(as_root({"-o", "json", "task", "show", task}).out);
  EXPECT_EQ(shown["operations"][0]["attempt"], 1);
  EXPECT_EQ(shown["operations"][0]["outcome"], "ok");
  act({"wpar", "kill", "slow1"});
  act({"wpar", "remove", "slow1"});
}

uint64_t count_in(const fs::path& file) {
  std::ifstream in(file);
  uint64_t n = 0;
  in >> n;
  return n;
}

TEST_F(Lifecycle, RelocationMovesARunningCounterAndASystemWparWithItsFilesAndComesBackWhenTheTransferIsDamaged) {
  const std::string counter = fmt::format("{} --out {} --interval-ms 20", bin("wpm-demo-counter"), dir_ / "count");
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--checkpoint", "--command", counter}).exit_code, 0);
  act({"wpar", "deploy", "app1", "--system", "h1"});
  ASSERT_TRUE(wait_until([&] { return count_in(dir_ / "count") > 20; }, 20s, 50ms));

  // Where it could go: the two other hosts, same profile, both eligible.
  auto listed = as_root({"-o", "json", "wpar", "candidates", "app1"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  json candidates = json::parse(listed.out)["candidates"];
  ASSERT_EQ(candidates.size(), 2u) << listed.out;
  for (const auto& c : candidates) {
    EXPECT_EQ(c["compatibility"], "compatible") << c.dump();
    EXPECT_TRUE(c["eligible"].get<bool>()) << c.dump();
  }
  // A dry run changes nothing.
  auto dry = as_root({"wpar", "relocate", "app1", "--to", "h2", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("nothing was changed"), std::string::npos) << dry.out;
  EXPECT_EQ(wpar("app1")["system"], "h1");
  EXPECT_EQ(as_root({"wpar", "relocate", "app1", "--to", "h1"}).exit_code, 1) << "already there";

  // Asked for with --approval, it waits for someone to approve it, who then starts it;
  // the counter moves to h2 and goes on from where it was.
  auto asked = as_root({"wpar", "relocate", "app1", "--to", "h2", "--approval", "10m"});
  ASSERT_EQ(asked.exit_code, 0) << asked.err;
  ASSERT_NE(asked.out.find("waits for approval"), std::string::npos) << asked.out;
  const std::string waiting = asked.out.substr(5, asked.out.find(' ', 5) - 5);  // "task ID waits …"
  json listed_waiting = json::parse(as_root({"-o", "json", "task", "list", "--state", "waiting"}).out);
  ASSERT_EQ(listed_waiting.size(), 1u) << listed_waiting.dump();
  EXPECT_EQ(listed_waiting[0]["id"], waiting);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(wpar("app1")["system"], "h1") << "nothing moves before the approval";
  EXPECT_EQ(as_root({"wpar", "stop", "app1"}).exit_code, 1) << "its WPAR is claimed while it waits";
  const uint64_t before = count_in(dir_ / "count");
  auto approved = as_root({"task", "approve", waiting.substr(0, 12)});
  ASSERT_EQ(approved.exit_code, 0) << approved.err;
  EXPECT_NE(approved.out.find("approved task " + waiting + " "), std::string::npos) << approved.out;
  act({"task", "wait", waiting});
  EXPECT_EQ(wpar("app1")["system"], "h2");
  EXPECT_EQ(state("app1"), "A");
  EXPECT_EQ(wpar("app1")["epoch"], 2) << "deployed at 1, moved at 2";
  EXPECT_EQ(agent_state(1, "app1"), "") << "nothing left on the departure";
  EXPECT_EQ(agent_state(2, "app1"), "A");
  const uint64_t after = count_in(dir_ / "count");
  EXPECT_GE(after, before) << "restored, not started afresh";
  EXPECT_TRUE(wait_until([&] { return count_in(dir_ / "count") > after + 10; }, 20s, 50ms)) << "it goes on counting";
  json task = json::parse(as_root({"-o", "json", "task", "list", "--wpar", "app1", "--limit", "1"}).out)[0];
  EXPECT_EQ(task["kind"], "relocate");
  std::vector<std::string> steps;
  for (const auto& op : task["operations"]) steps.push_back(op["action"].get<std::string>() + "@" + op["system"].get<std::string>());
  EXPECT_EQ(steps, (std::vector<std::string>{"pause@h1", "receive@h2", "restore@h2", "remove@h1"}));

  // A system WPAR with a file in its private /home keeps it.
  const std::string inside = fmt::format("{} --out /home/count.txt --interval-ms 20", bin("wpm-demo-counter"));
  ASSERT_EQ(as_root({"wpar", "create", "sys1", "--checkpoint", "--command", inside}).exit_code, 0);
  act({"wpar", "deploy", "sys1", "--system", "h1", "--start"});
  ASSERT_TRUE(wait_until([&] { return count_in(data(1) + "/wpars/sys1/fs/home/count.txt") > 10; }, 20s, 50ms));
  act({"wpar", "relocate", "sys1", "--to", "h3"});
  EXPECT_EQ(state("sys1"), "A");
  EXPECT_EQ(agent_state(1, "sys1"), "");
  EXPECT_EQ(agent_state(3, "sys1"), "A");
  EXPECT_GE(count_in(data(3) + "/wpars/sys1/fs/home/count.txt"), 10u) << "its /home came along";

  // A damaged transfer (h3's agent flips a byte of what it receives): the
  // checksums catch it; the counter is Active on h2 again, nothing on h3.
  ASSERT_EQ(in_host(3, {bin("wpm-agent"), "--data", data(3), "stop"}).exit_code, 0);
  auto restarted = in_host(3, {"/usr/bin/env", "WPM_TEST_TRANSFER_CORRUPT=1", bin("wpm-agent"), "--data", data(3), "start"}, 30s);
  ASSERT_EQ(restarted.exit_code, 0) << restarted.err;
  ASSERT_TRUE(wait_until([&] { return system(3).value("state", "") == "online"; }, 20s, 200ms));
  auto damaged = as_root({"wpar", "relocate", "app1", "--to", "h3"});
  EXPECT_EQ(damaged.exit_code, 1) << damaged.out << damaged.err;
  EXPECT_NE(damaged.err.find("receive"), std::string::npos) << damaged.err;
  EXPECT_NE(damaged.err.find("Active on h2 again"), std::string::npos) << damaged.err;
  EXPECT_EQ(wpar("app1")["system"], "h2");
  EXPECT_EQ(state("app1"), "A");
  EXPECT_EQ(agent_state(2, "app1"), "A");
  EXPECT_EQ(agent_state(3, "app1"), "");
  EXPECT_FALSE(fs::exists(data(3) + "/state/app1")) << "no state file left on the arrival";
  const uint64_t resumed = count_in(dir_ / "count");
  EXPECT_TRUE(wait_until([&] { return count_in(dir_ / "count") > resumed + 10; }, 20s, 50ms)) << "counting again";

  act({"wpar", "remove", "app1"});
  act({"wpar", "remove", "sys1"});
}

// Crash points of the saga (WPM_TEST_KILL_POINT): wpmd is killed right
// after a step was recorded and started again; the relocation resumes from
// the log and ends with the WPAR running on exactly one host. A few points
// here; every point with WPM_RELOCATION_KILL_POINTS=all (make soak).
TEST_F(Lifecycle, RelocationResumesFromTheLogAfterWpmdIsKilledAtItsSteps) {
  std::vector<std::string> points = {"relocate.pause.finished", "relocate.placed", "relocate.receive.started",
                                     "relocate.restore.finished"};
  if (const char* all = std::getenv("WPM_RELOCATION_KILL_POINTS"); all != nullptr && std::string(all) == "all") {
    points = {"relocate.pause.started",   "relocate.pause.finished",   "relocate.placed",
              "relocate.receive.started", "relocate.receive.finished", "relocate.restore.started",
              "relocate.restore.finished", "relocate.remove.started",  "relocate.remove.finished"};
  }
  const std::string counter = fmt::format("{} --out {} --interval-ms 20", bin("wpm-demo-counter"), dir_ / "count");
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--checkpoint", "--command", counter}).exit_code, 0);
  act({"wpar", "deploy", "app1", "--system", "h1"});
  int here = 1;
  for (const auto& point : points) {
    SCOPED_TRACE(point);
    const int there = here == 1 ? 2 : 1;
    restart_wpmd({{"WPM_TEST_KILL_POINT", point}});
    const uint64_t before = count_in(dir_ / "count");
    std::string task = no_wait({"wpar", "relocate", "app1", "--to", host(there)});
    ASSERT_FALSE(task.empty());
    ASSERT_TRUE(wpmd_->wait(60s).has_value()) << "wpmd reached " << point;
    restart_wpmd({});
    auto waited = as_root({"task", "wait", task, "--timeout", "120"});
    ASSERT_EQ(waited.exit_code, 0) << waited.out << waited.err;
    EXPECT_EQ(wpar("app1")["system"], host(there));
    EXPECT_EQ(state("app1"), "A");
    EXPECT_EQ(agent_state(there, "app1"), "A");
    EXPECT_EQ(agent_state(here, "app1"), "") << "one copy only";
    EXPECT_GE(count_in(dir_ / "count"), before) << "its state came along";
    here = there;
  }
  act({"wpar", "remove", "app1"});
}

// With statefile.shared-root set (a directory every host mounts at the same
// path; here the hosts share one file system), the departure checkpoints
// into it and the arrival restores from it: no transfer step.
TEST_F(Lifecycle, ARelocationThroughASharedStateRootHasNoTransfer) {
  const std::string shared = dir_ / "shared-state";
  fs::create_directories(shared);
  ASSERT_EQ(as_root({"settings", "set", "statefile.shared-root", shared}).exit_code, 0);
  const std::string counter = fmt::format("{} --out {} --interval-ms 20", bin("wpm-demo-counter"), dir_ / "count");
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--checkpoint", "--command", counter}).exit_code, 0);
  act({"wpar", "deploy", "app1", "--system", "h1"});
  ASSERT_TRUE(wait_until([&] { return count_in(dir_ / "count") >= 5; }, 10s));
  std::string task = no_wait({"wpar", "relocate", "app1", "--to", "h2"});
  ASSERT_EQ(as_root({"task", "wait", task, "--timeout", "60"}).exit_code, 0);
  const uint64_t moved = count_in(dir_ / "count");
  json shown = json::parse(as_root({"-o", "json", "task", "show", task}).out);
  std::vector<std::string> actions;
  for (const auto& op : shown["operations"]) actions.push_back(op["action"].get<std::string>());
  EXPECT_EQ(actions, (std::vector<std::string>{"pause", "restore", "remove"})) << shown.dump();
  EXPECT_TRUE(fs::exists(shared + "/wpm-state/app1/" + task + ".1/manifest.json"))
      << "the state file is in the shared root's wpm-state/";
  EXPECT_FALSE(fs::exists(data(2) + "/state/app1/" + task + ".1")) << "nothing was received";
  EXPECT_EQ(agent_state(2, "app1"), "A");
  EXPECT_EQ(agent_state(1, "app1"), "");
  EXPECT_TRUE(wait_until([&] { return count_in(dir_ / "count") > moved; }, 10s)) << "it counts on from its state";
  ASSERT_EQ(as_root({"settings", "set", "statefile.shared-root", ""}).exit_code, 0);
  act({"wpar", "remove", "app1"});
}

// The arrival's link cut while the state file travels: the transfer breaks,
// the WPAR is Active on its departure again, the task says what happened.
TEST_F(Lifecycle, ACutLinkDuringTheTransferBringsTheWparBackToItsDeparture) {
  // The arrival (h2) asks for each part 300 ms late: the transfer of a 4 MiB
  // state lasts a few seconds, long enough to cut its link in the middle.
  ASSERT_EQ(in_host(2, {bin("wpm-agent"), "--data", data(2), "stop"}).exit_code, 0);
  auto slow = in_host(2, {"/usr/bin/env", "WPM_TEST_TRANSFER_PART_DELAY_MS=300", bin("wpm-agent"), "--data", data(2),
                          "start"}, 30s);
  ASSERT_EQ(slow.exit_code, 0) << slow.err;
  ASSERT_TRUE(wait_until([&] { return system(2).value("state", "") == "online"; }, 20s, 200ms));
  const std::string counter =
      fmt::format("{} --out {} --interval-ms 20 --state-bytes 4194304", bin("wpm-demo-counter"), dir_ / "count");
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--checkpoint", "--command", counter}).exit_code, 0);
  act({"wpar", "deploy", "app1", "--system", "h1"});
  std::string task = no_wait({"wpar", "relocate", "app1", "--to", "h2"});
  ASSERT_TRUE(transfer_underway(task)) << "the transfer started";
  EXPECT_TRUE(fs::exists(data(2) + "/state/app1/" + task + ".1.part")) << "the arrival is writing it";
  ASSERT_EQ(run({kIp, "-n", netns(2), "link", "set", "eth0", "down"}).exit_code, 0);
  auto waited = run({bin("wpm"), "--data", wpmd_->data_dir(), "task", "wait", task, "--timeout", "150"}, 160s);
  ASSERT_EQ(run({kIp, "-n", netns(2), "link", "set", "eth0", "up"}).exit_code, 0);
  EXPECT_EQ(waited.exit_code, 1) << waited.out << waited.err;
  EXPECT_NE(waited.err.find("receive"), std::string::npos) << waited.err;
  EXPECT_NE(waited.err.find("Active on h1 again"), std::string::npos) << waited.err;
  EXPECT_EQ(wpar("app1")["system"], "h1");
  EXPECT_EQ(state("app1"), "A");
  EXPECT_EQ(agent_state(1, "app1"), "A");
  EXPECT_EQ(agent_state(2, "app1"), "") << "nothing runs on the arrival";
  EXPECT_FALSE(fs::exists(data(2) + "/state/app1/" + task + ".1.part")) << "the broken transfer left no part";
  act({"wpar", "remove", "app1"});
}

// An agent killed while the state file travels (with the runners of its
// operations, as when its host fails): the arrival's, then the departure's.
// After each the WPAR runs on one host or is Broken there with its cause,
// nothing of it is on the other, and the task says which step failed.
TEST_F(Lifecycle, AnAgentKilledDuringTheTransferLeavesTheWparOnOneHostOnly) {
  // Transfers to h2 ask for each part 300 ms late: a few seconds for 4 MiB.
  ASSERT_EQ(in_host(2, {bin("wpm-agent"), "--data", data(2), "stop"}).exit_code, 0);
  auto slow = [&](int i) {
    return in_host(i, {"/usr/bin/env", "WPM_TEST_TRANSFER_PART_DELAY_MS=300", bin("wpm-agent"), "--data", data(i),
                       "start"}, 30s);
  };
  ASSERT_EQ(slow(2).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return system(2).value("state", "") == "online"; }, 20s, 200ms));
  const std::string counter =
      fmt::format("{} --out {} --interval-ms 20 --state-bytes 4194304", bin("wpm-demo-counter"), dir_ / "count");
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--checkpoint", "--command", counter}).exit_code, 0);
  act({"wpar", "deploy", "app1", "--system", "h1"});
  auto relocate_and_kill = [&](int victim) {
    std::string task = no_wait({"wpar", "relocate", "app1", "--to", "h2"});
    EXPECT_TRUE(transfer_underway(task)) << "the transfer started";
    EXPECT_TRUE(fs::exists(data(2) + "/state/app1/" + task + ".1.part")) << "the arrival is writing it";
    // The agent and its operations' runners; its WPARs' supervisors live on.
    run({"/usr/bin/pkill", "-KILL", "-f", "--", fmt::format("--data {} ", data(victim))});
    return task;
  };

  // The arrival dies: the manager gives its receive up, the WPAR is resumed
  // on h1; h2, back later, holds nothing of it.
  std::string task = relocate_and_kill(2);
  auto waited = run({bin("wpm"), "--data", wpmd_->data_dir(), "task", "wait", task, "--timeout", "150"}, 160s);
  EXPECT_EQ(waited.exit_code, 1) << waited.out << waited.err;
  EXPECT_NE(waited.err.find("receive"), std::string::npos) << waited.err;
  EXPECT_NE(waited.err.find("Active on h1 again"), std::string::npos) << waited.err;
  ASSERT_EQ(slow(2).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return system(2).value("state", "") == "online"; }, 20s, 200ms));
  EXPECT_EQ(wpar("app1")["system"], "h1");
  EXPECT_EQ(state("app1"), "A");
  EXPECT_EQ(agent_state(1, "app1"), "A");
  EXPECT_EQ(agent_state(2, "app1"), "");
  EXPECT_TRUE(wait_until([&] { return !fs::exists(data(2) + "/state/app1/" + task + ".1.part"); }, 20s, 200ms))
      << "the restarted agent dropped the incomplete transfer";

  // The departure dies: the transfer stalls and fails; the departure cannot
  // be resumed while it is down, so the WPAR is Broken on h1 with the cause,
  // and nothing of it is on h2. Once h1 is back the WPAR is still there,
  // frozen, and only there.
  task = relocate_and_kill(1);
  waited = run({bin("wpm"), "--data", wpmd_->data_dir(), "task", "wait", task, "--timeout", "150"}, 160s);
  EXPECT_EQ(waited.exit_code, 1) << waited.out << waited.err;
  EXPECT_NE(waited.err.find("receive"), std::string::npos) << waited.err;
  json shown = json::parse(as_root({"-o", "json", "task", "show", task}).out, nullptr, false);
  ASSERT_TRUE(shown.is_object());
  EXPECT_EQ(shown["wparState"], "B") << shown.dump();
  EXPECT_NE(shown["cause"].get<std::string>().find("could not be resumed"), std::string::npos) << shown.dump();
  EXPECT_EQ(wpar("app1")["system"], "h1");
  EXPECT_EQ(state("app1"), "B");
  EXPECT_EQ(agent_state(2, "app1"), "") << "nothing on the arrival";
  ASSERT_EQ(in_host(1, {bin("wpm-agent"), "--data", data(1), "start"}, 30s).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return system(1).value("state", "") == "online"; }, 20s, 200ms));
  const std::string frozen = agent_state(1, "app1");
  EXPECT_TRUE(frozen == "P" || frozen == "F") << frozen;
  act({"wpar", "stop", "app1", "--force"});
  act({"wpar", "remove", "app1"});
  EXPECT_EQ(agent_state(1, "app1"), "");
  EXPECT_EQ(agent_state(2, "app1"), "");
}

// wpm system remove says what becomes of the WPARs on the system: refused
// without a word; --remove-wpars removes them (a task each) and then the
// system; --keep-wpars leaves them running there, unmanaged, their
// definitions here Undeployed.
TEST_F(Lifecycle, ASystemIsRemovedWithItsWparsRemovedOrLeftThereAsAsked) {
  for (const char* w : {"app2", "app3"}) {
    ASSERT_EQ(as_root({"wpar", "create", w, "--type", "application", "--command", "sleep 1000"}).exit_code, 0);
  }
  act({"wpar", "deploy", "app3", "--system", "h3"});
  act({"wpar", "deploy", "app2", "--system", "h2"});
  auto refused = as_root({"system", "remove", "h3"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("--keep-wpars"), std::string::npos) << refused.err;
  EXPECT_EQ(as_root({"system", "remove", "h3", "--keep-wpars", "--remove-wpars"}).exit_code, 2) << "one or the other";

  act({"system", "remove", "h3", "--remove-wpars"});
  EXPECT_EQ(as_root({"wpar", "show", "app3"}).exit_code, 3) << "its definition went too";
  EXPECT_EQ(agent_state(3, "app3"), "");
  EXPECT_EQ(as_root({"system", "show", "h3"}).exit_code, 3);

  act({"system", "remove", "h2", "--keep-wpars"});
  EXPECT_EQ(state("app2"), "U") << "its definition stays, Undeployed";
  EXPECT_EQ(agent_state(2, "app2"), "A") << "it runs on there, unmanaged";
  EXPECT_EQ(as_root({"system", "show", "h2"}).exit_code, 3);
}

// Evacuation empties a host, moving its WPARs one after another to the
// best candidates (spread over the others); --dry-run changes nothing and
// says what cannot move.
TEST_F(Lifecycle, EvacuationEmptiesAHostAndItsDryRunChangesNothing) {
  for (int i = 1; i <= 3; ++i) {
    std::string name = fmt::format("app{}", i);
    std::string counter = fmt::format("{} --out {} --interval-ms 50", bin("wpm-demo-counter"), dir_ / name);
    ASSERT_EQ(as_root({"wpar", "create", name, "--type", "application", "--checkpoint", "--command", counter}).exit_code, 0);
    act({"wpar", "deploy", name, "--system", "h1"});
  }
  ASSERT_EQ(as_root({"wpar", "create", "fixed", "--command", "sleep 1000"}).exit_code, 0);
  act({"wpar", "deploy", "fixed", "--system", "h1"});

  auto dry = as_root({"-o", "json", "system", "evacuate", "h1", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  json plan = json::parse(dry.out);
  ASSERT_EQ(plan["moves"].size(), 3u) << plan.dump();
  ASSERT_EQ(plan["skipped"].size(), 1u) << plan.dump();
  EXPECT_EQ(plan["skipped"][0]["wpar"], "fixed");
  std::map<std::string, int> targets;
  for (const auto& m : plan["moves"]) ++targets[m["to"].get<std::string>()];
  EXPECT_EQ(targets, (std::map<std::string, int>{{"h2", 2}, {"h3", 1}})) << "spread over the candidates";
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(wpar(fmt::format("app{}", i))["system"], "h1") << "the dry run moved nothing";

  act({"wpar", "remove", "fixed"});
  act({"system", "evacuate", "h1"});
  for (int i = 1; i <= 3; ++i) {
    std::string name = fmt::format("app{}", i);
    EXPECT_NE(wpar(name)["system"], "h1") << name;
    EXPECT_EQ(state(name), "A") << name;
    EXPECT_EQ(agent_state(1, name), "") << name;
  }
  auto listed = in_host(1, {bin("wpm-agent"), "--data", data(1), "lswpar", "-o", "json"});
  EXPECT_EQ(json::parse(listed.out, nullptr, false), json::array()) << "h1 is empty: " << listed.out;
  json task;
  for (const auto& t : json::parse(as_root({"-o", "json", "task", "list", "--limit", "10"}).out)) {
    if (t["kind"] == "evacuate") task = t;
  }
  ASSERT_TRUE(task.is_object()) << "the evacuation is a task";
  json shown = json::parse(as_root({"-o", "json", "task", "show", task["id"].get<std::string>()}).out);
  ASSERT_EQ(shown["children"].size(), 3u) << shown.dump();
  for (const auto& c : shown["children"]) EXPECT_EQ(c["state"], "succeeded") << c.dump();
  for (int i = 1; i <= 3; ++i) act({"wpar", "remove", fmt::format("app{}", i)});
}

// Fencing: a host cut off (its link down) is marked dead by the operator;
// its WPAR is deployed elsewhere; when the host comes back with its copy
// still running, that copy is stopped there (a fence task, recorded) and
// one copy is left.
TEST_F(Lifecycle, AHostMarkedDeadThatComesBackWithItsCopyRunningHasItStopped) {
  ASSERT_EQ(as_root({"settings", "set", "mark-dead.grace", "1s"}).exit_code, 0);
  const std::string counter = fmt::format("{} --out {} --interval-ms 50", bin("wpm-demo-counter"), dir_ / "count");
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--checkpoint", "--command", counter}).exit_code, 0);
  act({"wpar", "deploy", "app1", "--system", "h1"});
  auto refused = as_root({"system", "mark-dead", "h1"});
  EXPECT_EQ(refused.exit_code, 1) << "an Online system is not dead";
  EXPECT_NE(refused.err.find("not Offline"), std::string::npos) << refused.err;

  ASSERT_EQ(run({kIp, "-n", netns(1), "link", "set", "eth0", "down"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return system(1).value("state", "") == "offline"; }, 30s, 200ms));
  std::this_thread::sleep_for(1500ms);
  act({"system", "mark-dead", "h1"});
  EXPECT_EQ(state("app1"), "U") << "taken off h1";
  act({"wpar", "deploy", "app1", "--system", "h2"});
  EXPECT_EQ(agent_state(2, "app1"), "A");
  EXPECT_EQ(agent_state(1, "app1"), "A") << "h1, cut off, still runs its copy";
  const uint64_t epoch = wpar("app1")["epoch"].get<uint64_t>();

  ASSERT_EQ(run({kIp, "-n", netns(1), "link", "set", "eth0", "up"}).exit_code, 0);
  // The stop of the stale copy is a task, recorded.
  auto fenced = [&] {
    json tasks = json::parse(as_root({"-o", "json", "task", "list", "--wpar", "app1"}).out, nullptr, false);
    if (!tasks.is_array()) return false;
    for (const auto& t : tasks) {
      if (t["kind"] == "fence" && t["system"] == "h1" && t["state"] == "succeeded") return true;
    }
    return false;
  };
  EXPECT_TRUE(wait_until(fenced, 90s, 500ms))
      << "h1's copy is stopped, and that is recorded: " << as_root({"-o", "json", "task", "list", "--wpar", "app1"}).out
      << as_root({"-o", "json", "events", "read", "--stream", "agent-report-refusals"}).out;
  EXPECT_EQ(agent_state(1, "app1"), "") << "h1's copy is gone";
  EXPECT_EQ(agent_state(2, "app1"), "A") << "the placed copy runs on";
  EXPECT_EQ(wpar("app1")["system"], "h2");
  EXPECT_EQ(state("app1"), "A");
  std::ifstream held(data(1) + "/placements/app1");
  uint64_t held_epoch = 0;
  held >> held_epoch;
  EXPECT_EQ(held_epoch, epoch) << "h1 now holds the current epoch: an older command is refused there";
  act({"wpar", "remove", "app1"});
}

}  // namespace
}  // namespace wpm::testing
