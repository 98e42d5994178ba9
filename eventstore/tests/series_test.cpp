#include "eventstore/series.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>

namespace wpm::eventstore::series {
namespace {

Block regular(size_t n, int64_t start, int64_t step) {
  Block b;
  for (size_t i = 0; i < n; ++i) b.times_s.push_back(start + static_cast<int64_t>(i) * step);
  return b;
}

TEST(SeriesTest, RoundTripsNoisyValuesAndIrregularTimes) {
  std::mt19937_64 rng(7);
  Block b;
  int64_t t = 1'700'000'000;
  for (int i = 0; i < 1000; ++i) {
    t += 1 + static_cast<int64_t>(rng() % 40);
    b.times_s.push_back(t);
  }
  for (uint8_t tag : {1, 2, 6}) {
    Column c{tag, {}};
    int64_t v = 5000;
    for (int i = 0; i < 1000; ++i) {
      v += static_cast<int64_t>(rng() % 2001) - 1000;
      c.values.push_back(i % 97 == 0 ? kMissing : v);
    }
    b.columns.push_back(c);
  }
  b.columns[0].values[10] = std::numeric_limits<int64_t>::max();
  b.columns[0].values[11] = std::numeric_limits<int64_t>::min() + 1;
  auto decoded = decode_block(encode_block(b));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().message;
  EXPECT_EQ(*decoded, b);
}

TEST(SeriesTest, AsteadyMetricCostsAboutABitASample) {
  Block b = regular(360, 1'700'000'000, 10);
  b.columns.push_back(Column{4, std::vector<int64_t>(360, 42)});
  b.columns.push_back(Column{2, std::vector<int64_t>(360, 3150)});
  auto bytes = encode_block(b);
  // header (1 + 2 + 1 + 2 tags); times: the first (64 bits), the first step (9), then a bit each (358);
  // each column: its first value as a change from 0 (11 and 25 bits), then a bit each (359): 155 bytes.
  EXPECT_LE(bytes.size(), 6u + (64u + 9u + 358u + 11u + 359u + 25u + 359u + 7u) / 8u) << bytes.size();
  EXPECT_EQ(*decode_block(bytes), b);
}

TEST(SeriesTest, BucketBoundariesRoundTrip) {
  std::vector<int64_t> changes = {0, 1, -1, 7, -8, 8, 127, -128, 128, 2047, -2048, 2048, 524287, -524288, 524288,
                                  int64_t{1} << 40, -(int64_t{1} << 40)};
  Block b = regular(changes.size() + 1, 100, 1);
  Column c{1, {0}};
  for (auto d : changes) c.values.push_back(c.values.back() + d);
  b.columns.push_back(c);
  // Time steps of every bucket too.
  int64_t t = 100;
  for (size_t i = 0; i < b.times_s.size(); ++i) {
    b.times_s[i] = t;
    t += 1 + static_cast<int64_t>(i * i * 97 % 5000);
  }
  EXPECT_EQ(*decode_block(encode_block(b)), b);
}

TEST(SeriesTest, DamagedBytesAreRefused) {
  Block b = regular(50, 1000, 10);
  b.columns.push_back(Column{1, std::vector<int64_t>(50, 1)});
  auto bytes = encode_block(b);
  for (size_t cut : {size_t{0}, size_t{1}, size_t{3}, bytes.size() / 2}) {
    EXPECT_FALSE(decode_block(std::string_view(bytes).substr(0, cut)).has_value()) << cut;
  }
  std::string wrong_format = bytes;
  wrong_format[0] = 9;
  EXPECT_EQ(decode_block(wrong_format).error().code, ErrorCode::kCorruption);
  std::string huge = bytes.substr(0, 1) + "\xff\xff\xff\xff\x0f";
  EXPECT_FALSE(decode_block(huge).has_value());
  // A header that claims a million samples of 64 columns in a few bytes is refused before anything is reserved.
  std::string claims = std::string(1, '\x01') + "\x80\x80\x40" + "\x40" + std::string(64, '\x01') + "xx";
  EXPECT_FALSE(decode_block(claims).has_value());
}

TEST(SeriesTest, EmptyBlockRoundTrips) { EXPECT_EQ(*decode_block(encode_block(Block{})), Block{}); }

TEST(SeriesTest, FixedPointFollowsEachMetricsScale) {
  EXPECT_EQ(to_fixed(Metric::kCpu, 37.256), 3726);
  EXPECT_DOUBLE_EQ(from_fixed(Metric::kCpu, 3726), 37.26);
  EXPECT_EQ(to_fixed(Metric::kProcesses, 12.4), 12);
  EXPECT_EQ(to_fixed(Metric::kPageFaults, 3.25), 33);
  EXPECT_EQ(to_fixed(Metric::kCpu, std::numeric_limits<double>::quiet_NaN()), 0);
  EXPECT_EQ(metric_by_name("page-faults"), Metric::kPageFaults);
  EXPECT_FALSE(metric_by_name("disk").has_value());
  EXPECT_TRUE(metric_info(Metric::kMemory).utilisation);
  EXPECT_FALSE(metric_info(Metric::kThreads).utilisation);
}

}  // namespace
}  // namespace wpm::eventstore::series
