// The fleet through the gateway (DESIGN.md §2, §8): real wpmd, wpm and
// wpm-agent processes on loopback; local Linux users made by the test log
// in through PAM with the shipped service file (deploy/pam/wpm, pam_unix)
// and are allowed and refused as the role matrix says; events watch resumes
// without a gap; the inventory after kill -9 equals a full replay; a silent
// agent turns its system Offline and back Online. FleetOnThreeHosts runs
// three agents in network namespaces on a bridge: registration with a join
// token, the four compatibility states, update-profile, relocation domains,
// a port blocked with nft (Unreachable) and a killed agent (Offline).

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <zmq.hpp>

#include <thread>

#include "tests/integration/fleet_fixture.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

TEST_F(Fleet, UsersOfEachRoleLogInThroughPamAndAreAllowedAndRefusedAsTheMatrixSays) {
  std::string ops = make_group("ops");
  std::string admin = make_user("a");
  std::string user = make_user("u");
  std::string monitor = make_user("m", ops);  // a monitor through its Linux group
  std::string nobody = make_user("n");
  ASSERT_EQ(as_root({"role", "add", "--role", "administrator", "--user", admin}).exit_code, 0);
  ASSERT_EQ(as_root({"role", "add", "--role", "wparuser", "--user", user}).exit_code, 0);
  auto mapped = as_root({"role", "add", "--role", "WPARMonitor", "--group", ops});
  ASSERT_EQ(mapped.exit_code, 0) << mapped.err;

  auto wrong = login(user, "not-the-password");
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("wrong user name or password"), std::string::npos) << wrong.err;
  for (const auto& u : {admin, user, monitor, nobody}) {
    auto in = login(u, "pw-" + u);
    ASSERT_EQ(in.exit_code, 0) << u << ": " << in.err;
  }
  auto who = as(monitor, {"-o", "json", "whoami"});
  ASSERT_EQ(who.exit_code, 0) << who.err;
  EXPECT_EQ(json::parse(who.out)["roles"], json({"WPARMonitor"}));

  struct Row {
    std::vector<std::string> args;
    std::set<std::string> allowed;  // which of a/u/m/n
  };
  std::vector<Row> rows = {
      {{"wpar", "list"}, {"u", "m"}},
      {{"system", "list"}, {"u", "m"}},
      {{"settings", "show"}, {"u", "m"}},
      {{"wpar", "create", "W", "--type", "system"}, {"u"}},
      {{"settings", "set", "heartbeat.timeout", "20s"}, {}},
      {{"group", "create", "G"}, {}},
      {{"role", "query", "getRoles"}, {"a"}},
  };
  std::map<std::string, std::string> by_letter = {{"a", admin}, {"u", user}, {"m", monitor}, {"n", nobody}};
  for (const auto& row : rows) {
    for (const auto& [letter, name] : by_letter) {
      std::vector<std::string> args = row.args;
      for (auto& a : args) {
        if (a == "W") a = "w-" + letter;
        if (a == "G") a = "g-" + letter;
      }
      auto r = as(name, args);
      bool allowed = row.allowed.contains(letter);
      EXPECT_EQ(r.exit_code, allowed ? 0 : 1) << letter << " " << fmt::format("{}", fmt::join(args, " ")) << ": " << r.err;
      if (!allowed) {
        EXPECT_NE(r.err.find("may not"), std::string::npos) << r.err;
      }
    }
  }
  // What a WPARAdministrator (root) may do, the refused user may not.
  EXPECT_EQ(as_root({"settings", "set", "heartbeat.timeout", "20s"}).exit_code, 0);
  // The refused change was recorded with who, what and why.
  auto dump = wpm(*wpmd_, {"log", "dump", "-o", "json"});
  EXPECT_NE(dump.out.find(fmt::format("\"user\":\"{}\"", user)), std::string::npos);
  EXPECT_NE(dump.out.find("\"code\":\"forbidden\""), std::string::npos);
  // No password and no token in the log or in wpmd's own log lines.
  for (const auto& u : {admin, user, monitor, nobody}) {
    EXPECT_EQ(dump.out.find("pw-" + u), std::string::npos) << u;
    EXPECT_EQ(wpmd_->log().find("pw-" + u), std::string::npos) << u;
  }
  std::string session_path = dir_ / ("config-" + user + "/wpm/session.json");
  std::ifstream sessions(session_path);
  json kept = json::parse(sessions);
  std::string token = kept.begin().value();
  EXPECT_TRUE(token.starts_with("wpm_"));
  EXPECT_EQ(dump.out.find(token), std::string::npos);
  EXPECT_EQ(wpmd_->log().find(token), std::string::npos);
  EXPECT_EQ(fs::status(session_path).permissions() & fs::perms::group_read,
            fs::perms::none);
  // A monitor's event stream has no sessions in it.
  auto watched = as(monitor, {"-o", "json", "events", "watch", "--from", "1", "--count", "5"});
  ASSERT_EQ(watched.exit_code, 0) << watched.err;
  EXPECT_EQ(watched.out.find("sessionOpened"), std::string::npos);
  // Logout revokes the token at once.
  ASSERT_EQ(as(user, {"logout"}).exit_code, 0);
  auto after = as(user, {"wpar", "list"});
  EXPECT_EQ(after.exit_code, 1);
  EXPECT_NE(after.err.find("wpm login"), std::string::npos) << after.err;
}

