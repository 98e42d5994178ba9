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

// ---- SampleSeries -------------------------------------------------------------

void SampleSeries::Cursor::add(const CompactSample& s, int sign) {
  for (size_t m = 0; m < metrics::kMetricMax; ++m) {
    const int has = (s.present >> (m + 1)) & 1;
    sum[m] += sign * has * static_cast<int64_t>(s.fixed[m]);
    n[m] += sign * has;
  }
}

WindowSums SampleSeries::Cursor::sums(const CompactSample* newest) const {
  WindowSums out;
  if (hi == lo || newest == nullptr) return out;
  out.count = static_cast<int32_t>(hi - lo);
  out.n = n;
  out.sum = sum;
  out.newest = *newest;
  return out;
}

WindowSummary WindowSums::summary() const {
  WindowSummary out;
  out.count = count;
  if (count == 0) return out;
  out.newest_s = newest.time_s;
  for (size_t m = 0; m < metrics::kMetricMax; ++m) {
    const auto metric = static_cast<uint8_t>(m + 1);
    if (n[m] > 0) out.average[metric] = fixed_average(metric, sum[m], n[m]);
    if ((newest.present >> metric) & 1u) out.latest[metric] = fixed_average(metric, newest.fixed[m], 1);
  }
  return out;
}

uint64_t SampleSeries::first_after(int64_t time_s) const {
  uint64_t lo = first_, hi = end_;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (at(mid).time_s <= time_s) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

bool SampleSeries::push(const CompactSample& s) {
  if (!empty() && s.time_s <= at(end_ - 1).time_s) return false;  // one a second, in order
  if (size() == ring_.size()) {
    std::vector<CompactSample> bigger(std::max<size_t>(8, 2 * ring_.size()));
    for (uint64_t i = first_; i < end_; ++i) bigger[i & (bigger.size() - 1)] = at(i);
    ring_ = std::move(bigger);
  }
  ring_[end_ & (ring_.size() - 1)] = s;
  ++end_;
  if (track_.width > 0) {
    track_.add(s, +1);
    track_.hi = end_;
    track_.newest = s;
    trim_track();
  }
  return true;
}

void SampleSeries::trim_track() {
  const int64_t from_s = track_.newest.time_s - track_.width;
  for (; track_.lo < track_.hi && at(track_.lo).time_s <= from_s; ++track_.lo) track_.add(at(track_.lo), -1);
  track_.oldest_s = track_.lo < track_.hi ? at(track_.lo).time_s : 0;
  track_.before_s = track_.lo > first_ ? at(track_.lo - 1).time_s : INT64_MIN;
}

void SampleSeries::track(int64_t width) {
  track_ = Track{};
  track_.width = width;
  track_.lo = track_.hi = end_;
  if (empty()) return;
  track_.newest = at(end_ - 1);
  track_.lo = track_.hi = first_after(track_.newest.time_s - width);
  for (; track_.hi < end_; ++track_.hi) track_.add(at(track_.hi), +1);
  trim_track();
}

void SampleSeries::drop_through(int64_t time_s) {
  while (!empty() && at(first_).time_s <= time_s) ++first_;
  // A sum that counts a forgotten sample cannot be moved on: it starts again.
  for (auto& q : queries_) {
    if (q.used != 0 && q.lo < first_) q.used = 0;
  }
  if (track_.width > 0 && track_.lo < first_) track(track_.width);
  if (track_.lo == first_) track_.before_s = INT64_MIN;
}

WindowSums SampleSeries::sums(int64_t from_s, int64_t to_s, bool track_it) {
  const int64_t width = to_s - from_s;
  if (track_it && width != track_.width) track(width);
  // The tracked window is the one asked for when no sample is newer than
  // to_s and the window's first sample is the first after from_s.
  if (width == track_.width && track_.lo < track_.hi && track_.newest.time_s <= to_s && track_.before_s <= from_s &&
      from_s < track_.oldest_s) {
    return track_.sums(&track_.newest);
  }
  Query* q = nullptr;
  for (auto& k : queries_) {
    if (k.used != 0 && k.to_s - k.from_s == width && from_s >= k.from_s && to_s >= k.to_s) q = &k;
  }
  if (q == nullptr) {
    // The least recently used sum starts again at the window's first sample.
    q = &*std::min_element(queries_.begin(), queries_.end(),
                           [](const Query& a, const Query& b) { return a.used < b.used; });
    *q = Query{};
    q->lo = q->hi = first_after(from_s);
  }
  q->used = ++uses_;
  q->from_s = from_s;
  q->to_s = to_s;
  // Samples that left the window, then those that entered it.
  for (; q->lo < end() && at(q->lo).time_s <= from_s; ++q->lo) {
    if (q->lo < q->hi) {
      q->add(at(q->lo), -1);
    } else {
      q->hi = q->lo + 1;
    }
  }
  for (; q->hi < end() && at(q->hi).time_s <= to_s; ++q->hi) q->add(at(q->hi), +1);
  return q->sums(q->hi > q->lo ? &at(q->hi - 1) : nullptr);
}

void grid_sums(const std::vector<CompactSample>& samples, int64_t width, int64_t first_s, int64_t step,
               int64_t until_s, std::vector<WindowSums>& out) {
  WindowSums w;  // the samples [lo, hi)
  size_t lo = 0, hi = 0;
  auto add = [&w](const CompactSample& s, int sign) {
    for (size_t m = 0; m < metrics::kMetricMax; ++m) {
      const int has = (s.present >> (m + 1)) & 1;
      w.sum[m] += sign * has * static_cast<int64_t>(s.fixed[m]);
      w.n[m] += sign * has;
    }
  };
  for (int64_t t = first_s; t <= until_s; t += std::max<int64_t>(step, 1)) {
    for (; hi < samples.size() && samples[hi].time_s <= t; ++hi) add(samples[hi], +1);
    for (; lo < hi && samples[lo].time_s <= t - width; ++lo) add(samples[lo], -1);
    if (hi == lo) {
      out.emplace_back();
      continue;
    }
    w.count = static_cast<int32_t>(hi - lo);
    w.newest = samples[hi - 1];
    out.push_back(w);
  }
}

// ---- SampleWindows ----------------------------------------------------------------

uint32_t SampleWindows::find(const std::string& name, const std::string& system) const {
  auto it = index_.find(key(name, system));
  return it == index_.end() ? kNone : it->second;
}

void SampleWindows::push(const std::string& name, const std::string& system, const CompactSample& s) {
  uint32_t i = find(name, system);
  if (i == kNone) {
    if (free_.empty()) {
      i = static_cast<uint32_t>(entities_.size());
      entities_.emplace_back();
    } else {
      i = free_.back();
      free_.pop_back();
    }
    entities_[i] = Entity{name, system, true, SampleSeries{}};
    index_.emplace(key(name, system), i);
  }
  auto& series = entities_[i].series;
  if (series.push(s)) series.drop_through(s.time_s - keep_s_);
}

void SampleWindows::add(const metrics::HostSample& sample) {
  static const std::string kHost;
  std::lock_guard lock(mutex_);
  push(sample.system, kHost, compact(sample.time_s, sample.host));
  for (const auto& w : sample.wpars) push(w.name, sample.system, compact(sample.time_s, w.values));
}

void SampleWindows::keep(int64_t seconds, int64_t now_s) {
  std::lock_guard lock(mutex_);
  keep_s_ = std::max<int64_t>(seconds, 60);
  if (now_s - swept_s_ < kSweepS) return;
  swept_s_ = now_s;
  for (uint32_t i = 0; i < entities_.size(); ++i) {
    Entity& e = entities_[i];
    if (!e.live || (!e.series.empty() && e.series.newest_s() > now_s - keep_s_)) continue;
    index_.erase(key(e.name, e.system));
    e = Entity{};
    free_.push_back(i);
  }
}

SampleWindows::Reader::Reader(SampleWindows& w, bool remember_order)
    : lock_(w.mutex_), w_(w), remember_(remember_order) {
  if (remember_) order_.reserve(w_.order_.size());
}

SampleWindows::Reader::~Reader() {
  if (remember_) w_.order_ = std::move(order_);
}

std::optional<WindowSummary> SampleWindows::Reader::read(const std::string& name, const std::string& system,
                                                         int64_t from_s, int64_t to_s) {
  const size_t k = order_.size();
  const auto& last = w_.order_;
  // Where the last pass found its k-th entity, and ahead of it the next ones.
  uint32_t i = kNone;
  if (k < last.size() && last[k] != kNone && last[k] < w_.entities_.size()) {
    const Entity& e = w_.entities_[last[k]];
    if (e.live && e.name == name && e.system == system) i = last[k];
  }
  // The entity asked for kAhead reads later fetched ahead (its names and the
  // tracked window: the first lines), so that its memory is on its way.
  if (k + kAhead < last.size() && last[k + kAhead] < w_.entities_.size()) {
    const char* e = reinterpret_cast<const char*>(&w_.entities_[last[k + kAhead]]);
    for (size_t line = 0; line < std::min<size_t>(sizeof(Entity), 320); line += 64) __builtin_prefetch(e + line);
  }
  if (i == kNone) i = w_.find(name, system);
  if (remember_) order_.push_back(i);
  if (i == kNone) return std::nullopt;
  return w_.entities_[i].series.summary(from_s, to_s, remember_);
}

std::optional<WindowSummary> SampleWindows::Reader::host(const std::string& system, int64_t from_s, int64_t to_s) {
  static const std::string kHost;
  return read(system, kHost, from_s, to_s);
}

std::optional<WindowSummary> SampleWindows::Reader::wpar(const std::string& name, const std::string& system,
                                                         int64_t from_s, int64_t to_s) {
  return read(name, system, from_s, to_s);
}

std::optional<WindowSummary> SampleWindows::host(const std::string& system, int64_t from_s, int64_t to_s) {
  Reader r(*this, false);
  return r.host(system, from_s, to_s);
}

std::optional<WindowSummary> SampleWindows::wpar(const std::string& name, const std::string& system, int64_t from_s,
                                                 int64_t to_s) {
  Reader r(*this, false);
  return r.wpar(name, system, from_s, to_s);
}

size_t SampleWindows::entities() const {
  std::lock_guard lock(mutex_);
  return index_.size();
}

}  // namespace wpm::policy
