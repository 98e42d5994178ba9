// The simulation's history source against a plain sum over the stored
// samples: over hours of passes, with the second thread preparing each next
// hour, intervals and averaging periods that change, entities that come and
// go and an order that changes, every answer must be the plain one.
#include "services/policy/history_source.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

namespace wpm::policy {
namespace {

using metrics::Metric;

struct Stored {
  int64_t time_s;
  std::string system;  // who reported it
  int64_t cpu, memory;
  bool has_memory;
};

// A fleet's stored history: per entity (w or h, name) its samples in time order.
class FakeStore {
 public:
  explicit FakeStore(uint64_t seed) : rng_(seed) {}
  void fill(const std::string& key, const std::vector<std::string>& systems, int64_t from_s, int64_t to_s) {
    std::uniform_int_distribution<int> gap(1, 14), pct(0, 10'000), coin(0, 4), which(0, 99);
    auto& v = samples_[key];
    std::string system = systems.front();
    for (int64_t t = from_s + gap(rng_); t <= to_s; t += gap(rng_)) {
      if (which(rng_) == 0) system = systems[static_cast<size_t>(which(rng_)) % systems.size()];  // moved
      v.push_back({t, system, pct(rng_), pct(rng_), coin(rng_) != 0});
    }
  }
  Result<metrics::History> read(bool wpar, const std::string& name, int64_t from_s, int64_t to_s) {
    ++reads;
    if (std::this_thread::get_id() != main_thread_) ++reads_ahead;
    EXPECT_LE(from_s, to_s);
    if (fail_after_s && to_s > *fail_after_s) return fail(ErrorCode::kIo, "the disk is gone");
    auto it = samples_.find((wpar ? "w" : "h") + name);
    if (it == samples_.end()) return fail(ErrorCode::kNotFound, "no history");
    metrics::History h;
    metrics::Column cpu{static_cast<uint8_t>(Metric::kCpu), {}}, memory{static_cast<uint8_t>(Metric::kMemory), {}};
    for (const auto& s : it->second) {
      if (s.time_s < from_s || s.time_s > to_s) continue;
      h.times_s.push_back(s.time_s);
      h.systems.push_back(s.system);
      cpu.values.push_back(s.cpu);
      memory.values.push_back(s.has_memory ? s.memory : metrics::kMissing);
    }
    h.columns = {cpu, memory};
    return h;
  }
  // The plain answer over (from, to] of what `system` reported (a host: all).
  WindowSummary plain(bool wpar, const std::string& name, const std::string& system, int64_t from_s, int64_t to_s) {
    std::vector<CompactSample> kept;
    for (const auto& s : samples_[(wpar ? "w" : "h") + name]) {
      if (s.time_s <= from_s || s.time_s > to_s || (wpar && s.system != system)) continue;
      metrics::MetricValues v;
      v.set_fixed(Metric::kCpu, s.cpu);
      if (s.has_memory) v.set_fixed(Metric::kMemory, s.memory);
      kept.push_back(compact(s.time_s, v));
    }
    std::vector<WindowSums> out;
    grid_sums(kept, to_s - from_s, to_s, 1, to_s, out);  // checked against a plain loop in windows_test
    return out.at(0).summary();
  }
  uint64_t reads = 0, reads_ahead = 0;  // all, those of the second thread
  std::optional<int64_t> fail_after_s;

 private:
  std::thread::id main_thread_ = std::this_thread::get_id();
  std::mt19937_64 rng_;
  std::map<std::string, std::vector<Stored>> samples_;
};

void expect_same(const std::optional<WindowSummary>& got, const WindowSummary& want, const std::string& where) {
  ASSERT_TRUE(got.has_value()) << where;
  ASSERT_EQ(got->count, want.count) << where;
  ASSERT_EQ(got->newest_s, want.newest_s) << where;
  for (size_t m = 1; m <= metrics::kMetricMax; ++m) {
    ASSERT_EQ(got->average[m], want.average[m]) << where << " metric " << m;
    ASSERT_EQ(got->latest[m], want.latest[m]) << where << " metric " << m;
  }
}

constexpr int64_t kStart = 1'800'000'000;  // an hour's start

TEST(HistorySourceTest, EveryAnswerOverHoursOfPassesIsThePlainSum) {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    FakeStore store(seed);
    std::mt19937_64 rng(seed);
    const int64_t end = kStart + 5 * 3600 + 1234;
    const std::vector<std::string> systems = {"s1", "s2", "s3"};
    for (const auto& s : systems) store.fill("h" + s, {s}, kStart - 4000, end);
    for (int w = 0; w < 12; ++w) store.fill("ww" + std::to_string(w), {systems[static_cast<size_t>(w) % 3], "s3"}, kStart - 4000, end);
    HistoryReader reader = [&](bool wpar, const std::string& name, const std::string&, int64_t a, int64_t b) {
      return store.read(wpar, name, a, b);
    };
    HistorySource source(reader, end);
    std::uniform_int_distribution<int> dice(0, 99);
    int64_t interval = 60, period = 300;
    int64_t at = (kStart / interval + 1) * interval;
    std::vector<int> order(12);
    for (int i = 0; i < 12; ++i) order[static_cast<size_t>(i)] = i;
    size_t passes = 0;
    for (; at <= end; at = (at / interval + 1) * interval, ++passes) {
      if (dice(rng) < 2) interval = std::array<int64_t, 3>{60, 30, 47}[static_cast<size_t>(dice(rng)) % 3];
      if (dice(rng) < 2) period = std::array<int64_t, 3>{300, 120, 600}[static_cast<size_t>(dice(rng)) % 3];
      if (dice(rng) < 3) std::shuffle(order.begin(), order.end(), rng);
      const int wpars = dice(rng) < 5 ? 8 : 12;  // some passes without the last ones
      source.pass_begins(at, interval);
      const std::string where = "seed " + std::to_string(seed) + " at " + std::to_string(at - kStart);
      for (const auto& s : systems) {
        expect_same(source.host(s, at - period, at), store.plain(false, s, s, at - period, at), where + " host " + s);
        // A second group with another averaging period asks for the host too.
        if (s == "s2") expect_same(source.host(s, at - 120, at), store.plain(false, s, s, at - 120, at), where + " s2/120");
      }
      for (int i : order) {
        if (i >= wpars) continue;
        const std::string name = "w" + std::to_string(i);
        for (const auto& system : {systems[static_cast<size_t>(i) % 3], std::string("s3")}) {
          expect_same(source.wpar(name, system, at - period, at), store.plain(true, name, system, at - period, at),
                      where + " " + name + "@" + system);
        }
      }
      ASSERT_FALSE(source.error()) << source.error()->message;
      source.pass_ended(at);
    }
    EXPECT_GT(passes, 300u);
    // About an hour read per entity and hour (more after each change), those
    // of the hours after the first (about 28 entities each) ahead of the passes.
    EXPECT_LT(store.reads, 40 * 8u * 3) << "seed " << seed;
    EXPECT_GT(store.reads_ahead, 3 * 28u) << "seed " << seed;
  }
}

TEST(HistorySourceTest, AReadThatFailsOnTheSecondThreadIsTheSourcesError) {
  FakeStore store(3);
  const int64_t end = kStart + 3 * 3600;
  store.fill("hs1", {"s1"}, kStart - 600, end);
  store.fail_after_s = kStart + 3600 + 1800;  // the second hour's reads fail
  HistoryReader reader = [&](bool wpar, const std::string& name, const std::string&, int64_t a, int64_t b) {
    return store.read(wpar, name, a, b);
  };
  HistorySource source(reader, end);
  bool failed = false;
  for (int64_t at = kStart + 60; at <= end && !failed; at += 60) {
    source.pass_begins(at, 60);
    auto s = source.host("s1", at - 300, at);
    failed = source.error().has_value();
    if (!failed) expect_same(s, store.plain(false, "s1", "s1", at - 300, at), "at " + std::to_string(at - kStart));
    source.pass_ended(at);
  }
  ASSERT_TRUE(failed);
  EXPECT_EQ(source.error()->message, "the disk is gone");
}

}  // namespace
}  // namespace wpm::policy
