#include "eventstore/samples.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;
using series::Metric;

constexpr int64_t kT0 = 1'700'002'800;  // a block's start (a multiple of 3600)

MetricValues values(double cpu, double memory, int processes) {
  MetricValues v;
  v.set(Metric::kCpu, cpu);
  v.set(Metric::kMemory, memory);
  v.set(Metric::kProcesses, processes);
  return v;
}

HostSample report(const std::string& system, int64_t t, double cpu, std::vector<WparSample> wpars = {}) {
  return HostSample{system, t, values(cpu, 50, 100), std::move(wpars)};
}

class SamplesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "wpm-samples-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    options_.data_dir = tmpl;
    options_.write_buffer_bytes = 4u << 20;
    options_.boot_id_for_test = "this boot";
    log_ = std::make_shared<spdlog::logger>("samples-test", std::make_shared<spdlog::sinks::null_sink_mt>());
    open();
  }
  void TearDown() override {
    samples_.reset();
    store_.reset();
    std::error_code ec;
    fs::remove_all(options_.data_dir, ec);
  }
  void open() {
    samples_.reset();
    store_.reset();
    auto s = Store::open(options_, log_);
    ASSERT_TRUE(s.has_value()) << s.error().message;
    store_ = std::move(*s);
    auto m = SampleStore::open(*store_, sample_options_, log_);
    ASSERT_TRUE(m.has_value()) << m.error().message;
    samples_ = std::move(*m);
  }
  History read(bool wpar, const std::string& name, int64_t from, int64_t to, Resolution r = Resolution::kRaw,
               const std::string* system = nullptr) {
    auto h = samples_->read(wpar, name, from, to, r, system);
    EXPECT_TRUE(h.has_value()) << h.error().message;
    return h.value_or(History{});
  }

  StoreOptions options_;
  SampleOptions sample_options_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<SampleStore> samples_;
};

TEST(SampleRowTest, RoundTripsAndRefusesDamage) {
  HostSample s = report("node1", kT0, 12.5, {{"web", values(3.25, 1.5, 4)}, {"db", values(0, 0, 1)}});
  s.wpars[1].values.set(Metric::kThreads, 17);
  auto row = encode_sample_row(s);
  EXPECT_LT(row.size(), 40u);
  auto back = decode_sample_row(row, "node1", kT0);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, s);
  EXPECT_FALSE(decode_sample_row(row.substr(0, row.size() - 1), "node1", kT0).has_value());
  EXPECT_FALSE(decode_sample_row(row + "x", "node1", kT0).has_value());
  std::string unknown_metric = row;
  unknown_metric[0] = static_cast<char>(0x80);
  EXPECT_FALSE(decode_sample_row(unknown_metric, "node1", kT0).has_value());
}

