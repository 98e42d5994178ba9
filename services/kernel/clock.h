#pragma once
// Time behind an interface (STYLE.md §1, §9): no service reads the system
// clock or sleeps directly. Services take a Clock& and keep their deadlines
// in a TimerQueue; their loop asks the queue how long it may wait. Tests and
// the deterministic simulation drive a SimulatedClock instead.
//
// Thread safety: SystemClock is stateless; SimulatedClock and TimerQueue
// belong to one thread (or their owner locks).

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace wpm::kernel {

class Clock {
 public:
  virtual ~Clock() = default;
  // Unix time in ns: event timestamps, token expiry.
  virtual int64_t wall_ns() const = 0;
  // A clock that never goes back: deadlines and intervals.
  virtual int64_t monotonic_ns() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t wall_ns() const override;
  int64_t monotonic_ns() const override;
};

// Starts at `wall_start_ns` (monotonic at 0); moves only when told.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(int64_t wall_start_ns = 1'700'000'000'000'000'000) : wall_start_(wall_start_ns) {}
  int64_t wall_ns() const override { return wall_start_ + elapsed_; }
  int64_t monotonic_ns() const override { return elapsed_; }
  void advance_ns(int64_t ns);

 private:
  int64_t wall_start_;
  int64_t elapsed_ = 0;
};

// Named deadlines on the monotonic clock. Pure: the loop that owns it asks
// for the next deadline, waits on its sockets at most that long, then takes
// what fell due.
class TimerQueue {
 public:
  // Arms (or re-arms) `name` to fall due at `at_ns`.
  void arm(const std::string& name, int64_t at_ns);
  void cancel(const std::string& name);
  // The earliest deadline, if any.
  std::optional<int64_t> next_ns() const;
  // Removes and returns the name of one timer due at `now_ns` (earliest first).
  std::optional<std::string> pop_due(int64_t now_ns);
  size_t size() const { return by_name_.size(); }

 private:
  std::set<std::pair<int64_t, std::string>> by_time_;
  std::set<std::pair<std::string, int64_t>> by_name_;
};

}  // namespace wpm::kernel
