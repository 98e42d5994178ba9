// The gateway in process, on a real store (RocksDB in a temporary
// directory) with the inventory service running, and PAM with a test service
// file (pam_succeed_if admits listed users whatever the password; the
// end-to-end test logs real users in through pam_unix).

#include "services/gateway/gateway.h"

#include <gtest/gtest.h>

#include <sstream>
#include <spdlog/sinks/null_sink.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "schemas/codec.h"
#include "services/kernel/identity.h"

namespace wpm::gateway {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A LocalLog shared by threads: appends one at a time, as a sequencer would.
class LockedLog final : public kernel::EventLog {
 public:
  LockedLog(kernel::EventLog& inner, std::mutex& mutex) : inner_(inner), mutex_(mutex) {}
  Result<AppendResult> append(const AppendRequest& r) override {
    std::lock_guard lock(mutex_);
    return inner_.append(r);
  }
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return inner_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override { return inner_.read_range(r); }

 private:
  kernel::EventLog& inner_;
  std::mutex& mutex_;
};

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(WPM_TEST_TMP_DIR) / fmt::format("gateway-{}", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "pam");
    std::ofstream(dir_ / "pam" / "wpm-test") << "auth requisite pam_succeed_if.so quiet user in alice:bob:carol\n"
                                                "auth required pam_permit.so\n"
                                                "account required pam_permit.so\n";
    eventstore::StoreOptions o;
    o.data_dir = (dir_ / "data").string();
    auto store = eventstore::Store::open(o, log_);
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
    embedded_ = std::make_unique<kernel::EmbeddedStore>(*store_);
    inventory_local_ = std::make_unique<kernel::LocalLog>(*store_, clock_, access_, kernel::service_identity("inventory"));
    gateway_local_ = std::make_unique<kernel::LocalLog>(*store_, clock_, access_, kernel::service_identity("gateway"));
    inventory_log_ = std::make_unique<LockedLog>(*inventory_local_, append_mutex_);
    inventory_ = std::make_unique<inventory::InventoryService>(*inventory_log_, embedded_.get(), *embedded_, clock_,
                                                               nullptr, log_);
    ASSERT_TRUE(inventory_->start());
    inventory_thread_ = std::thread([this] { inventory_->run(stop_); });
    // The executor, without an agent client: its operations fail as unreachable.
    executor_local_ = std::make_unique<kernel::LocalLog>(*store_, clock_, access_, kernel::service_identity("executor"));
    executor_log_ = std::make_unique<LockedLog>(*executor_local_, append_mutex_);
    // Its agents are reconciled when a test says so (liveness_.reconciled).
    executor::ExecutorServiceOptions eo;
    eo.request_probe = [this](const std::string& id) {
      std::lock_guard lock(probes_mutex_);
      probes_asked_.insert(id);
    };
    executor_ = std::make_unique<executor::ExecutorService>(*executor_log_, embedded_.get(), *embedded_, clock_,
                                                            *inventory_, nullptr, &liveness_, log_, eo);
    ASSERT_TRUE(executor_->start());
    executor_thread_ = std::thread([this] { executor_->run(stop_); });
    GatewayDeps deps;
    deps.make_log = [this] { return std::make_unique<LockedLog>(*gateway_local_, append_mutex_); };
    deps.reads = embedded_.get();
    deps.snapshots = embedded_.get();
    deps.signal = embedded_.get();
    deps.inventory = inventory_.get();
    deps.executor = executor_.get();
    deps.clock = &clock_;
    GatewayOptions options;
    options.endpoint = "tcp://127.0.0.1:0";
    options.data_dir = (dir_ / "data").string();
    options.pam.service = "wpm-test";
    options.pam.config_dir = (dir_ / "pam").string();
    options.decision_timeout = std::chrono::milliseconds(5000);
    gateway_ = std::make_unique<Gateway>(context_, deps, options, log_);
    auto started = gateway_->start();
    ASSERT_TRUE(started) << started.error().message;
    std::ifstream in(dir_ / "data" / "keys" / "root.credential");
    std::getline(in, root_);
    worker_log_ = deps.make_log();
  }
  void TearDown() override {
    gateway_.reset();
    stop_ = true;
    if (inventory_thread_.joinable()) inventory_thread_.join();
    if (executor_thread_.joinable()) executor_thread_.join();
    executor_.reset();
    inventory_.reset();
    embedded_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  json call(const std::string& command, json args = json::object(), const std::string& token = "",
            const std::string& id = "") {
    json request = {{"v", 1}, {"command", command}, {"args", std::move(args)}};
    if (!token.empty()) request["token"] = token;
    request["id"] = id.empty() ? fmt::format("test-{}", ++ids_) : id;
    return gateway_->handle(request, "127.0.0.1", *worker_log_);
  }
  std::string login(const std::string& user) {
    json r = call("login", {{"user", user}, {"password", "secret"}});
    EXPECT_TRUE(r["ok"].get<bool>()) << r.dump();
    return r["result"].value("token", "");
  }
  std::vector<Event> stream(const std::string& id) { return *kernel::read_stream_events(*embedded_, id, 1, 100); }

  std::shared_ptr<spdlog::logger> log_ =
      std::make_shared<spdlog::logger>("gateway-test", std::make_shared<spdlog::sinks::null_sink_mt>());
  fs::path dir_;
  kernel::SystemClock clock_;
  kernel::StreamAccess access_;
  std::mutex append_mutex_;
  zmq::context_t context_{1};
  std::unique_ptr<eventstore::Store> store_;
  std::unique_ptr<kernel::EmbeddedStore> embedded_;
  std::unique_ptr<kernel::LocalLog> inventory_local_, gateway_local_, executor_local_;
  std::unique_ptr<kernel::EventLog> inventory_log_, worker_log_, executor_log_;
  std::unique_ptr<inventory::InventoryService> inventory_;
  std::unique_ptr<executor::ExecutorService> executor_;
  inventory::Liveness liveness_;
  std::mutex probes_mutex_;
  std::set<std::string> probes_asked_;
  std::atomic<bool> stop_{false};
  std::thread inventory_thread_, executor_thread_;
  std::unique_ptr<Gateway> gateway_;
  std::string root_;
  int ids_ = 0;
};

