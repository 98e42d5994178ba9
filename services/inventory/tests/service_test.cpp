// The inventory service against a real store (RocksDB in a temporary
// directory) on a simulated clock: commands decided exactly once, conflicts
// decided again, systems Offline after the heartbeat timeout and Online at
// the next heartbeat, and a restart from a snapshot equal to a full fold.

#include "services/inventory/service.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <unistd.h>

#include <filesystem>

#include "services/kernel/identity.h"

namespace wpm::inventory {
namespace {

namespace fs = std::filesystem;

class InventoryServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("wpm-inventory-service-{}", ::getpid());
    fs::remove_all(dir_);
    eventstore::StoreOptions o;
    o.data_dir = dir_.string();
    auto store = eventstore::Store::open(o, log_);
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
    inventory_log_ = std::make_unique<kernel::LocalLog>(*store_, clock_, access_, kernel::service_identity("inventory"));
    gateway_log_ = std::make_unique<kernel::LocalLog>(*store_, clock_, access_, kernel::service_identity("gateway"));
    embedded_ = std::make_unique<kernel::EmbeddedStore>(*store_);
    service_ = make_service();
    ASSERT_TRUE(service_->start());
  }
  void TearDown() override {
    service_.reset();
    embedded_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  std::unique_ptr<InventoryService> make_service() {
    InventoryServiceOptions options;
    options.idle_wait = std::chrono::milliseconds(1);
    return std::make_unique<InventoryService>(*inventory_log_, embedded_.get(), *embedded_, clock_, &liveness_, log_,
                                              options);
  }
  // Records a command as the gateway does.
  void request(const std::string& id, const std::string& command, const nlohmann::json& args) {
    AppendRequest r;
    r.idempotency_key = "request/" + id;
    r.expectations.push_back(StreamExpectation{"command/" + id, ExpectKind::kNoStream, 0});
    r.events.push_back(EventDraft{"command/" + id, id, "", "user:alice",
                                  CommandRequested{command, args.dump(), "alice", {"WPARUser"}, "127.0.0.1"}});
    auto a = gateway_log_->append(r);
    ASSERT_TRUE(a) << a.error().message;
  }
  std::vector<Event> stream(const std::string& id) {
    return *kernel::read_stream_events(*embedded_, id, 1, 1000);
  }
  const CommandDecided& decision(const std::vector<Event>& events) {
    return std::get<CommandDecided>(events.at(1).payload);
  }
  Inventory state() {
    Inventory copy;
    service_->read([&](const Inventory& s) { copy = s; });
    return copy;
  }

  std::shared_ptr<spdlog::logger> log_ =
      std::make_shared<spdlog::logger>("inventory-service", std::make_shared<spdlog::sinks::null_sink_mt>());
  fs::path dir_;
  kernel::SimulatedClock clock_;
  kernel::StreamAccess access_;
  Liveness liveness_;
  std::unique_ptr<eventstore::Store> store_;
  std::unique_ptr<kernel::LocalLog> inventory_log_, gateway_log_;
  std::unique_ptr<kernel::EmbeddedStore> embedded_;
  std::unique_ptr<InventoryService> service_;
};

TEST_F(InventoryServiceTest, ACommandIsDecidedOnceWithItsEventsInTheSameBatch) {
  EXPECT_TRUE(state().groups.contains("default")) << "the default group is made at the first start";
  request("c1", "wpar.create", {{"name", "web1"}, {"type", "application"}, {"command", "/bin/true"}});
  request("c2", "wpar.create", {{"name", "web1"}});  // the same name again: refused
  auto written = service_->step();
  ASSERT_TRUE(written) << written.error().message;
  EXPECT_EQ(*written, 2u);
  auto c1 = stream("command/c1");
  ASSERT_EQ(c1.size(), 2u);
  EXPECT_TRUE(decision(c1).accepted);
  auto wpar = stream("wpar/web1");
  ASSERT_EQ(wpar.size(), 1u);
  EXPECT_EQ(wpar[0].correlation_id, "c1") << "the events carry the command as their correlation id";
  EXPECT_EQ(wpar[0].sequence + 1, c1[1].sequence) << "the decision and its events are one batch";
  auto c2 = stream("command/c2");
  ASSERT_EQ(c2.size(), 2u);
  EXPECT_FALSE(decision(c2).accepted);
  EXPECT_EQ(decision(c2).code, "already_exists");
  EXPECT_NE(decision(c2).message.find("exists"), std::string::npos);
  // Nothing is decided twice: a second step, and a restarted service, write nothing.
  EXPECT_EQ(*service_->step(), 0u);
  service_ = make_service();
  ASSERT_TRUE(service_->start());
  EXPECT_EQ(*service_->step(), 0u);
  EXPECT_EQ(stream("command/c1").size(), 2u);
  EXPECT_TRUE(state().pending.empty());
}

TEST_F(InventoryServiceTest, ADecisionOvertakenByAnotherWriterIsDecidedAgainOnTheNewState) {
  ASSERT_TRUE(service_->step());
  request("c1", "wpar.create", {{"name", "web1"}});
  // Another writer (a second inventory, say) makes web1 before this one decides.
  AppendRequest other;
  other.events.push_back(EventDraft{"wpar/web1", "", "", "",
                                    WparDefined{WparDefinition{.name = "web1", .type = "system", .group = "default"}, true}});
  ASSERT_TRUE(inventory_log_->append(other));
  ASSERT_TRUE(service_->step());
  auto c1 = stream("command/c1");
  ASSERT_EQ(c1.size(), 2u);
  EXPECT_FALSE(decision(c1).accepted);
  EXPECT_EQ(decision(c1).code, "already_exists");
  EXPECT_EQ(stream("wpar/web1").size(), 1u);
}

TEST_F(InventoryServiceTest, ASilentSystemGoesOfflineAfterTheTimeoutAndComesBackWithAHeartbeat) {
  AppendRequest r;
  r.events.push_back(EventDraft{"registry", "", "", "", SystemRegistered{"node1", "node1", "a", "k1", {}, 9510}});
  ASSERT_TRUE(inventory_log_->append(r));
  clock_.advance_ns(14'000'000'000);
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "online") << "every system gets the whole timeout first";
  clock_.advance_ns(2'000'000'000);
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "offline");
  EXPECT_NE(state().system_status("node1").reason.find("no heartbeat for 15 s"), std::string::npos);
  EXPECT_EQ(*service_->step(), 0u) << "one event per change, none per check";
  liveness_.seen("node1", clock_.monotonic_ns());
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "offline") << "judged at most every 100 ms";
  clock_.advance_ns(100'000'000);
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "online");
  EXPECT_EQ(stream("system/node1").size(), 2u);
  // The timeout is a setting.
  request("s1", "settings.set", {{"key", "heartbeat.timeout"}, {"value", "60s"}});
  ASSERT_TRUE(service_->step());
  clock_.advance_ns(30'000'000'000);
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "online");
}

