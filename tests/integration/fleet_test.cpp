// The fleet through the gateway (DESIGN.md §2, §8): real wpmd, wpm and
// wpm-agent processes on loopback; local Linux users made by the test log
// in through PAM with the shipped service file (deploy/pam/wpm, pam_unix)
// and are allowed and refused as the role matrix says; events watch resumes
// without a gap; the inventory after kill -9 equals a full replay; a silent
// agent turns its system Offline and back Online.

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <zmq.hpp>

#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

std::string quote(const std::string& s) { return "'" + s + "'"; }

class Fleet : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: it makes Linux users to log in through PAM";
    Wpmd::Options o;
    o.data_dir = dir_ / "wpmd";
    o.env = {{"WPM_TEST_PROBE_INTERVAL_MS", "500"}};
    o.extra_args = {"--pam-config-dir", std::string(WPM_SOURCE_DIR) + "/deploy/pam", "--registration-password-file",
                    dir_ / "password"};
    std::ofstream(dir_ / "password") << "fleet-registration-pw\n";
    wpmd_ = std::make_unique<Wpmd>(o);
    ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
    fs::create_directories(dir_ / "nodata");
  }
  void TearDown() override {
    for (const auto& data : agents_) run({bin("wpm-agent"), "--data", data, "stop"});
    for (const auto& u : users_) run({"/usr/sbin/userdel", u});
    for (const auto& g : groups_) run({"/usr/sbin/groupdel", g});
  }

  // A Linux user with a password; its name is unique to this run.
  std::string make_user(const std::string& suffix, const std::string& group = "") {
    std::string name = fmt::format("wpmt{}{}", ::getpid() % 100000, suffix);
    std::vector<std::string> argv = {"/usr/sbin/useradd", "-M", "-s", "/usr/sbin/nologin"};
    if (!group.empty()) argv.insert(argv.end(), {"-G", group});
    argv.push_back(name);
    auto made = run(argv);
    EXPECT_EQ(made.exit_code, 0) << made.err;
    users_.push_back(name);
    auto pw = run({"/bin/sh", "-c", "echo " + quote(name + ":pw-" + name) + " | /usr/sbin/chpasswd"});
    EXPECT_EQ(pw.exit_code, 0) << pw.err;
    return name;
  }
  std::string make_group(const std::string& suffix) {
    std::string name = fmt::format("wpmg{}{}", ::getpid() % 100000, suffix);
    EXPECT_EQ(run({"/usr/sbin/groupadd", name}).exit_code, 0);
    groups_.push_back(name);
    return name;
  }

  // `wpm` as root on the manager (the root credential in DATA/keys).
  RunResult as_root(std::vector<std::string> args) {
    std::vector<std::string> argv = {bin("wpm"), "--data", wpmd_->data_dir()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, 60s);
  }
  // `wpm` as `user`: its own login (kept under its own config directory),
  // no access to the data directory.
  RunResult as(const std::string& user, std::vector<std::string> args) {
    std::vector<std::string> argv = {bin("wpm"), "--data", dir_ / "nodata", "--gateway", wpmd_->gateway()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, 60s, {{"XDG_CONFIG_HOME", dir_ / ("config-" + user)}});
  }
  RunResult login(const std::string& user, const std::string& password) {
    std::string cmd = fmt::format("printf '%s\\n' {} | {} --data {} --gateway {} login --user {} --password-stdin",
                                  quote(password), bin("wpm"), quote(dir_ / "nodata"), wpmd_->gateway(), user);
    return run({"/bin/sh", "-c", cmd}, 60s, {{"XDG_CONFIG_HOME", dir_ / ("config-" + user)}});
  }

  std::string port_of(const std::string& endpoint) { return endpoint.substr(endpoint.rfind(':') + 1); }

  // An agent in DIR/agent, registered with the password; returns its data directory.
  std::string configure_agent() {
    std::string data = dir_ / "agent";
    auto configured = run({bin("wpm-agent"), "--data", data, "configure", "--manager", "127.0.0.1", "--pubport",
                           port_of(wpmd_->agent_public()), "--agentport", "0", "--password-file", dir_ / "password"},
                          30s);
    EXPECT_EQ(configured.exit_code, 0) << configured.err;
    agents_.push_back(data);
    return data;
  }
  RunResult start_agent(const std::string& data) {
    return run({bin("wpm-agent"), "--data", data, "start", "--agent-endpoint", "tcp://127.0.0.1:0", "--metrics-listen",
                "127.0.0.1:0"},
               30s);
  }

  TempDir dir_{"wpm-fleet"};
  std::unique_ptr<Wpmd> wpmd_;
  std::vector<std::string> users_, groups_, agents_;
};

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
  EXPECT_EQ(as_root({"wpar", "modify", "hand1", "--cpu-shares", "5"}).exit_code, 1) << "deployed: not changed here";
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

}  // namespace
}  // namespace wpm::testing