TEST_F(GatewayTest, RootIsMappedAtFirstStartAndAUserWithNoRoleSeesNothing) {
  json who = call("whoami", {}, root_);
  ASSERT_TRUE(who["ok"].get<bool>()) << who.dump();
  EXPECT_EQ(who["result"]["user"], "root");
  EXPECT_EQ(who["result"]["roles"], json({"administrator", "WPARAdministrator"}));
  std::string alice = login("alice");
  who = call("whoami", {}, alice);
  EXPECT_EQ(who["result"]["roles"], json::array());
  json list = call("wpar.list", {}, alice);
  EXPECT_FALSE(list["ok"].get<bool>());
  EXPECT_EQ(list["error"]["code"], "forbidden");
  EXPECT_NE(list["error"]["message"].get<std::string>().find("alice (no role) may not wpar.list"), std::string::npos)
      << list.dump();
  EXPECT_EQ(call("wpar.list")["error"]["code"], "unauthenticated") << "no token";
  EXPECT_EQ(call("wpar.list", {}, "wpm_forged")["error"]["code"], "unauthenticated");
}

TEST_F(GatewayTest, ACommandIsRecordedDecidedAndAnsweredWithItsEvents) {
  json role = call("role.add", {{"role", "WPARUser"}, {"users", {"alice"}}}, root_);
  ASSERT_TRUE(role["ok"].get<bool>()) << role.dump();
  // The answer lists what the decision wrote, not the request itself.
  ASSERT_EQ(role["result"]["events"].size(), 1u) << role.dump();
  EXPECT_NE(role["result"]["events"][0]["type"], "commandRequested") << role.dump();
  std::string alice = login("alice");
  json made = call("wpar.create", {{"name", "web1"}, {"type", "application"}, {"command", "/bin/sleep 9"}}, alice, "c-1");
  ASSERT_TRUE(made["ok"].get<bool>()) << made.dump();
  EXPECT_EQ(made["result"]["accepted"], true);
  ASSERT_EQ(made["result"]["events"].size(), 1u);
  EXPECT_EQ(made["result"]["events"][0]["stream"], "wpar/web1");
  // Read-your-writes: the list holds it at once.
  json list = call("wpar.list", {}, alice);
  ASSERT_EQ(list["result"].size(), 1u);
  EXPECT_EQ(list["result"][0]["state"], "U");
  // The request was recorded with its actor before the decision.
  auto c1 = stream("command/c-1");
  ASSERT_EQ(c1.size(), 2u);
  EXPECT_EQ(c1[0].actor, "user:alice");
  EXPECT_EQ(std::get<CommandRequested>(c1[0].payload).user, "alice");
  // The same command id again: the first answer, nothing new written.
  uint64_t head = store_->head();
  json again = call("wpar.create", {{"name", "web1"}, {"type", "application"}, {"command", "/bin/sleep 9"}}, alice, "c-1");
  EXPECT_EQ(again["result"]["accepted"], true) << again.dump();
  EXPECT_EQ(store_->head(), head);
  // A refusal by the executor carries its reason and the command id.
  json missing = call("wpar.remove", {{"name", "nope"}}, alice, "c-2");
  EXPECT_EQ(missing["error"]["code"], "not_found");
  EXPECT_EQ(missing["error"]["command"], "c-2");
  // A refusal by role is recorded too.
  json settings = call("settings.set", {{"key", "heartbeat.timeout"}, {"value", "20s"}}, alice, "c-3");
  EXPECT_EQ(settings["error"]["code"], "forbidden");
  auto c3 = stream("command/c-3");
  ASSERT_EQ(c3.size(), 2u);
  EXPECT_FALSE(std::get<CommandDecided>(c3[1].payload).accepted);
  EXPECT_EQ(std::get<CommandDecided>(c3[1].payload).code, "forbidden");
  // The prefix of a name is enough.
  EXPECT_EQ(call("wpar.show", {{"name", "we"}}, alice)["result"]["name"], "web1");
}

