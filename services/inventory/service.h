#pragma once
// The inventory service (DESIGN.md §2): folds the inventory (model.h) from
// the log, decides the commands the gateway recorded for it, and turns
// systems Offline when their heartbeats stop (and Online when they resume).
//
// A command's decision is one atomic append: the events it decided, each
// on its stream with the exact version it was decided on, and the
// CommandDecided that closes command/<id> (expected at version 1, just after
// its CommandRequested). The idempotency key is "cmd/<id>". So a command is
// decided exactly once: after a restart, or when another writer got there
// first, the append is refused or answered as a duplicate and the state
// folded from the log already holds the outcome. A version conflict reloads
// (folds the tail) and decides again, a bounded number of times.
//
// Liveness. Heartbeats are not events (DESIGN.md §2): the agent channel
// reports them to a Liveness table in memory; this service turns a system
// Offline after `heartbeat.timeout` without one, counting from its own start
// for a system it has not heard from since (so a wpmd restart gives every
// agent the whole timeout), and Online again at the next heartbeat. When
// heartbeats arrive but the prober (prober.h) cannot reach the agent's port,
// the system is Unreachable, with the prober's reason, until a probe answers.
// The WPARs an agent reports to the prober are reconciled (model.h's
// reconcile): hand-made WPARs appear as discovered.
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
#include <set>
#include <shared_mutex>
#include <string>

#include "services/inventory/model.h"
#include "services/kernel/clock.h"
#include "services/kernel/event_log.h"
#include "services/kernel/projection.h"

namespace wpm::inventory {

// When each system was last heard from (heartbeats and other reports), the
// port its agent said it listens on, and the manager's last probe of that
// port. Thread-safe.
class Liveness {
 public:
  void seen(const std::string& system_id, int64_t now_ns);
  std::optional<int64_t> last_seen(const std::string& system_id) const;
  void set_agent_port(const std::string& system_id, uint16_t port);
  uint16_t agent_port(const std::string& system_id) const;  // 0: not said
  // The host's load from its last heartbeat: 1-minute load average per CPU
  // (relocation targets are ranked by it); empty until one said.
  void set_load(const std::string& system_id, double load_per_cpu);
  std::optional<double> load(const std::string& system_id) const;
  std::map<std::string, double> loads() const;
  // How the system's agent reports its host's metrics ("host", or "wpars":
  // the sum of its WPARs, for labs); "" before its first report.
  void set_metrics_scope(const std::string& system_id, const std::string& scope);
  std::string metrics_scope(const std::string& system_id) const;
  // The port of the system's agent's own /metrics, from its last report
  // (wpmd's Prometheus discovery file); absent until one said.
  void set_metrics_port(const std::string& system_id, uint16_t port);
  std::map<std::string, uint16_t> metrics_ports() const;

  struct Probe {
    bool ok = false;
    std::string reason;  // when not ok: what failed ("connection refused", …)
    std::vector<ReportedWpar> wpars;  // when ok: what the agent reported
    int64_t at_ns = 0;   // monotonic
    uint64_t round = 0;  // the prober's round
    int64_t wall_ns = INT64_MAX;  // when it was taken, wall clock (reconcile: older than the executor's news?)
  };
  // A failed probe also means the agent must be reconciled again.
  void set_probe(const std::string& system_id, Probe probe);
  // Forgets what probes saw (the agent has just started: a failure from
  // before it listened says nothing of it now).
  void clear_probe(const std::string& system_id);
  std::optional<Probe> probe(const std::string& system_id) const;

  // Reconciliation before commands (docs/executor.md): whenever an agent
  // connects (it started, it is back Online after being Offline, its port
  // answers again) and whenever wpmd starts, the manager compares what it
  // believes with the agent's own list before it sends that agent any
  // command. `reconnected` (monotonic time) says the agent must be
  // reconciled again; `reconciled` records that the report of a probe taken
  // at `probe_at_ns` was folded into the log. Until a probe taken after the
  // last connection is reconciled, the executor holds that system's
  // operations (and asks for a probe).
  void reconnected(const std::string& system_id, int64_t now_ns);
  void reconciled(const std::string& system_id, int64_t probe_at_ns);
  bool reconciled_since_connected(const std::string& system_id) const;
  // Called with the system at each `reconnected` (wpmd: a probe of it at
  // once, so it is reconciled before a command is held for it); cleared
  // with an empty function before what it calls goes away.
  void on_reconnected(std::function<void(const std::string&)> hook);