TEST_F(Fleet, DefinitionsAreCreatedListedModifiedAndRemovedWithExitCodes) {
  EXPECT_EQ(as_root({"wpar", "create", "web1", "--type", "application", "--command", "/bin/sleep 60", "--checkpoint",
                     "--cpu-limit", "50"}).exit_code, 0);
  EXPECT_EQ(as_root({"wpar", "create", "web2", "--from", "web1", "--memory", "268435456"}).exit_code, 0);
  auto list = as_root({"-o", "json", "wpar", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  json wpars = json::parse(list.out);
  ASSERT_EQ(wpars.size(), 2u);
  EXPECT_EQ(wpars[1]["cpuLimitPercent"], 50) << "copied from the template";
  EXPECT_EQ(wpars[1]["memoryBytes"], 268435456);
  auto table = as_root({"wpar", "list"});
  EXPECT_NE(table.out.find("web1                     U "), std::string::npos) << table.out;
  EXPECT_EQ(as_root({"wpar", "modify", "web2", "--cpu-limit", "20"}).exit_code, 0);
  EXPECT_EQ(json::parse(as_root({"-o", "json", "wpar", "show", "web2"}).out)["cpuLimitPercent"], 20);
  EXPECT_EQ(as_root({"wpar", "show", "web"}).exit_code, 2) << "an ambiguous prefix is a usage error";
  EXPECT_EQ(as_root({"wpar", "show", "nothing"}).exit_code, 3);
  EXPECT_EQ(as_root({"wpar", "create", "bad name!"}).exit_code, 2);
  EXPECT_EQ(as_root({"wpar", "create", "web1"}).exit_code, 1) << "exists";
  EXPECT_EQ(as_root({"wpar", "remove", "web2"}).exit_code, 0);
  EXPECT_EQ(as_root({"wpar", "remove", "web2"}).exit_code, 3);
  EXPECT_EQ(as_root({"wpar", "list", "--group", "nope"}).exit_code, 3);
  EXPECT_EQ(as_root({"wpar", "frobnicate"}).exit_code, 2);
  EXPECT_EQ(as_root({"wpar", "create", "--help"}).exit_code, 0);
  auto down = run({bin("wpm"), "--data", dir_ / "nodata", "--gateway", "tcp://127.0.0.1:1", "--timeout", "200",
                   "--attempts", "1", "wpar", "list"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("is wpmd running"), std::string::npos) << down.err;
}

TEST_F(Fleet, EventsWatchResumesFromASequenceWithoutAGapOrARepeat) {
  for (int i = 0; i < 4; ++i) ASSERT_EQ(as_root({"wpar", "create", fmt::format("w{}", i)}).exit_code, 0);
  auto all = wpm(*wpmd_, {"log", "stats", "-o", "json"});
  uint64_t head = json::parse(all.out)["head"];
  ASSERT_GT(head, 8u);
  uint64_t half = head / 2;
  auto first = as_root({"-o", "json", "events", "watch", "--from", "1", "--count", std::to_string(half)});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  std::vector<uint64_t> seen;
  std::istringstream lines(first.out);
  std::string line;
  while (std::getline(lines, line)) {
    json e = json::parse(line);
    if (e.contains("sequence")) seen.push_back(e["sequence"]);
  }
  ASSERT_EQ(seen.size(), half);
  auto second = as_root({"-o", "json", "events", "watch", "--from", std::to_string(seen.back() + 1), "--count",
                         std::to_string(head - half)});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  std::istringstream more(second.out);
  while (std::getline(more, line)) {
    json e = json::parse(line);
    if (e.contains("sequence")) seen.push_back(e["sequence"]);
  }
  ASSERT_EQ(seen.size(), head);
  for (uint64_t i = 0; i < head; ++i) EXPECT_EQ(seen[i], i + 1) << "no gap, no repeat (root sees every event)";
}

TEST_F(Fleet, AfterKillNineTheInventoryEqualsAFullReplay) {
  auto snapshot_of = [&] {
    json j;
    for (const auto& what : {"wpar", "group"}) j[what] = json::parse(as_root({"-o", "json", what, "list"}).out);
    j["settings"] = json::parse(as_root({"-o", "json", "settings", "show"}).out);
    return j;
  };
  ASSERT_EQ(as_root({"group", "create", "web"}).exit_code, 0);
  for (int i = 0; i < 15; ++i) {
    ASSERT_EQ(as_root({"wpar", "create", fmt::format("a{:02}", i), "--group", "web"}).exit_code, 0);
  }
  ASSERT_EQ(wpmd_->stop(), 0);  // a clean stop writes the snapshots
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  for (int i = 0; i < 10; ++i) ASSERT_EQ(as_root({"wpar", "create", fmt::format("b{:02}", i)}).exit_code, 0);
  ASSERT_EQ(as_root({"wpar", "modify", "a03", "--cpu-shares", "300"}).exit_code, 0);
  ASSERT_EQ(as_root({"wpar", "remove", "a04"}).exit_code, 0);
  ASSERT_EQ(as_root({"settings", "set", "heartbeat.timeout", "45s"}).exit_code, 0);
  json before = snapshot_of();
  ASSERT_EQ(before["wpar"].size(), 24u);
  wpmd_->kill(SIGKILL);
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  EXPECT_EQ(snapshot_of(), before) << "snapshot + tail after kill -9";
  ASSERT_EQ(wpmd_->stop(), 0);
  auto rebuilt = run({bin("wpm"), "admin", "rebuild", "--data", wpmd_->data_dir()});
  ASSERT_EQ(rebuilt.exit_code, 0) << rebuilt.err;
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  EXPECT_EQ(snapshot_of(), before) << "a full replay from sequence 1 (snapshots dropped)";
}

TEST_F(Fleet, ASilentAgentTurnsItsSystemOfflineAndBackOnline) {
  ASSERT_EQ(as_root({"settings", "set", "heartbeat.timeout", "8s"}).exit_code, 0);
  std::string data = configure_agent();
  auto started = start_agent(data);
  ASSERT_EQ(started.exit_code, 0) << started.err;
  auto state = [&] {
    auto r = as_root({"-o", "json", "system", "list"});
    json j = json::parse(r.out, nullptr, false);
    return j.is_array() && !j.empty() ? j[0].value("state", "") : std::string("none");
  };
  ASSERT_TRUE(wait_until([&] { return state() == "online"; }, 20s, 200ms)) << state();
  ASSERT_EQ(run({bin("wpm-agent"), "--data", data, "stop"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return state() == "offline"; }, 30s, 250ms)) << state();
  auto shown = json::parse(as_root({"-o", "json", "system", "list"}).out)[0];
  EXPECT_NE(shown["stateReason"].get<std::string>().find("no heartbeat for 8 s"), std::string::npos) << shown.dump();
  started = start_agent(data);
  ASSERT_EQ(started.exit_code, 0) << started.err;
  EXPECT_TRUE(wait_until([&] { return state() == "online"; }, 20s, 200ms)) << state();
  auto dump = wpm(*wpmd_, {"log", "dump", "-o", "json"});
  std::vector<std::string> changes;
  std::istringstream lines(dump.out);
  std::string line;
  while (std::getline(lines, line)) {
    json e = json::parse(line);
    if (e["type"] == "systemStateChanged") changes.push_back(e["payload"]["systemStateChanged"]["state"]);
  }
  // The stopped agent's port refuses at once (Unreachable, while its last
  // heartbeat is recent), then the heartbeats time out (Offline).
  ASSERT_GE(changes.size(), 2u);
  EXPECT_EQ(changes[changes.size() - 2], "offline");
  EXPECT_EQ(changes.back(), "online");
  EXPECT_LE(changes.size(), 3u) << "one event per change, none per heartbeat or probe";
  for (size_t i = 1; i < changes.size(); ++i) EXPECT_NE(changes[i], changes[i - 1]);
}

TEST_F(Fleet, AHandMadeWparAppearsAsDiscoveredAndAnAgentPortThatDoesNotAnswerIsUnreachable) {
  std::string data = configure_agent();
  ASSERT_EQ(start_agent(data).exit_code, 0);
  auto system = [&] {
    auto r = as_root({"-o", "json", "system", "list"});
    json j = json::parse(r.out, nullptr, false);
    return j.is_array() && !j.empty() ? j[0] : json::object();
  };
  ASSERT_TRUE(wait_until([&] { return system().value("state", "") == "online"; }, 20s, 200ms)) << system().dump();
  auto made = run({bin("wpm-agent"), "--data", data, "wparexec", "-n", "hand1", "--", "/bin/sleep", "300"}, 60s);
  if (made.exit_code != 0) GTEST_SKIP() << "this host cannot run an application WPAR: " << made.err;
  ASSERT_EQ(as_root({"system", "discover"}).exit_code, 0);
  auto hand1 = [&] {
    auto r = as_root({"-o", "json", "wpar", "show", "hand1"});
    return r.exit_code == 0 ? json::parse(r.out) : json::object();
  };
  ASSERT_TRUE(wait_until([&] { return hand1().value("discovered", false); }, 20s, 200ms)) << hand1().dump();
  EXPECT_EQ(hand1()["system"], system()["name"]);
  EXPECT_EQ(hand1()["state"], "A");
  EXPECT_EQ(as_root({"wpar", "modify", "hand1", "--command", "/bin/true"}).exit_code, 1)
      << "deployed: its command does not change";
  // The agent stops answering on its port (stopped, not dead: its last
  // heartbeat is recent): Unreachable, with what the probe saw.
  pid_t pid = std::stoi(read_file(data + "/agent.pid"));
  ASSERT_EQ(::kill(pid, SIGSTOP), 0);
  bool unreachable = wait_until([&] { return system().value("state", "") == "unreachable"; }, 10s, 100ms);
  json shown = system();
  ::kill(pid, SIGCONT);
  ASSERT_TRUE(unreachable) << shown.dump();
  EXPECT_NE(shown["stateReason"].get<std::string>().find("no CURVE handshake or answer"), std::string::npos)
      << shown.dump();
  EXPECT_TRUE(wait_until([&] { return system().value("state", "") == "online"; }, 20s, 200ms)) << system().dump();
  // The hand-made WPAR ends: it is removed at the next probe.
  run({bin("wpm-agent"), "--data", data, "stopwpar", "-F", "hand1"}, 60s);
  run({bin("wpm-agent"), "--data", data, "rmwpar", "hand1"}, 60s);
  EXPECT_TRUE(wait_until([&] { return as_root({"wpar", "show", "hand1"}).exit_code == 3; }, 20s, 200ms));
}

TEST_F(Fleet, AJoinTokenRegistersOneAgentOnceAndIsNeverKeptInClear) {
  auto made = as_root({"system", "token", "create", "--ttl", "30m"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  std::string token = made.out.substr(0, made.out.find('\n'));
  ASSERT_TRUE(token.starts_with("wpmj_")) << made.out;
  EXPECT_NE(made.err.find("single use"), std::string::npos);
  auto configure = [&](const std::string& name, const std::string& t) {
    return run({bin("wpm-agent"), "--data", dir_ / name, "configure", "--manager", "127.0.0.1", "--pubport",
                port_of(wpmd_->agent_public()), "--agentport", "0", "--hostname", name, "--token", t},
               30s);
  };
  auto first = configure("joiner1", token);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto again = configure("joiner2", token);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("already used (by system joiner1)"), std::string::npos) << again.err;
  auto unknown = configure("joiner3", "wpmj_0000000000000000000000000000000000000000000000000000000000000000");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("unknown join token"), std::string::npos) << unknown.err;
  EXPECT_EQ(as_root({"system", "token", "create", "--ttl", "10s"}).exit_code, 2) << "below the shortest ttl";
  auto systems = json::parse(as_root({"-o", "json", "system", "list"}).out);
  ASSERT_EQ(systems.size(), 1u);
  EXPECT_EQ(systems[0]["name"], "joiner1");
  auto dump = wpm(*wpmd_, {"log", "dump", "-o", "json"});
  EXPECT_EQ(dump.out.find(token), std::string::npos) << "only the token's hash is kept";
  EXPECT_EQ(wpmd_->log().find(token), std::string::npos);
  EXPECT_NE(dump.out.find("joinTokenUsed"), std::string::npos);
}

// Beyond loopback the gateway is CURVE: a plain client gets no answer, and
// wpm with the key from DATA/endpoints (or --gateway-key) works.
TEST(FleetGateway, BeyondLoopbackTheGatewayIsCurveAndWpmUsesItsKey) {
  TempDir dir("wpm-fleet-curve");
  Wpmd::Options o;
  o.data_dir = dir / "wpmd";
  o.extra_args = {"--gateway-endpoint", "tcp://0.0.0.0:0"};
  Wpmd wpmd(o);
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  auto kv = read_key_values(wpmd.data_dir() + "/endpoints");
  ASSERT_FALSE(kv["gateway_key"].empty()) << "the gateway's public key is published for clients";
  std::string port = kv["gateway"].substr(kv["gateway"].rfind(':') + 1);
  std::string endpoint = "tcp://127.0.0.1:" + port;
  auto with_key = run({bin("wpm"), "--data", wpmd.data_dir(), "--gateway", endpoint, "whoami"}, 30s);
  EXPECT_EQ(with_key.exit_code, 0) << with_key.err;
  // Without the key, a client cannot talk to it at all (no answer).
  auto no_key = run({bin("wpm"), "--data", dir / "nodata", "--gateway", endpoint, "--timeout", "500", "--attempts",
                     "1", "whoami"},
                    30s);
  EXPECT_EQ(no_key.exit_code, 1);
  EXPECT_NE(no_key.err.find("no reply from the gateway"), std::string::npos) << no_key.err;
  zmq::context_t context(1);
  zmq::socket_t plain(context, zmq::socket_type::dealer);
  plain.set(zmq::sockopt::linger, 0);
  plain.set(zmq::sockopt::rcvtimeo, 1500);
  plain.connect(endpoint);
  plain.send(zmq::message_t(), zmq::send_flags::sndmore);
  plain.send(zmq::str_buffer(R"({"v":1,"command":"version"})"));
  zmq::message_t reply;
  EXPECT_FALSE(plain.recv(reply)) << "a client without CURVE gets no answer: passwords never travel in clear";
}

TEST_F(FleetOnThreeHosts, RegisterTurnOfflineAndUnreachableCompareAndTagThreeHosts) {
  ASSERT_EQ(as_root({"settings", "set", "heartbeat.timeout", "3s"}).exit_code, 0);
  // h1 is this machine as it is; h2 claims an older kernel, h3 an older base system.
  write_agent_toml(1, "");
  write_agent_toml(2, "[profile]\nkernel_version = \"5.10.0-26-amd64\"\n");
  write_agent_toml(3, "[profile]\nbase_system_version = \"11.1\"\n");
  // Registration: h1 with a join token, which h2 cannot use again.
  auto made = as_root({"system", "token", "create", "--ttl", "10m"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  std::string token = made.out.substr(0, made.out.find('\n'));
  auto first = configure(1, token);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto reused = configure(2, token);
  EXPECT_EQ(reused.exit_code, 1);
  EXPECT_NE(reused.err.find("already used (by system h1)"), std::string::npos) << reused.err;
  ASSERT_EQ(configure(2, "").exit_code, 0);
  ASSERT_EQ(configure(3, "").exit_code, 0);
  for (int i = 1; i <= 3; ++i) {
    agents_.push_back(data(i));
    auto started = in_host(i, {bin("wpm-agent"), "--data", data(i), "start"}, 30s);
    ASSERT_EQ(started.exit_code, 0) << started.err;
  }
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(wait_until([&] { return system(i).value("state", "") == "online"; }, 20s, 200ms)) << system(i).dump();
    json s = system(i);
    EXPECT_EQ(s["address"], address(i)) << "registered from its own namespace's address";
    // The profile carries the host's interface and subnet.
    EXPECT_EQ(s["profile"]["subnets"], json({net_ + ".0/24"})) << s["profile"].dump();
    ASSERT_EQ(s["profile"]["networkInterfaces"].size(), 1u) << s["profile"].dump();
    EXPECT_EQ(s["profile"]["networkInterfaces"][0]["addresses"], json({address(i) + "/24"}));
  }

  // Compatibility: the four states, and the failed test named with both values.
  ASSERT_TRUE(wait_until([&] { return compat(1, 2).value("analysis", "") == "complete" &&
                                      compat(2, 3).value("analysis", "") == "complete" &&
                                      compat(1, 3).value("analysis", "") == "complete"; },
                         20s, 200ms));
  json c12 = compat(1, 2);
  EXPECT_EQ(c12["state"], "inbound compatible") << c12.dump();  // h2 → h1 only
  EXPECT_EQ(compat(2, 1)["state"], "outbound compatible");
  EXPECT_EQ(compat(2, 3)["state"], "incompatible") << compat(2, 3).dump();
  bool kernel_named = false;
  for (const auto& t : c12["departureToArrival"]) {
    if (t["test"] == "kernel" && t["passed"] == false) {
      kernel_named = true;
      EXPECT_EQ(t["arrival"], "5.10.0-26-amd64");
      EXPECT_NE(t["remedy"].get<std::string>().find("upgrade the kernel on"), std::string::npos) << t.dump();
    }
  }
  EXPECT_TRUE(kernel_named) << c12.dump();
  auto shown = as_root({"compat", "show", "h1", "h2"});
  EXPECT_NE(shown.out.find("kernel"), std::string::npos) << shown.out;
  // h2's override is taken away and its profile asked for again: the same
  // properties as h1, so fully compatible.
  write_agent_toml(2, "");
  auto update = as_root({"system", "update-profile", "h2"});
  ASSERT_EQ(update.exit_code, 0) << update.err;
  EXPECT_TRUE(wait_until([&] { return compat(1, 2).value("state", "") == "fully compatible"; }, 20s, 200ms))
      << compat(1, 2).dump();
  json h2 = system(2);
  ASSERT_TRUE(h2.contains("overriddenFacts")) << h2.dump();
  EXPECT_TRUE(h2["overriddenFacts"].empty()) << h2.dump();

  // Relocation domains: h3 tagged banking; profiles never span domains.
  ASSERT_EQ(as_root({"domain", "create", "banking", "--description", "payment hosts"}).exit_code, 0);
  ASSERT_EQ(as_root({"system", "set-domain", "h3", "bank"}).exit_code, 0);
  EXPECT_EQ(as_root({"system", "set-domain", "h3", "nowhere"}).exit_code, 3);
  EXPECT_EQ(as_root({"domain", "remove", "banking"}).exit_code, 1) << "it still holds h3";
  json domains = json::parse(as_root({"-o", "json", "domain", "list"}).out);
  ASSERT_EQ(domains.size(), 2u) << domains.dump();
  EXPECT_EQ(domains[0]["name"], "banking");
  EXPECT_EQ(domains[0]["systemNames"], json({"h3"}));
  EXPECT_EQ(domains[1]["systemNames"], json({"h1", "h2"}));
  ASSERT_EQ(domains[1]["profiles"].size(), 1u) << "one machine: the same hardware, one profile";
  ASSERT_TRUE(system(1).contains("profileName")) << system(1).dump();
  EXPECT_EQ(system(1)["profileName"], system(2)["profileName"]);
  EXPECT_TRUE(system(3)["profileName"].get<std::string>().starts_with("banking/")) << system(3).dump();
  auto table = as_root({"system", "list"});
  EXPECT_NE(table.out.find("banking"), std::string::npos) << table.out;

  // Definitions, and a WPAR made by hand on h1 appears as discovered there.
  ASSERT_EQ(as_root({"wpar", "create", "web1", "--type", "application", "--command", "/bin/sleep 60"}).exit_code, 0);
  ASSERT_EQ(as_root({"wpar", "modify", "web1", "--cpu-limit", "30"}).exit_code, 0);
  EXPECT_EQ(json::parse(as_root({"-o", "json", "wpar", "show", "web1"}).out)["cpuLimitPercent"], 30);
  auto hand = in_host(1, {bin("wpm-agent"), "--data", data(1), "wparexec", "-n", "hand1", "--", "/bin/sleep", "300"});
  if (hand.exit_code == 0) {
    EXPECT_TRUE(wait_until([&] {
      auto r = as_root({"-o", "json", "wpar", "show", "hand1"});
      return r.exit_code == 0 && json::parse(r.out).value("system", "") == "h1";
    }, 20s, 200ms));
    in_host(1, {bin("wpm-agent"), "--data", data(1), "stopwpar", "-F", "hand1"});
    in_host(1, {bin("wpm-agent"), "--data", data(1), "rmwpar", "hand1"});
  } else {
    ADD_FAILURE() << "wparexec on h1 failed: " << hand.err;
  }
  ASSERT_EQ(as_root({"wpar", "remove", "web1"}).exit_code, 0);
  EXPECT_EQ(as_root({"wpar", "show", "web1"}).exit_code, 3);

  // A user of each kind: a WPARUser defines WPARs but does not tag systems.
  std::string user = make_user("u");
  ASSERT_EQ(as_root({"role", "add", "--role", "WPARUser", "--user", user}).exit_code, 0);
  ASSERT_EQ(login(user, "pw-" + user).exit_code, 0);
  EXPECT_EQ(as(user, {"wpar", "create", "userwpar"}).exit_code, 0);
  auto refused = as(user, {"system", "set-domain", "h1", "banking"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("may not"), std::string::npos) << refused.err;
  EXPECT_EQ(as(user, {"domain", "create", "hr"}).exit_code, 1);

  uint64_t before = json::parse(wpm(*wpmd_, {"log", "stats", "-o", "json"}).out)["head"];
  // h3's agent port is blocked in its namespace: its heartbeats go on, the
  // manager's probe does not get through: Unreachable, with the reason.
  auto table_made = in_host(3, {"nft", "add", "table", "inet", "wpmtest"});
  if (table_made.exit_code != 0) {
    ADD_FAILURE() << "nft cannot filter in a namespace here: " << table_made.err;
  } else {
    ASSERT_EQ(in_host(3, {"nft", "add", "chain", "inet", "wpmtest", "input",
                          "{ type filter hook input priority 0; }"}).exit_code, 0);
    ASSERT_EQ(in_host(3, {"nft", "add", "rule", "inet", "wpmtest", "input", "tcp", "dport", "9510", "drop"}).exit_code,
              0);
    EXPECT_TRUE(wait_until([&] { return system(3).value("state", "") == "unreachable"; }, 20s, 200ms))
        << system(3).dump();
    EXPECT_NE(system(3)["stateReason"].get<std::string>().find("filtered"), std::string::npos) << system(3).dump();
    ASSERT_EQ(in_host(3, {"nft", "delete", "table", "inet", "wpmtest"}).exit_code, 0);
    EXPECT_TRUE(wait_until([&] { return system(3).value("state", "") == "online"; }, 20s, 200ms)) << system(3).dump();
  }
  // h2's agent is killed: Offline after the heartbeat timeout; the others stay Online.
  pid_t pid = std::stoi(read_file(data(2) + "/agent.pid"));
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  EXPECT_TRUE(wait_until([&] { return system(2).value("state", "") == "offline"; }, 20s, 200ms)) << system(2).dump();
  EXPECT_EQ(system(1)["state"], "online");
  EXPECT_EQ(as_root({"system", "update-profile", "h2"}).exit_code, 1) << "an offline agent cannot be asked";

  // The state changes since `before` as the log holds them: h3 there and
  // back; h2's port refuses at once (unreachable, when a probe comes before
  // the timeout), then no heartbeat: offline.
  auto changes_in = [](const std::string& ndjson) {
    std::vector<std::string> out;
    std::istringstream lines(ndjson);
    std::string line;
    while (std::getline(lines, line)) {
      json e = json::parse(line, nullptr, false);
      if (e.is_object() && e.value("type", "") == "systemStateChanged") {
        const json& p = e["payload"]["systemStateChanged"];
        out.push_back(p["systemId"].get<std::string>() + ":" + p["state"].get<std::string>());
      }
    }
    return out;
  };
  auto logged = changes_in(wpm(*wpmd_, {"log", "dump", "-o", "json", "--from", std::to_string(before + 1)}).out);
  std::vector<std::string> expected = {"h3:unreachable", "h3:online"};
  if (table_made.exit_code != 0) expected.clear();
  if (logged.size() == expected.size() + 2) expected.push_back("h2:unreachable");
  expected.push_back("h2:offline");
  EXPECT_EQ(logged, expected);
  // events watch from that sequence gives the same, none missing or repeated.
  auto watched = as_root({"-o", "json", "events", "watch", "--from", std::to_string(before + 1), "--count",
                          std::to_string(logged.size()), "--type", "systemStateChanged"});
  ASSERT_EQ(watched.exit_code, 0) << watched.err;
  auto changes = changes_in(watched.out);
  EXPECT_EQ(changes, logged) << watched.out;
}

}  // namespace
}  // namespace wpm::testing

namespace wpm::testing {
namespace {

// Agents report metrics at the interval the manager sets (not through the
// log), and `wpm system|wpar metrics` show them.
TEST_F(Fleet, AgentsReportMetricsAtTheSetIntervalAndTheCliShowsThem) {
  ASSERT_EQ(as_root({"settings", "set", "metrics.interval", "1s"}).exit_code, 0);
  EXPECT_EQ(as_root({"settings", "set", "metrics.interval", "500ms"}).exit_code, 2) << "whole seconds only";
  std::string data = configure_agent();
  ASSERT_EQ(start_agent(data).exit_code, 0);
  auto made = run({bin("wpm-agent"), "--data", data, "wparexec", "-n", "burn1", "--", "/bin/sh", "-c",
                   "while :; do :; done"},
                  60s);
  if (made.exit_code != 0) GTEST_SKIP() << "this host cannot run an application WPAR: " << made.err;
  ASSERT_EQ(as_root({"system", "discover"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return as_root({"wpar", "show", "burn1"}).exit_code == 0; }, 20s, 200ms));
  auto head_before = json::parse(as_root({"-o", "json", "log", "stats"}).out, nullptr, false);
  auto metrics = [&](const std::string& kind, const std::string& name) {
    auto r = as_root({"-o", "json", kind, "metrics", name, "--since", "5m"});
    return r.exit_code == 0 ? json::parse(r.out, nullptr, false) : json::object();
  };
  auto series = [](const json& m, const std::string& metric) {
    for (const auto& s : m.value("series", json::array())) {
      if (s.value("metric", "") == metric) return s["values"];
    }
    return json::array();
  };
  // At 1 s (the agent starts at the default 10 s and is told at its next
  // heartbeat): several reports within a few seconds.
  ASSERT_TRUE(wait_until([&] { return metrics("wpar", "burn1").value("points", 0) >= 5; }, 30s, 500ms))
      << metrics("wpar", "burn1").dump();
  json w = metrics("wpar", "burn1");
  EXPECT_EQ(w["resolution"], "raw");
  auto times = w["times"];
  EXPECT_LE(times.back().get<int64_t>() - times[times.size() - 4].get<int64_t>(), 5) << times.dump();
  // It burns one CPU: a visible share of the host's capacity.
  auto cpu = series(w, "cpu");
  ASSERT_FALSE(cpu.empty());
  double last_cpu = cpu.back().is_number() ? cpu.back().get<double>() : 0;
  EXPECT_GT(last_cpu, 100.0 / ::sysconf(_SC_NPROCESSORS_ONLN) / 3) << cpu.dump();
  // Its command and the init of its PID namespace (agents/README.md).
  EXPECT_EQ(series(w, "processes").back(), 2) << w.dump();
  EXPECT_GT(series(w, "memory").back().get<double>(), 0);
  std::string system_name = w["placements"][0]["system"];

  json h = metrics("system", system_name);
  EXPECT_GE(h.value("points", 0), 5);
  EXPECT_GT(series(h, "processes").back().get<int>(), 1);
  EXPECT_GT(series(h, "memory").back().get<double>(), 0);
  EXPECT_GE(series(h, "cpu").back().get<double>(), last_cpu / 2);
  // Samples are not events: the log did not grow with them.
  auto head_after = json::parse(as_root({"-o", "json", "log", "stats"}).out, nullptr, false);
  EXPECT_LE(head_after.value("head", 0), head_before.value("head", 0) + 2) << head_after.dump();

  // The agent's own /metrics carries the per-WPAR series (wpmd's stays bounded).
  auto scraped = http_get(read_key_values(data + "/endpoints")["metrics"]);
  EXPECT_TRUE(metric_value(scraped, "wpm_wpar_cpu_percent{wpar=\"burn1\"}").has_value()) << scraped;
  EXPECT_EQ(metric_value(scraped, "wpm_wpar_processes{wpar=\"burn1\"}"), 2.0) << scraped;
  EXPECT_TRUE(metric_value(scraped, "wpm_host_memory_percent").has_value()) << scraped;

  // The table, one metric; five-minute aggregates; errors with their exit codes.
  auto table = as_root({"wpar", "metrics", "burn1", "--metric", "cpu,processes"});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("cpu"), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find("memory"), std::string::npos) << table.out;
  auto aggregates = json::parse(
      as_root({"-o", "json", "system", "metrics", system_name, "--since", "1d", "--metric", "cpu"}).out, nullptr,
      false);
  EXPECT_EQ(aggregates.value("resolution", ""), "5m") << aggregates.dump();
  EXPECT_TRUE(aggregates["series"][0].contains("max")) << aggregates.dump();
  EXPECT_EQ(as_root({"wpar", "metrics", "nosuchwpar"}).exit_code, 3);
  EXPECT_EQ(as_root({"wpar", "metrics", "burn1", "--since", "yesterday"}).exit_code, 2);
  EXPECT_EQ(as_root({"wpar", "metrics", "burn1", "--metric", "disk"}).exit_code, 2);

  run({bin("wpm-agent"), "--data", data, "stopwpar", "-F", "burn1"}, 60s);
  run({bin("wpm-agent"), "--data", data, "rmwpar", "burn1"}, 60s);
}

}  // namespace
}  // namespace wpm::testing

namespace wpm::testing {
namespace {

// Backup and restore (README "Backup and restore"): a backup taken while
// appends run, restored into an empty data directory by a new wpmd, replays
// to the projections of backup time; the log verifies.
TEST_F(Fleet, ABackupTakenWhileAppendsRunRestoresToTheProjectionsOfItsTime) {
  ASSERT_EQ(as_root({"group", "create", "web"}).exit_code, 0);
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--group", "web", "--command",
                     "/bin/sleep 60"})
                .exit_code,
            0);
  ASSERT_EQ(as_root({"group", "policy", "set", "web", "--max", "70", "--min", "10", "--cooldown", "20m"}).exit_code, 0);
  auto views = [&] {
    std::string out;
    for (auto args : std::vector<std::vector<std::string>>{{"-o", "json", "group", "list"},
                                                           {"-o", "json", "wpar", "list"},
                                                           {"-o", "json", "group", "policy", "show", "web"}}) {
      auto r = as_root(args);
      EXPECT_EQ(r.exit_code, 0) << r.err;
      out += r.out;
    }
    return out;
  };
  const std::string before = views();

  // Appends run while the backup is made.
  pid_t appender = spawn({bin("wpm"), "--data", wpmd_->data_dir(), "log", "append", "--synthetic", "30000", "--batch",
                          "20"},
                         dir_ / "append.out", dir_ / "append.err");
  ASSERT_TRUE(wait_until([&] { return json::parse(as_root({"-o", "json", "log", "stats"}).out, nullptr, false)
                                          .value("head", 0) > 2000; },
                         30s, 50ms));
  auto made = as_root({"-o", "json", "backup", "create"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  json backup = json::parse(made.out);
  uint64_t head = backup["head"];
  auto at_head = as_root({"-o", "json", "log", "dump", "--from", std::to_string(head), "--to", std::to_string(head)});
  ASSERT_EQ(at_head.exit_code, 0) << at_head.err;
  ASSERT_EQ(wait_exit(appender, 120s), 0) << read_file(dir_ / "append.err");
  auto stats = json::parse(as_root({"-o", "json", "log", "stats"}).out);
  EXPECT_GT(stats.value("head", 0), head) << "appends went on after the backup";
  // Changed after the backup: not in the restored manager.
  ASSERT_EQ(as_root({"group", "create", "later"}).exit_code, 0);
  EXPECT_NE(views(), before);

  auto listed = json::parse(as_root({"-o", "json", "backup", "list"}).out);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["name"], backup["name"]);
  auto verified = as_root({"backup", "verify", backup["name"]});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("log sound"), std::string::npos) << verified.out;
  EXPECT_EQ(fs::status(backup["path"].get<std::string>()).permissions() & fs::perms::all, fs::perms::owner_all);

  // A new wpmd on an empty data directory, restored from it.
  std::string path = backup["path"];
  ASSERT_TRUE(wpmd_->stop().has_value());
  Wpmd::Options o = wpmd_->options();
  o.data_dir = dir_ / "restored";
  o.extra_args.insert(o.extra_args.end(), {"--restore", path});
  wpmd_ = std::make_unique<Wpmd>(o);
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  EXPECT_NE(wpmd_->log().find("restored backup"), std::string::npos);
  auto restored_stats = json::parse(as_root({"-o", "json", "log", "stats"}).out);
  EXPECT_GE(restored_stats.value("head", 0), head);
  EXPECT_LT(restored_stats.value("head", 0), stats.value("head", 0));
  EXPECT_EQ(as_root({"-o", "json", "log", "dump", "--from", std::to_string(head), "--to", std::to_string(head)}).out,
            at_head.out)
      << "the same event, hash chain and all, at the backup's head";
  EXPECT_EQ(views(), before);
  auto log_verified = as_root({"log", "verify"});
  EXPECT_EQ(log_verified.exit_code, 0) << log_verified.out << log_verified.err;

  // Wrong uses: a name that is no backup; a data directory that holds a log.
  EXPECT_EQ(as_root({"backup", "verify", "nosuch"}).exit_code, 3);
  ASSERT_TRUE(wpmd_->stop().has_value());
  auto again = run({bin("wpmd"), "--data", o.data_dir, "--restore", path}, 30s);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("holds a log already"), std::string::npos) << again.err;
}

