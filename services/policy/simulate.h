#pragma once
// What-if simulation (wpm policy simulate; docs/policy.md): the recorded
// history of a period run through the policy service's own code, with a
// candidate policy for one group, without touching the fleet.
//
// The log is folded into the inventory's and the executor's states as they
// were at each pass time on the policy.interval grid (the events up to that
// time and the pass's slack), the samples come from the stored raw history
// instead of the live windows, and each pass runs evaluate_pass and
// conclude_pass as the live service does, every enabled group included (the
// domain cap counts their moves). The moves it would have made for the group
// are listed beside those the live policy made (mobilityDecided events).
// Run with the live policy (no candidate) within raw retention it makes the
// live decisions: the same code on the same inputs. Where it cannot be the
// same: trigger streaks begin at the period's start (as after a restart), and
// what a candidate would have moved is not moved in the history that follows
// (the recorded metrics are what the live placements produced).
//
// Thread safety: one call at a time per log and history reader. The reader
// is called from a thread of the simulation's own as well as the caller's,
// never from two at once.

#include <spdlog/logger.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "schemas/error.h"
#include "schemas/metrics.h"
#include "services/kernel/event_log.h"
#include "services/policy/model.h"

namespace wpm::policy {

struct SimulatedMove {
  int64_t at_ns = 0;  // the pass
  std::string wpar, from, to, trigger, automation, explanation;
  bool operator==(const SimulatedMove&) const = default;
};

struct SimulationOptions {
  std::string group;
  std::optional<GroupPolicy> candidate;  // none: the live policy of each moment
  int64_t from_ns = 0;
  int64_t to_ns = 0;
};

struct SimulationResult {
  std::vector<SimulatedMove> simulated;  // moves (and recommendations) for the group, in time order
  std::vector<SimulatedMove> live;       // the live policy's recorded moves in the period
  size_t passes = 0;
  uint64_t events = 0;                   // log events folded
  double seconds = 0;
};

// A raw history read (SampleStore::read): a WPAR's as `system` reported it,
// or a host's (system = its name), in [from_s, to_s].
using HistoryReader = std::function<Result<metrics::History>(bool wpar, const std::string& name,
                                                             const std::string& system, int64_t from_s, int64_t to_s)>;

[[nodiscard]] Result<SimulationResult> simulate(kernel::EventLog& log, const HistoryReader& history,
                                                const SimulationOptions& options, spdlog::logger& logger);

}  // namespace wpm::policy
