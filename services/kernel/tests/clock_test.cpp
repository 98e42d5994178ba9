// Time behind an interface: the simulated clock and the timer queue.

#include "services/kernel/clock.h"

#include <gtest/gtest.h>

namespace wpm::kernel {
namespace {

TEST(SimulatedClock, MovesOnlyWhenTold) {
  SimulatedClock clock(1000);
  EXPECT_EQ(clock.wall_ns(), 1000);
  EXPECT_EQ(clock.monotonic_ns(), 0);
  clock.advance_ns(250);
  EXPECT_EQ(clock.wall_ns(), 1250);
  EXPECT_EQ(clock.monotonic_ns(), 250);
}

TEST(SystemClock, MonotonicNeverGoesBack) {
  SystemClock clock;
  int64_t a = clock.monotonic_ns();
  int64_t b = clock.monotonic_ns();
  EXPECT_LE(a, b);
  EXPECT_GT(clock.wall_ns(), 1'600'000'000'000'000'000);
}

TEST(TimerQueue, FallsDueInOrderOfDeadlineAndRearmingMovesATimer) {
  SimulatedClock clock;
  TimerQueue timers;
  EXPECT_EQ(timers.next_ns(), std::nullopt);
  timers.arm("heartbeat-check", 15);
  timers.arm("probe", 5);
  timers.arm("flush", 10);
  EXPECT_EQ(timers.next_ns(), 5);
  timers.arm("probe", 20);  // re-armed: one timer, a later deadline
  EXPECT_EQ(timers.size(), 3u);
  EXPECT_EQ(timers.pop_due(clock.monotonic_ns()), std::nullopt);
  clock.advance_ns(16);
  EXPECT_EQ(timers.pop_due(clock.monotonic_ns()), "flush");
  EXPECT_EQ(timers.pop_due(clock.monotonic_ns()), "heartbeat-check");
  EXPECT_EQ(timers.pop_due(clock.monotonic_ns()), std::nullopt);
  timers.cancel("probe");
  EXPECT_EQ(timers.size(), 0u);
  EXPECT_EQ(timers.next_ns(), std::nullopt);
}

}  // namespace
}  // namespace wpm::kernel
