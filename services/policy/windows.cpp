#include "services/policy/windows.h"

#include <algorithm>

namespace wpm::policy {

CompactSample compact(int64_t time_s, const metrics::MetricValues& v) {
  CompactSample c;
  c.time_s = time_s;
  c.present = v.present;
  for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) {
    if (auto x = v.get(static_cast<metrics::Metric>(m))) c.values[m - 1] = static_cast<float>(*x);
  }
  return c;
}

WindowSummary summarise(const std::deque<CompactSample>& samples, int64_t from_s, int64_t to_s) {
  WindowSummary out;
  std::array<double, metrics::kMetricMax + 1> sum{};
  std::array<int, metrics::kMetricMax + 1> n{};
  // Samples are in time order: start at the first after from_s.
  auto first = std::upper_bound(samples.begin(), samples.end(), from_s,
                                [](int64_t t, const CompactSample& s) { return t < s.time_s; });
  for (auto it = first; it != samples.end() && it->time_s <= to_s; ++it) {
    ++out.count;
    for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) {
      if (((it->present >> m) & 1u) == 0) continue;
      sum[m] += it->values[m - 1];
      ++n[m];
    }
    out.newest_s = it->time_s;
    for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) {
      out.latest[m] = ((it->present >> m) & 1u) ? std::optional<double>(it->values[m - 1]) : std::nullopt;
    }
  }
  for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) {
    if (n[m] > 0) out.average[m] = sum[m] / n[m];
  }
  return out;
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
  for (const auto& w : sample.wpars) push(wpars_, w.name, compact(sample.time_s, w.values), keep_s_);
}

void SampleWindows::keep(int64_t seconds) {
  std::lock_guard lock(mutex_);
  keep_s_ = std::max<int64_t>(seconds, 60);
}

std::optional<WindowSummary> SampleWindows::host(const std::string& system, int64_t from_s, int64_t to_s) const {
  std::lock_guard lock(mutex_);
  auto it = hosts_.find(system);
  if (it == hosts_.end()) return std::nullopt;
  return summarise(it->second, from_s, to_s);
}

std::optional<WindowSummary> SampleWindows::wpar(const std::string& name, int64_t from_s, int64_t to_s) const {
  std::lock_guard lock(mutex_);
  auto it = wpars_.find(name);
  if (it == wpars_.end()) return std::nullopt;
  return summarise(it->second, from_s, to_s);
}

size_t SampleWindows::entities() const {
  std::lock_guard lock(mutex_);
  return hosts_.size() + wpars_.size();
}

}  // namespace wpm::policy
