#pragma once
// The metrics wpm collects and how their samples travel (DESIGN.md §2; seed
// "Viewing performance metrics"): shared by the agent protocol, the store
// protocol and the metric history. Values are fixed point: value × the
// metric's scale, rounded to an integer.
//
// Thread safety: plain values and free functions.

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace wpm::metrics {

// The numbers are stored and sent: never renumber.
enum class Metric : uint8_t {
  kCpu = 1,         // % of the host's CPU capacity (a WPAR: its share of the host's)
  kMemory = 2,      // % of the host's memory
  kLoad = 3,        // host: 1-minute load average
  kProcesses = 4,   // processes
  kThreads = 5,     // threads (tasks)
  kPageFaults = 6,  // page faults per second
};
inline constexpr uint8_t kMetricMax = 6;

struct MetricInfo {
  Metric id;
  std::string_view name;  // as the CLI and the policy name it
  std::string_view unit;
  int64_t scale;          // stored value = round(value × scale)
  bool utilisation;       // a percentage of a resource (policy limit fixed at 1)
};
std::span<const MetricInfo> metric_infos();
const MetricInfo& metric_info(Metric metric);
std::optional<Metric> metric_by_name(std::string_view name);

// A span of metric history or a policy setting: "90s", "15m", "6h", "30d"
// (a bare number is seconds), in seconds; nothing when it is not one.
std::optional<int64_t> parse_duration_s(std::string_view text);

// Fixed point, rounded to the nearest step, and back.
int64_t to_fixed(Metric metric, double value);
double from_fixed(Metric metric, int64_t value);

// A value not collected at that time (e.g. no pids controller for threads).
inline constexpr int64_t kMissing = INT64_MIN;

// One entity's values at one time, in fixed point; absent when not collected.
struct MetricValues {
  std::array<int64_t, kMetricMax + 1> fixed{};
  uint8_t present = 0;  // bit n: metric n
  void set(Metric m, double value) { set_fixed(m, to_fixed(m, value)); }
  void set_fixed(Metric m, int64_t v) {
    fixed[static_cast<size_t>(m)] = v;
    present = static_cast<uint8_t>(present | (1u << static_cast<unsigned>(m)));
  }
  bool has(Metric m) const { return (present >> static_cast<unsigned>(m)) & 1u; }
  std::optional<double> get(Metric m) const {
    if (!has(m)) return std::nullopt;
    return from_fixed(m, fixed[static_cast<size_t>(m)]);
  }
  bool operator==(const MetricValues&) const = default;
};

struct WparSample {
  std::string name;
  MetricValues values;
  bool operator==(const WparSample&) const = default;
};

// One agent's report, at the manager's time (seconds).
struct HostSample {
  std::string system;
  int64_t time_s = 0;
  MetricValues host;
  std::vector<WparSample> wpars;
  bool operator==(const HostSample&) const = default;
};

// One metric's values at a history's times. `tag` names what it holds: a
// metric's number, or (aggregates) metric × 4 + kind (series.h).
struct Column {
  uint8_t tag = 0;
  std::vector<int64_t> values;
  bool operator==(const Column&) const = default;
};

// What a host or a WPAR did over a span: its times and one column per
// metric, values in fixed point or kMissing; `systems[i]` is where the
// entity was at times_s[i].
struct History {
  std::vector<int64_t> times_s;
  std::vector<Column> columns;
  std::vector<std::string> systems;
  const Column* column(uint8_t tag) const {
    for (const auto& c : columns) {
      if (c.tag == tag) return &c;
    }
    return nullptr;
  }
  bool operator==(const History&) const = default;
};

}  // namespace wpm::metrics
