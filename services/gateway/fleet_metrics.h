#pragma once
// wpmd's fleet gauges for Prometheus (DESIGN.md §2: "fleet metrics for
// Prometheus"), with label sets bounded by what an operator configures
// (states, task kinds, decision reasons, groups, systems), never by WPARs:
// per-WPAR series come from each agent's own /metrics.
//
//   wpm_build_info{version}                      1
//   wpm_systems{state}                           online offline unreachable
//   wpm_wpars{state}                             U D A P F L T B
//   wpm_tasks_finished_total{kind,outcome}       succeeded failed cancelled (counted once each)
//   wpm_tasks_running                            running or waiting
//   wpm_policy_decisions_total{reason}           per group and pass (docs/policy.md)
//   wpm_policy_moves_total, wpm_policy_recommendations_total
//   wpm_policy_pass_seconds                      the last pass's evaluation time
//   wpm_group_state_percent{group}, wpm_group_threshold_percent{group,bound}
//   wpm_system_cpu_percent{system}, wpm_system_memory_percent{system}, wpm_system_wpars{system}
//
// Counters and the fixed label sets exist from the start. refresh() reads
// the services' states; note() takes each host's newest sample.
//
// Thread safety: note() on any thread; refresh() on one thread at a time.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "schemas/metrics.h"
#include "services/executor/service.h"
#include "services/inventory/service.h"
#include "services/policy/service.h"

namespace wpm::gateway {

class FleetMetrics {
 public:
  FleetMetrics(prometheus::Registry& registry, std::string version);
  void note(const metrics::HostSample& sample);
  // `executor` and `policy` may be null (services not run here).
  void refresh(const inventory::InventoryView& inventory, const executor::ExecutorView* executor,
               const policy::PolicyService* policy);

 private:
  struct Latest {
    std::optional<double> cpu, memory;
  };
  prometheus::Family<prometheus::Gauge>& systems_;
  prometheus::Family<prometheus::Gauge>& wpars_;
  prometheus::Family<prometheus::Counter>& tasks_finished_;
  prometheus::Gauge& tasks_running_;
  prometheus::Family<prometheus::Counter>& decisions_;
  prometheus::Counter& moves_;
  prometheus::Counter& recommendations_;
  prometheus::Gauge& pass_seconds_;
  prometheus::Family<prometheus::Gauge>& group_state_;
  prometheus::Family<prometheus::Gauge>& group_threshold_;
  prometheus::Family<prometheus::Gauge>& system_cpu_;
  prometheus::Family<prometheus::Gauge>& system_memory_;
  prometheus::Family<prometheus::Gauge>& system_wpars_;
  std::mutex latest_mutex_;
  std::map<std::string, Latest> latest_;  // by system
  std::set<std::string> counted_;         // finished tasks already counted (those still kept)
  std::map<std::string, uint64_t> decisions_seen_;
  uint64_t moves_seen_ = 0, recommendations_seen_ = 0;
  std::set<std::string> group_series_, system_series_;
};

}  // namespace wpm::gateway