TEST_F(GatewayTest, APrivilegedWparIsTheWparAdministratorsToMakeAndToChange) {
  std::string alice = login("alice"), bob = login("bob");
  ASSERT_TRUE(call("role.add", {{"role", "WPARUser"}, {"users", {"alice"}}}, root_)["ok"].get<bool>());
  ASSERT_TRUE(call("role.add", {{"role", "WPARAdministrator"}, {"users", {"bob"}}}, root_)["ok"].get<bool>());
  json refused = call("wpar.create", {{"name", "raw1"}, {"privileged", true}}, alice, "p-1");
  EXPECT_EQ(refused["error"]["code"], "forbidden") << refused.dump();
  EXPECT_NE(refused["error"]["message"].get<std::string>().find("WPARAdministrator"), std::string::npos);
  ASSERT_TRUE(call("wpar.create", {{"name", "raw1"}, {"privileged", true}}, bob, "p-2")["ok"].get<bool>());
  EXPECT_EQ(call("wpar.show", {{"name", "raw1"}}, alice)["result"]["privileged"], true);
  // What it runs is not alice's to change (by its name or a prefix), nor its mode.
  for (const char* name : {"raw1", "raw"}) {
    json changed = call("wpar.modify", {{"name", name}, {"command", "/bin/sh"}}, alice, std::string("p-3") + name);
    EXPECT_EQ(changed["error"]["code"], "forbidden") << changed.dump();
  }
  EXPECT_EQ(call("wpar.modify", {{"name", "raw1"}, {"privileged", false}}, alice, "p-4")["error"]["code"], "forbidden");
  // A copy of it is hers, and runs filtered.
  ASSERT_TRUE(call("wpar.create", {{"name", "copy1"}, {"from", "raw1"}}, alice, "p-5")["ok"].get<bool>());
  EXPECT_EQ(call("wpar.show", {{"name", "copy1"}}, alice)["result"]["privileged"], false);
  json mine = call("wpar.modify", {{"name", "copy1"}, {"cpuShares", 300}}, alice, "p-6");
  EXPECT_TRUE(mine["ok"].get<bool>()) << mine.dump();
}

