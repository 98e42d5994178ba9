#include "services/kernel/clock.h"

#include <chrono>

#include "schemas/assert.h"

namespace wpm::kernel {

int64_t SystemClock::wall_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t SystemClock::monotonic_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SimulatedClock::advance_ns(int64_t ns) {
  WPM_ASSERT(ns >= 0, "a clock never goes back (asked to move by {} ns)", ns);
  elapsed_ += ns;
}

void TimerQueue::arm(const std::string& name, int64_t at_ns) {
  cancel(name);
  by_time_.emplace(at_ns, name);
  by_name_.emplace(name, at_ns);
}

void TimerQueue::cancel(const std::string& name) {
  auto it = by_name_.lower_bound({name, INT64_MIN});
  if (it == by_name_.end() || it->first != name) return;
  by_time_.erase({it->second, name});
  by_name_.erase(it);
}

std::optional<int64_t> TimerQueue::next_ns() const {
  if (by_time_.empty()) return std::nullopt;
  return by_time_.begin()->first;
}

std::optional<std::string> TimerQueue::pop_due(int64_t now_ns) {
  if (by_time_.empty() || by_time_.begin()->first > now_ns) return std::nullopt;
  auto [at, name] = *by_time_.begin();
  by_time_.erase(by_time_.begin());
  by_name_.erase({name, at});
  return name;
}

}  // namespace wpm::kernel
