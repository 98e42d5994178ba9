#pragma once
// The compatibility service (DESIGN.md §2, §6): follows the registered
// systems (the registry projection), analyses every new pair of distinct
// compared properties in the background, in bounded steps, and records each
// result once as CompatibilityAnalyzed on stream compat/<departure>/<arrival>
// (the stream's existence makes a re-analysis after a restart write nothing).
//
// It runs the same way inside wpmd (reading the store directly, woken by its
// commit signal) and as its own process against a remote store (`wpmd
// --services compatibility --store tcp://HOST:9515`): only its EventLog and
// CommitSignal differ.
//
// Thread safety: run() on one thread; analysis() under the service's lock.

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "services/compatibility/analysis.h"
#include "services/inventory/registry.h"
#include "services/kernel/event_log.h"
#include "services/kernel/projection.h"

namespace wpm::compatibility {

struct ServiceOptions {
  // Pairs analysed and recorded per step, before the registry is read again.
  // Default: 256.
  size_t pairs_per_step = 256;
  // Longest wait for a new commit when there is nothing to analyse.
  // Default: 500 ms.
  std::chrono::milliseconds idle_wait{500};
};

struct ServiceStats {
  uint64_t recorded = 0;          // results appended
  uint64_t already_recorded = 0;  // results found in the log already
};

class CompatibilityService {
 public:
  // `log` appends (as service:compatibility) and reads; `signal` says when
  // the log grew. Both outlive the service.
  CompatibilityService(kernel::EventLog& log, kernel::CommitSignal& signal, std::shared_ptr<spdlog::logger> log_to,
                       ServiceOptions options = {});

  // Reads the registry so far. Call once before run().
  Result<void> start();
  // One round: the registry's news, then at most pairs_per_step pairs
  // analysed and recorded. Returns how many were analysed.
  Result<size_t> step();
  // Steps until `stop`; waits on the commit signal when idle.
  void run(const std::atomic<bool>& stop);

  ServiceStats stats() const;
  // The analysis so far, for queries; copies under the lock.
  std::optional<AnalysisState> state_of(const std::string& system_id) const;
  size_t pending_pairs() const;

 private:
  Result<void> follow_registry();
  Result<void> record(const Analysis::AnalysedPair& pair);

  kernel::EventLog& log_;
  kernel::CommitSignal& signal_;
  std::shared_ptr<spdlog::logger> logger_;
  ServiceOptions options_;
  kernel::ProjectionRunner<inventory::RegistryModel> registry_;
  bool registry_followed_ = false;  // the systems were compared once at least
  std::map<std::string, std::string> properties_of_;  // system → compared properties key
  mutable std::mutex mutex_;                          // guards analysis_ and stats_
  Analysis analysis_;
  ServiceStats stats_;
  uint64_t seen_ = 0;  // the log head last woken for
  std::vector<Analysis::AnalysedPair> unrecorded_;  // analysed, not yet recorded (service thread only)
};

}  // namespace wpm::compatibility
