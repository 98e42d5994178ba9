#include "services/policy/windows.h"

#include <algorithm>

namespace wpm::policy {

CompactSample compact(int64_t time_s, const metrics::MetricValues& v) {
  CompactSample c;
  c.time_s = time_s;
  c.present = v.present;
  for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) {
    c.fixed[m - 1] = static_cast<int32_t>(std::clamp<int64_t>(v.fixed[m], INT32_MIN, INT32_MAX));
  }
  return c;
}

double fixed_average(uint8_t metric, int64_t sum, int64_t count) {
  return static_cast<double>(sum) / static_cast<double>(count) /
         static_cast<double>(metrics::metric_info(static_cast<metrics::Metric>(metric)).scale);
}

WindowSummary summarise(const std::deque<CompactSample>& samples, int64_t from_s, int64_t to_s) {
  WindowSummary out;
  std::array<int64_t, metrics::kMetricMax> sum{};
  std::array<int64_t, metrics::kMetricMax> n{};
  // Newest first from the last at or before to_s, back to the first at or
  // before from_s (samples are in time order).
  const CompactSample* newest = nullptr;
  auto end = std::upper_bound(samples.begin(), samples.end(), to_s,
                              [](int64_t t, const CompactSample& c) { return t < c.time_s; });
  for (auto it = std::make_reverse_iterator(end); it != samples.rend() && it->time_s > from_s; ++it) {
    if (newest == nullptr) newest = &*it;
    ++out.count;
    for (size_t m = 0; m < metrics::kMetricMax; ++m) {
      const bool has = (it->present >> (m + 1)) & 1u;
      sum[m] += has ? it->fixed[m] : 0;
      n[m] += has ? 1 : 0;
    }
  }
  if (newest == nullptr) return out;
  out.newest_s = newest->time_s;
  for (size_t m = 0; m < metrics::kMetricMax; ++m) {
    const auto metric = static_cast<uint8_t>(m + 1);
    if (n[m] > 0) out.average[metric] = fixed_average(metric, sum[m], n[m]);
    if ((newest->present >> metric) & 1u) out.latest[metric] = fixed_average(metric, newest->fixed[m], 1);
  }
  return out;
}

std::optional<WindowSummary> SampleWindows::Reader::host(const std::string& system, int64_t from_s, int64_t to_s) {
  auto it = w_.hosts_.find(system);
  if (it == w_.hosts_.end()) return std::nullopt;
  return summarise(it->second, from_s, to_s);
}

std::optional<WindowSummary> SampleWindows::Reader::wpar(const std::string& wpar, const std::string& system,
                                                         int64_t from_s, int64_t to_s) {
  const auto& map = w_.wpars_;
  std::string name = wpar + '\0' + system;
  // Forward from the last one found; a name before it starts from a lookup.
  if (next_wpar_ != map.end() && next_wpar_->first > name) next_wpar_ = map.lower_bound(name);
  size_t steps = 0;
  while (next_wpar_ != map.end() && next_wpar_->first < name && ++steps < 64) ++next_wpar_;
  if (next_wpar_ != map.end() && next_wpar_->first < name) next_wpar_ = map.lower_bound(name);
  if (next_wpar_ == map.end() || next_wpar_->first != name) return std::nullopt;
  return summarise(next_wpar_->second, from_s, to_s);
}

void SampleWindows::push(Map& map, const std::string& key, CompactSample s, int64_t keep_s) {
  auto& q = map[key];
  if (!q.empty() && s.time_s <= q.back().time_s) return;  // one a second, in order
  q.push_back(s);
  while (!q.empty() && q.front().time_s <= s.time_s - keep_s) q.pop_front();
}

void SampleWindows::add(const metrics::HostSample& sample) {
  std::lock_guard lock(mutex_);
  push(hosts_, sample.system, compact(sample.time_s, sample.host), keep_s_);
  for (const auto& w : sample.wpars) push(wpars_, w.name + '\0' + sample.system, compact(sample.time_s, w.values), keep_s_);
}

void SampleWindows::add_history(const std::string& system, const std::string* wpar,
                                std::vector<CompactSample> samples) {
  std::lock_guard lock(mutex_);
  auto& q = wpar == nullptr ? hosts_[system] : wpars_[*wpar + '\0' + system];
  for (auto& s : samples) {
    if (q.empty() || s.time_s > q.back().time_s) q.push_back(s);
  }
}

void SampleWindows::keep(int64_t seconds, int64_t now_s) {
  std::lock_guard lock(mutex_);
  keep_s_ = std::max<int64_t>(seconds, 60);
  for (auto* map : {&hosts_, &wpars_}) {
    std::erase_if(*map, [&](const auto& e) { return e.second.empty() || e.second.back().time_s <= now_s - keep_s_; });
  }
}

std::optional<WindowSummary> SampleWindows::host(const std::string& system, int64_t from_s, int64_t to_s) const {
  std::lock_guard lock(mutex_);
  auto it = hosts_.find(system);
  if (it == hosts_.end()) return std::nullopt;
  return summarise(it->second, from_s, to_s);
}

std::optional<WindowSummary> SampleWindows::wpar(const std::string& name, const std::string& system, int64_t from_s,
                                                 int64_t to_s) const {
  std::lock_guard lock(mutex_);
  auto it = wpars_.find(name + '\0' + system);
  if (it == wpars_.end()) return std::nullopt;
  return summarise(it->second, from_s, to_s);
}

size_t SampleWindows::entities() const {
  std::lock_guard lock(mutex_);
  return hosts_.size() + wpars_.size();
}

}  // namespace wpm::policy
