#include "services/policy/simulate.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>

#include "services/policy/tests/memory_log.h"

namespace wpm::policy {
namespace {

using metrics::Metric;
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kStart = 1'800'000'000;  // the period's start, seconds

// Two systems of one profile (compatible), app1 on s1 burning it, s2 idle;
// the policy's interval set to 10 s a little after the period starts, and
// the group made after that.
class SimulateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* id : {"s1", "s2"}) {
      log_.add((kStart - 100) * kS, "registry", log_.size() + 1, SystemRegistered{id, id, "10.0.0.1", std::string("key-") + id, {}, 9510});
    }
    log_.add((kStart + 5) * kS, "settings", 1, SettingChanged{"policy.interval", "10s", "60s"});
    policy_.enabled = true;
    policy_.automation = Automation::kAutomatic;
    policy_.max = 50;
    policy_.min = 0;
    policy_.trigger_count = 1;
    policy_.period_s = 60;
    policy_.min_gain = 5;
    log_.add((kStart + 6) * kS, "group/web", 1, GroupDefined{"web", "", true});
    log_.add((kStart + 6) * kS, "group/web", 2, GroupPolicySet{"web", to_json(policy_).dump()});
    WparDefinition d;
    d.name = "app1";
    d.type = "application";
    d.group = "web";
    d.system = "s1";
    d.checkpointable = true;
    d.reported_state = "A";
    log_.add((kStart + 7) * kS, "wpar/app1", 1, WparDefined{d, true});
    log_.add((kStart + 7) * kS, "placement/app1", 1, WparPlaced{"app1", "s1", 1, ""});
  }
  Result<SimulationResult> run(std::optional<GroupPolicy> candidate, int64_t to_s) {
    SimulationOptions o{"web", std::move(candidate), kStart * kS, to_s * kS};
    HistoryReader history = [&](bool wpar, const std::string& name, const std::string&, int64_t a,
                                int64_t b) -> Result<metrics::History> {
      ++reads_;
      metrics::History h;
      metrics::Column cpu{1, {}};
      for (int64_t t = (a / 10 + 1) * 10; t <= b; t += 10) {
        if (t < kStart - 60) continue;
        h.times_s.push_back(t);
        h.systems.push_back(wpar ? "s1" : name);
        cpu.values.push_back(metrics::to_fixed(Metric::kCpu, wpar ? 30 : name == "s1" ? 90 : 5));
      }
      h.columns = {cpu};
      return h;
    };
    return simulate(log_, history, o, quiet_);
  }
  testing::MemoryLog log_;
  GroupPolicy policy_;
  size_t reads_ = 0;
  spdlog::logger quiet_{"test", std::make_shared<spdlog::sinks::null_sink_mt>()};
};

TEST_F(SimulateTest, TheLivePolicyMovesTheBurningWparAtTheFirstPassOnTheNewIntervalsGrid) {
  auto r = run(std::nullopt, kStart + 45);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  // A pass at +0 on the default 60 s grid; the interval became 10 s at +5:
  // then passes at +10, +20, +30, +40 (as the live service re-plans).
  EXPECT_EQ(r->passes, 5u);
  ASSERT_FALSE(r->simulated.empty());
  const auto& first = r->simulated.front();
  EXPECT_EQ(first.at_ns, (kStart + 10) * kS);
  EXPECT_EQ(first.wpar, "app1");
  EXPECT_EQ(first.from, "s1");
  EXPECT_EQ(first.to, "s2");
  EXPECT_EQ(first.trigger, "hot");
  // Nothing records it (no task follows in this log): in flight for two
  // intervals (+20 holds), then asked for again at +30.
  ASSERT_EQ(r->simulated.size(), 2u);
  EXPECT_EQ(r->simulated[1].at_ns, (kStart + 30) * kS);
  EXPECT_TRUE(r->live.empty()) << "nothing was recorded live";
  EXPECT_EQ(r->events, log_.size());
}

TEST_F(SimulateTest, ACandidateWithAHigherMaximumMovesNothingAndTheLiveMovesAreListed) {
  // What the live policy recorded at +10.
  log_.add((kStart + 12) * kS, "policy/web", 1,
           MobilityDecided{"web", "app1", "s1", "s2", "hot", "automatic",
                           fmt::format("policy-web-{}", kStart + 10), "why", "{}", kStart + 10});
  GroupPolicy candidate = policy_;
  candidate.max = 95;
  auto r = run(candidate, kStart + 45);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_TRUE(r->simulated.empty());
  ASSERT_EQ(r->live.size(), 1u);
  EXPECT_EQ(r->live[0].at_ns, (kStart + 10) * kS);
  EXPECT_EQ(r->live[0].to, "s2");
}

TEST_F(SimulateTest, BadRequestsAreRefusedWithTheirReason) {
  GroupPolicy bad = policy_;
  bad.metrics = {MetricSetting{Metric::kCpu, 0, 1, 1, {}, {}, false}};
  auto r = run(bad, kStart + 45);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
  auto empty = run(std::nullopt, kStart);
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code, ErrorCode::kInvalidRequest);
  SimulationOptions o{"nosuch", std::nullopt, kStart * kS, (kStart + 45) * kS};
  HistoryReader none = [](bool, const std::string&, const std::string&, int64_t, int64_t) {
    return Result<metrics::History>();
  };
  auto unknown = simulate(log_, none, o, quiet_);
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace wpm::policy
