// The policy service's passes over folded states (fakes of the inventory
// and executor views, a log that keeps the appends): what a move records,
// what each automation level does, streaks and one event in flight.

#include "services/policy/service.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>

namespace wpm::policy {
namespace {

using nlohmann::json;
using metrics::Metric;

constexpr int64_t kAt = 1'800'000'000'000'000'000;  // a pass's grid time
constexpr int64_t kAtS = kAt / 1'000'000'000;

class KeptLog final : public kernel::EventLog {
 public:
  Result<AppendResult> append(const AppendRequest& r) override {
    if (!keys.insert(r.idempotency_key).second) return AppendResult{1, 0, true};
    appends.push_back(r);
    return AppendResult{appends.size(), static_cast<uint32_t>(r.events.size()), false};
  }
  Result<ReadReply> read_stream(const ReadStreamRequest&) override { return ReadReply{}; }
  Result<ReadReply> read_range(const ReadRangeRequest&) override { return ReadReply{}; }
  std::vector<AppendRequest> appends;
  std::set<std::string> keys;
};

struct FakeInventory final : inventory::InventoryView {
  inventory::Inventory state;
  void read(const std::function<void(const inventory::Inventory&)>& reader) const override { reader(state); }
  bool wait_applied(uint64_t, std::chrono::milliseconds) const override { return true; }
};
struct FakeExecutor final : executor::ExecutorView {
  executor::Executor state;
  void read(const std::function<void(const executor::Executor&)>& reader) const override { reader(state); }
  bool wait_applied(uint64_t, std::chrono::milliseconds) const override { return true; }
  uint64_t applied() const override { return 0; }
};
struct FixedClock final : kernel::Clock {
  int64_t now = kAt;
  int64_t wall_ns() const override { return now; }
  int64_t monotonic_ns() const override { return now; }
};

class PolicyServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* id : {"busy", "idle"}) {
      Event e;
      e.sequence = ++sequence_;
      e.stream_id = "registry";
      e.payload = SystemRegistered{id, id, "10.0.0.1", std::string("key-") + id, profile::SystemProfile{}, 9510};
      inventory_.state.registry.evolve(e);
    }
    inventory_.state.groups["web"] = inventory::GroupRecord{"web", "", 1, ""};
    set_policy(R"({"enabled": true, "automation": "automatic", "max": 70, "triggerCount": 2})");
    inventory::WparRecord w;
    w.wpar.name = "app1";
    w.wpar.group = "web";
    w.wpar.system = "busy";
    w.wpar.checkpointable = true;
    w.wpar.reported_state = "A";
    inventory_.state.wpars["app1"] = w;
  }
  void set_policy(const std::string& changes) {
    auto p = apply_changes(GroupPolicy{}, json::parse(changes));
    ASSERT_TRUE(p) << p.error();
    inventory_.state.groups["web"].policy = to_json(*p).dump();
  }
  // Samples every 10 s over the last 5 minutes: the busy host at 95 %, app1 at 60 %, the idle one at 5 %.
  void samples(int64_t until_s) {
    for (int64_t t = until_s - 290; t <= until_s; t += 10) {
      metrics::HostSample busy{"busy", t, {}, {{"app1", {}}}};
      busy.host.set(Metric::kCpu, 95);
      busy.wpars[0].values.set(Metric::kCpu, 60);
      windows_->add(busy);
      metrics::HostSample idle{"idle", t, {}, {}};
      idle.host.set(Metric::kCpu, 5);
      windows_->add(idle);
    }
  }
  PolicyService service() {
    return PolicyService(log_, inventory_, executor_, clock_, windows_,
                         std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::null_sink_mt>()));
  }

  uint64_t sequence_ = 0;
  KeptLog log_;
  FakeInventory inventory_;
  FakeExecutor executor_;
  FixedClock clock_;
  std::shared_ptr<SampleWindows> windows_ = std::make_shared<SampleWindows>();
};

