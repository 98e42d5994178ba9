#include "services/compatibility/tests.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace wpm::compatibility {
namespace {

constexpr std::array<std::string_view, kCompatTestCount> kNames = {
    "osType", "distribution", "processorClass", "kernel", "baseSystem", "runtime",
    "glibc",  "memoryKeys",   "ntp",            "memory", "cpuSpeed"};

// Numeric components from the left, up to the first one that is not a number.
std::vector<uint64_t> numeric_components(std::string_view v) {
  std::vector<uint64_t> out;
  size_t i = 0;
  while (i < v.size() && out.size() < 16) {  // bounded: versions have a few components
    size_t end = v.find_first_of(".-+~:_", i);
    std::string_view part = v.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i);
    uint64_t n = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), n);
    if (part.empty() || ec != std::errc() || ptr != part.data() + part.size()) break;
    out.push_back(n);
    if (end == std::string_view::npos) break;
    i = end + 1;
  }
  return out;
}

std::string gib(uint64_t bytes) { return fmt::format("{:.1f} GiB", static_cast<double>(bytes) / (1u << 30)); }

std::string ntp_text(const std::optional<bool>& ntp) {
  if (!ntp) return "unknown";
  return *ntp ? "synchronized" : "not synchronized";
}

const profile::Checkpointer* find_checkpointer(const profile::SystemProfile& p, std::string_view name) {
  for (const auto& c : p.checkpointers) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string runtime_text(const profile::SystemProfile& p) {
  std::string out = fmt::format("wpm-agent {}", p.agent_version.empty() ? "?" : p.agent_version);
  for (const auto& c : p.checkpointers) {
    out += c.available ? fmt::format(", {} {}", c.name, c.version) : fmt::format(", {} unavailable", c.name);
  }
  return out;
}

TestResult check(CompatTest test, bool passed, std::string departure, std::string arrival, std::string remedy) {
  return TestResult{test, passed, std::move(departure), std::move(arrival), passed ? "" : std::move(remedy)};
}

TestResult test_processor(const profile::SystemProfile& d, const profile::SystemProfile& a, std::string_view b) {
  std::string dv = fmt::format("{} {} ({} CPU flags)", d.architecture, d.isa_level, d.cpu_flags.size());
  std::string av = fmt::format("{} {} ({} CPU flags)", a.architecture, a.isa_level, a.cpu_flags.size());
  if (d.architecture != a.architecture) {
    return check(CompatTest::kProcessorClass, false, dv, av,
                 fmt::format("{} is {}, not {}: choose a {} system", b, a.architecture, d.architecture,
                             d.architecture));
  }
  if (isa_level_number(a.isa_level) < isa_level_number(d.isa_level)) {
    return check(CompatTest::kProcessorClass, false, dv, av,
                 fmt::format("choose a system of processor class {} or higher ({} is {})", d.isa_level, b,
                             a.isa_level));
  }
  std::vector<std::string> missing;
  for (const auto& f : d.cpu_flags) {
    if (std::find(a.cpu_flags.begin(), a.cpu_flags.end(), f) == a.cpu_flags.end()) {
      missing.push_back(f);
    }
  }
  if (!missing.empty()) {
    std::string shown;
    for (size_t i = 0; i < missing.size() && i < 5; ++i) shown += (i ? ", " : "") + missing[i];
    if (missing.size() > 5) shown += fmt::format(" and {} more", missing.size() - 5);
    return check(CompatTest::kProcessorClass, false, dv, av,
                 fmt::format("the processor of {} lacks {}: choose a system whose processor has them", b, shown));
  }
  return check(CompatTest::kProcessorClass, true, dv, av, "");
}

TestResult test_runtime(const profile::SystemProfile& d, const profile::SystemProfile& a, std::string_view b) {
  std::string dv = runtime_text(d), av = runtime_text(a);
  if (compare_versions(a.agent_version, d.agent_version) < 0) {
    return check(CompatTest::kRuntime, false, dv, av,
                 fmt::format("upgrade wpm-agent on {} to {} or later", b, d.agent_version));
  }
  for (const auto& c : d.checkpointers) {
    if (!c.available) continue;
    const auto* other = find_checkpointer(a, c.name);
    if (other == nullptr || !other->available) {
      std::string why = other == nullptr ? "it does not offer it" : other->reason;
      return check(CompatTest::kRuntime, false, dv, av,
                   fmt::format("{} cannot checkpoint with {} ({}); install or enable it there", b, c.name, why));
    }
    if (compare_versions(other->version, c.version) < 0) {
      return check(CompatTest::kRuntime, false, dv, av,
                   fmt::format("upgrade the {} checkpointer on {} to {} or later", c.name, b, c.version));
    }
  }
  return check(CompatTest::kRuntime, true, dv, av, "");
}

TestResult at_least(CompatTest test, const std::string& d, const std::string& a, std::string remedy) {
  return check(test, compare_versions(a, d) >= 0, d, a, std::move(remedy));
}

}  // namespace

