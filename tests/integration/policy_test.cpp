// Policy-based relocation end to end (DESIGN.md §7; seed "Policy-based
// relocation"): three hosts as network namespaces whose agents count as
// their host load only their own WPARs ([metrics] host_scope = "wpars"),
// a CPU-burning counter in a group with an automatic policy. It moves to
// the idle compatible host, never to an incompatible or Offline one, and
// does not come back within its cooldown.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/fleet_fixture.h"

namespace wpm::testing {
namespace {

class PolicyFleet : public FleetOnThreeHosts {
 protected:
  void SetUp() override {
    FleetOnThreeHosts::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (const auto& [key, value] : {std::pair{"heartbeat.timeout", "3s"}, std::pair{"metrics.interval", "1s"},
                                     std::pair{"policy.interval", "2s"}}) {
      ASSERT_EQ(as_root({"settings", "set", key, value}).exit_code, 0) << key;
    }
    // h2 claims an older kernel: h1 → h2 fails the kernel test (incompatible that way).
    for (int i = 1; i <= 3; ++i) {
      write_agent_toml(i, std::string("[metrics]\nhost_scope = \"wpars\"\n") +
                              (i == 2 ? "[profile]\nkernel_version = \"5.10.0-26-amd64\"\n" : ""));
      auto configured = configure(i, "");
      ASSERT_EQ(configured.exit_code, 0) << configured.err;
      agents_.push_back(data(i));
      ASSERT_EQ(start(i).exit_code, 0);
    }
    for (int i = 1; i <= 3; ++i) {
      ASSERT_TRUE(wait_until([&] { return system(i).value("state", "") == "online"; }, 20s, 200ms));
    }
    ASSERT_TRUE(wait_until([&] { return compat(1, 2).value("analysis", "") == "complete"; }, 30s, 200ms));
    ASSERT_EQ(compat(1, 2)["state"], "inbound compatible") << compat(1, 2).dump();
  }
  RunResult start(int i) { return in_host(i, {bin("wpm-agent"), "--data", data(i), "start"}, 30s); }
  json show(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"-o", "json"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = as_root(argv);
    return r.exit_code == 0 ? json::parse(r.out, nullptr, false) : json::object();
  }
  // The mean of a WPAR's CPU samples in the last `seconds`.
  double mean_cpu(const std::string& wpar, int seconds) {
    json m = show({"wpar", "metrics", wpar, "--since", fmt::format("{}s", seconds), "--metric", "cpu"});
    double sum = 0;
    int n = 0;
    for (const auto& s : m.value("series", json::array())) {
      for (const auto& v : s["values"]) {
        if (v.is_number()) sum += v.get<double>(), ++n;
      }
    }
    return n ? sum / n : 0;
  }
  std::vector<json> relocations(const std::string& wpar) {
    std::vector<json> out;
    json tasks = show({"task", "list", "--wpar", wpar});
    for (const auto& t : tasks) {
      if (t.value("kind", "") == "relocate") out.push_back(t);
    }
    return out;
  }
};

TEST_F(PolicyFleet, ABurningWparMovesToTheIdleCompatibleHostNotToAnIncompatibleOrOfflineOneAndStays) {
  // h3 is Offline at first: the only targets are h2 (incompatible) and h3 (Offline).
  // Each system shows how its agent reports its host's metrics.
  ASSERT_TRUE(wait_until([&] { return system(1).value("metricsHostScope", json()) == "wpars"; }, 20s, 200ms))
      << system(1).dump();
  EXPECT_NE(as_root({"system", "show", "h1"}).out.find("sum of its WPARs"), std::string::npos);
  ASSERT_EQ(in_host(3, {bin("wpm-agent"), "--data", data(3), "stop"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return system(3).value("state", "") == "offline"; }, 20s, 200ms));

  const std::string burn = fmt::format("{} --burn 80 --interval-ms 100 --out ", bin("wpm-demo-counter"));
  ASSERT_EQ(as_root({"group", "create", "web"}).exit_code, 0);
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--checkpoint", "--group", "web",
                     "--command", burn + (dir_ / "app1.count")})
                .exit_code,
            0);
  // Other load on h1, outside the group: it leaves app1 less of its host.
  ASSERT_EQ(as_root({"wpar", "create", "noise", "--type", "application", "--command", burn + (dir_ / "noise.count")})
                .exit_code,
            0);
  ASSERT_EQ(as_root({"wpar", "deploy", "app1", "--system", "h1"}).exit_code, 0);
  ASSERT_EQ(as_root({"wpar", "deploy", "noise", "--system", "h1"}).exit_code, 0);

  // What app1 uses of its host (s), and its effective utilisation with
  // the noise beside it (S = s / (1 − noise)), both over the policy's
  // period: a maximum between the two makes the group hot on h1 and
  // leaves room on an idle host.
  ASSERT_EQ(as_root({"group", "policy", "set", "web", "--period", "20s"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return show({"wpar", "metrics", "app1", "--since", "30s"}).value("points", 0) >= 8; },
                         30s, 500ms));
  std::this_thread::sleep_for(20s);
  json state = show({"group", "state", "web"});
  ASSERT_EQ(state["wpars"].size(), 1u) << state.dump();
  double effective = state["wpars"][0].value("state", 0.0);
  double share = mean_cpu("app1", 20);
  if (effective - share < 4) GTEST_SKIP() << "this machine is too busy for the burners to matter (share " << share
                                          << "%, effective " << effective << "%)";
  const double max = (effective + share) / 2;
  auto set = as_root({"group", "policy", "set", "web", "--enabled", "true", "--automation", "automatic", "--max",
                      fmt::format("{:.1f}", max), "--min", "0", "--period", "20s", "--trigger-count", "1",
                      "--cooldown", "10m", "--min-gain", "3"});
  ASSERT_EQ(set.exit_code, 0) << set.err;

  // Hot, but no target: h2 is incompatible, h3 Offline. Nothing moves; explain says why.
  ASSERT_TRUE(wait_until([&] { return show({"group", "explain", "web"}).value("reason", "") == "no-compatible-target"; },
                         30s, 500ms))
      << show({"group", "explain", "web"}).dump();
  EXPECT_EQ(show({"wpar", "show", "app1"})["system"], "h1");
  EXPECT_TRUE(relocations("app1").empty());

  // h3 comes back: the policy moves app1 there.
  ASSERT_EQ(start(3).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return show({"wpar", "show", "app1"}).value("system", "") == "h3"; }, 60s, 500ms))
      << show({"group", "explain", "web"}).dump() << "\n" << wpmd_->log().substr(0, 4000);
  auto moves = relocations("app1");
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0]["user"], "service:policy");
  EXPECT_EQ(moves[0]["options"]["to"], "h3");
  EXPECT_NE(moves[0]["options"].value("reason", "").find("move app1 from h1"), std::string::npos) << moves[0].dump();
  auto task = as_root({"task", "show", moves[0]["id"]});
  EXPECT_NE(task.out.find("why:"), std::string::npos) << task.out;
  EXPECT_EQ(show({"wpar", "show", "noise"})["system"], "h1") << "outside the group: never moved by its policy";
  // The decision and its inputs are in the log.
  auto decided = as_root({"-o", "json", "log", "dump", "--stream", "policy/web"});
  EXPECT_NE(decided.out.find("mobilityDecided"), std::string::npos) << decided.out << decided.err;
  EXPECT_NE(decided.out.find("h3"), std::string::npos) << decided.out;

  // wpmd's /metrics: the move, the task's outcome, the group's state and each system's load.
  auto moved = [&] {
    std::string text = http_get(wpmd_->metrics());
    return metric_value(text, "wpm_policy_moves_total").value_or(0) >= 1 &&
           metric_value(text, "wpm_tasks_finished_total{kind=\"relocate\",outcome=\"succeeded\"}").value_or(0) >= 1 &&
           metric_value(text, "wpm_group_state_percent{group=\"web\"}").has_value() &&
           metric_value(text, "wpm_system_cpu_percent{system=\"h1\"}").has_value() &&
           metric_value(text, "wpm_system_wpars{system=\"h3\"}").value_or(0) == 1;
  };
  EXPECT_TRUE(wait_until(moved, 25s, 500ms)) << http_get(wpmd_->metrics());

  // It does not come back within its cooldown, whatever the load says.
  std::this_thread::sleep_for(10s);
  EXPECT_EQ(show({"wpar", "show", "app1"})["system"], "h3");
  EXPECT_EQ(relocations("app1").size(), 1u);

  // What-if: the recorded period through the live policy makes exactly the
  // live decision; a candidate whose maximum is never reached makes none.
  auto simulated = as_root({"-o", "json", "policy", "simulate", "--group", "web", "--from", "15m"});
  ASSERT_EQ(simulated.exit_code, 0) << simulated.err;
  json sim = json::parse(simulated.out);
  ASSERT_EQ(sim["live"].size(), 1u) << sim.dump();
  EXPECT_EQ(sim["live"][0]["wpar"], "app1");
  EXPECT_EQ(sim["live"][0]["to"], "h3");
  EXPECT_EQ(sim["simulated"], sim["live"]) << sim.dump();
  EXPECT_TRUE(sim.value("sameAsLive", false)) << sim.dump();
  EXPECT_GT(sim.value("passes", 0), 10);
  json candidate = show({"group", "policy", "show", "web"});
  if (candidate.contains("policy")) candidate = candidate["policy"];
  candidate["max"] = 100;
  std::ofstream(dir_ / "candidate.json") << candidate.dump();
  auto what_if = as_root({"-o", "json", "policy", "simulate", "--group", "web", "--from", "15m", "--policy",
                          dir_ / "candidate.json"});
  ASSERT_EQ(what_if.exit_code, 0) << what_if.err;
  json other = json::parse(what_if.out);
  EXPECT_TRUE(other["simulated"].empty()) << other.dump();
  EXPECT_EQ(other["live"].size(), 1u);
  EXPECT_FALSE(other["candidate"].is_null());
  // Errors: an unknown group, a period beyond the raw history, a bad file.
  EXPECT_EQ(as_root({"policy", "simulate", "--group", "nosuch"}).exit_code, 3);
  EXPECT_EQ(as_root({"policy", "simulate", "--group", "web", "--from", "30d"}).exit_code, 2);
  EXPECT_EQ(as_root({"policy", "simulate", "--group", "web", "--policy", dir_ / "none.json"}).exit_code, 2);
}

}  // namespace
}  // namespace wpm::testing