TEST_F(SamplesTest, ReadsTheSameBeforeAndAfterSealing) {
  // A WPAR on node1, relocated to node2 half way through the hour.
  for (int i = 0; i < 360; ++i) {
    int64_t t = kT0 + i * 10;
    WparSample web{"web", values(i % 7, 10, 3)};
    ASSERT_TRUE(samples_->write(report("node1", t, 20 + i % 5, i < 180 ? std::vector{web} : std::vector<WparSample>{})));
    ASSERT_TRUE(samples_->write(report("node2", t + 1, 60, i >= 180 ? std::vector{web} : std::vector<WparSample>{})));
  }
  auto host = read(false, "node1", kT0, kT0 + 3599);
  ASSERT_EQ(host.times_s.size(), 360u);
  EXPECT_EQ(host.column(1)->values[3], 2300);  // cpu 23.00 %
  auto web = read(true, "web", kT0, kT0 + 3599);
  ASSERT_EQ(web.times_s.size(), 360u);
  EXPECT_EQ(web.systems.front(), "node1");
  EXPECT_EQ(web.systems.back(), "node2");
  EXPECT_EQ(web.times_s[180], kT0 + 1800 + 1);
  auto aggregates = read(true, "web", kT0, kT0 + 3599, Resolution::kAggregate);
  // What one system reported, alone (the simulation's reads), sealed or not.
  const std::string node1 = "node1", node2 = "node2";
  auto only_node2 = [&] {
    auto h = read(true, "web", kT0, kT0 + 3599, Resolution::kRaw, &node2);
    EXPECT_EQ(h.times_s.size(), 180u);
    EXPECT_EQ(h.times_s.front(), kT0 + 1800 + 1);
    EXPECT_EQ(std::count(h.systems.begin(), h.systems.end(), "node2"), 180);
    EXPECT_EQ(read(false, "node1", kT0, kT0 + 3599, Resolution::kRaw, &node1).times_s.size(), 360u);
    EXPECT_TRUE(read(false, "node1", kT0, kT0 + 3599, Resolution::kRaw, &node2).times_s.empty());
  };
  only_node2();

  // Not sealed before the block ended plus the grace.
  auto early = samples_->maintain(kT0 + 3600 + 60);
  ASSERT_TRUE(early.has_value());
  EXPECT_EQ(early->sealed_blocks, 0);
  auto sealed = samples_->maintain(kT0 + 3600 + 121);
  ASSERT_TRUE(sealed.has_value()) << sealed.error().message;
  EXPECT_EQ(sealed->sealed_blocks, 1);
  EXPECT_EQ(sealed->sealed_rows, 720u);
  EXPECT_EQ(sealed->chunks_written, 2u * 4);  // node1, node2, web on each: raw and aggregates

  auto host_after = read(false, "node1", kT0, kT0 + 3599);
  EXPECT_EQ(host_after.times_s, host.times_s);
  EXPECT_EQ(host_after.column(1)->values, host.column(1)->values);
  auto web_after = read(true, "web", kT0, kT0 + 3599);
  EXPECT_EQ(web_after.times_s, web.times_s);
  EXPECT_EQ(web_after.systems, web.systems);
  EXPECT_EQ(web_after.column(1)->values, web.column(1)->values);
  auto aggregates_after = read(true, "web", kT0, kT0 + 3599, Resolution::kAggregate);
  EXPECT_EQ(aggregates_after.times_s, aggregates.times_s);
  EXPECT_EQ(aggregates_after.columns, aggregates.columns);
  only_node2();

  // A report of a sealed block is late: refused, counted, not written.
  ASSERT_TRUE(samples_->write(report("node1", kT0 + 5, 99)));
  EXPECT_EQ(samples_->late(), 1u);
  EXPECT_EQ(read(false, "node1", kT0, kT0 + 3599).column(1)->values, host.column(1)->values);
}

