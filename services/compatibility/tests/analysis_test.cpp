// Fleet analysis: once per pair of distinct compared properties, Pending
// until complete, results kept per test.

#include "services/compatibility/analysis.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace wpm::compatibility {
namespace {

profile::SystemProfile host(const std::string& kernel, uint64_t memory_gib = 8) {
  profile::SystemProfile p;
  p.os_type = "Linux";
  p.distribution = "debian";
  p.distribution_version = "12";
  p.kernel_version = kernel;
  p.glibc_version = "2.36";
  p.architecture = "x86_64";
  p.isa_level = "x86-64-v2";
  p.memory_bytes = memory_gib << 30;
  p.agent_version = "0.1.0";
  p.ntp_synchronized = true;
  return p;
}

TEST(Analysis, RunsOncePerPairOfDistinctPropertiesNotPerPairOfHosts) {
  Analysis a;
  for (int i = 0; i < 100; ++i) a.set_system(fmt::format("old{}", i), host("6.1.0"));
  for (int i = 0; i < 100; ++i) a.set_system(fmt::format("new{}", i), host("6.5.0"));
  EXPECT_EQ(a.systems(), 200u);
  EXPECT_EQ(a.distinct_properties(), 2u);
  EXPECT_EQ(a.pending_pairs(), 2u) << "old → new and new → old";
  EXPECT_EQ(a.state_of("old3"), AnalysisState::kPending);
  EXPECT_EQ(a.state("old1", "new1", TestSet{}), std::nullopt) << "not analysed yet";
  EXPECT_EQ(a.analyse(1000), 2u);
  EXPECT_EQ(a.state_of("old3"), AnalysisState::kComplete);
  EXPECT_EQ(a.state("old1", "new7", TestSet{}), CompatibilityState::kOutbound);
  EXPECT_EQ(a.state("new7", "old1", TestSet{}), CompatibilityState::kInbound);
  EXPECT_EQ(a.state("old1", "old2", TestSet{}), CompatibilityState::kFullyCompatible) << "equal properties";
  EXPECT_EQ(a.state_of("nobody"), std::nullopt);
}

TEST(Analysis, ANewProfileIsPendingUntilEveryPairWithItIsAnalysedBothWays) {
  Analysis a;
  a.set_system("a", host("6.1.0"));
  a.set_system("b", host("6.5.0"));
  a.set_system("c", host("6.6.0"));
  EXPECT_EQ(a.pending_pairs(), 6u);
  // Pairs run in order of departure: after three, some of c's pairs are
  // done, not all: c stays Pending.
  a.analyse(3);
  EXPECT_EQ(a.state_of("c"), AnalysisState::kPending);
  a.analyse(3);
  EXPECT_EQ(a.state_of("c"), AnalysisState::kComplete);
  EXPECT_EQ(a.state_of("a"), AnalysisState::kComplete);
}

TEST(Analysis, AProfileChangeIsAnalysedAgainAndAGoneProfileLeavesNothingBehind) {
  Analysis a;
  a.set_system("a", host("6.1.0"));
  a.set_system("b", host("6.1.0", 4));
  a.analyse(100);
  TestSet memory = TestSet{}.add(CompatTest::kMemory);
  EXPECT_EQ(a.state("a", "b", memory), CompatibilityState::kInbound);
  auto results = a.results("a", "b");
  ASSERT_TRUE(results);
  EXPECT_EQ(results->size(), kCompatTestCount) << "kept per test";
  a.set_system("b", host("6.1.0", 16));  // memory added on b
  EXPECT_EQ(a.state_of("b"), AnalysisState::kPending);
  a.analyse(100);
  EXPECT_EQ(a.state("a", "b", memory), CompatibilityState::kOutbound);
  EXPECT_EQ(a.distinct_properties(), 2u) << "b's old properties were released";
  a.remove_system("b");
  EXPECT_EQ(a.distinct_properties(), 1u);
  EXPECT_EQ(a.pending_pairs(), 0u);
  EXPECT_EQ(a.state("a", "b", memory), std::nullopt);
}

}  // namespace
}  // namespace wpm::compatibility
