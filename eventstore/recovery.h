#pragma once
// What the store does at open with the log it finds (DESIGN.md §9): a pure
// decision over the facts read from disk, so that every case is unit-tested
// without a crash. Store::recover() gathers the facts and carries the plan out.

#include <cstdint>
#include <optional>
#include <string>

#include "eventstore/mark.h"

namespace wpm::eventstore {

struct RecoveryFacts {
  std::optional<MarkReading> mark;  // empty: no mark file, or no valid slot
  uint64_t stored = 0;              // highest sequence in the log column family
  uint64_t derived = 0;             // highest sequence any derived data reflects
  bool salvage = false;             // offline tools reporting damage
  bool read_only = false;           // offline tools: nothing is changed
};

enum class RecoveryAction {
  kOpen,            // the log is as acknowledged
  kDiscardAbove,    // records above the exact mark were never acknowledged: drop them
  kKeepAbove,       // records above a lower-bound mark may have been acknowledged: keep them
  kMarkMissing,     // error: events but no mark, so losses could not be detected
  kLostAcknowledged,  // error: the log ends below what was acknowledged
  kMarkStale,       // error: derived data proves acknowledgements the exact mark lacks
};

struct RecoveryPlan {
  RecoveryAction action = RecoveryAction::kOpen;
  uint64_t head = 0;          // the head to serve (kOpen, kDiscardAbove, kKeepAbove)
  uint64_t acknowledged = 0;  // the highest sequence known acknowledged (mark or derived data)
};

RecoveryPlan plan_recovery(const RecoveryFacts& facts);

}  // namespace wpm::eventstore