TEST_F(SamplesTest, AggregatesAreMinMeanMaxOfEachFiveMinutes) {
  // 30 samples in the first five minutes: cpu 0, 1, …, 29 % ; memory missing in one.
  for (int i = 0; i < 30; ++i) {
    HostSample s = report("node1", kT0 + i * 10, i);
    if (i == 4) s.host = MetricValues{}, s.host.set(Metric::kCpu, i);
    ASSERT_TRUE(samples_->write(s));
  }
  ASSERT_TRUE(samples_->write(report("node1", kT0 + 300, 80)));
  auto a = read(false, "node1", kT0, kT0 + 3599, Resolution::kAggregate);
  ASSERT_EQ(a.times_s, (std::vector<int64_t>{kT0, kT0 + 300}));
  auto tag = [](Metric m, series::Aggregate k) { return series::aggregate_tag(m, k); };
  EXPECT_EQ(a.column(tag(Metric::kCpu, series::Aggregate::kMin))->values[0], 0);
  EXPECT_EQ(a.column(tag(Metric::kCpu, series::Aggregate::kMean))->values[0], 1450);  // 14.5 %
  EXPECT_EQ(a.column(tag(Metric::kCpu, series::Aggregate::kMax))->values[0], 2900);
  EXPECT_EQ(a.column(tag(Metric::kCpu, series::Aggregate::kMean))->values[1], 8000);
  EXPECT_EQ(a.column(tag(Metric::kMemory, series::Aggregate::kMean))->values[0], 500'000);  // 50 %
  // Sealed, the same.
  ASSERT_TRUE(samples_->maintain(kT0 + 4000).has_value());
  EXPECT_EQ(read(false, "node1", kT0, kT0 + 3599, Resolution::kAggregate).columns, a.columns);
}

TEST_F(SamplesTest, RetentionDropsWholeBlocksByAge) {
  sample_options_.raw_retention_s = 2 * 3600;
  sample_options_.aggregate_retention_s = 4 * 3600;
  open();
  for (int h = 0; h < 6; ++h) ASSERT_TRUE(samples_->write(report("node1", kT0 + h * 3600, h)));
  ASSERT_TRUE(samples_->maintain(kT0 + 6 * 3600 + 200).has_value());
  int64_t now = kT0 + 6 * 3600 + 200;
  auto raw = read(false, "node1", kT0, now);
  // Raw: blocks that ended more than 2 h before now are gone (hours 0–3); hours 4 and 5 stay.
  EXPECT_EQ(raw.times_s, (std::vector<int64_t>{kT0 + 4 * 3600, kT0 + 5 * 3600}));
  auto aggregates = read(false, "node1", kT0, now, Resolution::kAggregate);
  EXPECT_EQ(aggregates.times_s.size(), 4u);
  EXPECT_EQ(aggregates.times_s.front(), kT0 + 2 * 3600);
}

TEST_F(SamplesTest, SealedStateSurvivesAReopen) {
  ASSERT_TRUE(samples_->write(report("node1", kT0, 1)));
  ASSERT_TRUE(samples_->write(report("node1", kT0 + 3600, 2)));  // the next block, not sealed
  ASSERT_TRUE(samples_->maintain(kT0 + 3600 + 200).has_value());
  open();
  ASSERT_TRUE(samples_->write(report("node1", kT0 + 10, 9)));  // late after the reopen too
  EXPECT_EQ(samples_->late(), 1u);
  auto h = read(false, "node1", kT0, kT0 + 7200);
  EXPECT_EQ(h.times_s, (std::vector<int64_t>{kT0, kT0 + 3600}));
}

TEST_F(SamplesTest, SubscribersSeeEachReport) {
  std::vector<std::string> seen;
  samples_->subscribe([&](const HostSample& s) { seen.push_back(s.system); });
  ASSERT_TRUE(samples_->write(report("node1", kT0, 1)));
  ASSERT_TRUE(samples_->write(report("node2", kT0, 1)));
  EXPECT_EQ(seen, (std::vector<std::string>{"node1", "node2"}));
}

TEST_F(SamplesTest, AHugeSpanIsCutToWhatIsKept) {
  ASSERT_TRUE(samples_->write(report("node1", kT0, 1)));
  // From the start of time: cut to the aggregates' retention, answered at once.
  auto h = read(false, "node1", std::numeric_limits<int64_t>::min(), kT0 + 10, Resolution::kAggregate);
  EXPECT_EQ(h.times_s.size(), 1u);
  // To the end of time: the span kept before that end holds nothing; answered at once too.
  EXPECT_TRUE(read(false, "node1", kT0, std::numeric_limits<int64_t>::max()).times_s.empty());
}

TEST_F(SamplesTest, UnknownNamesHaveNoHistory) {
  ASSERT_TRUE(samples_->write(report("node1", kT0, 1, {{"web", values(1, 1, 1)}})));
  EXPECT_TRUE(read(false, "nobody", kT0, kT0 + 100).times_s.empty());
  EXPECT_TRUE(read(true, "we", kT0, kT0 + 100).times_s.empty());  // a prefix of a name is not the name
  EXPECT_EQ(read(true, "web", kT0, kT0 + 100).times_s.size(), 1u);
}

}  // namespace
}  // namespace wpm::eventstore