std::string_view test_name(CompatTest test) { return kNames[static_cast<size_t>(test)]; }

std::optional<CompatTest> test_from_name(std::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) return static_cast<CompatTest>(i);
  }
  return std::nullopt;
}

std::array<CompatTest, kCompatTestCount> all_tests() {
  std::array<CompatTest, kCompatTestCount> out{};
  for (size_t i = 0; i < kCompatTestCount; ++i) out[i] = static_cast<CompatTest>(i);
  return out;
}

TestSet TestSet::all_optional() {
  TestSet s;
  for (auto t : all_tests()) s.add(t);
  return s;
}

TestSet& TestSet::add(CompatTest test) {
  bits_ |= 1u << static_cast<size_t>(test);
  return *this;
}

int compare_versions(std::string_view a, std::string_view b) {
  auto x = numeric_components(a);
  auto y = numeric_components(b);
  for (size_t i = 0; i < std::max(x.size(), y.size()); ++i) {
    uint64_t p = i < x.size() ? x[i] : 0;
    uint64_t q = i < y.size() ? y[i] : 0;
    if (p != q) return p < q ? -1 : 1;
  }
  return 0;
}

int isa_level_number(std::string_view isa) {
  auto v = isa.rfind("-v");
  if (v == std::string_view::npos) return 0;
  int n = 0;
  auto [ptr, ec] = std::from_chars(isa.data() + v + 2, isa.data() + isa.size(), n);
  return ec == std::errc() && ptr == isa.data() + isa.size() ? n : 0;
}

