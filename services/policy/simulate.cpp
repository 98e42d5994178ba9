#include "services/policy/simulate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <memory>
#include <unordered_map>

#include "services/executor/model.h"
#include "services/inventory/model.h"
#include "services/policy/service.h"

namespace wpm::policy {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;
constexpr uint64_t kPageEvents = 4096;

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0); }

// The stored history as the passes read it. Each entity's raw samples are
// read an hour at a time, and while its hour is in hand the entity's window
// sums are worked out for every pass time of that hour on the interval's
// grid, with the width its pass asked for, by the live windows' code
// (SampleSeries, given the samples in time order as if they arrived). The
// passes then find their sums ready, one entity after another in the order
// of the pass before (fetched ahead); one that asks for anything else (an
// interval or a period changed within the hour) is answered from the
// series, which keeps the samples of its window, or from the history read
// again. Memory: an hour of sums and a window of samples per entity.
class HistorySource : public SampleSource {
 public:
  static constexpr int64_t kChunkS = 3600;
  static constexpr size_t kAhead = 8;
  HistorySource(const HistoryReader& read, int64_t to_s) : read_(read), to_s_(to_s) {}
  std::optional<WindowSummary> host(const std::string& system, int64_t from_s, int64_t to_s) override {
    return summary(false, system, system, from_s, to_s);
  }
  std::optional<WindowSummary> wpar(const std::string& name, const std::string& system, int64_t from_s,
                                    int64_t to_s) override {
    return summary(true, name, system, from_s, to_s);
  }
  // Before a pass: the grid of the passes ahead (policy.interval).
  void set_interval(int64_t interval_s) { interval_s_ = std::max<int64_t>(1, interval_s); }
  // After a pass: the next one asks for the entities in the same order.
  void pass_ended() {
    last_order_.swap(order_);
    order_.clear();
  }
  const std::optional<Error>& error() const { return error_; }
  uint64_t reads() const { return reads_; }