TEST_F(InventoryServiceTest, AnAgentPortThatFailsItsProbeMakesTheSystemUnreachableUntilItAnswers) {
  AppendRequest r;
  r.events.push_back(EventDraft{"registry", "", "", "", SystemRegistered{"node1", "node1", "a", "k1", {}, 9510}});
  ASSERT_TRUE(inventory_log_->append(r));
  clock_.advance_ns(1'000'000'000);
  liveness_.seen("node1", clock_.monotonic_ns());
  liveness_.set_probe("node1", {false, "agent port a:9510: connection refused", {}, clock_.monotonic_ns(), 1});
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "unreachable");
  EXPECT_EQ(state().system_status("node1").reason, "agent port a:9510: connection refused");
  EXPECT_EQ(*service_->step(), 0u) << "the same failed probe changes nothing again";
  clock_.advance_ns(1'000'000'000);
  liveness_.set_probe("node1", {true, "", {{"hand1", "system", "A"}}, clock_.monotonic_ns(), 2});
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "online");
  ASSERT_TRUE(state().wpars.contains("hand1")) << "the reported WPAR is reconciled as discovered";
  EXPECT_EQ(state().wpars.at("hand1").wpar.system, "node1");
}

// Reconciliation before commands: an agent is reconciled once a probe
// taken after its last (re)connection has been folded into the log; a
// failed probe, an agent that started again, or a system back Online after
// a break need a new one.
TEST_F(InventoryServiceTest, AnAgentIsReconciledOnlyByAReportTakenAfterItLastConnected) {
  Liveness l;
  EXPECT_FALSE(l.reconciled_since_connected("n")) << "nothing reconciled since the manager started";
  l.reconciled("n", 10);
  EXPECT_TRUE(l.reconciled_since_connected("n"));
  l.reconnected("n", 20);
  EXPECT_FALSE(l.reconciled_since_connected("n"));
  l.reconciled("n", 15);
  EXPECT_FALSE(l.reconciled_since_connected("n")) << "a report from before it connected again";
  l.reconciled("n", 25);
  EXPECT_TRUE(l.reconciled_since_connected("n"));
  l.set_probe("n", {false, "connection refused", {}, 30, 1});
  EXPECT_FALSE(l.reconciled_since_connected("n")) << "its port failed: what it runs is unknown again";

  // Through the service: the report is folded, then the agent counts as reconciled.
  AppendRequest r;
  r.events.push_back(EventDraft{"registry", "", "", "", SystemRegistered{"node1", "node1", "a", "k1", {}, 9510}});
  ASSERT_TRUE(inventory_log_->append(r));
  clock_.advance_ns(1'000'000'000);
  liveness_.seen("node1", clock_.monotonic_ns());
  ASSERT_TRUE(service_->step());
  EXPECT_FALSE(liveness_.reconciled_since_connected("node1"));
  liveness_.set_probe("node1", {true, "", {{"hand1", "system", "A"}}, clock_.monotonic_ns(), 1});
  ASSERT_TRUE(service_->step());
  EXPECT_TRUE(state().wpars.contains("hand1"));
  EXPECT_TRUE(liveness_.reconciled_since_connected("node1"));
  // Offline, then heard from again: Online, and to be reconciled again.
  clock_.advance_ns(16'000'000'000);
  ASSERT_TRUE(service_->step());
  ASSERT_EQ(state().system_status("node1").state, "offline");
  EXPECT_TRUE(liveness_.reconciled_since_connected("node1")) << "Offline: its operations fail at once instead";
  clock_.advance_ns(1'000'000'000);
  liveness_.seen("node1", clock_.monotonic_ns());
  ASSERT_TRUE(service_->step());
  ASSERT_EQ(state().system_status("node1").state, "online");
  EXPECT_FALSE(liveness_.reconciled_since_connected("node1"));
  clock_.advance_ns(1'000'000);
  liveness_.set_probe("node1", {true, "", {{"hand1", "system", "A"}}, clock_.monotonic_ns(), 2});
  ASSERT_TRUE(service_->step());
  EXPECT_TRUE(liveness_.reconciled_since_connected("node1"));
}

TEST_F(InventoryServiceTest, APortThatFailsBeforeTheAgentIsHeardFromDoesNotMakeItUnreachable) {
  // Registered (wpm-agent configure) but not started yet: its port refuses,
  // and nothing says the agent runs.
  AppendRequest r;
  r.events.push_back(EventDraft{"registry", "", "", "", SystemRegistered{"node1", "node1", "a", "k1", {}, 9510}});
  ASSERT_TRUE(inventory_log_->append(r));
  clock_.advance_ns(1'000'000'000);
  liveness_.set_probe("node1", {false, "agent port a:9510: connection refused", {}, clock_.monotonic_ns(), 1});
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "online");
  // The agent starts: the earlier failure is forgotten (the agent channel
  // clears it), its heartbeats make it count from now on.
  liveness_.clear_probe("node1");
  clock_.advance_ns(1'000'000'000);
  liveness_.seen("node1", clock_.monotonic_ns());
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "online");
  liveness_.set_probe("node1", {false, "agent port a:9510: connection refused", {}, clock_.monotonic_ns() + 1, 2});
  clock_.advance_ns(1'000'000'000);
  ASSERT_TRUE(service_->step());
  EXPECT_EQ(state().system_status("node1").state, "unreachable") << "heard from, and its port fails";
}

TEST_F(InventoryServiceTest, EventsItDoesNotFoldArePassedOverAndTheCheckpointStillAdvances) {
  kernel::LocalLog admin(*store_, clock_, access_, std::string(kernel::kAdminIdentity));
  AppendRequest load;
  for (int i = 0; i < 50; ++i) load.events.push_back(EventDraft{"synthetic/x", "", "", "", Synthetic{"x", uint64_t(i), "", ""}});
  ASSERT_TRUE(admin.append(load));
  request("c1", "group.create", {{"name", "web"}});
  Inventory before = state();
  ASSERT_TRUE(service_->step());
  EXPECT_TRUE(service_->wait_applied(store_->head(), std::chrono::milliseconds(0)))
      << "the checkpoint reaches the head across events it does not fold";
  EXPECT_TRUE(state().groups.contains("web"));
  EXPECT_EQ(state().wpars, before.wpars);
}

TEST_F(InventoryServiceTest, ARestartFromASnapshotEqualsAFullFold) {
  request("g", "group.create", {{"name", "web"}});
  for (int i = 0; i < 20; ++i) {
    request(fmt::format("w{}", i), "wpar.create", {{"name", fmt::format("w{}", i)}, {"group", "web"}});
  }
  ASSERT_TRUE(service_->step());
  ASSERT_TRUE(service_->snapshot());
  request("late", "wpar.create", {{"name", "late1"}, {"command", "/bin/true"}});
  ASSERT_TRUE(service_->step());
  Inventory before = state();
  EXPECT_EQ(before.wpars.at("late1").wpar.command, "/bin/true");
  // From the snapshot plus the tail …
  service_ = make_service();
  ASSERT_TRUE(service_->start());
  EXPECT_EQ(state(), before);
  // … and from sequence 1 without any snapshot.
  InventoryService full(*inventory_log_, nullptr, *embedded_, clock_, nullptr, log_);
  ASSERT_TRUE(full.start());
  Inventory folded;
  full.read([&](const Inventory& s) { folded = s; });
  EXPECT_EQ(folded, before);
}

}  // namespace
}  // namespace wpm::inventory
