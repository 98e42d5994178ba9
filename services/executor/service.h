#pragma once
// The executor service (DESIGN.md §2; docs/executor.md): folds its state
// (model.h) from the log, decides the lifecycle commands the gateway
// recorded for it (one batch: the task, the placement it makes, and the
// CommandDecided closing command/<id>), and drives running tasks: each
// operation is recorded (OperationStarted) before it is sent to its agent
// and its result (OperationFinished) after, a task ends with TaskFinished.
// After a restart, operations recorded as started are asked about again
// with the same id (the agent answers from its journal) and time out at
// their recorded deadline.
//
// Thread safety: run() on one thread; read() and wait_applied() from any.

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>

#include "services/executor/dispatcher.h"
#include "services/executor/model.h"
#include "services/inventory/service.h"
#include "services/kernel/clock.h"
#include "services/kernel/event_log.h"
#include "services/kernel/projection.h"

namespace wpm::executor {

// A read-only view of the executor for queries (the gateway's).
class ExecutorView {
 public:
  virtual ~ExecutorView() = default;
  virtual void read(const std::function<void(const Executor&)>& reader) const = 0;
  virtual bool wait_applied(uint64_t sequence, std::chrono::milliseconds timeout) const = 0;
  // The last sequence folded.
  virtual uint64_t applied() const = 0;
};

struct ExecutorServiceOptions {
  // Longest wait for a commit when nothing runs. Default: 500 ms.
  std::chrono::milliseconds idle_wait{500};
  // Longest wait while operations are in flight. Default: 20 ms.
  std::chrono::milliseconds busy_wait{20};
  size_t commands_per_step = 256;
  uint64_t snapshot_every = 100'000;
  // Crash tests only: the process is killed (SIGKILL) right after this step
  // of a relocation was recorded: "relocate.placed", or
  // "relocate.<action>.started|finished" (pause, receive, restore, remove,
  // resume). wpmd reads it from WPM_TEST_KILL_POINT, as the store's own
  // points. Default: empty (never).
  std::string kill_point;
  int attempts = 5;  // decisions tried per command when its streams keep changing
  // Asks for a probe of a system's agent (the prober's probe_soon). When
  // set (with a liveness table), an operation for an Online system whose
  // agent has not been reconciled since it (re)connected, or since this
  // manager started, is held (not recorded, not sent) and a probe asked
  // for; docs/executor.md "Reconciliation". Default: none (never held).
  std::function<void(const std::string&)> request_probe;
};

struct ExecutorStats {
  uint64_t accepted = 0;
  uint64_t refused = 0;
  uint64_t operations_started = 0;
  uint64_t operations_finished = 0;
  uint64_t tasks_finished = 0;
  uint64_t conflicts = 0;
  uint64_t operations_held = 0;  // rounds an operation waited for its agent's reconciliation
};

class ExecutorService final : public ExecutorView {
 public:
  // `snapshots`, `dispatcher` and `liveness` may be null (without a
  // dispatcher every operation fails as unreachable). All outlive the service.
  ExecutorService(kernel::EventLog& log, kernel::SnapshotStore* snapshots, kernel::CommitSignal& signal,
                  const kernel::Clock& clock, const inventory::InventoryView& inventory, Dispatcher* dispatcher,
                  const inventory::Liveness* liveness, std::shared_ptr<spdlog::logger> logger,
                  ExecutorServiceOptions options = {});

  Result<void> start();
  // One round; returns how many events it appended.
  Result<size_t> step();
  void run(const std::atomic<bool>& stop);
  Result<void> snapshot();

  void read(const std::function<void(const Executor&)>& reader) const override;
  bool wait_applied(uint64_t sequence, std::chrono::milliseconds timeout) const override;
  uint64_t applied() const override;
  ExecutorStats stats() const;

 private:
  Result<void> fold();
  Result<size_t> decide_commands();
  Result<size_t> drive_tasks();
  // Kills the process when `append` recorded the step options_.kill_point names.
  void kill_point(const Executor& state, const AppendRequest& append) const;
  // Sends an operation to its agent; `again`: it was recorded as started
  // before (after a restart): asked about whatever the system's state, until its deadline.
  void dispatch(const Task& task, const Operation& op, const inventory::Inventory& inv, bool again = false);

  kernel::EventLog& log_;
  kernel::SnapshotStore* snapshots_;
  kernel::CommitSignal& signal_;
  const kernel::Clock& clock_;
  const inventory::InventoryView& inventory_;
  Dispatcher* dispatcher_;
  const inventory::Liveness* liveness_;
  std::shared_ptr<spdlog::logger> logger_;
  ExecutorServiceOptions options_;
  kernel::ProjectionRunner<ExecutorModel> runner_;
  uint64_t snapshot_at_ = 0;
  std::set<std::string> ambiguous_logged_;  // WPARs whose ambiguous newer placements were logged (step thread)
  std::map<std::string, int> attempts_;
  // Results for operations that could not be sent (their system cannot be reached).
  std::vector<DispatchResult> local_results_;
  mutable std::shared_mutex state_mutex_;
  mutable std::mutex applied_mutex_;
  mutable std::condition_variable applied_cv_;
  uint64_t applied_ = 0;
  mutable std::mutex stats_mutex_;
  ExecutorStats stats_;
  uint64_t seen_ = 0;
  // ended_application_tasks scans every WPAR: at most once a second.
  static constexpr int64_t kEndedScanIntervalNs = 1'000'000'000;
  int64_t next_ended_scan_ns_ = INT64_MIN;  // monotonic
};

}  // namespace wpm::executor
