#include "services/gateway/fleet_metrics.h"

#include <array>

namespace wpm::gateway {
namespace {

constexpr std::array<std::string_view, 3> kSystemStates = {"online", "offline", "unreachable"};
constexpr std::string_view kWparStates = "UDAPFLTB";
constexpr std::array<std::string_view, 13> kTaskKinds = {"deploy", "start",    "stop",   "pause",    "resume",
                                                         "freeze", "kill",     "remove", "relocate", "modify",
                                                         "evacuate", "fence", "mark-dead"};
constexpr std::array<std::string_view, 3> kOutcomes = {"succeeded", "failed", "cancelled"};
constexpr std::array<policy::Reason, 11> kReasons = {
    policy::Reason::kDisabled,    policy::Reason::kNoData,     policy::Reason::kWithin,
    policy::Reason::kTriggerCount, policy::Reason::kInFlight,  policy::Reason::kDomainCap,
    policy::Reason::kNoMobileWpar, policy::Reason::kNoTarget,  policy::Reason::kBelowGain,
    policy::Reason::kOverMax,     policy::Reason::kMove};

// Drops the series of names no longer there, and remembers the current ones.
void prune(std::set<std::string>& had, const std::set<std::string>& now,
           const std::function<void(const std::string&)>& remove) {
  for (const auto& name : had) {
    if (!now.contains(name)) remove(name);
  }
  had = now;
}

}  // namespace

FleetMetrics::FleetMetrics(prometheus::Registry& r, std::string version)
    : systems_(prometheus::BuildGauge().Name("wpm_systems").Help("Managed systems by state").Register(r)),
      wpars_(prometheus::BuildGauge().Name("wpm_wpars").Help("WPARs by state letter (U undeployed)").Register(r)),
      tasks_finished_(prometheus::BuildCounter()
                          .Name("wpm_tasks_finished_total")
                          .Help("Tasks that ended, by kind and outcome")
                          .Register(r)),
      tasks_running_(prometheus::BuildGauge()
                         .Name("wpm_tasks_running")
                         .Help("Tasks running or waiting for approval")
                         .Register(r)
                         .Add({})),
      decisions_(prometheus::BuildCounter()
                     .Name("wpm_policy_decisions_total")
                     .Help("Group evaluations of the policy, by what they decided")
                     .Register(r)),
      moves_(prometheus::BuildCounter()
                 .Name("wpm_policy_moves_total")
                 .Help("Relocations the policy asked for")
                 .Register(r)
                 .Add({})),
      recommendations_(prometheus::BuildCounter()
                           .Name("wpm_policy_recommendations_total")
                           .Help("Moves the policy only recommended (automation recommend)")
                           .Register(r)
                           .Add({})),
      pass_seconds_(prometheus::BuildGauge()
                        .Name("wpm_policy_pass_seconds")
                        .Help("How long the last policy pass took to evaluate the groups")
                        .Register(r)
                        .Add({})),
      group_state_(prometheus::BuildGauge()
                       .Name("wpm_group_state_percent")
                       .Help("A group's performance state at the last policy pass")
                       .Register(r)),
      group_threshold_(prometheus::BuildGauge()
                           .Name("wpm_group_threshold_percent")
                           .Help("A group's policy thresholds (bound max or min)")
                           .Register(r)),
      system_cpu_(prometheus::BuildGauge()
                      .Name("wpm_system_cpu_percent")
                      .Help("A system's CPU use in its last report, % of its capacity")
                      .Register(r)),
      system_memory_(prometheus::BuildGauge()
                         .Name("wpm_system_memory_percent")
                         .Help("A system's memory use in its last report, %")
                         .Register(r)),
      system_wpars_(prometheus::BuildGauge()
                        .Name("wpm_system_wpars")
                        .Help("WPARs placed on a system")
                        .Register(r)) {
  prometheus::BuildGauge()
      .Name("wpm_build_info")
      .Help("wpmd's version")
      .Register(r)
      .Add({{"version", std::move(version)}})
      .Set(1);
  for (auto s : kSystemStates) systems_.Add({{"state", std::string(s)}});
  for (char c : kWparStates) wpars_.Add({{"state", std::string(1, c)}});
  for (auto k : kTaskKinds) {
    for (auto o : kOutcomes) tasks_finished_.Add({{"kind", std::string(k)}, {"outcome", std::string(o)}});
  }
  for (auto reason : kReasons) decisions_.Add({{"reason", std::string(policy::reason_name(reason))}});
}

void FleetMetrics::note(const metrics::HostSample& sample) {
  std::lock_guard lock(latest_mutex_);
  auto& l = latest_[sample.system];
  l.cpu = sample.host.get(metrics::Metric::kCpu);
  l.memory = sample.host.get(metrics::Metric::kMemory);
}

void FleetMetrics::refresh(const inventory::InventoryView& inventory, const executor::ExecutorView* executor,
                           const policy::PolicyService* policy) {
  std::map<std::string, Latest> latest;
  {
    std::lock_guard lock(latest_mutex_);
    latest = latest_;
  }
  std::map<std::string, double> system_states, wpar_states;
  std::map<std::string, double> placed;
  std::set<std::string> systems;
  inventory.read([&](const inventory::Inventory& inv) {
    for (const auto& [id, s] : inv.registry.systems()) {
      ++system_states[inv.system_status(id).state];
      systems.insert(id);
      placed[id] = 0;
    }
    for (const auto& [name, w] : inv.wpars) {
      std::string letter = w.wpar.system.empty() ? "U" : w.wpar.reported_state.empty() ? "D" : w.wpar.reported_state;
      ++wpar_states[letter];
      if (!w.wpar.system.empty()) ++placed[w.wpar.system];
    }
  });
  for (auto s : kSystemStates) systems_.Add({{"state", std::string(s)}}).Set(system_states[std::string(s)]);
  for (char c : kWparStates) wpars_.Add({{"state", std::string(1, c)}}).Set(wpar_states[std::string(1, c)]);
  for (const auto& id : systems) {
    system_wpars_.Add({{"system", id}}).Set(placed[id]);
    if (auto l = latest.find(id); l != latest.end()) {
      if (l->second.cpu) system_cpu_.Add({{"system", id}}).Set(*l->second.cpu);
      if (l->second.memory) system_memory_.Add({{"system", id}}).Set(*l->second.memory);
    }
  }
  prune(system_series_, systems, [&](const std::string& id) {
    for (auto* f : {&system_wpars_, &system_cpu_, &system_memory_}) {
      if (f->Has({{"system", id}})) f->Remove(&f->Add({{"system", id}}));
    }
    std::lock_guard lock(latest_mutex_);
    latest_.erase(id);
  });
  if (executor != nullptr) {
    size_t running = 0;
    std::set<std::string> kept;
    executor->read([&](const executor::Executor& x) {
      running = x.running.size();
      for (const auto& [id, t] : x.tasks) {
        if (!t.finished()) continue;
        kept.insert(id);
        if (counted_.contains(id)) continue;
        tasks_finished_.Add({{"kind", t.kind}, {"outcome", t.state}}).Increment();
      }
    });
    counted_ = std::move(kept);
    tasks_running_.Set(static_cast<double>(running));
  }
  if (policy != nullptr) {
    auto stats = policy->stats();
    for (const auto& [reason, n] : stats.reasons) {
      auto& seen = decisions_seen_[reason];
      if (n > seen) decisions_.Add({{"reason", reason}}).Increment(static_cast<double>(n - seen));
      seen = n;
    }
    if (stats.moves > moves_seen_) moves_.Increment(static_cast<double>(stats.moves - moves_seen_));
    if (stats.recommended > recommendations_seen_) {
      recommendations_.Increment(static_cast<double>(stats.recommended - recommendations_seen_));
    }
    moves_seen_ = stats.moves;
    recommendations_seen_ = stats.recommended;
    pass_seconds_.Set(stats.last.ms / 1000);
    std::set<std::string> groups;
    for (const auto& [group, f] : policy->group_figures()) {
      groups.insert(group);
      group_state_.Add({{"group", group}}).Set(f.state);
      group_threshold_.Add({{"group", group}, {"bound", "max"}}).Set(f.max);
      group_threshold_.Add({{"group", group}, {"bound", "min"}}).Set(f.min);
    }
    prune(group_series_, groups, [&](const std::string& g) {
      if (group_state_.Has({{"group", g}})) group_state_.Remove(&group_state_.Add({{"group", g}}));
      for (const char* b : {"max", "min"}) {
        if (group_threshold_.Has({{"group", g}, {"bound", b}})) {
          group_threshold_.Remove(&group_threshold_.Add({{"group", g}, {"bound", b}}));
        }
      }
    });
  }
}

}  // namespace wpm::gateway