 private:
  mutable std::mutex mutex_;
  std::map<std::string, int64_t> last_;
  std::map<std::string, uint16_t> ports_;
  std::map<std::string, double> loads_;
  std::map<std::string, std::string> scopes_;
  std::map<std::string, uint16_t> metrics_ports_;
  std::map<std::string, Probe> probes_;
  std::map<std::string, int64_t> connected_;   // when it last (re)connected, monotonic
  std::map<std::string, int64_t> reconciled_;  // the newest reconciled probe's time
  std::mutex hook_mutex_;  // guards hook_; held while it runs
  std::function<void(const std::string&)> hook_;
};

// A read-only view of the inventory for queries (the gateway's).
class InventoryView {
 public:
  virtual ~InventoryView() = default;
  // Calls `reader` with the state under a shared lock.
  virtual void read(const std::function<void(const Inventory&)>& reader) const = 0;
  // Waits until events up to `sequence` are folded, or `timeout`; true when they are.
  virtual bool wait_applied(uint64_t sequence, std::chrono::milliseconds timeout) const = 0;
};

struct InventoryServiceOptions {
  // Longest wait for a commit when idle (and the liveness check interval).
  // Default: 500 ms.
  std::chrono::milliseconds idle_wait{500};
  // The shortest time between two folds when commits keep coming (their
  // events are folded together). Default: 5 ms.
  std::chrono::milliseconds fold_interval{5};
  // Commands decided per step. Default: 256.
  size_t commands_per_step = 256;
  // Events folded between snapshots. Default: 100,000.
  uint64_t snapshot_every = 100'000;
  // Decisions tried per command when others keep changing its streams. Default: 5.
  int attempts = 5;
};

struct InventoryStats {
  uint64_t accepted = 0;
  uint64_t refused = 0;
  uint64_t state_changes = 0;
  uint64_t conflicts = 0;  // decisions overtaken by another writer, decided again
};

class InventoryService final : public InventoryView {
 public:
  // `snapshots` and `liveness` may be null. All outlive the service.
  InventoryService(kernel::EventLog& log, kernel::SnapshotStore* snapshots, kernel::CommitSignal& signal,
                   const kernel::Clock& clock, Liveness* liveness, std::shared_ptr<spdlog::logger> logger,
                   InventoryServiceOptions options = {});

  // Folds the log (from the latest snapshot).
  Result<void> start();
  // One round: fold what is new, decide pending commands, check liveness.
  // Returns how many events it appended.
  Result<size_t> step();
  void run(const std::atomic<bool>& stop);
  // Writes a snapshot of the state now.
  Result<void> snapshot();
  // Called after a `system.discover` command is decided (the prober's kick).
  void on_discover(std::function<void()> hook) { on_discover_ = std::move(hook); }
  // Called with the system's id after a `system.update-profile` command is
  // accepted (the prober asks that agent for its profile).
  void on_update_profile(std::function<void(const std::string&)> hook) { on_update_profile_ = std::move(hook); }

  void read(const std::function<void(const Inventory&)>& reader) const override;
  bool wait_applied(uint64_t sequence, std::chrono::milliseconds timeout) const override;
  InventoryStats stats() const;

 private:
  Result<void> fold();
  // Decides one pending command and appends the outcome; false when it
  // must be decided again (another writer changed a stream first).
  // `profile_of` is set to the system whose agent must be asked for its
  // profile (an accepted system.update-profile).
  Result<bool> decide_one(const PendingCommand& pending, std::string& profile_of);
  Result<size_t> check_liveness();
  // Reconciles the WPARs each agent reported at the prober's latest round.
  Result<size_t> reconcile_reports();

  kernel::EventLog& log_;
  kernel::SnapshotStore* snapshots_;
  kernel::CommitSignal& signal_;
  const kernel::Clock& clock_;
  Liveness* liveness_;
  std::shared_ptr<spdlog::logger> logger_;
  InventoryServiceOptions options_;
  kernel::ProjectionRunner<InventoryModel> runner_;
  int64_t started_ns_ = 0;
  uint64_t snapshot_at_ = 0;  // the sequence of the last snapshot
  std::map<std::string, int> attempts_;  // per pending command
  std::map<std::string, int64_t> changed_at_;  // per system: when this service last changed its state (monotonic)
  static constexpr int64_t kLivenessCheckIntervalNs = 100'000'000;
  int64_t next_liveness_check_ns_ = INT64_MIN;
  std::map<std::string, uint64_t> reconciled_;  // per system: the probe round last reconciled
  std::map<std::string, std::set<std::string>> refusals_;  // per system: refusals recorded
  std::function<void()> on_discover_;
  std::function<void(const std::string&)> on_update_profile_;
  mutable std::shared_mutex state_mutex_;  // guards runner_'s state against read()
  mutable std::mutex applied_mutex_;
  mutable std::condition_variable applied_cv_;
  uint64_t applied_ = 0;  // under applied_mutex_
  mutable std::mutex stats_mutex_;
  InventoryStats stats_;
  uint64_t seen_ = 0;
};

}  // namespace wpm::inventory