// What happened after the backup is not in the restored log, but the agents
// know it: a WPAR deployed after the backup is adopted at its agent's
// placement epoch before the executor acts, and takes commands.
TEST_F(Fleet, ARestoredManagerAdoptsAPlacementMadeAfterItsBackup) {
  std::string data = configure_agent();
  ASSERT_EQ(start_agent(data).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return json::parse(as_root({"-o", "json", "system", "list"}).out, nullptr, false)
                                          .size() == 1; },
                         20s, 200ms));
  std::string system = json::parse(as_root({"-o", "json", "system", "list"}).out)[0].value("name", "");
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--command", "/bin/sleep 600"}).exit_code, 0);
  auto made = as_root({"-o", "json", "backup", "create"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  std::string path = json::parse(made.out)["path"];
  auto wpar = [&] { return json::parse(as_root({"-o", "json", "wpar", "show", "app1"}).out, nullptr, false); };
  auto deployed = as_root({"wpar", "deploy", "app1", "--system", system});
  if (deployed.exit_code != 0) GTEST_SKIP() << "this host cannot run an application WPAR: " << deployed.err;
  ASSERT_TRUE(wait_until([&] { return wpar().value("state", "") == "A"; }, 30s, 200ms)) << wpar().dump();

  // The restored manager listens where the agent knows it.
  ASSERT_TRUE(wpmd_->stop().has_value());
  Wpmd::Options o = wpmd_->options();
  o.data_dir = dir_ / "restored";
  o.extra_args.insert(o.extra_args.end(), {"--restore", path, "--agent-public-endpoint", wpmd_->agent_public(),
                                           "--agent-channel-endpoint", wpmd_->agent_channel()});
  wpmd_ = std::make_unique<Wpmd>(o);
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  ASSERT_TRUE(wait_until([&] { return wpar().value("system", "") == system && wpar().value("state", "") == "A"; },
                         30s, 200ms))
      << wpar().dump() << "\n" << wpmd_->log().substr(0, 3000);
  EXPECT_NE(wpmd_->log().find("placement_adopted wpar=app1"), std::string::npos);
  // Its commands carry the adopted epoch: the agent takes them.
  auto stopped = as_root({"wpar", "stop", "app1", "--force"});
  EXPECT_EQ(stopped.exit_code, 0) << stopped.out << stopped.err;
  run({bin("wpm-agent"), "--data", data, "stopwpar", "-F", "app1"}, 60s);
  run({bin("wpm-agent"), "--data", data, "rmwpar", "app1"}, 60s);
}

// The schedule ([backup] interval_s, keep): the first backup a little after
// start when there is none (a minute; shortened here), listed and sound.
TEST_F(Fleet, ScheduledBackupsAreMadeAndVerify) {
  ASSERT_TRUE(wpmd_->stop().has_value());
  std::string config = dir_ / "wpmd.toml";
  std::ofstream(config) << fmt::format("[backup]\ndir = \"{}\"\ninterval_s = 3600\nkeep = 2\n", dir_ / "scheduled");
  Wpmd::Options o = wpmd_->options();
  o.extra_args.insert(o.extra_args.end(), {"--config", config});
  o.env["WPM_TEST_BACKUP_FIRST_MS"] = "1000";
  wpmd_ = std::make_unique<Wpmd>(o);
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  auto listed = [&] {
    return json::parse(as_root({"-o", "json", "backup", "list", "--dir", dir_ / "scheduled"}).out, nullptr, false);
  };
  ASSERT_TRUE(wait_until([&] { return listed().is_array() && listed().size() == 1; }, 30s, 250ms))
      << wpmd_->log();
  EXPECT_NE(wpmd_->log().find("scheduled_backup_made"), std::string::npos);
  auto verified = as_root({"backup", "verify", listed()[0]["name"], "--dir", dir_ / "scheduled"});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  // The next one is an interval after it: none more now.
  std::this_thread::sleep_for(12s);
  EXPECT_EQ(listed().size(), 1u);
  // The shipped example configuration (a backup a day) loads.
  auto shipped = run({bin("wpmd"), "--config", std::string(WPM_SOURCE_DIR) + "/deploy/wpmd.toml", "--data",
                      dir_ / "shipped", "--show-key"},
                     30s);
  EXPECT_EQ(shipped.exit_code, 0) << shipped.err;
  // A configuration out of range is a usage error.
  std::ofstream(dir_ / "bad.toml") << "[backup]\ninterval_s = 5\n";
  auto bad = run({bin("wpmd"), "--data", dir_ / "baddata", "--config", dir_ / "bad.toml"}, 30s);
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("backup.interval_s"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace wpm::testing
