// Agent registration and the agent channel (DESIGN.md §8): wpmd and
// wpm-agent as real processes on loopback, CURVE with the ZAP allow-list.

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "bus/curve.h"
#include "bus/frame.h"
#include "schemas/agent_protocol.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace ap = agentproto;

constexpr const char* kPassword = "correct horse battery staple";

class Registration : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_ / "password") << kPassword << "\n";
    std::ofstream(dir_ / "wrong") << "not the password\n";
  }
  void TearDown() override {
    for (const auto& data : started_) run({bin("wpm-agent"), "--data", data, "stop"});
  }

  std::unique_ptr<Wpmd> start_wpmd(std::vector<std::string> extra = {}, bool with_password = true,
                                   const std::string& name = "wpmd") {
    Wpmd::Options o;
    o.data_dir = dir_ / name;
    o.extra_args = std::move(extra);
    if (with_password) o.extra_args.insert(o.extra_args.end(), {"--registration-password-file", dir_ / "password"});
    auto w = std::make_unique<Wpmd>(o);
    EXPECT_TRUE(w->start()) << w->log();
    return w;
  }
  static std::string port_of(const std::string& endpoint) { return endpoint.substr(endpoint.rfind(':') + 1); }

  RunResult configure(const Wpmd& w, const std::string& data, const std::string& password_file,
                      std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {bin("wpm-agent"), "--data",   data,          "configure",   "--manager",
                                     "127.0.0.1",      "--pubport", port_of(w.agent_public()), "--agentport", "0",
                                     "--password-file", password_file};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv, 30s);
  }
  RunResult agent(const std::string& data, std::vector<std::string> args) {
    std::vector<std::string> argv = {bin("wpm-agent"), "--data", data};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, 30s);
  }
  RunResult start_agent(const std::string& data) {
    started_.push_back(data);
    return agent(data, {"start", "--agent-endpoint", "tcp://127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  }

  // Every event of the log, as JSON.
  std::vector<nlohmann::json> events(const Wpmd& w) {
    std::vector<nlohmann::json> out;
    auto dump = wpm(w, {"log", "dump", "-o", "json"});
    std::istringstream lines(dump.out);
    std::string line;
    while (std::getline(lines, line)) {
      if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }
  static size_t count_type(const std::vector<nlohmann::json>& events, const std::string& type) {
    return static_cast<size_t>(std::count_if(events.begin(), events.end(),
                                             [&](const auto& e) { return e["type"] == type; }));
  }

  // One request on the agent channel with `keys`; nothing when the handshake
  // is refused (no reply within the deadline).
  std::optional<ap::ManagerReply> channel_call(const std::string& endpoint, const std::string& manager_key,
                                               const bus::CurveKeyPair& keys, const ap::ManagerRequest& request) {
    zmq::socket_t dealer(context_, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    bus::make_curve_client(dealer, keys, manager_key);
    dealer.connect(endpoint);
    std::string bytes = ap::encode(request);
    dealer.send(zmq::buffer(bytes), zmq::send_flags::none);
    zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
    if (bus::poll(&item, 1, 1500ms) <= 0) return std::nullopt;
    zmq::message_t frame;
    if (!dealer.recv(frame)) return std::nullopt;
    auto reply = ap::decode_manager_reply(bus::view(frame));
    EXPECT_TRUE(reply) << reply.error().message;
    return reply ? std::optional(*reply) : std::nullopt;
  }
  std::string manager_public_key(const Wpmd& w) {
    auto keys = bus::load_curve_keys(w.data_dir() + "/keys", "manager");
    EXPECT_TRUE(keys);
    return keys ? keys->public_key : "";
  }

  TempDir dir_{"wpm-registration"};
  zmq::context_t context_{1};
  std::vector<std::string> started_;
};

TEST_F(Registration, AWrongPasswordIsRefusedAndLoggedWithoutThePassword) {
  auto w = start_wpmd();
  auto r = configure(*w, dir_ / "a1", dir_ / "wrong");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("wrong registration password"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "a1/registration.json"));
  auto log = events(*w);
  ASSERT_EQ(count_type(log, "registrationRejected"), 1u);
  EXPECT_EQ(count_type(log, "systemRegistered"), 0u);
  auto rejected = std::find_if(log.begin(), log.end(), [](const auto& e) { return e["type"] == "registrationRejected"; });
  EXPECT_EQ((*rejected)["payload"]["registrationRejected"]["address"], "127.0.0.1");
  EXPECT_EQ((*rejected)["payload"]["registrationRejected"]["reason"], "wrong registration password");
  EXPECT_EQ(log.front().dump().find("not the password"), std::string::npos);
  EXPECT_EQ(read_file(w->data_dir() + "/registration.hash").find(kPassword), std::string::npos)
      << "only a salted hash is stored";
}

TEST_F(Registration, RepeatedWrongPasswordsBecomeOneEventAndThenRateLimited) {
  auto w = start_wpmd();
  for (int i = 0; i < 12; ++i) (void)configure(*w, dir_ / "a1", dir_ / "wrong");
  auto r = configure(*w, dir_ / "a1", dir_ / "password");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("too many refused registrations"), std::string::npos) << r.err;
  EXPECT_EQ(count_type(events(*w), "registrationRejected"), 1u) << "the rest wait for the window to close";
}

TEST_F(Registration, TheRightPasswordRegistersWithTheProfileAndKey) {
  auto w = start_wpmd();
  auto r = configure(*w, dir_ / "a1", dir_ / "password", {"--manager-key", w->manager_key()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(matches)"), std::string::npos);
  auto registration = nlohmann::json::parse(read_file(dir_ / "a1/registration.json"));
  auto log = events(*w);
  ASSERT_EQ(count_type(log, "systemRegistered"), 1u);
  const auto& reg = std::find_if(log.begin(), log.end(), [](const auto& e) {
                      return e["type"] == "systemRegistered";
                    })->at("payload")["systemRegistered"];
  EXPECT_EQ(reg["systemId"], registration["systemId"]);
  auto agent_keys = bus::load_curve_keys(dir_ / "a1/keys", "agent");
  ASSERT_TRUE(agent_keys);
  EXPECT_EQ(reg["publicKey"], agent_keys->public_key);
  utsname u{};
  ::uname(&u);
  EXPECT_EQ(reg["profile"]["kernelVersion"], u.release);
  // Again without --force: refused, nothing new recorded.
  auto again = configure(*w, dir_ / "a1", dir_ / "password");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("--force"), std::string::npos);
}

TEST_F(Registration, AManagerKeyThatDoesNotMatchIsRefused) {
  auto w = start_wpmd();
  auto r = configure(*w, dir_ / "a1", dir_ / "password", {"--manager-key", "sha256:00112233445566778899aabbccddeeff"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not match --manager-key"), std::string::npos) << r.err;
  EXPECT_EQ(count_type(events(*w), "systemRegistered"), 0u);
}

TEST_F(Registration, WithoutARegistrationPasswordRegistrationsAreRefusedWithTheFix) {
  auto w = start_wpmd({}, false);
  auto r = configure(*w, dir_ / "a1", dir_ / "password");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--registration-password-file"), std::string::npos) << r.err;
}

TEST_F(Registration, AnUnreachableManagerIsReportedClearly) {
  auto r = run({bin("wpm-agent"), "--data", dir_ / "a1", "configure", "--manager", "127.0.0.1", "--pubport", "1",
                "--agentport", "0", "--password-file", dir_ / "password"},
               30s);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach the manager"), std::string::npos) << r.err;
}

TEST_F(Registration, AnUnregisteredKeyIsRefusedOnTheAgentChannelAlsoAfterRestart) {
  auto w = start_wpmd();
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password").exit_code, 0);
  auto registered = bus::load_curve_keys(dir_ / "a1/keys", "agent");
  auto stranger = bus::generate_curve_keys();
  ASSERT_TRUE(registered && stranger);
  std::string manager_key = manager_public_key(*w);
  ap::ManagerRequest beat{7, ap::Heartbeat{1, 0, 0}};
  auto ok = channel_call(w->agent_channel(), manager_key, *registered, beat);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(std::holds_alternative<ap::Ack>(ok->body));
  auto refused = channel_call(w->agent_channel(), manager_key, *stranger, beat);
  ASSERT_TRUE(refused) << "an unregistered key may only register";
  ASSERT_TRUE(std::holds_alternative<ap::ProtocolError>(refused->body));
  EXPECT_EQ(std::get<ap::ProtocolError>(refused->body).kind, ap::ErrorKind::kNotRegistered);

  ASSERT_EQ(w->stop(), 0);
  ASSERT_TRUE(w->start()) << w->log();
  EXPECT_EQ(manager_public_key(*w), manager_key) << "the manager keeps its key";
  auto after = channel_call(w->agent_channel(), manager_key, *registered, beat);
  ASSERT_TRUE(after) << "the allow-list was rebuilt from the log";
  EXPECT_TRUE(std::holds_alternative<ap::Ack>(after->body));
  auto still = channel_call(w->agent_channel(), manager_key, *stranger, beat);
  ASSERT_TRUE(still && std::holds_alternative<ap::ProtocolError>(still->body));
  EXPECT_EQ(std::get<ap::ProtocolError>(still->body).kind, ap::ErrorKind::kNotRegistered);
  auto metrics = http_get(w->metrics());
  EXPECT_EQ(metric_value(metrics, "wpm_agents_registered"), 1.0);
}

TEST_F(Registration, AChangedProfileIsRecordedOnceAndAnUnchangedOneNot) {
  auto w = start_wpmd();
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password").exit_code, 0);
  auto keys = bus::load_curve_keys(dir_ / "a1/keys", "agent");
  ASSERT_TRUE(keys);
  auto log = events(*w);
  auto registered = std::find_if(log.begin(), log.end(), [](const auto& e) { return e["type"] == "systemRegistered"; });
  ASSERT_NE(registered, log.end());
  std::string stream = (*registered)["streamId"];
  // The profile as registered, with a new kernel: what an upgraded host reports.
  profile::SystemProfile changed;
  changed.os_type = "Linux";
  changed.kernel_version = "9.9.9-upgraded";
  std::string key = manager_public_key(*w);
  for (int i = 0; i < 2; ++i) {
    auto reply = channel_call(w->agent_channel(), key, *keys, {1, ap::ProfileReport{changed}});
    ASSERT_TRUE(reply && std::holds_alternative<ap::Ack>(reply->body));
  }
  log = events(*w);
  ASSERT_EQ(count_type(log, "systemProfileChanged"), 1u) << "the second report changed nothing";
  auto event = std::find_if(log.begin(), log.end(), [](const auto& e) { return e["type"] == "systemProfileChanged"; });
  EXPECT_EQ((*event)["payload"]["systemProfileChanged"]["profile"]["kernelVersion"], "9.9.9-upgraded");
  EXPECT_EQ((*event)["streamId"], stream);
}

TEST_F(Registration, TheDaemonReportsItsStartAndHeartbeatsAndStatusSaysSo) {
  auto w = start_wpmd();
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password").exit_code, 0);
  auto started = start_agent(dir_ / "a1");
  ASSERT_EQ(started.exit_code, 0) << started.err;
  std::string status;
  ASSERT_TRUE(wait_until(
      [&] {
        status = agent(dir_ / "a1", {"status", "-o", "json"}).out;
        return status.find("\"lastContactNs\":0") == std::string::npos && status.find("lastContactNs") != std::string::npos;
      },
      10s))
      << status;
  auto j = nlohmann::json::parse(status);
  EXPECT_TRUE(j["running"].get<bool>());
  EXPECT_TRUE(j["registered"].get<bool>());
  EXPECT_EQ(j["lastError"], "");
  EXPECT_NE(w->log().find("agent_started system="), std::string::npos) << w->log();
  auto table = agent(dir_ / "a1", {"status"});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find("registered:   yes"), std::string::npos) << table.out;
  // Its own metrics.
  auto endpoints = read_key_values(dir_ / "a1/endpoints");
  auto metrics = http_get(endpoints["metrics"]);
  EXPECT_TRUE(metric_value(metrics, "wpm_agent_uptime_seconds").has_value()) << metrics;
  EXPECT_EQ(metric_value(metrics, "wpm_agent_registered"), 1.0);
  EXPECT_TRUE(metric_value(metrics, "wpm_agent_wpars{state=\"A\"}").has_value()) << metrics;
  ASSERT_EQ(agent(dir_ / "a1", {"stop"}).exit_code, 0);
  EXPECT_EQ(agent(dir_ / "a1", {"status"}).exit_code, 3);
}

TEST_F(Registration, AnUnconfiguredAgentRunsStandaloneAndRegistersOnceConfigured) {
  auto w = start_wpmd();
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  auto st = agent(dir_ / "a1", {"status"});
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_NE(st.out.find("registered:   no"), std::string::npos) << st.out;
  auto ls = agent(dir_ / "a1", {"lswpar"});
  EXPECT_EQ(ls.exit_code, 0) << "local commands work standalone, through the daemon: " << ls.err;
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password").exit_code, 0);
  EXPECT_TRUE(wait_until([&] { return w->log().find("agent_started system=") != std::string::npos; }, 10s))
      << w->log();
}

TEST_F(Registration, TheAgentPortAnswersOnlyTheManagerAndMalformedCommandsGetAnError) {
  auto w = start_wpmd();
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password").exit_code, 0);
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  std::string endpoint = read_key_values(dir_ / "a1/endpoints")["agent"];
  endpoint = "tcp://127.0.0.1:" + endpoint.substr(endpoint.rfind(':') + 1);
  auto agent_key = bus::load_curve_keys(dir_ / "a1/keys", "agent");
  auto manager = bus::load_curve_keys(w->data_dir() + "/keys", "manager");
  auto stranger = bus::generate_curve_keys();
  ASSERT_TRUE(agent_key && manager && stranger);
  auto call = [&](const bus::CurveKeyPair& keys, const std::string& bytes) -> std::optional<ap::AgentReply> {
    zmq::socket_t dealer(context_, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    bus::make_curve_client(dealer, keys, agent_key->public_key);
    dealer.connect(endpoint);
    dealer.send(zmq::buffer(bytes), zmq::send_flags::none);
    zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
    if (bus::poll(&item, 1, 1500ms) <= 0) return std::nullopt;
    zmq::message_t frame;
    if (!dealer.recv(frame)) return std::nullopt;
    auto reply = ap::decode_agent_reply(bus::view(frame));
    return reply ? std::optional(*reply) : std::nullopt;
  };
  auto pong = call(*manager, ap::encode(ap::AgentCommand{3, ap::Ping{}}));
  ASSERT_TRUE(pong);
  ASSERT_TRUE(std::holds_alternative<ap::Pong>(pong->body));
  EXPECT_EQ(pong->request_id, 3u);
  auto garbage = call(*manager, std::string(24, '\x7f'));
  ASSERT_TRUE(garbage) << "a malformed command still gets an answer";
  ASSERT_TRUE(std::holds_alternative<ap::ProtocolError>(garbage->body));
  EXPECT_EQ(std::get<ap::ProtocolError>(garbage->body).kind, ap::ErrorKind::kInvalidRequest);
  EXPECT_FALSE(call(*stranger, ap::encode(ap::AgentCommand{4, ap::Ping{}}))) << "only the pinned manager key";
  // The agent keeps serving.
  EXPECT_TRUE(call(*manager, ap::encode(ap::AgentCommand{5, ap::ListWpars{}})));
}

TEST_F(Registration, AnOperationAskedWithAWaitIsAnsweredWhenItEndsAndWithoutAtOnce) {
  auto w = start_wpmd();
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password").exit_code, 0);
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  // A checkpoint that takes its workload 1.5 s.
  auto exec = agent(dir_ / "a1", {"wparexec", "-c", "-n", "slow", "--", "/bin/sh", "-c",
                                  "trap 'sleep 1.5; echo 1 > $WPM_STATE_DIR/s; touch $WPM_STATE_DIR/.complete' USR1; "
                                  "while :; do sleep 0.1; done"});
  ASSERT_EQ(exec.exit_code, 0) << exec.err;
  std::string endpoint = read_key_values(dir_ / "a1/endpoints")["agent"];
  endpoint = "tcp://127.0.0.1:" + endpoint.substr(endpoint.rfind(':') + 1);
  auto agent_key = bus::load_curve_keys(dir_ / "a1/keys", "agent");
  auto manager = bus::load_curve_keys(w->data_dir() + "/keys", "manager");
  ASSERT_TRUE(agent_key && manager);
  zmq::socket_t dealer(context_, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  bus::make_curve_client(dealer, *manager, agent_key->public_key);
  dealer.connect(endpoint);
  uint64_t request = 0;
  // One question; the answer and how long it took.
  auto ask = [&](const std::string& id, const std::string& action, uint32_t wait_ms)
      -> std::pair<std::optional<ap::OperationResult>, std::chrono::milliseconds> {
    ap::Operation op;
    op.operation_id = id;
    op.wpar = "slow";
    op.epoch = 1;
    op.action = action;
    op.wait_ms = wait_ms;
    auto t0 = std::chrono::steady_clock::now();
    dealer.send(zmq::buffer(ap::encode(ap::AgentCommand{++request, op})), zmq::send_flags::none);
    zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
    std::optional<ap::OperationResult> result;
    if (bus::poll(&item, 1, 10s) > 0) {
      zmq::message_t frame;
      if (dealer.recv(frame)) {
        auto reply = ap::decode_agent_reply(bus::view(frame));
        if (reply && reply->request_id == request && std::holds_alternative<ap::OperationResult>(reply->body)) {
          result = std::get<ap::OperationResult>(reply->body);
        }
      }
    }
    return {result, std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)};
  };
  // Without a wait: "running" at once, as before.
  auto [first, first_took] = ask("lp1.1", "pause", 0);
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->running);
  EXPECT_LT(first_took, 1000ms) << "answered at once, not held";
  // A wait shorter than what is left: held for it, then "running".
  auto [held, held_took] = ask("lp1.1", "pause", 300);
  ASSERT_TRUE(held);
  EXPECT_TRUE(held->running);
  EXPECT_GE(held_took, 250ms) << "held for the wait asked";
  // A wait longer than what is left: answered with the result as the operation ends.
  auto [done, done_took] = ask("lp1.1", "pause", 5000);
  ASSERT_TRUE(done);
  EXPECT_FALSE(done->running);
  EXPECT_EQ(done->exit_code, 0) << done->error;
  EXPECT_EQ(done->wpar_state, "P");
  EXPECT_LT(done_took, 4000ms) << "answered when it ended, not when the wait ran out";
  // An operation that ends at once is answered in the same exchange.
  auto [resumed, resumed_took] = ask("lp1.2", "resume", 5000);
  ASSERT_TRUE(resumed);
  EXPECT_FALSE(resumed->running) << "the first answer carries the result";
  EXPECT_EQ(resumed->exit_code, 0) << resumed->error;
  EXPECT_EQ(resumed->wpar_state, "A");
  agent(dir_ / "a1", {"rmwpar", "-F", "slow"});
}

TEST_F(Registration, TwoAgentsRegisterSideBySideUnderDistinctIds) {
  auto w = start_wpmd();
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password").exit_code, 0);
  ASSERT_EQ(configure(*w, dir_ / "a2", dir_ / "password").exit_code, 0);
  auto id1 = nlohmann::json::parse(read_file(dir_ / "a1/registration.json"))["systemId"];
  auto id2 = nlohmann::json::parse(read_file(dir_ / "a2/registration.json"))["systemId"];
  EXPECT_NE(id1, id2);
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  ASSERT_EQ(start_agent(dir_ / "a2").exit_code, 0);
  EXPECT_NE(read_key_values(dir_ / "a1/endpoints")["agent"], read_key_values(dir_ / "a2/endpoints")["agent"]);
}

TEST_F(Registration, ForceRegistersWithTheNewManagerThenLeavesTheOldOne) {
  auto old_manager = start_wpmd();
  auto new_manager = start_wpmd({}, true, "wpmd-new");
  ASSERT_EQ(configure(*old_manager, dir_ / "a1", dir_ / "password").exit_code, 0);
  // A failed registration with the new manager leaves the old one in place.
  auto refused = configure(*new_manager, dir_ / "a1", dir_ / "wrong", {"--force"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(count_type(events(*old_manager), "systemRemoved"), 0u);
  EXPECT_NE(read_file(dir_ / "a1/registration.json").find(port_of(old_manager->agent_public())), std::string::npos);

  // The old manager had placed a WPAR here at epoch 5: its numbers are not the new one's.
  std::ofstream(dir_ / "a1/placements/web1") << "5\n";
  auto moved = configure(*new_manager, dir_ / "a1", dir_ / "password", {"--force"});
  ASSERT_EQ(moved.exit_code, 0) << moved.err;
  EXPECT_NE(moved.out.find("unregistered"), std::string::npos) << moved.out;
  EXPECT_NE(moved.out.find("forgot the placement epochs of 1 WPAR"), std::string::npos) << moved.out;
  EXPECT_FALSE(fs::exists(dir_ / "a1/placements/web1"));
  EXPECT_EQ(count_type(events(*old_manager), "systemRemoved"), 1u);
  EXPECT_EQ(count_type(events(*new_manager), "systemRegistered"), 1u);
  // Again with the same manager: the same registration, nothing new.
  auto again = configure(*new_manager, dir_ / "a1", dir_ / "password", {"--force"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  auto log = events(*new_manager);
  EXPECT_EQ(count_type(log, "systemRegistered"), 1u);
  EXPECT_EQ(count_type(log, "systemRemoved"), 0u);
}

TEST_F(Registration, RegistrationsAreTakenOnlyOverCurveAndOnlyForTheConnectionsOwnKey) {
  auto w = start_wpmd();
  auto keys = bus::generate_curve_keys();
  auto other = bus::generate_curve_keys();
  ASSERT_TRUE(keys && other);
  ap::Register reg{std::string(32, 'p'), "node9", 9510, {}, keys->public_key};
  // The public port is plain: it no longer takes a registration.
  zmq::socket_t plain(context_, zmq::socket_type::dealer);
  plain.set(zmq::sockopt::linger, 0);
  plain.connect(w->agent_public());
  std::string bytes = ap::encode(ap::ManagerRequest{1, reg});
  plain.send(zmq::buffer(bytes), zmq::send_flags::none);
  zmq::pollitem_t item{plain.handle(), 0, ZMQ_POLLIN, 0};
  ASSERT_GT(bus::poll(&item, 1, 3000ms), 0);
  zmq::message_t frame;
  ASSERT_TRUE(plain.recv(frame));
  auto refused = ap::decode_manager_reply(bus::view(frame));
  ASSERT_TRUE(refused && std::holds_alternative<ap::ProtocolError>(refused->body));
  EXPECT_NE(std::get<ap::ProtocolError>(refused->body).message.find("over CURVE"), std::string::npos);
  // Over CURVE, a registration must name the key its connection proved.
  reg.public_key = other->public_key;
  auto mismatch = channel_call(w->agent_channel(), manager_public_key(*w), *keys, {2, reg});
  ASSERT_TRUE(mismatch && std::holds_alternative<ap::ProtocolError>(mismatch->body));
  EXPECT_NE(std::get<ap::ProtocolError>(mismatch->body).message.find("another key"), std::string::npos);
  EXPECT_EQ(count_type(events(*w), "systemRegistered"), 0u);
}

TEST_F(Registration, AnAgentOfAnOlderProtocolIsToldToUpgrade) {
  auto w = start_wpmd();
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password").exit_code, 0);
  auto keys = bus::load_curve_keys(dir_ / "a1/keys", "agent");
  ASSERT_TRUE(keys);
  ap::ManagerRequest old{1, ap::Heartbeat{1, 0, 0}};
  old.protocol_version = 0;  // an agent from before the field existed
  auto reply = channel_call(w->agent_channel(), manager_public_key(*w), *keys, old);
  ASSERT_TRUE(reply);
  ASSERT_TRUE(std::holds_alternative<ap::ProtocolError>(reply->body));
  EXPECT_NE(std::get<ap::ProtocolError>(reply->body).message.find("upgrade wpm-agent"), std::string::npos);
  auto current = channel_call(w->agent_channel(), manager_public_key(*w), *keys, {2, ap::Heartbeat{1, 0, 0}});
  ASSERT_TRUE(current && std::holds_alternative<ap::Ack>(current->body));
}

TEST_F(Registration, ARemovedSystemsOpenConnectionIsRefusedEvenWhenItsIdIsReused) {
  auto w = start_wpmd();
  ASSERT_EQ(configure(*w, dir_ / "a1", dir_ / "password", {"--hostname", "web1"}).exit_code, 0);
  auto old_keys = bus::load_curve_keys(dir_ / "a1/keys", "agent");
  ASSERT_TRUE(old_keys);
  std::string manager_key = manager_public_key(*w);
  // One connection, kept open across the removal.
  zmq::socket_t dealer(context_, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  bus::make_curve_client(dealer, *old_keys, manager_key);
  dealer.connect(w->agent_channel());
  auto call = [&](const ap::ManagerRequest& request) -> std::optional<ap::ManagerReply> {
    std::string bytes = ap::encode(request);
    dealer.send(zmq::buffer(bytes), zmq::send_flags::none);
    zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
    if (bus::poll(&item, 1, 3000ms) <= 0) return std::nullopt;
    zmq::message_t frame;
    if (!dealer.recv(frame)) return std::nullopt;
    auto reply = ap::decode_manager_reply(bus::view(frame));
    return reply ? std::optional(*reply) : std::nullopt;
  };
  auto first = call({1, ap::Heartbeat{1, 0, 0}});
  ASSERT_TRUE(first && std::holds_alternative<ap::Ack>(first->body));
  auto removed = call({2, ap::Unregister{}});
  ASSERT_TRUE(removed && std::holds_alternative<ap::Ack>(removed->body));
  // Another host takes the name, and with it the id "web1".
  ASSERT_EQ(configure(*w, dir_ / "a2", dir_ / "password", {"--hostname", "web1"}).exit_code, 0);
  EXPECT_NE(read_file(dir_ / "a2/registration.json").find("\"web1\""), std::string::npos);
  auto after = call({3, ap::Heartbeat{2, 0, 0}});
  ASSERT_TRUE(after);
  ASSERT_TRUE(std::holds_alternative<ap::ProtocolError>(after->body));
  EXPECT_EQ(std::get<ap::ProtocolError>(after->body).kind, ap::ErrorKind::kNotRegistered);
}

TEST_F(Registration, AKilledDaemonLeavesItsWparRunningAndTheRestartedOneReportsHowItEnded) {
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  std::string go = dir_ / "go";
  auto exec = agent(dir_ / "a1", {"wparexec", "-n", "ends", "--", "/bin/sh", "-c",
                                  "while [ ! -e " + go + " ]; do sleep 0.05; done; exit 7"});
  ASSERT_EQ(exec.exit_code, 0) << exec.err;
  EXPECT_NE(read_file(dir_ / "a1/logs/agent.log").find("local_command"), std::string::npos)
      << "the command ran through the daemon";
  int pid = std::stoi(read_file(dir_ / "a1/agent.pid"));
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] { return agent(dir_ / "a1", {"status"}).exit_code == 3; }, 10s));
  auto during = agent(dir_ / "a1", {"lswpar", "ends"});
  EXPECT_NE(during.out.find(" A "), std::string::npos) << "still running without its agent: " << during.out;
  std::ofstream(go).flush();
  // While no agent runs, the WPAR goes on and ends on its own.
  std::string listing;
  ASSERT_TRUE(wait_until(
      [&] {
        listing = agent(dir_ / "a1", {"lswpar", "-o", "json", "ends"}).out;
        return listing.find("\"exitCode\": 7") != std::string::npos;
      },
      10s))
      << listing;
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  auto after = agent(dir_ / "a1", {"lswpar", "ends"});
  EXPECT_EQ(after.exit_code, 0);
  EXPECT_NE(after.out.find(" 7\n"), std::string::npos) << after.out;
  EXPECT_NE(read_file(dir_ / "a1/logs/agent.log").find("wpars_reattached"), std::string::npos);
  agent(dir_ / "a1", {"rmwpar", "ends"});
}

TEST_F(Registration, AWparWhoseSupervisorDiedWhileTheAgentWasDownIsMarkedBrokenOnRestart) {
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  ASSERT_EQ(agent(dir_ / "a1", {"wparexec", "-n", "lost", "--", "/bin/sleep", "300"}).exit_code, 0);
  auto record = nlohmann::json::parse(read_file(dir_ / "a1/wpars/lost/status.json"));
  ASSERT_EQ(agent(dir_ / "a1", {"stop"}).exit_code, 0);
  // What a host crash does to it: supervisor and workload gone at once.
  ::kill(record["supervisorPid"].get<int>(), SIGKILL);
  ::kill(record["workloadPid"].get<int>(), SIGKILL);
  ASSERT_TRUE(wait_until([&] { return ::kill(record["supervisorPid"].get<int>(), 0) != 0; }, 10s));
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  auto listing = nlohmann::json::parse(agent(dir_ / "a1", {"lswpar", "-o", "json", "lost"}).out);
  ASSERT_EQ(listing.size(), 1u);
  EXPECT_EQ(listing[0]["state"], "broken");
  EXPECT_NE(listing[0]["error"].get<std::string>().find("supervisor is gone"), std::string::npos) << listing;
  EXPECT_NE(read_file(dir_ / "a1/logs/agent.log").find("wpars_reattached running=0 lost=1"), std::string::npos);
  EXPECT_EQ(agent(dir_ / "a1", {"rmwpar", "lost"}).exit_code, 0);
}

TEST_F(Registration, AForwardedCommandRunsInItsCallersDirectoryWithItsArgumentsUntouched) {
  ASSERT_EQ(start_agent(dir_ / "a1").exit_code, 0);
  // A relative path, a multibyte character, and a --data that belongs to the workload.
  std::string script = "cd '" + dir_.path() + "' && '" + bin("wpm-agent") +
                       "' --data a1 wparexec -n rel -- /bin/sh -c 'printf %s \"$1\" > out.txt' sh "
                       "\"$(printf '\\303\\251')\" --data /nowhere";
  auto r = run({"/bin/sh", "-c", script}, 30s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(wait_until([&] { return fs::exists(dir_ / "out.txt"); }, 10s));
  EXPECT_EQ(read_file(dir_ / "out.txt"), "\xc3\xa9");
  EXPECT_NE(read_file(dir_ / "a1/logs/agent.log").find("command=wparexec"), std::string::npos)
      << "it ran through the daemon";
  agent(dir_ / "a1", {"rmwpar", "rel"});
  // Bytes that are not UTF-8 reach the command intact, which refuses them clearly.
  auto binary = run({"/bin/sh", "-c",
                     "'" + bin("wpm-agent") + "' --data '" + (dir_ / "a1") +
                         "' wparexec -n bin -- /bin/echo \"$(printf '\\351')\""},
                    30s);
  EXPECT_NE(binary.exit_code, 0);
  EXPECT_LT(binary.exit_code, 128) << "refused, not crashed: " << binary.err;
  EXPECT_NE(binary.err.find("not valid UTF-8"), std::string::npos) << binary.err;
}

TEST_F(Registration, TheWparAndCgroupRootsFollowTheConfigurationAndStayHiddenFromSystemWpars) {
  std::string elsewhere = dir_ / "elsewhere";
  std::string cgroup = fmt::format("wpm-test/custom-{}", ::getpid());
  fs::create_directories(dir_ / "a1");
  std::ofstream(dir_ / "a1/agent.toml") << "[agent]\nwpar_root = \"" << elsewhere << "\"\ncgroup_root = \"" << cgroup
                                        << "\"\n";
  auto made = agent(dir_ / "a1", {"mkwpar", "-n", "sys", "-s"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_TRUE(fs::exists(elsewhere + "/sys/spec.json"));
  EXPECT_FALSE(fs::exists(dir_ / "a1/wpars/sys"));
  std::string record = read_file(elsewhere + "/sys/status.json");
  int init = nlohmann::json::parse(record)["workloadPid"].get<int>();
  EXPECT_NE(read_file(fmt::format("/proc/{}/cgroup", init)).find(cgroup + "/sys"), std::string::npos);
  // Inside, neither the WPAR root nor the agent's data directory shows anything.
  auto peek = agent(dir_ / "a1", {"clogin", "sys", "--", "/bin/sh", "-c",
                                  "(ls -A " + elsewhere + "; ls -A " + (dir_ / "a1") + ") 2>/dev/null | grep -c ."});
  EXPECT_EQ(peek.out, "0\n") << peek.out << peek.err;
  EXPECT_EQ(agent(dir_ / "a1", {"stopwpar", "-F", "sys"}).exit_code, 0);
  EXPECT_EQ(agent(dir_ / "a1", {"rmwpar", "sys"}).exit_code, 0);
  // The agent's cgroup subtree, empty now.
  std::error_code ec;
  for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    ::rmdir((hierarchy.path() / cgroup).c_str());
  }
}

TEST_F(Registration, UsageErrorsExitWithTheirDocumentedCodes) {
  EXPECT_EQ(run({bin("wpm-agent"), "--data", dir_ / "a1", "configure"}).exit_code, 2) << "--manager is required";
  EXPECT_EQ(run({bin("wpm-agent"), "--data", dir_ / "a1", "no-such-command"}).exit_code, 2);
  EXPECT_EQ(run({bin("wpm-agent"), "--data", dir_ / "a1", "chkptwpar"}).exit_code, 1) << "the seed's code";
  EXPECT_EQ(run({bin("wpmd"), "--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(run({bin("wpm-wpar-supervisor")}).exit_code, 2) << "its required options missing";
  EXPECT_EQ(run({bin("wpm"), "--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(run({bin("wpm-agent"), "--data", dir_ / "a1", "status"}).exit_code, 3) << "not running";
}

}  // namespace
}  // namespace wpm::testing
