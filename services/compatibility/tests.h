#pragma once
// The compatibility tests of DESIGN.md §6 (seed "Compatibility testing"):
// may a WPAR move from a departure system to an arrival system? Pure: two
// system profiles in, one result per test out, each naming both values and,
// when it fails, what would make the pair pass.
//
// Critical tests always apply; optional tests are chosen per WPAR group.
// Thread safety: plain values and free functions.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schemas/events.h"
#include "schemas/profile.h"

namespace wpm::compatibility {

enum class CompatTest : uint8_t {
  // Critical.
  kOsType = 0,         // same operating system type
  kDistribution,       // same distribution, arrival version >= departure
  kProcessorClass,     // same architecture, arrival ISA level >= departure, arrival CPU flags ⊇ departure
  kKernel,             // arrival kernel version >= departure
  kBaseSystem,         // arrival base system package version >= departure
  kRuntime,            // arrival partition runtime (agent) and checkpointers >= departure, same methods
  kGlibc,              // glibc version equal
  kMemoryKeys,         // arrival memory protection keys >= departure
  // Optional (per WPAR group).
  kNtp,                // NTP synchronised on both
  kMemory,             // arrival physical memory >= departure
  kCpuSpeed,           // arrival CPU speed >= departure
};
inline constexpr size_t kCompatTestCount = 11;
inline constexpr size_t kCriticalTestCount = 8;

inline bool is_critical(CompatTest t) { return static_cast<size_t>(t) < kCriticalTestCount; }
std::string_view test_name(CompatTest test);  // stable: "osType", "glibc", …
std::optional<CompatTest> test_from_name(std::string_view name);
std::array<CompatTest, kCompatTestCount> all_tests();

// A set of optional tests (the critical ones always apply).
class TestSet {
 public:
  TestSet() = default;
  static TestSet all_optional();
  TestSet& add(CompatTest test);
  bool applies(CompatTest test) const { return is_critical(test) || (bits_ >> static_cast<size_t>(test)) & 1u; }
  bool operator==(const TestSet&) const = default;

 private:
  uint32_t bits_ = 0;
};

struct TestResult {
  CompatTest test = CompatTest::kOsType;
  bool passed = false;
  std::string departure;  // the departure system's value
  std::string arrival;    // the arrival system's value
  std::string remedy;     // when failed: what would make it pass ("upgrade glibc on B to 2.36")
  bool operator==(const TestResult&) const = default;
};

// Every test, departure → arrival. `arrival_name` goes into the remedies.
std::vector<TestResult> run_tests(const profile::SystemProfile& departure, const profile::SystemProfile& arrival,
                                  std::string_view arrival_name = "the arrival system");

// Whether a move passes under `tests` (every critical test, and the chosen optional ones).
bool passes(const std::vector<TestResult>& results, const TestSet& tests);

// Results as the log records them (CompatibilityAnalyzed), back as results;
// tests this build does not know are left out.
std::vector<TestResult> to_test_results(const std::vector<CompatResult>& records);

// The four states (seed "Compatibility states"), from both directions.
enum class CompatibilityState : uint8_t {
  kFullyCompatible,  // A → B and B → A
  kOutbound,         // A → B only
  kInbound,          // B → A only
  kIncompatible,     // neither
};
std::string_view state_name(CompatibilityState state);
CompatibilityState derive_state(const std::vector<TestResult>& a_to_b, const std::vector<TestResult>& b_to_a,
                                const TestSet& tests);

// Version comparison of dotted versions as profiles carry them ("6.1.0-13-amd64",
// "12.11", "2.36"): numeric components compared as numbers, from the left,
// up to the first component that is not a number; a missing component is 0.
int compare_versions(std::string_view a, std::string_view b);

// "x86-64-v3" → 3; 0 when there is no level.
int isa_level_number(std::string_view isa);

// The properties the tests compare, as one canonical string: systems with
// equal keys get equal results, so analysis scales with distinct keys, not
// with hosts squared.
std::string compared_properties_key(const profile::SystemProfile& profile);
// A short stable name of a compared-properties key (16 hex digits of its
// SHA-256), used in stream names and events.
std::string properties_digest(const std::string& compared_properties_key);

}  // namespace wpm::compatibility