TEST_F(PolicyServiceTest, AnAutomaticMoveRecordsTheRelocationAndItsInputsInOneAppend) {
  auto s = service();
  samples(kAtS);
  auto first = s.pass(kAt);
  EXPECT_EQ(first.groups, 1u);
  EXPECT_EQ(first.moves, 0u) << "trigger count 2: the first hot pass only counts";
  EXPECT_TRUE(log_.appends.empty()) << "a pass that moves nothing appends nothing";
  samples(kAtS + 60);
  auto second = s.pass(kAt + 60'000'000'000);
  ASSERT_EQ(second.moves, 1u);
  ASSERT_EQ(log_.appends.size(), 1u);
  const auto& r = log_.appends[0];
  ASSERT_EQ(r.events.size(), 2u);
  const auto* command = std::get_if<CommandRequested>(&r.events[0].payload);
  ASSERT_NE(command, nullptr);
  EXPECT_EQ(command->command, "wpar.relocate");
  EXPECT_EQ(command->user, "service:policy");
  json args = json::parse(command->args);
  EXPECT_EQ(args["name"], "app1");
  EXPECT_EQ(args["to"], "idle");
  EXPECT_FALSE(args.contains("approval"));
  EXPECT_NE(args["reason"].get<std::string>().find("move app1 from busy"), std::string::npos);
  const auto* decided = std::get_if<MobilityDecided>(&r.events[1].payload);
  ASSERT_NE(decided, nullptr);
  EXPECT_EQ(r.events[1].stream_id, "policy/web");
  EXPECT_EQ(decided->trigger, "hot");
  EXPECT_EQ(decided->watermark_s, kAtS + 60);
  json inputs = json::parse(decided->inputs);
  EXPECT_EQ(inputs["targets"][0]["system"], "idle");
  EXPECT_EQ(inputs["streak"], 2);
  // Re-analysed after the event: the streak starts again, and once it is
  // reached the move asked for (not yet a task) still holds the group.
  samples(kAtS + 120);
  EXPECT_EQ(s.pass(kAt + 120'000'000'000).moves, 0u);
  EXPECT_EQ(s.stats().reasons.at("trigger-count-not-reached"), 2u);
  set_policy(R"({"enabled": true, "automation": "automatic", "max": 70, "triggerCount": 1})");
  EXPECT_EQ(s.pass(kAt + 150'000'000'000).moves, 0u);
  EXPECT_EQ(s.stats().reasons.at("mobility-event-in-flight"), 1u);
  EXPECT_EQ(log_.appends.size(), 1u);
}

TEST_F(PolicyServiceTest, OnlyWhatItsOwnSystemReportedCountsForAWpar) {
  set_policy(R"({"enabled": true, "automation": "automatic", "max": 70, "triggerCount": 1})");
  auto s = service();
  // A stale copy on idle reports app1 burning; its own system (busy) says it is calm.
  for (int64_t t = kAtS - 290; t <= kAtS; t += 10) {
    metrics::HostSample busy{"busy", t, {}, {{"app1", {}}}};
    busy.host.set(Metric::kCpu, 20);
    busy.wpars[0].values.set(Metric::kCpu, 10);
    windows_->add(busy);
    metrics::HostSample stale{"idle", t, {}, {{"app1", {}}}};
    stale.host.set(Metric::kCpu, 100);
    stale.wpars[0].values.set(Metric::kCpu, 99);
    windows_->add(stale);
  }
  EXPECT_EQ(s.pass(kAt).moves, 0u);
  auto state = s.explain("web");
  ASSERT_TRUE(state);
  EXPECT_NEAR((*state)["wpars"][0]["state"].get<double>(), 10 / 0.9, 1e-3);
}

TEST_F(PolicyServiceTest, ThePerDomainCapCountsTheMovesOfTheSamePass) {
  set_policy(R"({"enabled": true, "automation": "automatic", "max": 70, "triggerCount": 1})");
  inventory_.state.settings["policy.domain-concurrency"] = "1";
  // A second hot group in the same domain, its WPAR on the same busy host.
  inventory_.state.groups["db"] = inventory_.state.groups["web"];
  inventory_.state.groups["db"].name = "db";
  auto w = inventory_.state.wpars["app1"];
  w.wpar.name = "db1";
  w.wpar.group = "db";
  inventory_.state.wpars["db1"] = w;
  auto s = service();
  for (int64_t t = kAtS - 290; t <= kAtS; t += 10) {
    metrics::HostSample busy{"busy", t, {}, {{"app1", {}}, {"db1", {}}}};
    busy.host.set(Metric::kCpu, 95);
    busy.wpars[0].values.set(Metric::kCpu, 45);
    busy.wpars[1].values.set(Metric::kCpu, 45);
    windows_->add(busy);
    metrics::HostSample idle{"idle", t, {}, {}};
    idle.host.set(Metric::kCpu, 1);
    windows_->add(idle);
  }
  auto outcome = s.pass(kAt);
  EXPECT_EQ(outcome.moves, 1u) << "a cap of 1 per domain: one of the two groups moves";
  EXPECT_EQ(s.stats().reasons.at("domain-cap"), 1u);
}

TEST_F(PolicyServiceTest, RecommendRecordsNothingAndExplainShowsTheMove) {
  set_policy(R"({"enabled": true, "automation": "recommend", "max": 70, "triggerCount": 1})");
  auto s = service();
  samples(kAtS);
  auto outcome = s.pass(kAt);
  EXPECT_EQ(outcome.recommended, 1u);
  EXPECT_TRUE(log_.appends.empty());
  auto explained = s.explain("web");
  ASSERT_TRUE(explained) << explained.error().message;
  EXPECT_EQ((*explained)["lastRecommendation"]["to"], "idle");
  EXPECT_EQ((*explained)["reason"], "move");
  EXPECT_EQ((*explained)["move"]["wpar"], "app1");
  EXPECT_FALSE(s.explain("nosuchgroup").has_value());
}

TEST_F(PolicyServiceTest, ApproveAsksForARelocationThatWaitsAndExpires) {
  set_policy(R"({"enabled": true, "automation": "approve", "max": 70, "triggerCount": 1, "approval": "30m"})");
  auto s = service();
  samples(kAtS);
  ASSERT_EQ(s.pass(kAt).moves, 1u);
  json args = json::parse(std::get<CommandRequested>(log_.appends[0].events[0].payload).args);
  EXPECT_EQ(args["approval"], "1800s");
  EXPECT_EQ(std::get<MobilityDecided>(log_.appends[0].events[1].payload).automation, "approve");
}

TEST_F(PolicyServiceTest, ARunningRelocationOfTheGroupHoldsItAndADisabledGroupIsNotEvaluated) {
  executor::Task t;
  t.id = "t1";
  t.kind = "relocate";
  t.wpar = "app1";
  t.options.target = "idle";
  executor_.state.tasks["t1"] = t;
  executor_.state.busy["app1"] = "t1";
  set_policy(R"({"enabled": true, "automation": "automatic", "max": 70, "triggerCount": 1})");
  auto s = service();
  samples(kAtS);
  EXPECT_EQ(s.pass(kAt).moves, 0u);
  EXPECT_EQ(s.explain("web")->at("reason"), "mobility-event-in-flight");
  set_policy(R"({"enabled": false})");
  EXPECT_EQ(s.pass(kAt + 60'000'000'000).groups, 0u);
  EXPECT_EQ(s.explain("web")->at("reason"), "disabled");
}

}  // namespace
}  // namespace wpm::policy
