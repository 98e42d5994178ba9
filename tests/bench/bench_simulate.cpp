// wpm-bench-simulate: the what-if simulation (wpm policy simulate) of a
// period at the default interval (60 s) for G groups of W WPARs on S
// systems, the samples every 10 s (issue 15's target: one day for 10,000
// WPARs in 100 groups under 10 s). The simulation is the service's own
// (policy::simulate) over an in-memory log of the fleet's definitions.
// The history comes from
//   - a real sample store (--store, as `wpm policy simulate` reads it): every
//     host's reports of the period written first (RocksDB in a temporary
//     directory; not timed), sealed, then read by the simulation: the figure
//     is the whole simulation, reads included;
//   - or a reader that makes each entity's samples in memory (the default):
//     the simulation's own work without the store.
//   wpm-bench-simulate [--groups G] [--wpars-per-group W] [--systems S] [--hours H] [--store]

#include <fmt/format.h>
#include <spdlog/sinks/null_sink.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "eventstore/samples.h"
#include "eventstore/store.h"
#include "services/policy/simulate.h"
#include "services/policy/tests/memory_log.h"
#include "tests/support/process.h"

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
  bool use_store = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--store") {
      use_store = true;
      continue;
    }
    if (i + 1 >= argc) break;
    size_t v = std::strtoull(argv[++i], nullptr, 10);
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
  // The samples of an entity at t: a smooth, deterministic load.
  auto values = [](bool wpar, size_t entity, int64_t t) {
    metrics::MetricValues v;
    v.set(Metric::kCpu, wpar ? load(entity, t, 2, 30) : load(entity, t, 20, 60));
    v.set(Metric::kMemory, wpar ? 3 : 40);
    return v;
  };
  auto wpar_entity = [&](const std::string& name) { return system_of.at(name) * 7919 + name.size(); };
  size_t reads = 0;
  policy::HistoryReader history = [&](bool wpar, const std::string& name, const std::string&, int64_t a, int64_t b)
      -> Result<metrics::History> {
    ++reads;
    metrics::History h;
    size_t entity = wpar ? wpar_entity(name) : std::stoul(name.substr(1));
    std::string system = wpar ? fmt::format("s{:05}", system_of.at(name)) : name;
    metrics::Column cpu{1, {}}, memory{2, {}};
    for (int64_t t = (a + 9) / 10 * 10; t <= b; t += 10) {  // [a, b]
      auto v = values(wpar, entity, t);
      h.times_s.push_back(t);
      h.systems.push_back(system);
      cpu.values.push_back(v.fixed[1]);
      memory.values.push_back(v.fixed[2]);
    }
    h.columns = {cpu, memory};
    return h;
  };
  // --store: the same history written to a real sample store, read back as
  // the gateway reads it.
  auto quiet_shared = std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  std::unique_ptr<testing::TempDir> dir;
  std::unique_ptr<eventstore::Store> store;
  std::unique_ptr<eventstore::SampleStore> sample_store;
  if (use_store) {
    dir = std::make_unique<testing::TempDir>("wpm-bench-simulate");
    eventstore::StoreOptions so;
    so.data_dir = dir->path();
    auto opened = eventstore::Store::open(so, quiet_shared);
    if (!opened) {
      std::fprintf(stderr, "cannot open a store: %s\n", opened.error().message.c_str());
      return 1;
    }
    store = std::move(*opened);
    auto samples = eventstore::SampleStore::open(*store, eventstore::SampleOptions{}, quiet_shared);
    if (!samples) {
      std::fprintf(stderr, "cannot open the sample store: %s\n", samples.error().message.c_str());
      return 1;
    }
    sample_store = std::move(*samples);
    std::vector<std::vector<std::string>> wpars_of(systems);
    for (const auto& [name, s] : system_of) wpars_of[s].push_back(name);
    auto w0 = Clock::now();
    uint64_t written = 0;
    for (int64_t t = from_s - 600; t <= to_s; t += 10) {  // the windows of the first passes reach back
      for (size_t s = 0; s < systems; ++s) {
        eventstore::HostSample r{fmt::format("s{:05}", s), t, values(false, s, t), {}};
        for (const auto& w : wpars_of[s]) r.wpars.push_back({w, values(true, wpar_entity(w), t)});
        if (auto ok = sample_store->write(r); !ok) {
          std::fprintf(stderr, "write failed: %s\n", ok.error().message.c_str());
          return 1;
        }
        ++written;
      }
      if ((t - from_s) % 3600 == 3590) {
        std::fprintf(stderr, "  written %lld of %zu h\r", static_cast<long long>((t - from_s) / 3600 + 1), hours);
      }
    }
    auto sealed = sample_store->maintain(to_s + 3 * 3600);
    if (!sealed) {
      std::fprintf(stderr, "seal failed: %s\n", sealed.error().message.c_str());
      return 1;
    }
    sample_store->compact();  // at rest, as a day-old history is: no compaction beside the timed reads
    std::printf("simulation: the store holds %llu reports (%zu hosts, their WPARs, every 10 s), written, sealed and "
                "compacted in %.0f s (not timed below)\n",
                static_cast<unsigned long long>(written), systems,
                std::chrono::duration<double>(Clock::now() - w0).count());
    history = [&](bool wpar, const std::string& name, const std::string& system, int64_t a, int64_t b) {
      ++reads;
      return sample_store->read(wpar, name, a, b, eventstore::Resolution::kRaw, &system);
    };
  }
  policy::SimulationOptions o;
  o.group = "g0000";
  o.from_ns = from_s * 1'000'000'000LL;
  o.to_ns = to_s * 1'000'000'000LL;
  auto t0 = Clock::now();
  auto r = policy::simulate(log, history, o, *quiet_shared);
  double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!r) {
    std::fprintf(stderr, "simulation failed: %s\n", r.error().message.c_str());
    return 1;
  }
  std::printf("simulation: %zu h at 60 s, %zu groups, %zu WPARs, %zu systems: %zu passes, %llu events, %zu history "
              "reads, %zu moves for g0000: %.2f s (%.1f ms per pass) %s; target (24 h, 10,000 WPARs) < 10 s\n",
              hours, groups, groups * per_group, systems, r->passes, static_cast<unsigned long long>(r->events), reads,
              r->simulated.size(), seconds, 1000.0 * seconds / static_cast<double>(std::max<size_t>(r->passes, 1)),
              use_store ? "with the store's reads" : "without the store (history made in memory)");
  return 0;
}
