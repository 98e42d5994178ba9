// wpm-bench-compat: compatibility analysis of a fleet (DESIGN.md §6).
//
//   storm     10,000 systems of 50 distinct profiles registered (set_system),
//             then analysed until every system is Complete: the target is
//             under 1 s of analysis (issue 13).
//   one_more  one more system with a new profile, analysed against the 50:
//             the background work a registration costs.
//   states    the state of every pair of 100 systems under a group's tests
//             (what ranking targets reads).
//
// Benchmarks print figures and never fail the build.

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "services/compatibility/analysis.h"

namespace {

using namespace wpm;

profile::SystemProfile profile_number(int i) {
  profile::SystemProfile p;
  p.os_type = "Linux";
  p.distribution = "debian";
  p.distribution_version = fmt::format("{}", 11 + i % 2);
  p.kernel_version = fmt::format("6.{}.0-{}-amd64", 1 + i % 5, i);
  p.base_system_version = fmt::format("12.{}", i % 7);
  p.glibc_version = i % 3 == 0 ? "2.31" : "2.36";
  p.architecture = "x86_64";
  p.isa_level = fmt::format("x86-64-v{}", 2 + i % 2);
  for (int f = 0; f < 90; ++f) p.cpu_flags.push_back(fmt::format("flag{:03}", f + (i % 4)));
  p.cpu_mhz = 2000 + 100 * (i % 6);
  p.memory_bytes = (8ull + i % 8) << 30;
  p.ntp_synchronized = i % 5 != 0;
  p.agent_version = "0.1.0";
  p.checkpointers = {{"cooperative", true, "1", ""}};
  return p;
}

constexpr int kSystems = 10'000;
constexpr int kProfiles = 50;

void bm_storm(benchmark::State& state) {
  std::vector<profile::SystemProfile> profiles;
  for (int i = 0; i < kProfiles; ++i) profiles.push_back(profile_number(i));
  for (auto _ : state) {
    compatibility::Analysis analysis;
    for (int s = 0; s < kSystems; ++s) analysis.set_system(fmt::format("node{:05}", s), profiles[s % kProfiles]);
    size_t ran = analysis.analyse(SIZE_MAX);
    benchmark::DoNotOptimize(ran);
    if (analysis.state_of("node00000") != compatibility::AnalysisState::kComplete) {
      state.SkipWithError("analysis did not complete");
      break;
    }
    state.counters["pairs"] = static_cast<double>(ran);
  }
  state.counters["systems"] = kSystems;
  state.counters["profiles"] = kProfiles;
}
BENCHMARK(bm_storm)->Name("compat/storm:10000x50")->Unit(benchmark::kMillisecond)->Iterations(5);

void bm_one_more(benchmark::State& state) {
  compatibility::Analysis analysis;
  for (int s = 0; s < kSystems; ++s) analysis.set_system(fmt::format("node{:05}", s), profile_number(s % kProfiles));
  analysis.analyse(SIZE_MAX);
  int next = kProfiles;
  for (auto _ : state) {
    analysis.set_system("newcomer", profile_number(next++));
    benchmark::DoNotOptimize(analysis.analyse(SIZE_MAX));
  }
}
BENCHMARK(bm_one_more)->Name("compat/one_new_profile_against:50")->Unit(benchmark::kMicrosecond);

void bm_states(benchmark::State& state) {
  compatibility::Analysis analysis;
  for (int s = 0; s < 100; ++s) analysis.set_system(fmt::format("node{:03}", s), profile_number(s % kProfiles));
  analysis.analyse(SIZE_MAX);
  auto tests = compatibility::TestSet{}.add(compatibility::CompatTest::kMemory);
  for (auto _ : state) {
    size_t compatible = 0;
    for (int a = 0; a < 100; ++a) {
      for (int b = 0; b < 100; ++b) {
        auto st = analysis.state(fmt::format("node{:03}", a), fmt::format("node{:03}", b), tests);
        compatible += st == compatibility::CompatibilityState::kFullyCompatible;
      }
    }
    benchmark::DoNotOptimize(compatible);
  }
}
BENCHMARK(bm_states)->Name("compat/states:100x100")->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
