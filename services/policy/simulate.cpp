#include "services/policy/simulate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <memory>

#include "services/executor/model.h"
#include "services/inventory/model.h"
#include "services/policy/history_source.h"
#include "services/policy/service.h"

namespace wpm::policy {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;
constexpr uint64_t kPageEvents = 4096;

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
    samples.pass_begins(at / kSecondNs, interval / kSecondNs);
    auto evaluated = evaluate_pass(inv, x, samples, memos, at, nullptr, overrides, logger, nullptr, policies);
    if (samples.error()) return std::unexpected(*samples.error());
    samples.pass_ended(at / kSecondNs);
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
