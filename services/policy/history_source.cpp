#include "services/policy/history_source.h"

#include <algorithm>
#include <climits>

namespace wpm::policy {
namespace {

int64_t hour_of(int64_t t) {
  constexpr int64_t h = HistorySource::kHourS;
  return t / h * h - ((t % h != 0 && t < 0) ? h : 0);
}

}  // namespace

void HistorySource::pass_begins(int64_t at_s, int64_t interval_s) {
  interval_s_ = std::max<int64_t>(1, interval_s);
  if (pending_ && at_s >= job_hour_s_) {
    wait();
    for (Entity* e : job_) {
      std::swap(e->ready, e->next);
      e->next.at.clear();
      e->served = 0;
    }
    pending_ = false;
  }
  launch(at_s);
}

void HistorySource::pass_ended(int64_t at_s) {
  last_order_.swap(order_);
  order_.clear();
  launch(at_s);
}

HistorySource::Entity& HistorySource::find(bool wpar, const std::string& name, const std::string& system, int64_t width) {
  const size_t k = order_.size();
  if (k + kAhead < last_order_.size()) {
    const Entity* ahead = last_order_[k + kAhead];
    __builtin_prefetch(ahead);
    __builtin_prefetch(reinterpret_cast<const char*>(ahead) + 64);
    __builtin_prefetch(reinterpret_cast<const char*>(ahead) + 128);
  }
  if (k + kAhead / 2 < last_order_.size()) {
    const Entity* soon = last_order_[k + kAhead / 2];
    if (soon->served < soon->ready.at.size()) __builtin_prefetch(&soon->ready.at[soon->served]);
  }
  Entity* e = nullptr;
  if (k < last_order_.size()) {
    Entity* guess = last_order_[k];
    if (guess->wpar == wpar && guess->width == width && guess->name == name && guess->system == system) e = guess;
  }
  if (e == nullptr) {
    std::string key(1, wpar ? 'w' : 'h');
    key.append(name).append(1, '\0').append(system).append(1, '\0').append(std::to_string(width));
    auto& slot = entities_[key];
    if (!slot) {
      slot = std::make_unique<Entity>();
      slot->wpar = wpar;
      slot->name = name;
      slot->system = system;
      slot->width = width;
    }
    e = slot.get();
  }
  order_.push_back(e);
  return *e;
}

const WindowSums* HistorySource::ready(Entity& e, int64_t to_s) {
  const Sums& r = e.ready;
  if (r.at.empty() || to_s < r.first_s || (to_s - r.first_s) % r.step != 0) return nullptr;
  const auto i = static_cast<size_t>((to_s - r.first_s) / r.step);
  if (i >= r.at.size()) return nullptr;
  e.served = i + 1;
  return &r.at[i];
}

std::optional<WindowSummary> HistorySource::summary(bool wpar, const std::string& name, const std::string& system,
                                                    int64_t from_s, int64_t to_s) {
  Entity& e = find(wpar, name, system, to_s - from_s);
  if (const WindowSums* r = ready(e, to_s)) return r->summary();
  wait();  // the second thread is done with every entity
  if (error_) return std::nullopt;
  // From this pass time to the end of its hour.
  if (auto fail = prepare(e, to_s, std::max(to_s, std::min(hour_of(to_s) + kHourS - 1, to_s_)), interval_s_, e.ready,
                          samples_)) {
    error_ = std::move(*fail);
    return std::nullopt;
  }
  e.served = 0;
  if (const WindowSums* r = ready(e, to_s)) return r->summary();
  return std::nullopt;  // not reached: the first sum is this pass's
}

// Works out the sums of e's windows ending at first_s, first_s + step, …
// up to until_s into `out`, reading the samples it does not carry
// (`samples`: the caller's thread's room for them).
std::optional<Error> HistorySource::prepare(Entity& e, int64_t first_s, int64_t until_s, int64_t step, Sums& out,
                                            std::vector<CompactSample>& samples) {
  out.first_s = first_s;
  out.step = step;
  out.at.clear();
  if (until_s < first_s) return std::nullopt;
  int64_t read_from = e.have_to_s + 1;
  samples.clear();
  if (e.have_to_s == INT64_MIN || e.have_to_s > first_s || e.have_to_s < first_s - e.width) {
    read_from = first_s - e.width + 1;  // nothing carried that this window can use
  } else {
    samples.assign(e.carry.begin(), e.carry.end());
  }
  if (read_from <= until_s) {
    ++reads_;
    auto h = read_(e.wpar, e.name, e.system, read_from, until_s);
    if (!h && h.error().code != ErrorCode::kNotFound) return h.error();
    const size_t n = h ? h->times_s.size() : 0;
    for (size_t i = 0; i < n; ++i) {
      if (e.wpar && (i >= h->systems.size() || h->systems[i] != e.system)) continue;  // as its own system reported it
      if (!samples.empty() && h->times_s[i] <= samples.back().time_s) continue;       // one a second, in order
      CompactSample c;
      c.time_s = h->times_s[i];
      for (const auto& column : h->columns) {
        if (column.tag < 1 || column.tag > metrics::kMetricMax || column.values[i] == metrics::kMissing) continue;
        c.fixed[column.tag - 1] = static_cast<int32_t>(std::clamp<int64_t>(column.values[i], INT32_MIN, INT32_MAX));
        c.present = static_cast<uint8_t>(c.present | (1u << column.tag));
      }
      samples.push_back(c);
    }
  }
  out.at.reserve(static_cast<size_t>((until_s - first_s) / step) + 1);
  grid_sums(samples, e.width, first_s, step, until_s, out.at);
  // What the windows after until_s need (in a vector of its size: a window's, not an hour's).
  auto keep = std::partition_point(samples.begin(), samples.end(),
                                   [&](const CompactSample& c) { return c.time_s <= until_s - e.width; });
  e.carry.assign(keep, samples.end());
  e.carry.shrink_to_fit();
  e.have_to_s = until_s;
  return std::nullopt;
}

// Starts the second thread on the hour after the pass at `at_s` for the
// entities the last pass asked for, unless it has an hour not yet taken.
void HistorySource::launch(int64_t at_s) {
  const int64_t hour = hour_of(at_s) + kHourS;
  if (pending_ || last_order_.empty() || hour > to_s_ || error_) return;
  ++job_id_;
  job_.clear();
  for (Entity* e : last_order_) {
    if (e->job != job_id_) job_.push_back(e);
    e->job = job_id_;
  }
  pending_ = true;
  job_hour_s_ = hour;
  const int64_t step = interval_s_, first = (hour + step - 1) / step * step, until = std::min(hour + kHourS - 1, to_s_);
  thread_ = std::thread([this, step, first, until] {
    try {
      std::vector<CompactSample> samples;
      for (Entity* e : job_) {
        if (auto fail = prepare(*e, first, until, step, e->next, samples)) {
          job_error_ = std::move(*fail);
          return;
        }
      }
    } catch (const std::exception& x) {
      job_error_ = Error{ErrorCode::kInternal, std::string("reading the metric history: ") + x.what()};
    }
  });
}

// Waits for the second thread (its error becomes the source's).
void HistorySource::wait() {
  if (!thread_.joinable()) return;
  thread_.join();
  if (job_error_ && !error_) error_ = std::move(job_error_);
  job_error_.reset();
}

}  // namespace wpm::policy
