#pragma once
// The policy service (DESIGN.md §2, §7): every policy.interval (default
// 60 s, on the interval's grid) it evaluates each group whose policy is
// enabled (services/policy/model.h) from the samples of its averaging
// period, and acts on a mobility event as the group's automation level says:
//   recommend  nothing is recorded; `wpm group explain` shows the move;
//   approve    a relocation that waits for `wpm task approve` (it expires);
//   automatic  a relocation.
// A move is recorded in one append: the relocation command
// (command/policy-<group>-<time>, decided by the executor like any other,
// with the explanation as its reason) and mobilityDecided on
// policy/<group> with the inputs the decision used. A pass that moves
// nothing appends nothing. Trigger streaks live in memory (a restart
// starts them again).
//
// Thread safety: run() owns its thread; explain() and stats() may run on
// any thread.

#include <spdlog/logger.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "services/executor/service.h"
#include "services/inventory/service.h"
#include "services/kernel/clock.h"
#include "services/kernel/event_log.h"
#include "services/policy/model.h"
#include "services/policy/windows.h"

namespace wpm::policy {

struct PassOutcome {
  int64_t at_ns = 0;
  size_t groups = 0;      // evaluated (enabled)
  size_t wpars = 0;
  size_t moves = 0;       // relocations asked for
  size_t recommended = 0; // moves shown only (recommend)
  double ms = 0;          // evaluation time
};

struct PolicyStats {
  uint64_t passes = 0;
  uint64_t moves = 0;
  uint64_t recommended = 0;
  std::map<std::string, uint64_t> reasons;  // decisions by reason (reason_name)
  PassOutcome last;
};

// What a pass remembers of a group between passes (in memory: a restart,
// or a simulation's start, begins them again).
struct GroupMemo {
  std::string trigger;
  int streak = 0;
  int64_t pending_until_ns = 0;   // a move asked for, not yet a running task
  nlohmann::json recommendation;  // the last move shown (recommend)
  struct Figures {
    double state = 0, max = 0, min = 0;
  } figures;                      // at the last pass
  int64_t evaluated_ns = 0;       // when (0: never)
};

// Group policies parsed from their stored text, each text once (a pass
// reads every group's).
class PolicyCache {
 public:
  std::expected<GroupPolicy, std::string> parse(const std::string& text);

 private:
  static constexpr size_t kMaxEntries = 4096;
  std::mutex mutex_;
  std::unordered_map<std::string, GroupPolicy> parsed_;
};

struct Evaluated {
  GroupInput input;
  Evaluation evaluation;
};

// One pass's evaluations, as at `at_ns`, from the inventory's and the
// executor's states, the samples and the memos: every enabled group (or
// `only`, enabled or not), a group in `overrides` with that policy instead
// of its own (the simulation's candidate). `keep_s`: how long the samples
// it used reach back. Pure but for the samples' reads (and `policies`, a
// cache); the live service and the simulation run it alike.
std::vector<Evaluated> evaluate_pass(const inventory::Inventory& inv, const executor::Executor& x,
                                     SampleSource& samples, const std::map<std::string, GroupMemo>& memos,
                                     int64_t at_ns, const std::string* only,
                                     const std::map<std::string, GroupPolicy>& overrides, spdlog::logger& logger,
                                     int64_t* keep_s, PolicyCache& policies);

// The rest of a pass, live and simulated alike: the domain cap counting the
// moves this pass asked for, each move acted on (recommend: remembered;
// otherwise `record`, false when it could not be recorded), and the memos
// (a group that acted starts its streak again; a recorded move is in flight
// for two intervals). Decisions by reason are added to `reasons`.
PassOutcome conclude_pass(std::vector<Evaluated>& evaluated, std::map<std::string, GroupMemo>& memos, int64_t at_ns,
                          int64_t interval_ns, const std::function<bool(const Evaluated&)>& record,
                          std::map<std::string, uint64_t>& reasons);

// Passes run at every multiple of policy.interval (Unix time), each once its
// slack (kPassSlackNs) has passed: the one after `last_ns` is this.
int64_t next_pass_ns(int64_t last_ns, int64_t interval_ns);
inline constexpr int64_t kPassSlackNs = 2'000'000'000;

class PolicyService {
 public:
  PolicyService(kernel::EventLog& log, const inventory::InventoryView& inventory,
                const executor::ExecutorView& executor, const kernel::Clock& clock,
                std::shared_ptr<SampleWindows> windows, std::shared_ptr<spdlog::logger> logger);

  // Runs passes on the interval's grid until `stop`.
  void run(std::atomic<bool>& stop);
  // One pass as at `at_ns` (tests and run()).
  PassOutcome pass(int64_t at_ns);
  // wpm group state|explain: the group evaluated now, nothing recorded.
  // kNotFound for an unknown group.
  Result<nlohmann::json> explain(const std::string& group) const;
  PolicyStats stats() const;
  // Each evaluated group's state and thresholds at the last pass (Prometheus).
  using GroupFigures = GroupMemo::Figures;
  std::map<std::string, GroupFigures> group_figures() const;

 private:
  // evaluate_pass on the current states and the live windows.
  std::vector<Evaluated> evaluate_groups(int64_t at_ns, const std::string* only, int64_t* interval_ns) const;
  Result<void> record_move(const Evaluated& e, int64_t at_ns, int64_t watermark_s);

  kernel::EventLog& log_;
  const inventory::InventoryView& inventory_;
  const executor::ExecutorView& executor_;
  const kernel::Clock& clock_;
  std::shared_ptr<SampleWindows> windows_;
  std::shared_ptr<spdlog::logger> logger_;
  mutable PolicyCache policies_;
  mutable std::mutex mutex_;  // guards memos_ and stats_
  std::map<std::string, GroupMemo> memos_;
  PolicyStats stats_;
  int64_t interval_ns_ = 60'000'000'000;  // policy.interval at the last pass
};

// The JSON of an evaluation (group.state, group.explain).
nlohmann::json evaluation_json(const GroupInput& input, const Evaluation& e);

}  // namespace wpm::policy
