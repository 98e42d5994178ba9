#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "bus/subscriber.h"

namespace wpm::bus {
namespace {

// ---- the decision table ----------------------------------------------------------------

struct Row {
  uint64_t next;
  uint64_t seq;
  LiveAction expected;
};

TEST(DecideLive, SkipsDeliversOrFetchesByPositionAgainstNext) {
  const Row rows[] = {
      {1, 1, LiveAction::kDeliver},
      {1, 2, LiveAction::kFetch},
      {1, 0, LiveAction::kSkip},
      {5, 5, LiveAction::kDeliver},
      {5, 4, LiveAction::kSkip},
      {5, 1, LiveAction::kSkip},
      {5, 6, LiveAction::kFetch},
      {5, 1000, LiveAction::kFetch},
      {5, UINT64_MAX, LiveAction::kFetch},
      {UINT64_MAX, UINT64_MAX, LiveAction::kDeliver},
      {UINT64_MAX, UINT64_MAX - 1, LiveAction::kSkip},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(decide_live(r.next, r.seq), r.expected) << "next " << r.next << ", publication " << r.seq;
  }
}

// ---- simulation: lossy, duplicated, reordered publications ----------------------------

// A subscriber driven only by decide_live and a fake store read, as
// CatchUpSubscriber::run does: on a gap it reads from `next` up to the store's
// head; when the publications stop, a final idle check reads the rest.
struct Simulation {
  uint64_t log_size;
  uint64_t next = 1;
  uint64_t store_head = 0;  // what the fake store can serve
  std::vector<uint64_t> delivered;
  uint64_t fetches = 0;
  uint64_t skipped = 0;

  void deliver(uint64_t seq) {
    ASSERT_EQ(seq, next) << "delivered out of order";
    delivered.push_back(seq);
    ++next;
  }
  // The fake read endpoint: records [from, store_head].
  std::vector<uint64_t> fetch(uint64_t from) {
    std::vector<uint64_t> out;
    for (uint64_t s = from; s <= store_head; ++s) out.push_back(s);
    return out;
  }
  void catch_up() {
    ++fetches;
    for (uint64_t s : fetch(next)) deliver(s);
  }
  void publication(uint64_t seq) {
    // A publication is only sent once the store has acknowledged it.
    store_head = std::max(store_head, seq);
    switch (decide_live(next, seq)) {
      case LiveAction::kSkip: ++skipped; break;
      case LiveAction::kDeliver: deliver(seq); break;
      case LiveAction::kFetch:
        catch_up();
        EXPECT_GT(next, seq) << "the catch-up read must cover the publication that revealed the gap";
        break;
    }
  }
  void idle() {
    store_head = log_size;
    catch_up();
  }
};

std::vector<uint64_t> one_to(uint64_t n) {
  std::vector<uint64_t> v(n);
  std::iota(v.begin(), v.end(), uint64_t{1});
  return v;
}

TEST(CatchUpSimulation, HandWrittenGapsDuplicatesAndReorderingDeliverEachOnceInOrder) {
  // 1..20 with: 3 dropped, 5 duplicated, 7/8 swapped, 12..14 dropped, an old
  // replay of 2, 19 and 20 dropped at the tail.
  const std::vector<uint64_t> published = {1, 2, 4, 5, 5, 6, 8, 7, 9, 10, 11, 2, 15, 16, 16, 17, 18};
  Simulation sim{20};
  for (uint64_t seq : published) sim.publication(seq);
  sim.idle();
  EXPECT_EQ(sim.delivered, one_to(20));
  EXPECT_EQ(sim.next, 21u);
}

TEST(CatchUpSimulation, RandomLossyStreamsDeliverEachOnceInOrder) {
  constexpr uint64_t kEvents = 500;
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> percent(0, 99);
    std::vector<uint64_t> published;
    for (uint64_t seq = 1; seq <= kEvents; ++seq) {
      int roll = percent(rng);
      if (roll < 15) continue;                          // dropped
      published.push_back(seq);
      if (roll < 25) published.push_back(seq);          // duplicated
      if (roll < 30 && seq > 10) published.push_back(seq - 1 - rng() % 10);  // replay of an old one
    }
    // Reorder neighbours here and there.
    for (size_t i = 0; i + 1 < published.size(); ++i) {
      if (percent(rng) < 10) std::swap(published[i], published[i + 1]);
    }
    Simulation sim{kEvents};
    for (uint64_t seq : published) sim.publication(seq);
    sim.idle();
    ASSERT_EQ(sim.delivered, one_to(kEvents)) << "seed " << seed;
    EXPECT_GT(sim.skipped, 0u) << "seed " << seed << " exercised no duplicate";
    EXPECT_GT(sim.fetches, 1u) << "seed " << seed << " exercised no gap";
  }
}

TEST(CatchUpSimulation, NothingPublishedIsCaughtUpByTheIdleRead) {
  Simulation sim{7};
  sim.idle();
  EXPECT_EQ(sim.delivered, one_to(7));
  // Late duplicates of everything are all skipped.
  for (uint64_t seq = 1; seq <= 7; ++seq) sim.publication(seq);
  EXPECT_EQ(sim.skipped, 7u);
  EXPECT_EQ(sim.delivered, one_to(7));
}

}  // namespace
}  // namespace wpm::bus