TEST_F(GatewayTest, ALifecycleCommandStartsATaskWhoseOperationsAreShown) {
  std::string alice = login("alice");
  ASSERT_TRUE(call("role.add", {{"role", "WPARUser"}, {"users", {"alice"}}}, root_)["ok"].get<bool>());
  // A registered system to deploy on (its agent is not reachable from here).
  AppendRequest reg;
  SystemRegistered r{"node1", "node1", "127.0.0.1", std::string(40, 'k'), {}, 1};
  reg.events.push_back(EventDraft{"registry", "", "", "", r});
  ASSERT_TRUE(inventory_log_->append(reg));
  ASSERT_TRUE(call("wpar.create", {{"name", "web1"}}, alice)["ok"].get<bool>());
  json deployed = call("wpar.deploy", {{"name", "web1"}, {"system", "node1"}}, alice, "d-1");
  ASSERT_TRUE(deployed["ok"].get<bool>()) << deployed.dump();
  EXPECT_EQ(deployed["result"]["task"], "d-1") << "the task has the command's id";
  EXPECT_EQ(deployed["result"]["decidedBy"], "service:executor");
  // Nothing is sent to an agent not reconciled since this manager started:
  // the operation waits, and a probe of node1 is asked for.
  json task;
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lock(probes_mutex_);
      if (probes_asked_.contains("node1")) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  task = call("task.show", {{"id", "d-1"}}, alice);
  EXPECT_EQ(task["result"]["state"], "running");
  EXPECT_TRUE(task["result"]["operations"].empty()) << task.dump();
  {
    std::lock_guard lock(probes_mutex_);
    EXPECT_TRUE(probes_asked_.contains("node1"));
  }
  EXPECT_GT(executor_->stats().operations_held, 0u);
  liveness_.reconciled("node1", clock_.monotonic_ns());
  // The executor records the operation, finds no agent client and fails it, saying so.
  for (int i = 0; i < 200; ++i) {
    task = call("task.show", {{"id", "d-"}}, alice);
    if (task["ok"].get<bool>() && task["result"]["state"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_TRUE(task["ok"].get<bool>()) << task.dump();
  EXPECT_EQ(task["result"]["state"], "failed");
  ASSERT_EQ(task["result"]["operations"].size(), 1u);
  EXPECT_EQ(task["result"]["operations"][0]["outcome"], "unsent");
  EXPECT_NE(task["result"]["operations"][0]["error"].get<std::string>().find("cannot reach agents"), std::string::npos);
  EXPECT_NE(task["result"]["recovery"].get<std::string>().find("withdrawn"), std::string::npos);
  json list = call("task.list", {{"wpar", "web1"}}, alice);
  ASSERT_EQ(list["result"].size(), 1u);
  EXPECT_EQ(list["result"][0]["id"], "d-1");
  // Undeployed again: removal takes the definition, at once.
  json removed = call("wpar.remove", {{"name", "web1"}}, alice, "r-1");
  ASSERT_TRUE(removed["ok"].get<bool>()) << removed.dump();
  json gone = call("wpar.show", {{"name", "web1"}}, alice);
  EXPECT_EQ(gone["error"]["code"], "not_found") << "read-your-writes: the definition is gone";
  EXPECT_EQ(call("task.show", {{"id", "zz"}}, alice)["error"]["code"], "not_found");
  EXPECT_EQ(call("task.cancel", {{"task", "d-1"}}, alice, "x-1")["error"]["code"], "conflict") << "it ended";
}

TEST_F(GatewayTest, LogoutRevokesTheTokenAndFailedLoginsAreLimitedAndRecordedWithoutThePassword) {
  std::string bob = login("bob");
  ASSERT_TRUE(call("logout", {}, bob)["ok"].get<bool>());
  EXPECT_EQ(call("whoami", {}, bob)["error"]["code"], "unauthenticated");
  for (int i = 0; i < 5; ++i) {
    json r = call("login", {{"user", "mallory"}, {"password", "guess-password-1"}});
    EXPECT_EQ(r["error"]["code"], "unauthenticated") << r.dump();
    EXPECT_EQ(r["error"]["message"], "wrong user name or password");
  }
  json limited = call("login", {{"user", "mallory"}, {"password", "guess-password-1"}});
  EXPECT_EQ(limited["error"]["code"], "rate_limited") << limited.dump();
  auto refusals = stream("login-refusals");
  ASSERT_GE(refusals.size(), 1u);
  EXPECT_EQ(std::get<LoginRefused>(refusals[0].payload).user, "mallory");
  // No password or token in any event.
  auto all = kernel::decode_records(store_->read_range(ReadRangeRequest{1, 0, 0})->records);
  for (const auto& e : *all) {
    std::string text = encode_event(e);
    EXPECT_EQ(text.find("guess-password-1"), std::string::npos) << e.sequence;
    EXPECT_EQ(text.find(bob), std::string::npos) << e.sequence;
    EXPECT_EQ(text.find(root_), std::string::npos) << e.sequence;
  }
}

TEST_F(GatewayTest, RequestsAreCheckedAndTheEventStreamIsFilteredByRole) {
  EXPECT_EQ(gateway_->handle({{"v", 1}, {"command", "whoami"}, {"colour", 1}}, "", *worker_log_)["error"]["code"],
            "invalid");
  EXPECT_EQ(gateway_->handle({{"v", 9}, {"command", "whoami"}}, "", *worker_log_)["error"]["code"], "unsupported");
  EXPECT_EQ(gateway_->handle({{"command", "whoami"}}, "", *worker_log_)["error"]["code"], "invalid");
  EXPECT_EQ(call("wpar.fly", {}, root_)["error"]["code"], "invalid");
  ASSERT_TRUE(call("role.add", {{"role", "WPARMonitor"}, {"users", {"carol"}}}, root_)["ok"].get<bool>());
  std::string carol = login("carol");
  json events = call("events.read", {{"from", 1}}, carol);
  ASSERT_TRUE(events["ok"].get<bool>()) << events.dump();
  bool saw_role = false;
  for (const auto& e : events["result"]["events"]) {
    EXPECT_NE(e["type"], "sessionOpened") << "a monitor does not see sessions";
    saw_role |= e["type"] == "roleMappingChanged";
  }
  EXPECT_TRUE(saw_role);
  json admin = call("events.read", {{"from", 1}, {"types", {"sessionOpened"}}}, root_);
  ASSERT_EQ(admin["result"]["events"].size(), 1u);
  EXPECT_EQ(admin["result"]["next"], store_->head() + 1);
}

// With "lines" the events follow the reply's JSON, one JSON line each, the
// same events as the array form and filtered alike (what `wpm events watch
// -o json` prints without parsing).
TEST_F(GatewayTest, TheEventStreamCanSendEachEventAsALineAfterTheReply) {
  ASSERT_TRUE(call("group.create", {{"name", "web"}}, root_)["ok"].get<bool>());
  zmq::socket_t s(context_, zmq::socket_type::req);
  s.set(zmq::sockopt::rcvtimeo, 10'000);
  s.connect(gateway_->endpoint());
  auto read = [&](json args) {
    s.send(zmq::buffer(json{{"v", 1}, {"token", root_}, {"command", "events.read"}, {"args", std::move(args)}}.dump()));
    zmq::message_t reply;
    EXPECT_TRUE(s.recv(reply));
    return reply.to_string();
  };
  json array = json::parse(read({{"from", 1}}));
  ASSERT_TRUE(array["ok"].get<bool>()) << array.dump();
  std::string text = read({{"from", 1}, {"lines", true}});
  size_t newline = text.find('\n');
  ASSERT_NE(newline, std::string::npos) << text;
  json head = json::parse(text.substr(0, newline));
  ASSERT_TRUE(head["ok"].get<bool>()) << head.dump();
  EXPECT_TRUE(head["result"]["events"].empty());
  EXPECT_EQ(head["result"]["next"], array["result"]["next"]);
  std::vector<json> lines;
  std::istringstream rest(text.substr(newline + 1));
  for (std::string line; std::getline(rest, line);) lines.push_back(json::parse(line));
  EXPECT_EQ(head["result"]["lines"], lines.size());
  ASSERT_EQ(lines.size(), array["result"]["events"].size());
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i], array["result"]["events"][i]);
  // Filtered as the array form is.
  std::string sessions = read({{"from", 1}, {"lines", true}, {"types", {"groupDefined"}}});
  EXPECT_EQ(json::parse(sessions.substr(0, sessions.find('\n')))["result"]["lines"], 1);
}

TEST_F(GatewayTest, OverTheSocketALongPollWaitsForTheNextEventWithoutHoldingAWorker) {
  zmq::socket_t s(context_, zmq::socket_type::req);
  s.set(zmq::sockopt::rcvtimeo, 10'000);
  s.connect(gateway_->endpoint());
  uint64_t next = store_->head() + 1;
  json request = {{"v", 1}, {"token", root_}, {"command", "events.read"}, {"args", {{"from", next}, {"waitMs", 5000}}}};
  s.send(zmq::buffer(request.dump()));
  // Meanwhile other requests are served, and one of them writes an event.
  json made = call("group.create", {{"name", "web"}}, root_);
  ASSERT_TRUE(made["ok"].get<bool>()) << made.dump();
  zmq::message_t reply;
  ASSERT_TRUE(s.recv(reply));
  json r = json::parse(reply.to_string());
  ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
  ASSERT_FALSE(r["result"]["events"].empty());
  EXPECT_EQ(r["result"]["events"][0]["sequence"], next);
  // A request nested too deep is refused before it is parsed, and the
  // gateway goes on (a deeply nested value would exhaust a worker's stack).
  std::string deep = R"({"v":1,"command":"version","args":)" + std::string(200'000, '[') + std::string(200'000, ']') + "}";
  s.send(zmq::buffer(deep));
  ASSERT_TRUE(s.recv(reply));
  EXPECT_EQ(json::parse(reply.to_string())["error"]["code"], "invalid") << reply.to_string();
  // With nothing new, the poll ends in a heartbeat.
  request["args"] = {{"from", store_->head() + 1}, {"waitMs", 300}};
  s.send(zmq::buffer(request.dump()));
  ASSERT_TRUE(s.recv(reply));
  r = json::parse(reply.to_string());
  EXPECT_EQ(r["result"]["heartbeat"], true) << r.dump();
}

}  // namespace
}  // namespace wpm::gateway

namespace wpm::gateway {
namespace {

TEST(WparJson, TheTextWriterMakesTheSameObjectAsTheJsonOne) {
  inventory::WparRecord r;
  r.wpar = WparDefinition{"web\"1", "application", "/bin/echo a\\b\n", true, "SIGUSR2", "", 5, 50, 1 << 30, 9,
                          "10.0.0.5/24", "+cap_net_admin", "default", "node1", true, "A"};
  r.version = 3;
  r.created_ns = 11;
  r.changed_ns = 22;
  std::string text;
  append_wpar_json(text, r);
  EXPECT_EQ(nlohmann::json::parse(text), wpar_json(r));
  EXPECT_EQ(text, wpar_json(r).dump()) << "byte for byte, member order included";
}

}  // namespace
}  // namespace wpm::gateway
