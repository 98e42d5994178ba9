#include "eventstore/recovery.h"

#include <gtest/gtest.h>

namespace wpm::eventstore {
namespace {

RecoveryFacts facts(std::optional<MarkReading> mark, uint64_t stored, uint64_t derived) {
  RecoveryFacts f;
  f.mark = mark;
  f.stored = stored;
  f.derived = derived;
  return f;
}

constexpr MarkReading exact(uint64_t s) { return {s, true}; }
constexpr MarkReading lower_bound(uint64_t s) { return {s, false}; }

TEST(PlanRecovery, LogAsAcknowledgedOpens) {
  auto p = plan_recovery(facts(exact(10), 10, 10));
  EXPECT_EQ(p.action, RecoveryAction::kOpen);
  EXPECT_EQ(p.head, 10u);
  EXPECT_EQ(p.acknowledged, 10u);
}

TEST(PlanRecovery, NewDirectoryOpensEmpty) {
  auto p = plan_recovery(facts(std::nullopt, 0, 0));
  EXPECT_EQ(p.action, RecoveryAction::kOpen);
  EXPECT_EQ(p.head, 0u);
}

TEST(PlanRecovery, EventsWithoutAMarkAreRefused) {
  EXPECT_EQ(plan_recovery(facts(std::nullopt, 5, 0)).action, RecoveryAction::kMarkMissing);
}

// Exact or lower bound: a log below the mark lost acknowledged events.
TEST(PlanRecovery, LogBelowTheMarkIsRefusedWhateverTheMark) {
  for (auto mark : {exact(10), lower_bound(10)}) {
    auto p = plan_recovery(facts(mark, 7, 7));
    EXPECT_EQ(p.action, RecoveryAction::kLostAcknowledged);
    EXPECT_EQ(p.head, 7u);
    EXPECT_EQ(p.acknowledged, 10u);
  }
}

// Derived data is written only for acknowledged events: a log that ends below
// it lost acknowledged events even when the mark trails.
TEST(PlanRecovery, LogBelowTheDerivedDataIsRefused) {
  auto p = plan_recovery(facts(lower_bound(5), 8, 9));
  EXPECT_EQ(p.action, RecoveryAction::kLostAcknowledged);
  EXPECT_EQ(p.acknowledged, 9u);
}

TEST(PlanRecovery, RecordsAboveAnExactMarkAreDiscarded) {
  auto p = plan_recovery(facts(exact(10), 13, 10));
  EXPECT_EQ(p.action, RecoveryAction::kDiscardAbove);
  EXPECT_EQ(p.head, 10u);
}

TEST(PlanRecovery, RecordsAboveALowerBoundMarkAreKept) {
  auto p = plan_recovery(facts(lower_bound(10), 13, 12));
  EXPECT_EQ(p.action, RecoveryAction::kKeepAbove);
  EXPECT_EQ(p.head, 13u);
  EXPECT_EQ(p.acknowledged, 13u);
}

TEST(PlanRecovery, ExactMarkBehindTheDerivedDataIsStale) {
  auto p = plan_recovery(facts(exact(10), 13, 12));
  EXPECT_EQ(p.action, RecoveryAction::kMarkStale);
  EXPECT_EQ(p.head, 10u);
  EXPECT_EQ(p.acknowledged, 12u);
}

TEST(PlanRecovery, OfflineReadersChangeNothingAndSeeEveryRecord) {
  auto f = facts(exact(10), 13, 10);
  f.read_only = true;
  auto p = plan_recovery(f);
  EXPECT_EQ(p.action, RecoveryAction::kOpen);
  EXPECT_EQ(p.head, 13u);
}

TEST(PlanRecovery, SalvageOpensWhatIsThere) {
  auto f = facts(exact(10), 7, 9);
  f.salvage = true;
  f.read_only = true;
  EXPECT_EQ(plan_recovery(f).action, RecoveryAction::kOpen);
  EXPECT_EQ(plan_recovery(f).head, 7u);
  EXPECT_EQ(plan_recovery(f).acknowledged, 10u) << "verify names what is missing";
  f.mark = lower_bound(5);
  EXPECT_EQ(plan_recovery(f).acknowledged, 9u) << "derived data proves 9 was acknowledged";
  f.mark.reset();
  EXPECT_EQ(plan_recovery(f).action, RecoveryAction::kOpen);
}

}  // namespace
}  // namespace wpm::eventstore