 private:
  struct Loaded {
    bool wpar = false;
    std::string name, system;
    int64_t width = 0;  // of the windows asked for (a host is asked once per averaging period in use)
    int64_t read_to_s = INT64_MIN;     // read up to this (INT64_MIN: nothing yet)
    int64_t kept_after_s = INT64_MIN;  // the series holds every sample read after this
    SampleSeries series;
    // The sums worked out for the pass times ready_first_s + i × ready_step.
    int64_t ready_width = 0, ready_first_s = 0, ready_step = 1;
    std::vector<WindowSums> ready;
    size_t served = 0;  // the next one a pass will likely ask for
  };
  Loaded& find(bool wpar, const std::string& name, const std::string& system, int64_t width) {
    const size_t k = order_.size();
    if (k + kAhead < last_order_.size()) {
      const Loaded* ahead = last_order_[k + kAhead];
      __builtin_prefetch(ahead);
      __builtin_prefetch(reinterpret_cast<const char*>(ahead) + 64);
      __builtin_prefetch(reinterpret_cast<const char*>(ahead) + 128);
    }
    if (k + kAhead / 2 < last_order_.size()) {
      const Loaded* soon = last_order_[k + kAhead / 2];
      if (soon->served < soon->ready.size()) __builtin_prefetch(&soon->ready[soon->served]);
    }
    Loaded* l = nullptr;
    if (k < last_order_.size()) {
      Loaded* guess = last_order_[k];
      if (guess->wpar == wpar && guess->width == width && guess->name == name && guess->system == system) l = guess;
    }
    if (l == nullptr) {
      auto& slot = loaded_[fmt::format("{}{}\0{}\0{}", wpar ? 'w' : 'h', name, system, width)];
      if (!slot) {
        slot = std::make_unique<Loaded>();
        slot->wpar = wpar;
        slot->name = name;
        slot->system = system;
        slot->width = width;
      }
      l = slot.get();
    }
    order_.push_back(l);
    return *l;
  }
  static const WindowSums* ready(Loaded& l, int64_t width, int64_t to_s) {
    if (l.ready.empty() || width != l.ready_width || to_s < l.ready_first_s ||
        (to_s - l.ready_first_s) % l.ready_step != 0) {
      return nullptr;
    }
    const auto i = static_cast<size_t>((to_s - l.ready_first_s) / l.ready_step);
    if (i >= l.ready.size()) return nullptr;
    l.served = i + 1;
    return &l.ready[i];
  }
  std::optional<WindowSummary> summary(bool wpar, const std::string& name, const std::string& system, int64_t from_s,
                                       int64_t to_s) {
    Loaded& l = find(wpar, name, system, to_s - from_s);
    if (const WindowSums* r = ready(l, to_s - from_s, to_s)) return r->summary();
    if (l.read_to_s == INT64_MIN || from_s < l.kept_after_s) {  // first, or earlier samples wanted: read from from_s
      l.series = SampleSeries{};
      l.ready.clear();
      l.read_to_s = l.kept_after_s = from_s;
    }
    while (l.read_to_s < std::min(to_s, to_s_)) {  // bounded: each round reads up to an hour more
      if (!read_hour(l, to_s - from_s, to_s)) return std::nullopt;
      if (const WindowSums* r = ready(l, to_s - from_s, to_s)) return r->summary();
    }
    return l.series.summary(from_s, to_s);
  }
  // Reads the rest of the hour (of the clock: the store keeps raw samples in
  // hourly blocks) after l.read_to_s and works out the sums of windows of
  // `width` ending at first_s and at each grid time after it in that hour.
  bool read_hour(Loaded& l, int64_t width, int64_t first_s) {
    const int64_t until = std::min(floor_div(l.read_to_s + 1, kChunkS) * kChunkS + kChunkS - 1, to_s_);
    ++reads_;
    auto h = read_(l.wpar, l.name, l.system, l.read_to_s + 1, until);
    l.read_to_s = until;
    if (!h && h.error().code != ErrorCode::kNotFound) {
      if (!error_) error_ = h.error();
      return false;
    }
    l.ready.clear();
    l.served = 0;
    l.ready_width = width;
    l.ready_first_s = first_s;
    l.ready_step = interval_s_;
    int64_t next = first_s;  // the next pass time to work out
    auto settle = [&](int64_t before_s) {  // the pass times before this sample's
      for (; next <= until && next < before_s; next += l.ready_step) {
        l.ready.push_back(l.series.sums(next - width, next));
        // What the passes ahead in this hour no longer need is let go.
        l.series.drop_through(next - width);
        l.kept_after_s = std::max(l.kept_after_s, next - width);
      }
    };
    const size_t n = h ? h->times_s.size() : 0;
    for (size_t i = 0; i < n; ++i) {
      if (l.wpar && (i >= h->systems.size() || h->systems[i] != l.system)) continue;  // as its own system reported it
      metrics::MetricValues v;
      for (const auto& c : h->columns) {
        if (c.tag >= 1 && c.tag <= metrics::kMetricMax && c.values[i] != metrics::kMissing) {
          v.set_fixed(static_cast<metrics::Metric>(c.tag), c.values[i]);
        }
      }
      settle(h->times_s[i]);
      l.series.push(compact(h->times_s[i], v));
    }
    settle(INT64_MAX);
    return true;
  }
  const HistoryReader& read_;
  int64_t to_s_;
  int64_t interval_s_ = 60;
  std::unordered_map<std::string, std::unique_ptr<Loaded>> loaded_;  // by kind, name, system and width
  std::vector<Loaded*> order_, last_order_;                           // this pass's, the last one's
  std::optional<Error> error_;
  uint64_t reads_ = 0;
};

// The log in order, one page at a time.
class LogCursor {
 public:
  explicit LogCursor(kernel::EventLog& log) : log_(log) {}
  // The next event, or none at the head.
  Result<const Event*> peek() {
    if (index_ < page_.size()) return &page_[index_];
    if (end_) return nullptr;
    auto r = log_.read_range(ReadRangeRequest{next_, 0, kPageEvents});
    if (!r) return std::unexpected(r.error());
    auto events = kernel::decode_records(r->records);
    if (!events) return std::unexpected(events.error());
    page_ = std::move(*events);
    index_ = 0;
    next_ = r->next;
    end_ = r->end || page_.empty();
    if (page_.empty()) return nullptr;
    return &page_[0];
  }
  Event take() { return std::move(page_[index_++]); }

 private:
  kernel::EventLog& log_;
  std::vector<Event> page_;
  size_t index_ = 0;
  uint64_t next_ = 1;
  bool end_ = false;
};

int64_t command_time_ns(const std::string& command) {
  auto dash = command.rfind('-');
  if (dash == std::string::npos) return 0;
  try {
    return std::stoll(command.substr(dash + 1)) * kSecondNs;
  } catch (...) {
    return 0;
  }
}

}  // namespace

