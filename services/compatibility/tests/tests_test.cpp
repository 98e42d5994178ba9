// Every compatibility test of DESIGN.md §6, with both values, passing and
// failing, and the four states (seed "Compatibility testing").

#include "services/compatibility/tests.h"

#include <gtest/gtest.h>

#include <functional>

namespace wpm::compatibility {
namespace {

profile::SystemProfile debian() {
  profile::SystemProfile p;
  p.os_type = "Linux";
  p.distribution = "debian";
  p.distribution_version = "12";
  p.kernel_version = "6.1.0-13-amd64";
  p.base_system_version = "12.4";
  p.glibc_version = "2.36";
  p.architecture = "x86_64";
  p.isa_level = "x86-64-v3";
  p.cpu_flags = {"avx", "avx2", "fma", "sse4_2"};
  p.cpu_mhz = 2400;
  p.memory_bytes = 8ull << 30;
  p.memory_protection_keys = false;
  p.ntp_synchronized = true;
  p.agent_version = "0.1.0";
  p.checkpointers = {{"cooperative", true, "1", ""}, {"criu", false, "", "criu check failed"}};
  return p;
}

const TestResult& result_of(const std::vector<TestResult>& results, CompatTest test) {
  for (const auto& r : results) {
    if (r.test == test) return r;
  }
  static TestResult none;
  ADD_FAILURE() << "no result for " << test_name(test);
  return none;
}

TEST(CompatibilityTests, EqualSystemsPassEveryTest) {
  auto results = run_tests(debian(), debian());
  ASSERT_EQ(results.size(), kCompatTestCount);
  for (const auto& r : results) {
    EXPECT_TRUE(r.passed) << test_name(r.test) << ": " << r.remedy;
    EXPECT_TRUE(r.remedy.empty());
  }
}

// One row per test: a change to the arrival system that fails it (with the
// values and the remedy expected), and the same change to the departure
// system, which passes (the arrival is then the newer or larger one).
struct Row {
  CompatTest test;
  std::function<void(profile::SystemProfile&)> older;  // makes a system "less" for this test
  std::string departure_value;                          // of the unchanged departure
  std::string arrival_value;                            // of the changed arrival
  std::string remedy;                                   // a part of it
  bool symmetric = false;                               // fails in both directions (equality tests)
};

TEST(CompatibilityTests, EachTestFailsTowardsALesserArrivalNamingBothValuesAndTheRemedy) {
  std::vector<Row> rows = {
      {CompatTest::kOsType, [](auto& p) { p.os_type = "FreeBSD"; }, "Linux", "FreeBSD", "choose a Linux system", true},
      {CompatTest::kDistribution, [](auto& p) { p.distribution_version = "11"; }, "debian 12", "debian 11",
       "upgrade debian on B to 12"},
      {CompatTest::kProcessorClass, [](auto& p) { p.isa_level = "x86-64-v2"; }, "x86_64 x86-64-v3 (4 CPU flags)",
       "x86_64 x86-64-v2 (4 CPU flags)", "processor class x86-64-v3 or higher"},
      {CompatTest::kProcessorClass, [](auto& p) { p.cpu_flags = {"avx", "sse4_2"}; }, "x86_64 x86-64-v3 (4 CPU flags)",
       "x86_64 x86-64-v3 (2 CPU flags)", "lacks avx2, fma"},
      {CompatTest::kKernel, [](auto& p) { p.kernel_version = "5.10.0-26-amd64"; }, "6.1.0-13-amd64",
       "5.10.0-26-amd64", "upgrade the kernel on B to 6.1.0-13-amd64"},
      {CompatTest::kBaseSystem, [](auto& p) { p.base_system_version = "12.1"; }, "12.4", "12.1",
       "upgrade the base system on B to 12.4"},
      {CompatTest::kRuntime, [](auto& p) { p.agent_version = "0.0.9"; }, "wpm-agent 0.1.0", "wpm-agent 0.0.9",
       "upgrade wpm-agent on B to 0.1.0"},
      {CompatTest::kRuntime, [](auto& p) { p.checkpointers[0] = {"cooperative", false, "", "disabled"}; },
       "cooperative 1", "cooperative unavailable", "cannot checkpoint with cooperative (disabled)"},
      {CompatTest::kGlibc, [](auto& p) { p.glibc_version = "2.31"; }, "2.36", "2.31", "upgrade glibc on B to 2.36", true},
      {CompatTest::kNtp, [](auto& p) { p.ntp_synchronized = false; }, "synchronized", "not synchronized",
       "enable NTP", true},
      {CompatTest::kMemory, [](auto& p) { p.memory_bytes = 4ull << 30; }, "8.0 GiB", "4.0 GiB",
       "add memory to B (at least 8.0 GiB)"},
      {CompatTest::kCpuSpeed, [](auto& p) { p.cpu_mhz = 1800; }, "2400 MHz", "1800 MHz", "at least 2400 MHz"},
  };
  for (const auto& row : rows) {
    SCOPED_TRACE(std::string(test_name(row.test)) + ": " + row.remedy);
    auto lesser = debian();
    row.older(lesser);
    auto towards = run_tests(debian(), lesser, "B");
    const auto& r = result_of(towards, row.test);
    EXPECT_FALSE(r.passed);
    EXPECT_NE(r.departure.find(row.departure_value), std::string::npos) << r.departure;
    EXPECT_NE(r.arrival.find(row.arrival_value), std::string::npos) << r.arrival;
    EXPECT_NE(r.remedy.find(row.remedy), std::string::npos) << r.remedy;
    // Only this test fails.
    for (const auto& other : towards) {
      if (other.test != row.test) {
        EXPECT_TRUE(other.passed) << test_name(other.test) << ": " << other.remedy;
      }
    }
    auto back = run_tests(lesser, debian(), "A");
    EXPECT_EQ(result_of(back, row.test).passed, !row.symmetric);
  }
}

TEST(CompatibilityTests, MemoryProtectionKeysAreNeededOnlyWhereTheDepartureHasThem) {
  auto with = debian();
  with.memory_protection_keys = true;
  EXPECT_FALSE(result_of(run_tests(with, debian(), "B"), CompatTest::kMemoryKeys).passed);
  EXPECT_TRUE(result_of(run_tests(debian(), with, "B"), CompatTest::kMemoryKeys).passed);
  EXPECT_NE(result_of(run_tests(with, debian(), "B"), CompatTest::kMemoryKeys).remedy.find("memory protection keys"),
            std::string::npos);
}

TEST(CompatibilityTests, ADifferentDistributionOrArchitectureFailsWhateverTheVersions) {
  auto other = debian();
  other.distribution = "ubuntu";
  other.distribution_version = "24.04";
  auto r = result_of(run_tests(debian(), other, "B"), CompatTest::kDistribution);
  EXPECT_FALSE(r.passed);
  EXPECT_NE(r.remedy.find("choose a debian system"), std::string::npos) << r.remedy;
  auto arm = debian();
  arm.architecture = "aarch64";
  arm.isa_level = "aarch64";
  EXPECT_FALSE(result_of(run_tests(debian(), arm, "B"), CompatTest::kProcessorClass).passed);
  EXPECT_FALSE(result_of(run_tests(arm, debian(), "B"), CompatTest::kProcessorClass).passed);
}

TEST(CompatibilityStates, TheFourStatesFromBothDirections) {
  auto newer = debian();
  newer.kernel_version = "6.5.0";  // A → newer passes, newer → A fails
  auto a_to_b = run_tests(debian(), newer);
  auto b_to_a = run_tests(newer, debian());
  TestSet critical;
  EXPECT_EQ(derive_state(a_to_b, a_to_b, critical), CompatibilityState::kFullyCompatible);
  EXPECT_EQ(derive_state(a_to_b, b_to_a, critical), CompatibilityState::kOutbound);
  EXPECT_EQ(derive_state(b_to_a, a_to_b, critical), CompatibilityState::kInbound);
  EXPECT_EQ(derive_state(b_to_a, b_to_a, critical), CompatibilityState::kIncompatible);
  EXPECT_EQ(state_name(CompatibilityState::kOutbound), "outbound compatible");
}

TEST(CompatibilityStates, OptionalTestsCountOnlyWhereTheGroupChoseThem) {
  auto small = debian();
  small.memory_bytes = 2ull << 30;
  auto to_small = run_tests(debian(), small);
  auto from_small = run_tests(small, debian());
  EXPECT_EQ(derive_state(to_small, from_small, TestSet{}), CompatibilityState::kFullyCompatible);
  EXPECT_EQ(derive_state(to_small, from_small, TestSet{}.add(CompatTest::kMemory)), CompatibilityState::kInbound);
  EXPECT_EQ(derive_state(to_small, from_small, TestSet{}.add(CompatTest::kCpuSpeed)),
            CompatibilityState::kFullyCompatible);
  // A critical test applies whatever the set.
  auto old_glibc = debian();
  old_glibc.glibc_version = "2.31";
  EXPECT_EQ(derive_state(run_tests(debian(), old_glibc), run_tests(old_glibc, debian()), TestSet{}),
            CompatibilityState::kIncompatible);
}

TEST(Versions, CompareNumericComponentsFromTheLeft) {
  EXPECT_EQ(compare_versions("6.1.0-13-amd64", "6.1.0-13-amd64"), 0);
  EXPECT_LT(compare_versions("5.10.0-26-amd64", "6.1.0-13-amd64"), 0);
  EXPECT_GT(compare_versions("12.11", "12.9"), 0) << "numbers, not text";
  EXPECT_EQ(compare_versions("12", "12.0"), 0) << "a missing component is 0";
  EXPECT_LT(compare_versions("6.1.0-12-amd64", "6.1.0-13-amd64"), 0);
  EXPECT_EQ(compare_versions("2.36", "2.36"), 0);
  EXPECT_EQ(compare_versions("", ""), 0);
  EXPECT_EQ(isa_level_number("x86-64-v3"), 3);
  EXPECT_EQ(isa_level_number("aarch64"), 0);
  EXPECT_EQ(test_from_name("glibc"), CompatTest::kGlibc);
  EXPECT_EQ(test_from_name("bogus"), std::nullopt);
}

}  // namespace
}  // namespace wpm::compatibility
