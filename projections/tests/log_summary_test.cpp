#include "projections/log_summary.h"

#include <gtest/gtest.h>

namespace wpm::projections {
namespace {

Event event(uint64_t seq, std::string stream, uint64_t version, Payload payload) {
  Event e;
  e.sequence = seq;
  e.stream_id = std::move(stream);
  e.stream_version = version;
  e.payload = std::move(payload);
  return e;
}

TEST(LogSummary, FoldsStreamsTypesAndSystems) {
  LogSummary s = initial();
  s = evolve(s, event(1, "system/a", 1, SystemRegistered{"a", "host-a", "10.0.0.1", "k"}));
  s = evolve(s, event(2, "synthetic/r", 1, Synthetic{"r", 0, "", ""}));
  s = evolve(s, event(3, "system/b", 1, SystemRegistered{"b", "host-b", "10.0.0.2", "k2"}));
  s = evolve(s, event(4, "system/a", 2, SystemRemoved{"a", "retired"}));
  EXPECT_EQ(s.last_sequence, 4u);
  EXPECT_EQ(s.streams.at("system/a"), (StreamRow{2, 4}));
  EXPECT_EQ(s.per_type[static_cast<size_t>(EventType::kSystemRegistered)], 2u);
  EXPECT_EQ(s.per_type[static_cast<size_t>(EventType::kSynthetic)], 1u);
  ASSERT_EQ(s.systems.size(), 1u);
  EXPECT_EQ(s.systems.at("b").hostname, "host-b");
  EXPECT_EQ(s.systems.at("b").registered_at_sequence, 3u);
}

TEST(LogSummary, RedeliveredEventIsIgnored) {
  LogSummary once = evolve(initial(), event(1, "synthetic/r", 1, Synthetic{"r", 0, "", ""}));
  LogSummary twice = evolve(once, event(1, "synthetic/r", 1, Synthetic{"r", 0, "", ""}));
  EXPECT_EQ(once, twice);
}

}  // namespace
}  // namespace wpm::projections
