#pragma once
// The recent samples the policy averages (seed "Group policy settings":
// the averaging period): per host and per WPAR, the samples of the last
// `keep_s` seconds in a compact form (32 bytes each), fed by the sample
// store's subscription. The what-if simulation keeps the stored history in
// the same series (SampleSeries), so both average with the same code.
//
// A series keeps running sums over the windows it was last asked for: the
// next pass, a little later, adds the samples that entered and subtracts
// those that left instead of summing the whole period again. The sums are
// of the stored fixed-point integers, so an average is exact whatever the
// order of the additions: a running sum equals a fresh one to the last bit.
//
// Thread safety: SampleSeries is a plain value; every member function of
// SampleWindows may run on any thread.

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "schemas/metrics.h"
#include "services/policy/model.h"

namespace wpm::policy {

// A sample as the windows keep it: the stored fixed-point values (metric n
// at [n − 1], clamped to 32 bits).
struct CompactSample {
  int64_t time_s = 0;
  uint8_t present = 0;
  std::array<int32_t, metrics::kMetricMax> fixed{};
};
CompactSample compact(int64_t time_s, const metrics::MetricValues& v);

struct WindowSummary {
  Values average;        // over (from, to]
  Values latest;         // the newest sample in (from, to]
  int64_t newest_s = 0;  // its time (0: none)
  int count = 0;
};

// An average from an exact sum of fixed-point values.
double fixed_average(uint8_t metric, int64_t sum, int64_t count);

// A window's sums, from which its summary is made (kept by the simulation
// for the passes ahead: smaller than the summary).
struct WindowSums {
  int32_t count = 0;
  std::array<int32_t, metrics::kMetricMax> n{};
  std::array<int64_t, metrics::kMetricMax> sum{};
  CompactSample newest;  // when count > 0
  WindowSummary summary() const;
};

// The sums of the windows (t - width, t] at t = first_s, first_s + step, ...
// up to until_s, appended to `out`: a stretch of passes (the simulation's
// hour) in one sweep of the samples, each window moved on from the one
// before. `samples` in strictly increasing time (as SampleSeries keeps
// them); the answers are those SampleSeries::sums gives, to the last bit.
void grid_sums(const std::vector<CompactSample>& samples, int64_t width, int64_t first_s, int64_t step,
               int64_t until_s, std::vector<WindowSums>& out);

// One entity's samples in time order, with running sums:
// - the tracked window: the samples of the newest sample's time minus the
//   width last asked for, kept as samples arrive. A pass a little after the
//   newest sample finds its answer there without reading the samples;
// - the windows last asked for (at most kCursors), moved forward from one
//   question to the next (the simulation, and a pass that finds a sample
//   newer than its time).
class SampleSeries {
 public:
  // Appends a sample newer than the newest (an older or equal one is
  // ignored: false).
  bool push(const CompactSample& s);
  // Forgets the samples at or before `time_s`.
  void drop_through(int64_t time_s);
  // The summary of the samples in (from_s, to_s], and its sums. `track`:
  // keep this window's width tracked from now on (a pass's question; one
  // aside, such as wpm group explain of a group with another period, leaves
  // the tracked width alone).
  WindowSummary summary(int64_t from_s, int64_t to_s, bool track = true) {
    return sums(from_s, to_s, track).summary();
  }
  WindowSums sums(int64_t from_s, int64_t to_s, bool track = true);
  bool empty() const { return end_ == first_; }
  int64_t newest_s() const { return empty() ? 0 : at(end_ - 1).time_s; }
  size_t size() const { return end_ - first_; }

