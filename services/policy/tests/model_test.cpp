// The policy's formulas and one group's evaluation, with hand-computed
// expectations (seed "Policy tuning", "Metric policy settings", "Group
// policy settings", "Group averaging", glossary "Multiplier", "Critical metric").

#include "services/policy/model.h"

#include <gtest/gtest.h>

namespace wpm::policy {
namespace {

using metrics::Metric;
using nlohmann::json;

constexpr int64_t kNow = 1'800'000'000'000'000'000;

TEST(PolicyFormulas, EffectiveUtilisationFollowsTheSeedsExample) {
  // seed: a WPAR using 20% of the host while the rest uses 80% is at 100%.
  EXPECT_DOUBLE_EQ(effective_utilisation(0.2, 1.0), 1.0);
  // …and at 20% only when nothing else uses the host.
  EXPECT_DOUBLE_EQ(effective_utilisation(0.2, 0.2), 0.2);
  EXPECT_DOUBLE_EQ(effective_utilisation(0.3, 0.5), 0.3 / 0.8);
  // host − wpar = 1: the rest leaves nothing; defined, not a division by zero.
  EXPECT_DOUBLE_EQ(effective_utilisation(0.0, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(effective_utilisation(0.0, 0.0), 0.0);
  // A host figure below the WPAR's (sampled at different moments) is no "other load".
  EXPECT_DOUBLE_EQ(effective_utilisation(0.4, 0.3), 0.4);
}

TEST(PolicyFormulas, RateMetricsAreDividedByTheLimitScaledByTheMultiplier) {
  MetricSetting processes{Metric::kProcesses, 1, 100, 2, {}, {}, false};
  EXPECT_DOUBLE_EQ(normalised(processes, 50, 0, 0), 50);   // rank 0: limit 100
  EXPECT_DOUBLE_EQ(normalised(processes, 100, 0, 2), 25);  // rank 2: limit 100 × 2² = 400
  MetricSetting cpu{Metric::kCpu, 1, 1, 1, {}, {}, false};
  EXPECT_DOUBLE_EQ(normalised(cpu, 20, 100, 3), 100);  // utilisation: effective, no multiplier
  EXPECT_DOUBLE_EQ(weighted_state({cpu, MetricSetting{Metric::kMemory, 3, 1, 1, {}, {}, false}}, {40.0, 80.0}), 70);
  EXPECT_DOUBLE_EQ(weighted_state({cpu}, {std::nullopt}), 0);
}

TEST(PolicySettings, ValidationFollowsTheSeed) {
  GroupPolicy p;
  EXPECT_FALSE(validate(p).has_value());
  auto zero = p;
  zero.metrics[0].weight = 0;
  EXPECT_NE(validate(zero)->find("weight above 0"), std::string::npos);
  auto negative = p;
  negative.metrics[0].weight = -1;
  EXPECT_TRUE(validate(negative).has_value());
  auto limit = p;
  limit.metrics[0].limit = 2;
  EXPECT_NE(validate(limit)->find("fixed at 1"), std::string::npos);
  auto thresholds = p;
  thresholds.min = 90;
  EXPECT_TRUE(validate(thresholds).has_value());
  auto critical = p;
  critical.metrics[0].critical = true;
  EXPECT_TRUE(validate(critical).has_value()) << "critical without a bound";
}

TEST(PolicySettings, ChangesFromTheCommandLineAndTheStoredFormRoundTrip) {
  auto changed = apply_changes(GroupPolicy{}, json{{"enabled", true}, {"automation", "approve"}, {"max", 75},
                                                   {"period", "90s"}, {"cooldown", "15m"}, {"triggerCount", 2},
                                                   {"metrics", {"cpu:weight=2,max=95,critical", "processes:weight=1,limit=50,multiplier=1.5"}}});
  ASSERT_TRUE(changed) << changed.error();
  EXPECT_EQ(changed->automation, Automation::kApprove);
  EXPECT_EQ(changed->period_s, 90);
  EXPECT_EQ(changed->cooldown_s, 900);
  ASSERT_EQ(changed->metrics.size(), 2u);
  EXPECT_TRUE(changed->metrics[0].critical);
  EXPECT_EQ(changed->metrics[0].max, 95);
  EXPECT_EQ(changed->metrics[1].limit, 50);
  EXPECT_EQ(changed->metrics[1].multiplier, 1.5);
  auto back = policy_from_json(to_json(*changed));
  ASSERT_TRUE(back) << back.error();
  EXPECT_EQ(*back, *changed);
  EXPECT_FALSE(apply_changes(GroupPolicy{}, json{{"metrics", {"disk:weight=1"}}}));
  EXPECT_FALSE(apply_changes(GroupPolicy{}, json{{"metrics", {"memory:limit=5"}}}));
  EXPECT_FALSE(apply_changes(GroupPolicy{}, json{{"period", "soon"}}));
  EXPECT_FALSE(apply_changes(GroupPolicy{}, json{{"colour", "red"}}));
}

// A fleet: systems with their CPU; a group's WPARs with theirs.
struct Fleet {
  SystemMap systems;
  std::set<std::pair<std::string, std::string>> incompatible;
  GroupInput group;
  Fleet() {
    group.group = "web";
    group.policy.enabled = true;
    group.policy.automation = Automation::kAutomatic;
    group.policy.max = 70;
    group.policy.min = 10;
    group.policy.trigger_count = 1;
    group.policy.min_gain = 10;
  }
  void system(const std::string& id, double cpu, std::string domain = "default", std::string state = "online") {
    SystemInput s{id, domain, state, true, 0, {}};
    s.average[static_cast<size_t>(Metric::kCpu)] = cpu;
    systems[id] = s;
  }
  void wpar(const std::string& name, const std::string& on, double cpu, bool mobile = true) {
    WparInput w{name, on, {}, {}, mobile, false, 0};
    w.average[static_cast<size_t>(Metric::kCpu)] = cpu;
    w.latest[static_cast<size_t>(Metric::kCpu)] = cpu;
    group.wpars.push_back(w);
  }
  Evaluation run() {
    return evaluate(group, systems, [&](const std::string& a, const std::string& b) {
      return !incompatible.contains({a, b});
    }, kNow);
  }
};

TEST(PolicyEvaluation, AHotGroupMovesTheWparWithTheLargestGainToTheIdleCompatibleHost) {
  Fleet f;
  f.group.policy.max = 65;
  f.system("busy", 95);
  f.system("idle", 5);
  f.system("other", 50);
  f.wpar("a", "busy", 60);  // effective 0.6 / (1 − 0.35) = 92.3%
  f.wpar("b", "other", 40);  // 0.4 / (1 − 0.1) = 44.4%
  auto e = f.run();
  EXPECT_NEAR(e.group_state, (60 / 0.65 + 40 / 0.9) / 2, 1e-9);
  EXPECT_EQ(e.trigger, "hot");
  ASSERT_EQ(e.reason, Reason::kMove) << e.explanation;
  EXPECT_EQ(e.move->wpar, "a");
  EXPECT_EQ(e.move->to, "idle");
  EXPECT_DOUBLE_EQ(e.move->target_after, 65);  // 5 + 60, just within the maximum
  EXPECT_DOUBLE_EQ(e.move->gain, 30);           // 95 − 65
  EXPECT_EQ(e.inputs["targets"][0]["system"], "idle");
  EXPECT_NE(e.explanation.find("move a from busy"), std::string::npos) << e.explanation;
}

TEST(PolicyEvaluation, NeverToAnIncompatibleOfflineOtherDomainOrPendingSystem) {
  Fleet f;
  f.system("busy", 95);
  f.system("incompatible", 0);
  f.system("offline", 0, "default", "offline");
  f.system("elsewhere", 0, "lab");
  f.system("pending", 0);
  f.systems["pending"].analysed = false;
  f.incompatible.insert({"busy", "incompatible"});
  f.wpar("a", "busy", 60);
  auto e = f.run();
  EXPECT_EQ(e.reason, Reason::kNoTarget) << e.explanation;
  f.system("fine", 5);
  e = f.run();
  ASSERT_EQ(e.reason, Reason::kMove);
  EXPECT_EQ(e.move->to, "fine");
  ASSERT_EQ(e.move->targets.size(), 1u);
}

TEST(PolicyEvaluation, TheTriggerCountWaitsForConsecutivePasses) {
  Fleet f;
  f.group.policy.trigger_count = 3;
  f.system("busy", 95);
  f.system("idle", 5);
  f.wpar("a", "busy", 60);
  auto first = f.run();
  EXPECT_EQ(first.reason, Reason::kTriggerCount);
  EXPECT_EQ(first.streak, 1);
  f.group.streak = first.streak;
  f.group.streak_trigger = first.trigger;
  auto second = f.run();
  EXPECT_EQ(second.streak, 2);
  EXPECT_EQ(second.reason, Reason::kTriggerCount);
  f.group.streak = second.streak;
  EXPECT_EQ(f.run().reason, Reason::kMove);
  // A pass with another trigger starts again.
  f.group.streak_trigger = "cold";
  EXPECT_EQ(f.run().streak, 1);
}

TEST(PolicyEvaluation, MaximumAndMinimumOverridesRaiseAndLowerTheGroupState) {
  Fleet f;
  f.group.policy.metrics[0].max = 50;
  f.system("h1", 30);
  f.system("h2", 10);
  f.wpar("a", "h1", 30);  // 30 / (1 − 0) = 30%
  f.wpar("b", "h2", 5);   // 5 / (1 − 0.05) = 5.26%
  f.group.wpars[0].average[static_cast<size_t>(Metric::kCpu)] = 30;
  auto within = f.run();
  EXPECT_NEAR(within.group_state, (30 + 5 / 0.95) / 2, 1e-9);
  EXPECT_TRUE(within.override_note.empty());
  f.system("h1", 80);
  f.group.wpars[0].average[static_cast<size_t>(Metric::kCpu)] = 60;  // 60 / (1 − 0.2) = 75% > 50
  auto raised = f.run();
  EXPECT_DOUBLE_EQ(raised.group_state, 75);
  EXPECT_NE(raised.override_note.find("raised"), std::string::npos);
  EXPECT_EQ(raised.trigger, "hot");
  Fleet g;
  g.group.policy.metrics[0].min = 20;
  g.system("h1", 50);
  g.system("h2", 50);
  g.wpar("a", "h1", 50);  // 50%
  g.wpar("b", "h2", 5);   // 5 / 0.55 = 9.09% < 20
  auto lowered = g.run();
  EXPECT_NEAR(lowered.group_state, 5 / 0.55, 1e-9);
  EXPECT_EQ(lowered.trigger, "cold");
}

TEST(PolicyEvaluation, ACriticalMetricMovesAtOnceSkippingTheTriggerCountButNotCompatibility) {
  Fleet f;
  f.group.policy.trigger_count = 5;
  f.group.policy.max = 95;
  f.group.policy.metrics[0] = MetricSetting{Metric::kCpu, 1, 1, 1, 90.0, {}, true};
  f.system("h1", 92);
  f.system("h2", 10);
  f.wpar("hot", "h1", 90);   // effective 90 / 0.98 = 91.8% > 90 on its latest sample
  f.wpar("calm", "h2", 1);
  f.group.wpars[0].average[static_cast<size_t>(Metric::kCpu)] = 10;  // its average is low
  auto e = f.run();
  EXPECT_EQ(e.trigger, "critical");
  ASSERT_EQ(e.reason, Reason::kMove) << e.explanation;
  EXPECT_EQ(e.move->wpar, "hot");
  f.incompatible.insert({"h1", "h2"});
  EXPECT_EQ(f.run().reason, Reason::kNoTarget);
}

TEST(PolicyEvaluation, OneEventInFlightPerGroupAndACapPerDomain) {
  Fleet f;
  f.system("busy", 95);
  f.system("idle", 5);
  f.wpar("a", "busy", 60);
  f.group.in_flight = true;
  EXPECT_EQ(f.run().reason, Reason::kInFlight);
  f.group.in_flight = false;
  f.group.domain_relocations = 2;
  EXPECT_EQ(f.run().reason, Reason::kDomainCap);
}

TEST(PolicyEvaluation, DampingCooldownMinimumGainAndTheTargetsMaximum) {
  Fleet f;
  f.system("busy", 95);
  f.system("idle", 5);
  f.wpar("a", "busy", 60);
  f.group.wpars[0].moved_ns = kNow - 60'000'000'000;  // moved a minute ago; cooldown 30 min
  EXPECT_EQ(f.run().reason, Reason::kNoMobileWpar);
  f.group.wpars[0].moved_ns = kNow - 1801'000'000'000;
  EXPECT_EQ(f.run().reason, Reason::kMove);
  f.group.wpars[0].mobile = false;  // not checkpointable
  EXPECT_EQ(f.run().reason, Reason::kNoMobileWpar);
  f.group.wpars[0].mobile = true;
  // Gain 95 − (60 + 30) = 5 < 10.
  f.system("idle", 30);
  f.group.policy.max = 92;
  EXPECT_EQ(f.run().reason, Reason::kBelowGain);
  // Past the maximum after the move: 40 + 60 = 100 > 92.
  f.system("idle", 40);
  EXPECT_EQ(f.run().reason, Reason::kOverMax);
}

TEST(PolicyEvaluation, AColdGroupConsolidatesOntoTheBusiestHostThatStaysBelowTheMaximum) {
  Fleet f;
  f.group.policy.min = 20;
  f.system("light", 3);
  f.system("medium", 40);
  f.system("heavy", 65);
  f.wpar("a", "light", 2);
  f.wpar("b", "medium", 5);
  auto e = f.run();
  EXPECT_EQ(e.trigger, "cold");
  ASSERT_EQ(e.reason, Reason::kMove) << e.explanation;
  EXPECT_EQ(e.move->wpar, "a");   // from the least-loaded host
  EXPECT_EQ(e.move->to, "medium");  // heavy: 65 + 2 + 10 margin > 70
}

TEST(PolicyEvaluation, DisabledAndWithoutSamplesAndWithinSayWhy) {
  Fleet f;
  f.system("h1", 50);
  f.wpar("a", "h1", 30);
  f.group.policy.enabled = false;
  EXPECT_EQ(f.run().reason, Reason::kDisabled);
  f.group.policy.enabled = true;
  EXPECT_EQ(f.run().reason, Reason::kWithin);
  f.group.wpars[0].average = {};
  f.group.wpars[0].latest = {};
  EXPECT_EQ(f.run().reason, Reason::kNoData);
}

}  // namespace
}  // namespace wpm::policy
