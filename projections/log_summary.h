#pragma once
// LogSummary: the first read model (DESIGN.md §2 projections). It folds the
// log into what an operator asks first: the last sequence applied, every
// stream's version, counts per event type, and the registered managed systems.
//
// evolve() is pure and idempotent by sequence (delivery is at-least-once: an
// event at or below last_sequence is ignored), so a projection folded live
// from publications equals the same projection rebuilt from the log.

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "schemas/events.h"

namespace wpm::projections {

struct StreamRow {
  uint64_t version = 0;
  uint64_t last_sequence = 0;
  bool operator==(const StreamRow&) const = default;
};

struct SystemRow {
  std::string hostname;
  std::string address;
  std::string public_key;
  uint64_t registered_at_sequence = 0;
  bool operator==(const SystemRow&) const = default;
};

struct LogSummary {
  uint64_t last_sequence = 0;
  std::map<std::string, StreamRow> streams;
  std::array<uint64_t, kEventTypeMax + 1> per_type{};
  std::map<std::string, SystemRow> systems;  // registered and not removed
  bool operator==(const LogSummary&) const = default;
};

LogSummary initial();
LogSummary evolve(LogSummary state, const Event& event);

}  // namespace wpm::projections
