#pragma once
// The recent samples the policy averages (seed "Group policy settings":
// the averaging period): per host and per WPAR, the samples of the last
// `keep_s` seconds in a compact form (32 bytes each), fed by the sample
// store's subscription. The average over a span is what the simulation
// computes from the stored history with the same function (average_of).
//
// Thread safety: every member function may run on any thread.

#include <array>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <map>
#include <string>
#include <vector>

#include "schemas/metrics.h"
#include "services/policy/model.h"

namespace wpm::policy {

// A sample as the windows keep it: the stored fixed-point values (metric n
// at [n − 1], clamped to 32 bits), so that an average is an exact integer
// sum, the same whatever the order or grouping of the additions (the live
// windows and the simulation's prefix sums agree to the last bit).
struct CompactSample {
  int64_t time_s = 0;
  uint8_t present = 0;
  std::array<int32_t, metrics::kMetricMax> fixed{};
};
CompactSample compact(int64_t time_s, const metrics::MetricValues& v);

struct WindowSummary {
  Values average;        // over (from, to]
  Values latest;         // the newest sample at or before `to`
  int64_t newest_s = 0;  // its time (0: none)
  int count = 0;
};

// Where a pass reads its samples: the live windows, or the stored history
// (the what-if simulation). WPARs are asked for in name order.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual std::optional<WindowSummary> host(const std::string& system, int64_t from_s, int64_t to_s) = 0;
  virtual std::optional<WindowSummary> wpar(const std::string& name, const std::string& system, int64_t from_s,
                                            int64_t to_s) = 0;
};
// The summary of samples (oldest first) in (from_s, to_s].
WindowSummary summarise(const std::deque<CompactSample>& samples, int64_t from_s, int64_t to_s);
// An average from an exact sum of fixed-point values (summarise and the simulation).
double fixed_average(uint8_t metric, int64_t sum, int64_t count);

class SampleWindows {
  using Map = std::map<std::string, std::deque<CompactSample>>;

 public:
  // Reads many entities under one lock: WPARs asked for in increasing name
  // order are found by walking forward (a pass asks for them in the
  // inventory's order), not looked up one by one.
  class Reader : public SampleSource {
   public:
    explicit Reader(const SampleWindows& w) : lock_(w.mutex_), w_(w), next_wpar_(w.wpars_.begin()) {}
    std::optional<WindowSummary> host(const std::string& system, int64_t from_s, int64_t to_s) override;
    std::optional<WindowSummary> wpar(const std::string& name, const std::string& system, int64_t from_s,
                                      int64_t to_s) override;

   private:
    std::lock_guard<std::mutex> lock_;
    const SampleWindows& w_;
    Map::const_iterator next_wpar_;
  };

  void add(const metrics::HostSample& sample);
  // One entity's samples, oldest first, from the stored history (the
  // simulation): a host's, or a WPAR's as `system` reported them.
  void add_history(const std::string& system, const std::string* wpar, std::vector<CompactSample> samples);
  // Keep samples this long (the longest averaging period in use, plus a
  // margin); entities with nothing newer than that (gone WPARs and hosts)
  // are forgotten.
  void keep(int64_t seconds, int64_t now_s);
  std::optional<WindowSummary> host(const std::string& system, int64_t from_s, int64_t to_s) const;
  // A WPAR's samples as its system `system` reported them.
  std::optional<WindowSummary> wpar(const std::string& name, const std::string& system, int64_t from_s,
                                    int64_t to_s) const;
  size_t entities() const;

 private:
  static void push(Map& map, const std::string& key, CompactSample s, int64_t keep_s);
  mutable std::mutex mutex_;
  Map hosts_, wpars_;  // WPARs by name NUL system
  int64_t keep_s_ = 600;
};

}  // namespace wpm::policy
