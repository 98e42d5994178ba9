// The agent's metrics reports (docs/policy.md): collected every metrics
// interval, sent on the agent channel, and kept as gauges on the agent's own
// /metrics. Part of the daemon (daemon_internal.h); runs on its main loop.

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <set>

#include "agents/agent/daemon_internal.h"

namespace wpm::agent::detail {
void Daemon::note_reply(const ap::ManagerReply& reply) {
  if (reply.metrics_interval_ms == 0) return;
  auto interval = std::chrono::milliseconds(std::clamp<uint32_t>(reply.metrics_interval_ms, 1000, 3'600'000));
  if (interval == metrics_interval_) return;
  log_->info("metrics_interval_changed from_ms={} to_ms={}", metrics_interval_.count(), interval.count());
  metrics_interval_ = interval;
  next_metrics_ = std::min(next_metrics_, std::chrono::steady_clock::now() + interval);
}

// The agent's own /metrics carries the per-WPAR series (wpmd's stays
// bounded whatever the fleet's size): one gauge per metric, host and WPAR;
// a WPAR's series go when it is no longer reported.
void Daemon::update_metric_gauges(const ap::MetricsReport& report) {
  if (registry_ == nullptr) return;
  static constexpr std::array<const char*, 7> kNames = {"", "cpu_percent", "memory_percent", "load1", "processes",
                                                        "threads", "page_faults_per_second"};
  static constexpr std::array<const char*, 7> kHelp = {"", "CPU used, % of the host's capacity",
                                                       "memory used, % of the host's", "1-minute load average",
                                                       "processes", "threads", "page faults per second"};
  auto& g = metric_gauges_;
  if (g.host[1] == nullptr) {
    for (size_t m = 1; m < kNames.size(); ++m) {
      g.host[m] = &prometheus::BuildGauge().Name(std::string("wpm_host_") + kNames[m]).Help(std::string("The host's ") + kHelp[m]).Register(*registry_);
      if (m != 3) {
        g.wpar[m] = &prometheus::BuildGauge().Name(std::string("wpm_wpar_") + kNames[m]).Help(std::string("A WPAR's ") + kHelp[m]).Register(*registry_);
      }
    }
  }
  auto values = [](const ap::MetricSet& s) {
    return std::array<std::optional<double>, 7>{
        std::nullopt,
        (s.present & ap::kMetricCpuBit) ? std::optional<double>(s.cpu_percent) : std::nullopt,
        (s.present & ap::kMetricMemoryBit) ? std::optional<double>(s.memory_percent) : std::nullopt,
        (s.present & ap::kMetricLoadBit) ? std::optional<double>(s.load1) : std::nullopt,
        (s.present & ap::kMetricProcessesBit) ? std::optional<double>(s.processes) : std::nullopt,
        (s.present & ap::kMetricThreadsBit) ? std::optional<double>(s.threads) : std::nullopt,
        (s.present & ap::kMetricPageFaultsBit) ? std::optional<double>(s.page_faults_per_s) : std::nullopt};
  };
  auto host = values(report.host);
  for (size_t m = 1; m < host.size(); ++m) {
    if (host[m]) g.host[m]->Add({}).Set(*host[m]);
  }
  std::set<std::string> seen;
  for (const auto& w : report.wpars) {
    seen.insert(w.name);
    auto v = values(w.metrics);
    auto& series = g.wpars[w.name];
    for (size_t m = 1; m < v.size(); ++m) {
      if (!v[m] || g.wpar[m] == nullptr) continue;
      if (series[m] == nullptr) series[m] = &g.wpar[m]->Add({{"wpar", w.name}});
      series[m]->Set(*v[m]);
    }
  }
  for (auto it = g.wpars.begin(); it != g.wpars.end();) {
    if (seen.contains(it->first)) {
      ++it;
      continue;
    }
    for (size_t m = 1; m < it->second.size(); ++m) {
      if (it->second[m] != nullptr) g.wpar[m]->Remove(it->second[m]);
    }
    it = g.wpars.erase(it);
  }
}

void Daemon::report_metrics() {
  if (!collector_) return;
  auto report = collector_->collect(now_monotonic_ns());
  if (report) update_metric_gauges(*report);
  // The first collection only takes the counters the next one subtracts;
  // nothing is sent before the manager has heard Started.
  if (!report || !session_ || !started_sent_) return;
  size_t wpars = report->wpars.size();
  report->metrics_port = metrics_port_;
  ap::ManagerRequest request;
  request.body = std::move(*report);
  auto reply = session_->call(request, kManagerTimeout);
  if (!reply) {
    metrics_->errors.Increment();
    log_->warn("metrics_not_sent endpoint={} error=\"{}\"", session_->endpoint(), reply.error().message);
    return;
  }
  note_reply(*reply);
  if (const auto* e = std::get_if<ap::ProtocolError>(&reply->body)) {
    metrics_->errors.Increment();
    log_->warn("metrics_refused error=\"{}\"", describe(*e));
    return;
  }
  log_->debug("metrics_sent wpars={}", wpars);
}

}  // namespace wpm::agent::detail
