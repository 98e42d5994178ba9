// wpm-bench-simulate: the what-if simulation (wpm policy simulate) of a
// period at the default interval (60 s) for G groups of W WPARs on S
// systems, the samples every 10 s (issue 15's target: one day for 10,000
// WPARs in 100 groups under 10 s). The simulation is the service's own
// (policy::simulate) over an in-memory log of the fleet's definitions and a
// history reader that makes each entity's samples (as the sample store
// would return them). The figure is the simulation's own work; the store's
// reads of the same hours add their time (wpm-bench-metrics measures one,
// "reads of an hour of raw samples", and the number made is printed here).
//   wpm-bench-simulate [--groups G] [--wpars-per-group W] [--systems S] [--hours H]

#include <fmt/format.h>
#include <spdlog/sinks/null_sink.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "services/policy/simulate.h"
#include "services/policy/tests/memory_log.h"

namespace {

using namespace wpm;
using metrics::Metric;
using Clock = std::chrono::steady_clock;

using policy::testing::MemoryLog;

// A smooth, deterministic load per entity.
double load(size_t entity, int64_t t, double base, double swing) {
  return base + swing * (0.5 + 0.5 * std::sin(static_cast<double>(t) / 3600.0 + static_cast<double>(entity)));
}

}  // namespace

int main(int argc, char** argv) {
  size_t groups = 100, per_group = 100, systems = 1000, hours = 24;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    size_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--groups") groups = v;
    if (flag == "--wpars-per-group") per_group = v;
    if (flag == "--systems") systems = v;
    if (flag == "--hours") hours = v;
  }
  const int64_t from_s = 1'800'000'000, to_s = from_s + static_cast<int64_t>(hours) * 3600;
  const int64_t defined_ns = (from_s - 3600) * 1'000'000'000LL;
  MemoryLog log;
  std::map<std::string, size_t> system_of;  // WPAR → its system's index
  for (size_t s = 0; s < systems; ++s) {
    std::string id = fmt::format("s{:05}", s);
    log.add(defined_ns, "registry", s + 1, SystemRegistered{id, id, "10.0.0.1", "key-" + id, {}, 9510});
  }
  policy::GroupPolicy p;
  p.enabled = true;
  p.automation = policy::Automation::kRecommend;
  p.max = 70;
  p.min = 5;
  p.trigger_count = 2;
  p.metrics = {policy::MetricSetting{Metric::kCpu, 1, 1, 1, {}, {}, false},
               policy::MetricSetting{Metric::kMemory, 1, 1, 1, {}, {}, false}};
  for (size_t g = 0; g < groups; ++g) {
    std::string group = fmt::format("g{:04}", g);
    log.add(defined_ns, "group/" + group, 1, GroupDefined{group, "", true});
    log.add(defined_ns, "group/" + group, 2, GroupPolicySet{group, policy::to_json(p).dump()});
    for (size_t w = 0; w < per_group; ++w) {
      size_t index = g * per_group + w;
      WparDefinition d;
      d.name = fmt::format("w{:06}", index);
      d.type = "application";
      d.group = group;
      d.system = fmt::format("s{:05}", index % systems);
      d.checkpointable = true;
      d.reported_state = "A";
      system_of[d.name] = index % systems;
      log.add(defined_ns, "wpar/" + d.name, 1, WparDefined{d, true});
      log.add(defined_ns, "placement/" + d.name, 1, WparPlaced{d.name, d.system, 1, ""});
    }
  }
  size_t reads = 0;
  policy::HistoryReader history = [&](bool wpar, const std::string& name, const std::string&, int64_t a, int64_t b)
      -> Result<metrics::History> {
    ++reads;
    metrics::History h;
    size_t entity = wpar ? system_of.at(name) * 7919 + name.size() : std::stoul(name.substr(1));
    std::string system = wpar ? fmt::format("s{:05}", system_of.at(name)) : name;
    metrics::Column cpu{1, {}}, memory{2, {}};
    for (int64_t t = (a + 9) / 10 * 10; t <= b; t += 10) {  // [a, b]
      h.times_s.push_back(t);
      h.systems.push_back(system);
      cpu.values.push_back(metrics::to_fixed(Metric::kCpu, wpar ? load(entity, t, 2, 30) : load(entity, t, 20, 60)));
      memory.values.push_back(metrics::to_fixed(Metric::kMemory, wpar ? 3 : 40));
    }
    h.columns = {cpu, memory};
    return h;
  };
  policy::SimulationOptions o;
  o.group = "g0000";
  o.from_ns = from_s * 1'000'000'000LL;
  o.to_ns = to_s * 1'000'000'000LL;
  spdlog::logger quiet("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  auto t0 = Clock::now();
  auto r = policy::simulate(log, history, o, quiet);
  double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!r) {
    std::fprintf(stderr, "simulation failed: %s\n", r.error().message.c_str());
    return 1;
  }
  std::printf("simulation: %zu h at 60 s, %zu groups, %zu WPARs, %zu systems: %zu passes, %llu events, %zu history "
              "reads of an hour, %zu moves for g0000: %.2f s (%.1f ms per pass) besides the store's reads; target "
              "(24 h, 10,000 WPARs) < 10 s\n",
              hours, groups, groups * per_group, systems, r->passes, static_cast<unsigned long long>(r->events), reads,
              r->simulated.size(), seconds, 1000.0 * seconds / static_cast<double>(std::max<size_t>(r->passes, 1)));
  return 0;
}
