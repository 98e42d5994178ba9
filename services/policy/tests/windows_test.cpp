// The running window sums against a plain sum over the samples: every
// answer, by whichever path (the tracked window, a moved query sum, a fresh
// one), must be the same to the last bit.
#include <gtest/gtest.h>

#include <random>

#include "services/policy/windows.h"

namespace wpm::policy {
namespace {

using metrics::Metric;

// The plain answer over (from, to] of the samples kept (after drops).
WindowSummary plain(const std::vector<CompactSample>& kept, int64_t from_s, int64_t to_s) {
  WindowSummary out;
  std::array<int64_t, metrics::kMetricMax> sum{};
  std::array<int64_t, metrics::kMetricMax> n{};
  const CompactSample* newest = nullptr;
  for (const auto& s : kept) {
    if (s.time_s <= from_s || s.time_s > to_s) continue;
    newest = &s;
    ++out.count;
    for (size_t m = 0; m < metrics::kMetricMax; ++m) {
      if ((s.present >> (m + 1)) & 1u) sum[m] += s.fixed[m], ++n[m];
    }
  }
  if (newest == nullptr) return out;
  out.newest_s = newest->time_s;
  for (size_t m = 0; m < metrics::kMetricMax; ++m) {
    auto metric = static_cast<uint8_t>(m + 1);
    if (n[m] > 0) out.average[metric] = fixed_average(metric, sum[m], n[m]);
    if ((newest->present >> metric) & 1u) out.latest[metric] = fixed_average(metric, newest->fixed[m], 1);
  }
  return out;
}

void expect_same(const WindowSummary& got, const WindowSummary& want, const std::string& where) {
  ASSERT_EQ(got.count, want.count) << where;
  ASSERT_EQ(got.newest_s, want.newest_s) << where;
  for (size_t m = 1; m <= metrics::kMetricMax; ++m) {
    ASSERT_EQ(got.average[m], want.average[m]) << where << " metric " << m;
    ASSERT_EQ(got.latest[m], want.latest[m]) << where << " metric " << m;
  }
}

CompactSample sample(std::mt19937_64& rng, int64_t time_s) {
  metrics::MetricValues v;
  std::uniform_int_distribution<int> pct(0, 100), coin(0, 3);
  if (coin(rng) != 0) v.set(Metric::kCpu, pct(rng) + 0.37);
  if (coin(rng) != 0) v.set(Metric::kMemory, pct(rng) + 0.11);
  if (coin(rng) == 0) v.set(Metric::kProcesses, pct(rng));
  return compact(time_s, v);
}

TEST(SampleSeriesTest, EveryPathAnswersAsThePlainSum) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> step(1, 15), width_pick(0, 2), drift(-20, 20), action(0, 9);
    const std::array<int64_t, 3> widths = {60, 300, 45};
    SampleSeries series;
    std::vector<CompactSample> kept;
    int64_t now = 1'000'000;
    for (int round = 0; round < 400; ++round) {
      int a = action(rng);
      if (a < 5) {  // a sample, sometimes one not newer (ignored)
        now += a == 0 ? 0 : step(rng);
        auto s = sample(rng, now);
        bool newer = kept.empty() || now > kept.back().time_s;
        EXPECT_EQ(series.push(s), newer);
        if (newer) kept.push_back(s);
      } else if (a == 5) {  // forget the oldest
        int64_t through = now - 400;
        series.drop_through(through);
        std::erase_if(kept, [&](const CompactSample& s) { return s.time_s <= through; });
      } else {  // a question: at the newest, a little after, before, or in the past
        int64_t width = widths[static_cast<size_t>(width_pick(rng))];
        int64_t to = now + drift(rng);
        expect_same(series.summary(to - width, to), plain(kept, to - width, to),
                    "seed " + std::to_string(seed) + " round " + std::to_string(round));
      }
      ASSERT_EQ(series.size(), kept.size());
    }
  }
}