 private:
  static constexpr size_t kCursors = 2;
  // The sum of the samples with absolute index in [lo, hi).
  struct Cursor {
    uint64_t lo = 0, hi = 0;
    std::array<int64_t, metrics::kMetricMax> sum{};
    std::array<int32_t, metrics::kMetricMax> n{};
    void add(const CompactSample& s, int sign);
    WindowSums sums(const CompactSample* newest) const;
  };
  struct Query : Cursor {
    int64_t from_s = 0, to_s = 0;  // the window: (from_s, to_s]
    uint64_t used = 0;             // when last used (of uses_), 0: empty
  };
  struct Track : Cursor {          // [lo, end_): (newest − width, newest]
    int64_t width = 0;             // 0: none tracked
    int64_t before_s = INT64_MIN;  // the time of the sample before lo (none kept: INT64_MIN)
    int64_t oldest_s = 0;          // of the sample at lo
    CompactSample newest;
  };
  // Samples by absolute index (the n-th pushed), in a ring of a power of
  // two: the sample i at ring_[i mod its size].
  const CompactSample& at(uint64_t index) const { return ring_[index & (ring_.size() - 1)]; }
  uint64_t end() const { return end_; }
  uint64_t first_after(int64_t time_s) const;  // the index of the first sample after time_s
  void track(int64_t width);                   // starts tracking windows of this width
  void trim_track();                           // the tracked window's oldest samples out
  std::vector<CompactSample> ring_;
  uint64_t first_ = 0;  // the absolute index of the oldest
  uint64_t end_ = 0;    // one past the newest
  uint64_t uses_ = 0;
  Track track_;
  std::array<Query, kCursors> queries_{};
};

// Where a pass reads its samples: the live windows, or the stored history
// (the what-if simulation).
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual std::optional<WindowSummary> host(const std::string& system, int64_t from_s, int64_t to_s) = 0;
  virtual std::optional<WindowSummary> wpar(const std::string& name, const std::string& system, int64_t from_s,
                                            int64_t to_s) = 0;
};

class SampleWindows {
  struct Entity {
    std::string name;    // a WPAR's name, or a host's system id
    std::string system;  // the system that reported a WPAR ("" for a host)
    bool live = false;
    SampleSeries series;
  };

 public:
  // Reads many entities under one lock (a pass). A whole pass asks for them
  // in the same order every time (the inventory's): the reader remembers
  // that order and checks each entity where the last pass found it, and
  // fetches the next ones ahead, instead of looking each up by name. A
  // reader that does not remember (a question aside) also leaves the
  // series' tracked windows as they are.
  class Reader : public SampleSource {
   public:
    explicit Reader(SampleWindows& w, bool remember_order = true);
    ~Reader() override;
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    std::optional<WindowSummary> host(const std::string& system, int64_t from_s, int64_t to_s) override;
    std::optional<WindowSummary> wpar(const std::string& name, const std::string& system, int64_t from_s,
                                      int64_t to_s) override;

   private:
    std::optional<WindowSummary> read(const std::string& name, const std::string& system, int64_t from_s,
                                      int64_t to_s);
    std::lock_guard<std::mutex> lock_;
    SampleWindows& w_;
    bool remember_;
    std::vector<uint32_t> order_;  // this pass's entities, in the order asked (kNone: none)
  };

  void add(const metrics::HostSample& sample);
  // Keep samples this long (the longest averaging period in use, plus a
  // margin); entities with nothing newer than that (gone WPARs and hosts)
  // are forgotten, looked for at most every kSweepS.
  void keep(int64_t seconds, int64_t now_s);
  std::optional<WindowSummary> host(const std::string& system, int64_t from_s, int64_t to_s);
  // A WPAR's samples as its system `system` reported them.
  std::optional<WindowSummary> wpar(const std::string& name, const std::string& system, int64_t from_s,
                                    int64_t to_s);
  size_t entities() const;

 private:
  static constexpr int64_t kSweepS = 600;
  static constexpr uint32_t kNone = UINT32_MAX;
  static constexpr size_t kAhead = 8;  // entities fetched ahead by a reader
  static std::string key(const std::string& name, const std::string& system) { return name + '\0' + system; }
  uint32_t find(const std::string& name, const std::string& system) const;
  void push(const std::string& name, const std::string& system, const CompactSample& s);
  mutable std::mutex mutex_;
  // Entities stay where they are while they live (the readers' order
  // refers to them); a forgotten one's place is reused.
  std::vector<Entity> entities_;
  std::vector<uint32_t> free_;
  std::unordered_map<std::string, uint32_t> index_;  // key(name, system) → entity
  std::vector<uint32_t> order_;                     // the last whole pass's (Reader)
  int64_t keep_s_ = 600;
  int64_t swept_s_ = 0;
};

}  // namespace wpm::policy
