#include "services/inventory/rejections.h"

#include <gtest/gtest.h>

namespace wpm::inventory {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

TEST(RejectionLimiter, FirstRefusalIsRecordedAtOnceTheRestOncePerWindow) {
  RejectionLimiter limiter({.window_ns = 60 * kSecond, .block_after = 1000, .addresses_max = 100});
  auto first = limiter.refuse("tcp://10.0.0.9", "wrong registration password", "h", "K", 0);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->attempts, 1u);
  for (int i = 1; i <= 500; ++i) {
    EXPECT_FALSE(limiter.refuse("tcp://10.0.0.9", "wrong registration password", "h", "K", i * kSecond / 10));
  }
  EXPECT_TRUE(limiter.due(59 * kSecond).empty());
  auto due = limiter.due(60 * kSecond);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].attempts, 500u);
  EXPECT_EQ(due[0].first_ns, kSecond / 10);
  EXPECT_EQ(due[0].last_ns, 50 * kSecond);
  EXPECT_TRUE(limiter.due(121 * kSecond).empty());
  EXPECT_EQ(limiter.tracked(), 0u) << "a quiet address is forgotten";
}

TEST(RejectionLimiter, AddressesAreCountedSeparately) {
  RejectionLimiter limiter;
  EXPECT_TRUE(limiter.refuse("a", "r", "", "", 0));
  EXPECT_TRUE(limiter.refuse("b", "r", "", "", 0));
  EXPECT_FALSE(limiter.refuse("a", "r", "", "", 1));
}

TEST(RejectionLimiter, BlocksAnAddressAfterTooManyRefusalsUntilTheWindowEnds) {
  RejectionLimiter limiter({.window_ns = 60 * kSecond, .block_after = 3, .addresses_max = 100});
  for (int i = 0; i < 3; ++i) (void)limiter.refuse("a", "r", "", "", i);
  EXPECT_TRUE(limiter.blocked("a", 10 * kSecond));
  EXPECT_FALSE(limiter.blocked("b", 10 * kSecond));
  EXPECT_FALSE(limiter.blocked("a", 61 * kSecond));
}

TEST(RejectionLimiter, ManyAddressesAggregateUnderOneEntry) {
  RejectionLimiter limiter({.window_ns = 60 * kSecond, .block_after = 10, .addresses_max = 4});
  int recorded = 0;
  for (int i = 0; i < 1000; ++i) {
    if (limiter.refuse("addr" + std::to_string(i), "r", "", "", i)) ++recorded;
  }
  EXPECT_LE(limiter.tracked(), 5u);
  EXPECT_LE(recorded, 5) << "a flood from many addresses stays a handful of events";
}

}  // namespace
}  // namespace wpm::inventory
