#include "schemas/metrics.h"

#include <algorithm>
#include <cmath>

#include "schemas/assert.h"

namespace wpm::metrics {
namespace {

constexpr std::array<MetricInfo, kMetricMax> kMetrics = {{
    {Metric::kCpu, "cpu", "%", 100, true},
    {Metric::kMemory, "memory", "%", 10000, true},  // 0.0001 %: 24 KiB of 24 GiB
    {Metric::kLoad, "load", "", 100, false},
    {Metric::kProcesses, "processes", "", 1, false},
    {Metric::kThreads, "threads", "", 1, false},
    {Metric::kPageFaults, "page-faults", "/s", 10, false},
}};

}  // namespace

std::span<const MetricInfo> metric_infos() { return kMetrics; }

const MetricInfo& metric_info(Metric metric) {
  auto n = static_cast<size_t>(metric);
  WPM_ASSERT(n >= 1 && n <= kMetricMax, "unknown metric {}", n);
  return kMetrics[n - 1];
}

std::optional<Metric> metric_by_name(std::string_view name) {
  for (const auto& m : kMetrics) {
    if (m.name == name) return m.id;
  }
  return std::nullopt;
}

std::optional<int64_t> parse_duration_s(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 9) return std::nullopt;
  int64_t n = 0;
  for (size_t i = 0; i < digits; ++i) n = n * 10 + (text[i] - '0');
  std::string_view unit = text.substr(digits);
  if (unit == "s" || unit.empty()) return n;
  if (unit == "m") return n * 60;
  if (unit == "h") return n * 3600;
  if (unit == "d") return n * 86'400;
  return std::nullopt;
}

int64_t to_fixed(Metric metric, double value) {
  if (!std::isfinite(value)) return 0;
  double scaled = std::round(value * static_cast<double>(metric_info(metric).scale));
  return static_cast<int64_t>(std::clamp(scaled, -9.0e15, 9.0e15));
}

double from_fixed(Metric metric, int64_t value) {
  return static_cast<double>(value) / static_cast<double>(metric_info(metric).scale);
}

}  // namespace wpm::metrics
