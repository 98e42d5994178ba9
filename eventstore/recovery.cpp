#include "eventstore/recovery.h"

#include <algorithm>

namespace wpm::eventstore {

RecoveryPlan plan_recovery(const RecoveryFacts& f) {
  if (!f.mark) {
    if (f.stored > 0 && !f.salvage) return {RecoveryAction::kMarkMissing, 0, 0};
    return {RecoveryAction::kOpen, f.stored, 0};
  }
  uint64_t acknowledged = f.mark->sequence;
  if (!f.salvage) {
    if (f.stored < acknowledged) return {RecoveryAction::kLostAcknowledged, f.stored, acknowledged};
    // Derived data is written only for acknowledged events, after their reply:
    // derived data beyond the log means acknowledged records are gone.
    if (f.derived > f.stored) return {RecoveryAction::kLostAcknowledged, f.stored, f.derived};
  }
  if (f.stored > acknowledged && !f.read_only) {
    if (!f.mark->exact) return {RecoveryAction::kKeepAbove, f.stored, f.stored};
    // An exact mark below the derived data: the mark file is older than the
    // log (restored from another backup?). Never delete acknowledged events.
    if (f.derived > acknowledged) return {RecoveryAction::kMarkStale, acknowledged, f.derived};
    return {RecoveryAction::kDiscardAbove, acknowledged, acknowledged};
  }
  // Offline readers (salvage) compare the log with the strongest evidence.
  return {RecoveryAction::kOpen, f.stored, std::max(acknowledged, f.derived)};
}

}  // namespace wpm::eventstore
