#pragma once
// The agent daemon's class, shared by its files (not part of the agent's
// interface, which is daemon.h): daemon.cpp (the loop, the manager link, the
// agent port and the local socket) and daemon_operations.cpp (the manager's
// lifecycle operations: journaled, fenced by placement epochs, run once).

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "agents/agent/daemon.h"
#include "agents/agent/manager_link.h"
#include "agents/agent/metrics_collector.h"
#include "agents/agent/operations.h"
#include "agents/agent/transfer.h"
#include "agents/profile/profile.h"
#include "bus/curve.h"
#include "bus/request_server.h"
#include "schemas/agent_protocol.h"

namespace wpm::agent::detail {

namespace fs = std::filesystem;
namespace ap = agentproto;

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
inline int64_t now_monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
inline int64_t wall_ns() { return now_ns(); }

struct AgentMetrics {
  prometheus::Gauge& uptime;
  prometheus::Family<prometheus::Gauge>& wpars;
  prometheus::Family<prometheus::Counter>& operations;
  prometheus::Counter& errors;
  prometheus::Gauge& registered;
  prometheus::Gauge& last_contact;
  explicit AgentMetrics(prometheus::Registry& r)
      : uptime(prometheus::BuildGauge().Name("wpm_agent_uptime_seconds").Help("Seconds since the agent started").Register(r).Add({})),
        wpars(prometheus::BuildGauge().Name("wpm_agent_wpars").Help("WPARs kept by this agent, by state").Register(r)),
        operations(prometheus::BuildCounter().Name("wpm_agent_operations_total").Help("Commands run, by command and result").Register(r)),
        errors(prometheus::BuildCounter().Name("wpm_agent_errors_total").Help("Failed manager exchanges and malformed frames").Register(r).Add({})),
        registered(prometheus::BuildGauge().Name("wpm_agent_registered").Help("1 when registered with a manager").Register(r).Add({})),
        last_contact(prometheus::BuildGauge().Name("wpm_agent_last_contact_timestamp_seconds").Help("When the manager last answered").Register(r).Add({})) {}
};
class Daemon {
 public:
  explicit Daemon(const DaemonOptions& o) : o_(o) {}
  int run();

 private:
  Result<void> open_local_socket();
  void refresh_registration();
  void tick();
  // Collects and sends one metrics report (every metrics interval).
  void report_metrics();
  // Notes what a reply of the agent channel says (the metrics interval).
  void note_reply(const ap::ManagerReply& reply);
  void recollect_profile();
  std::optional<std::string> serve_port(bus::ServerRequest& request);
  ap::OperationResult handle_operation(const ap::Operation& op);
  // Marks a journaled operation whose runner is gone without a result as
  // interrupted (never run again); true when it changed the record.
  bool settle(OperationRecord& record);
  // Holds the answer about a running operation (the manager's long poll,
  // Operation.wait_ms); answer_waiters() answers it when the operation ends
  // or its time is up. Returns false when too many are held already.
  bool hold_answer(bus::ServerRequest& request, uint64_t request_id, const std::string& operation_id,
                   std::chrono::milliseconds wait);
  // Answers the held questions whose operation ended, or all whose time is
  // up (`all`: every one, as the daemon stops); the next time one is up.
  // An operation's record is read when its question is new, when a child
  // ended (a runner's exit), and when its time is up: not at every wake.
  std::optional<std::chrono::steady_clock::time_point> answer_waiters(bool all);
  void refresh_profile();
  void on_local_client();
  void reap_children();
  void update_wpar_gauges(const std::vector<ap::WparSummary>& wpars);

  const DaemonOptions& o_;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t context_{1};
  bus::CurveKeyPair keys_;
  std::optional<Registration> registration_;
  std::mutex registration_mutex_;  // the ZAP thread reads the pinned key
  fs::file_time_type registration_mtime_{};
  std::unique_ptr<ManagerSession> session_;
  bool started_sent_ = false;
  uint16_t bound_port_ = 0;  // the agent port as bound (sent in Started: the manager probes it)
  uint16_t metrics_port_ = 0;  // the port of /metrics as bound (sent with each metrics report: Prometheus discovery)
  AgentStatus status_;
  std::unique_ptr<bus::RequestServer> port_;  // the agent port (commands from the manager)
  int wake_fd_ = -1;                           // a port worker wakes the main loop
  std::atomic<bool> refresh_requested_{false};
  int local_fd_ = -1;
  std::map<pid_t, int> children_;  // forwarded command → client connection
  std::unique_ptr<AgentMetrics> metrics_;
  std::map<std::string, prometheus::Gauge*> state_gauges_;
  // The host's and each WPAR's metrics of the last report (wpm_host_*, wpm_wpar_*{wpar}).
  struct MetricGauges {
    std::array<prometheus::Family<prometheus::Gauge>*, 7> host{}, wpar{};
    std::map<std::string, std::array<prometheus::Gauge*, 7>> wpars;  // by WPAR, the series made so far
  };
  MetricGauges metric_gauges_;
  prometheus::Registry* registry_ = nullptr;
  void update_metric_gauges(const ap::MetricsReport& report);
  int64_t started_ns_ = now_ns();
  profile::SystemProfile profile_;
  bool profile_sent_ = false;  // the manager has acknowledged profile_
  ProfileOverrides overrides_;  // agent.toml's [profile], read at start and when the manager asks
  uint64_t ticks_ = 0;
  std::unique_ptr<MetricsCollector> collector_;
  // How often metrics are reported: the manager's metrics.interval, told on
  // its acks (default 10 s until it says).
  std::chrono::milliseconds metrics_interval_{10'000};
  std::chrono::steady_clock::time_point next_metrics_{};  // the next report (a shorter interval brings it forward)
  std::mutex ops_mutex_;                        // the journal, the epochs and running_ops_
  std::unique_ptr<OperationJournal> journal_;
  std::map<std::string, std::string> running_ops_;  // operation id → WPAR, while it may run
  std::map<std::string, int> spawned_;  // operation id → the runner this daemon started (0 once reaped)
  StateGrants grants_;  // arrival agents allowed to pull a state file (transfer.h)
  struct Waiter {
    bus::ServerRequest request;
    uint64_t request_id = 0;
    std::string operation_id;
    std::chrono::steady_clock::time_point until;
    bool checked = false;  // its record was read once since it was held
  };
  std::mutex waiters_mutex_;      // guards waiters_ and waiters_closed_; never held with ops_mutex_
  std::vector<Waiter> waiters_;   // held questions about running operations
  bool waiters_closed_ = false;   // the daemon stops: every question is answered at once
  bool reaped_ = false;           // a child ended since answer_waiters() last looked (main loop only)
};

// How long the agent waits for the manager's answer on the agent channel.
inline constexpr std::chrono::milliseconds kManagerTimeout{2000};

// At most this many questions are held at once, each at most kHoldMax.
inline constexpr size_t kWaitersMax = 4096;
inline constexpr std::chrono::milliseconds kHoldMax{5'000};

}  // namespace wpm::agent::detail