std::vector<TestResult> run_tests(const profile::SystemProfile& d, const profile::SystemProfile& a,
                                  std::string_view b) {
  std::vector<TestResult> r;
  r.reserve(kCompatTestCount);
  r.push_back(check(CompatTest::kOsType, d.os_type == a.os_type, d.os_type, a.os_type,
                    fmt::format("{} runs {}: choose a {} system", b, a.os_type, d.os_type)));
  {
    std::string dv = fmt::format("{} {}", d.distribution, d.distribution_version);
    std::string av = fmt::format("{} {}", a.distribution, a.distribution_version);
    if (d.distribution != a.distribution) {
      r.push_back(check(CompatTest::kDistribution, false, dv, av,
                        fmt::format("{} runs {}: choose a {} system", b, a.distribution, d.distribution)));
    } else {
      r.push_back(check(CompatTest::kDistribution,
                        compare_versions(a.distribution_version, d.distribution_version) >= 0, dv, av,
                        fmt::format("upgrade {} on {} to {}", d.distribution, b, d.distribution_version)));
    }
  }
  r.push_back(test_processor(d, a, b));
  r.push_back(at_least(CompatTest::kKernel, d.kernel_version, a.kernel_version,
                       fmt::format("upgrade the kernel on {} to {} or later", b, d.kernel_version)));
  r.push_back(at_least(CompatTest::kBaseSystem, d.base_system_version, a.base_system_version,
                       fmt::format("upgrade the base system on {} to {} or later", b, d.base_system_version)));
  r.push_back(test_runtime(d, a, b));
  r.push_back(check(CompatTest::kGlibc, compare_versions(a.glibc_version, d.glibc_version) == 0 &&
                                            !d.glibc_version.empty(),
                    d.glibc_version, a.glibc_version,
                    fmt::format("{} glibc on {} to {} (the versions must be equal)",
                                compare_versions(a.glibc_version, d.glibc_version) < 0 ? "upgrade" : "change", b,
                                d.glibc_version)));
  r.push_back(check(CompatTest::kMemoryKeys, a.memory_protection_keys || !d.memory_protection_keys,
                    d.memory_protection_keys ? "yes" : "no", a.memory_protection_keys ? "yes" : "no",
                    fmt::format("choose a system whose processor has memory protection keys ({} has none)", b)));
  r.push_back(check(CompatTest::kNtp, d.ntp_synchronized == true && a.ntp_synchronized == true,
                    ntp_text(d.ntp_synchronized), ntp_text(a.ntp_synchronized),
                    "enable NTP synchronisation on both systems (timedatectl set-ntp true)"));
  r.push_back(check(CompatTest::kMemory, a.memory_bytes >= d.memory_bytes, gib(d.memory_bytes), gib(a.memory_bytes),
                    fmt::format("add memory to {} (at least {})", b, gib(d.memory_bytes))));
  r.push_back(check(CompatTest::kCpuSpeed, a.cpu_mhz >= d.cpu_mhz, fmt::format("{:.0f} MHz", d.cpu_mhz),
                    fmt::format("{:.0f} MHz", a.cpu_mhz),
                    fmt::format("choose a system with a processor of at least {:.0f} MHz", d.cpu_mhz)));
  return r;
}

bool passes(const std::vector<TestResult>& results, const TestSet& tests) {
  return std::all_of(results.begin(), results.end(),
                     [&](const TestResult& r) { return r.passed || !tests.applies(r.test); });
}

std::string_view state_name(CompatibilityState state) {
  switch (state) {
    case CompatibilityState::kFullyCompatible: return "fully compatible";
    case CompatibilityState::kOutbound: return "outbound compatible";
    case CompatibilityState::kInbound: return "inbound compatible";
    case CompatibilityState::kIncompatible: return "incompatible";
  }
  return "unknown";
}

CompatibilityState derive_state(const std::vector<TestResult>& a_to_b, const std::vector<TestResult>& b_to_a,
                                const TestSet& tests) {
  bool out = passes(a_to_b, tests);
  bool in = passes(b_to_a, tests);
  if (out && in) return CompatibilityState::kFullyCompatible;
  if (out) return CompatibilityState::kOutbound;
  if (in) return CompatibilityState::kInbound;
  return CompatibilityState::kIncompatible;
}

std::string compared_properties_key(const profile::SystemProfile& p) {
  std::string k = fmt::format("{}\x1f{}\x1f{}\x1f{}\x1f{}\x1f{}\x1f{}\x1f{}\x1f", p.os_type, p.distribution,
                              p.distribution_version, p.kernel_version, p.base_system_version, p.glibc_version,
                              p.architecture, p.isa_level);
  for (const auto& f : p.cpu_flags) k += f + ",";
  k += fmt::format("\x1f{}\x1f{}\x1f{}\x1f{:.0f}\x1f{}\x1f", p.memory_protection_keys ? 1 : 0,
                   ntp_text(p.ntp_synchronized), p.memory_bytes, p.cpu_mhz, p.agent_version);
  for (const auto& c : p.checkpointers) k += fmt::format("{}:{}:{},", c.name, c.available ? 1 : 0, c.version);
  return k;
}

std::vector<TestResult> to_test_results(const std::vector<CompatResult>& records) {
  std::vector<TestResult> out;
  for (const auto& r : records) {
    if (auto t = test_from_name(r.test)) out.push_back({*t, r.passed, r.departure, r.arrival, r.remedy});
  }
  return out;
}

}  // namespace wpm::compatibility