TEST(SampleSeriesTest, ThePassesOfALiveFleetAreAnsweredFromTheTrackedWindow) {
  // Samples every 10 s, a pass every 60 s a moment after: each answer right.
  std::mt19937_64 rng(7);
  SampleSeries series;
  std::vector<CompactSample> kept;
  for (int64_t t = 1000; t <= 5000; t += 10) {
    auto s = sample(rng, t);
    series.push(s);
    kept.push_back(s);
    series.drop_through(t - 420);
    std::erase_if(kept, [&](const CompactSample& k) { return k.time_s <= t - 420; });
    if (t % 60 == 0) expect_same(series.summary(t + 2 - 300, t + 2), plain(kept, t + 2 - 300, t + 2), "t=" + std::to_string(t));
  }
}

TEST(GridSumsTest, EveryWindowOfTheGridAnswersAsThePlainSum) {
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> gap(1, 25), pick(0, 3);
    std::vector<CompactSample> samples;
    for (int64_t t = 10'000 + gap(rng); samples.size() < 300; t += gap(rng)) samples.push_back(sample(rng, t));
    const std::array<int64_t, 4> widths = {60, 300, 45, 1}, steps = {60, 7, 1, 600};
    const int64_t width = widths[static_cast<size_t>(pick(rng))], step = steps[static_cast<size_t>(pick(rng))];
    // From before the first sample to after the last, on and off the samples' times.
    const int64_t first = 9'990 + pick(rng), until = samples.back().time_s + 100;
    std::vector<WindowSums> got;
    grid_sums(samples, width, first, step, until, got);
    ASSERT_EQ(got.size(), static_cast<size_t>((until - first) / step + 1)) << "seed " << seed;
    for (size_t i = 0; i < got.size(); ++i) {
      const int64_t t = first + static_cast<int64_t>(i) * step;
      expect_same(got[i].summary(), plain(samples, t - width, t), "seed " + std::to_string(seed) + " t=" + std::to_string(t));
    }
  }
}

TEST(SampleWindowsTest, AReaderFindsEntitiesWhereverTheOrderChanges) {
  SampleWindows windows;
  auto host = [](const std::string& system, int64_t t, std::vector<std::string> wpars) {
    metrics::HostSample h{system, t, {}, {}};
    h.host.set(Metric::kCpu, 50);
    for (auto& w : wpars) {
      metrics::WparSample ws{w, {}};
      ws.values.set(Metric::kCpu, static_cast<double>(w.size()));
      h.wpars.push_back(ws);
    }
    return h;
  };
  for (int64_t t = 100; t <= 400; t += 10) {
    windows.add(host("s1", t, {"a", "bb"}));
    windows.add(host("s2", t, {"ccc"}));
  }
  auto ask = [&](const std::vector<std::pair<std::string, std::string>>& order, int64_t to = 400) {
    SampleWindows::Reader r(windows);
    std::vector<double> out;
    for (const auto& [name, system] : order) {
      auto s = r.wpar(name, system, to - 300, to);
      out.push_back(s && s->average[1] ? *s->average[1] : -1);
    }
    return out;
  };
  EXPECT_EQ(ask({{"a", "s1"}, {"bb", "s1"}, {"ccc", "s2"}}), (std::vector<double>{1, 2, 3}));
  // Another order, an unknown WPAR, one asked on the wrong system.
  EXPECT_EQ(ask({{"ccc", "s2"}, {"zz", "s1"}, {"a", "s1"}, {"bb", "s2"}}), (std::vector<double>{3, -1, 1, -1}));
  EXPECT_EQ(ask({{"a", "s1"}, {"bb", "s1"}, {"ccc", "s2"}}), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(windows.entities(), 5u);
  // Gone entities are forgotten (after the sweep interval), and their places reused.
  windows.keep(60, 2000);
  EXPECT_EQ(windows.entities(), 0u);
  windows.add(host("s3", 2010, {"d"}));
  EXPECT_EQ(ask({{"a", "s1"}, {"d", "s3"}}, 2010), (std::vector<double>{-1, 1}));
}

}  // namespace
}  // namespace wpm::policy