Result<SimulationResult> simulate(kernel::EventLog& log, const HistoryReader& history,
                                  const SimulationOptions& o, spdlog::logger& logger) {
  auto t0 = std::chrono::steady_clock::now();
  if (o.to_ns <= o.from_ns) return fail(ErrorCode::kInvalidRequest, "the period is empty: --from must be before --to");
  if (o.candidate) {
    if (auto why = validate(*o.candidate)) return fail(ErrorCode::kInvalidRequest, "the candidate policy: " + *why);
  }
  SimulationResult result;
  inventory::Inventory inv;
  executor::Executor x;
  LogCursor cursor(log);
  HistorySource samples(history, o.to_ns / kSecondNs);
  std::map<std::string, GroupMemo> memos;
  PolicyCache policies;
  std::map<std::string, GroupPolicy> overrides;
  if (o.candidate) overrides[o.group] = *o.candidate;
  // Folds every event up to `until_ns`, noting the group's live moves.
  auto fold_until = [&](int64_t until_ns) -> Result<void> {
    while (true) {  // bounded by the log's length
      auto next = cursor.peek();
      if (!next) return std::unexpected(next.error());
      if (*next == nullptr || (*next)->timestamp_ns > until_ns) return {};
      Event e = cursor.take();
      if (const auto* m = std::get_if<MobilityDecided>(&e.payload); m && m->group == o.group) {
        int64_t at = command_time_ns(m->command);
        if (at >= o.from_ns && at <= o.to_ns) {
          result.live.push_back({at, m->wpar, m->from, m->to, m->trigger, m->automation, m->explanation});
        }
      }
      ++result.events;
      inventory::fold_into(inv, Event(e));
      executor::fold_into(x, std::move(e));
    }
  };
  auto interval_of = [&] {
    return inventory::parse_duration_ns(inv.setting("policy.interval")).value_or(60 * kSecondNs);
  };
  if (auto r = fold_until(o.from_ns); !r) return std::unexpected(r.error());
  int64_t interval = interval_of();
  bool known = inv.groups.contains(o.group);
  int64_t last = (o.from_ns - 1) / interval * interval;
  const auto from_grid = [&] { return (o.from_ns + interval - 1) / interval * interval; };  // no pass before the period
  int64_t seen_ns = o.from_ns;  // the newest event folded: the simulation's "now"
  for (int64_t at = next_pass_ns(last, interval);;) {
    // The events up to the pass (and, past the period's end, up to that end),
    // as the live service waits for it: a changed interval moves the pass to
    // its grid after the last pass.
    while (true) {  // bounded by the log's length
      auto next = cursor.peek();
      if (!next) return std::unexpected(next.error());
      if (*next == nullptr || (*next)->timestamp_ns > std::min(at, o.to_ns) + kPassSlackNs) break;
      seen_ns = std::max(seen_ns, (*next)->timestamp_ns);
      if (auto r = fold_until((*next)->timestamp_ns); !r) return std::unexpected(r.error());
      if (int64_t now = interval_of(); now != interval) {
        interval = now;
        at = std::max({next_pass_ns(last, interval), from_grid(),
                       (std::max(seen_ns, last + kPassSlackNs) - kPassSlackNs) / interval * interval});
      }
    }
    if (at > o.to_ns) break;
    last = at;
    known = known || inv.groups.contains(o.group);
    samples.set_interval(interval / kSecondNs);
    auto evaluated = evaluate_pass(inv, x, samples, memos, at, nullptr, overrides, logger, nullptr, policies);
    if (samples.error()) return std::unexpected(*samples.error());
    samples.pass_ended();
    std::map<std::string, uint64_t> reasons;
    conclude_pass(evaluated, memos, at, interval, [](const Evaluated&) { return true; }, reasons);
    for (const auto& ev : evaluated) {
      if (ev.input.group == o.group) {
        logger.debug("policy_simulated_pass group={} at_ns={} reason={} explanation=\"{}\"", o.group, at,
                     reason_name(ev.evaluation.reason), ev.evaluation.explanation);
      }
      if (ev.input.group != o.group || ev.evaluation.reason != Reason::kMove || !ev.evaluation.move) continue;
      const auto& m = *ev.evaluation.move;
      result.simulated.push_back({at, m.wpar, m.from, m.to, ev.evaluation.trigger,
                                  std::string(automation_name(ev.input.policy.automation)),
                                  ev.evaluation.explanation});
    }
    ++result.passes;
    interval = interval_of();
    // As live: the next grid time, or after falling behind (a pass caught up
    // after an interval change) the newest one due.
    at = std::max(next_pass_ns(last, interval), (std::max(seen_ns, last + kPassSlackNs) - kPassSlackNs) / interval * interval);
  }
  // The live decisions of the last passes are recorded just after them.
  if (auto r = fold_until(o.to_ns + 10 * kSecondNs); !r) return std::unexpected(r.error());
  known = known || inv.groups.contains(o.group);
  logger.info("policy_simulated group={} from_ns={} to_ns={} passes={} events={} simulated={} live={} candidate={}",
              o.group, o.from_ns, o.to_ns, result.passes, result.events, result.simulated.size(), result.live.size(),
              o.candidate.has_value());
  if (!known) return fail(ErrorCode::kNotFound, fmt::format("no WPAR group '{}' in the period (wpm group list)", o.group));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace wpm::policy
