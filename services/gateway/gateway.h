#pragma once
// The gateway (DESIGN.md §2, §8): where operators' requests enter the
// control plane. JSON requests over ZeroMQ (tcp://127.0.0.1:9520 by default;
// CURVE when it listens beyond loopback, so passwords never travel in
// clear), served by the one request/reply loop (bus/request_server.h).
//
//   request  {"v":1, "id":"<command id>", "token":"wpm_…", "command":"wpar.create", "args":{…}}
//   reply    {"v":1, "ok":true, "result":…}
//            {"v":1, "ok":false, "error":{"code":"not_found", "message":"…"}}
//
// Login checks a local Linux user through PAM and returns a token that
// expires; sessions are events (the token's hash only). Every request after
// that names its token; `root` on the manager's host may instead present the
// root-only credential in DATA/keys/root.credential. The user's roles (its
// own and its Linux groups') decide what it may do: the matrix is in
// model.h and the README.
//
// A change is recorded before it takes effect: a CommandRequested on
// command/<id> (DESIGN.md §4). The service that owns it decides (the
// inventory for systems, WPARs, groups, settings; the gateway itself for
// roles) and closes the stream with a CommandDecided in the same batch as
// its events. The gateway waits for that decision and answers with it: the
// events written or the refusal and its reason. A refusal by the gateway
// (role) is recorded the same way. The command id is the client's, so a
// re-sent request is the same command and gets the first answer.
//
// Queries read the inventory's state (InventoryView) and the gateway's own
// (roles, sessions, compatibility results), folded from the log.
//
// Thread safety: start/stop from the owner's thread; handle() from any.

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "bus/request_server.h"
#include "services/gateway/auth.h"
#include "services/gateway/model.h"
#include "services/gateway/views.h"
#include "services/inventory/rejections.h"
#include "services/executor/service.h"
#include "services/policy/service.h"
#include "services/inventory/service.h"
#include "services/kernel/clock.h"
#include "services/kernel/event_log.h"
#include "services/kernel/projection.h"

namespace wpm::gateway {

// A request's count of seconds (since, until): `fallback` when absent,
// nothing when it is not a non-negative integer.
inline std::optional<int64_t> seconds_arg(const nlohmann::json& args, const char* key, int64_t fallback) {
  if (!args.contains(key)) return fallback;
  if (!args[key].is_number_integer() || args[key].get<int64_t>() < 0) return std::nullopt;
  return args[key].get<int64_t>();
}

// The gateway protocol's version (the "v" member).
inline constexpr int kGatewayProtocol = 1;

struct GatewayOptions {
  // Default: tcp://127.0.0.1:9520. Beyond loopback it needs `curve`.
  std::string endpoint = "tcp://127.0.0.1:9520";
  std::optional<bus::CurveKeyPair> curve;
  // Where the root credential lives (DATA/keys/root.credential).
  std::string data_dir;
  PamOptions pam;
  // How long a login lasts. Default: 8 h.
  int64_t session_ttl_ns = 8LL * 3600 * 1'000'000'000;
  // How long a change waits for its decision. Default: 10 s.
  std::chrono::milliseconds decision_timeout{10'000};
  // Longest wait of one events.read long poll. Default: 10 s.
  std::chrono::milliseconds poll_wait_max{10'000};
  // Parked long polls at once; beyond it they are answered at once. Default: 1024.
  size_t parked_max = 1024;
  size_t workers = 128;
  size_t queue_max = 256;
  int64_t message_bytes_max = 1 << 20;
  // Refused logins: per user and per address (aggregated, rate-limited).
  inventory::RejectionOptions login_limits{60'000'000'000, 5, 10'000};
};

// What the gateway reads and writes through, all outliving it.
struct GatewayDeps {
  // Makes one EventLog per worker thread (appends as service:gateway).
  std::function<std::unique_ptr<kernel::EventLog>()> make_log;
  kernel::EventLog* reads = nullptr;  // the log as the gateway reads it (thread-safe reads)
  kernel::SnapshotStore* snapshots = nullptr;  // may be null
  kernel::CommitSignal* signal = nullptr;
  const inventory::InventoryView* inventory = nullptr;
  const executor::ExecutorView* executor = nullptr;  // may be null: task queries answer "unavailable"
  const inventory::Liveness* liveness = nullptr;     // hosts' loads (wpar.candidates); may be null
  const kernel::Clock* clock = nullptr;
  const eventstore::SampleStore* samples = nullptr;  // metric history; null: metrics queries answer "unavailable"
  const policy::PolicyService* policy = nullptr;     // group.state|explain; null: "unavailable"
};

class Gateway {
 public:
  Gateway(zmq::context_t& context, GatewayDeps deps, GatewayOptions options, std::shared_ptr<spdlog::logger> logger);
  ~Gateway();

  // Folds its state, writes the root credential (first start), binds and
  // starts serving.
  Result<void> start();
  void stop();
  const std::string& endpoint() const { return server_.endpoint(); }

  // One request, as the server's workers run it (tests call it directly).
  // `log` is the worker's own.
  nlohmann::json handle(const nlohmann::json& request, const std::string& address, kernel::EventLog& log);
  // The user a token is, with its roles; for tests and the HTTP side.
  uint64_t folded() const;

 private:
  struct Caller {
    std::string user;
    Roles roles;
    std::string token_hash;  // "" for the root credential
  };
  struct Fail {
    std::string code;
    std::string message;
  };
  // A result: a JSON value, or (for large lists) its text made directly.
  using Reply = View;
  using Answer = std::expected<Reply, Fail>;
  static std::string ok_text(const Reply& result);

  std::optional<std::string> serve(bus::ServerRequest& request);
  // The reply's text; empty when the request was parked (`park` set).
  std::string handle_request(const nlohmann::json& request, const std::string& address, kernel::EventLog& log,
                             bool* park);
  void follow();
  void fold();
  // Writes a snapshot when `after_events` were folded since the last one.
  void snapshot(uint64_t after_events);
  static constexpr uint64_t kSnapshotEvery = 100'000;
  Answer login(const nlohmann::json& args, const std::string& address, kernel::EventLog& log);
  bool names_privileged_wpar(const nlohmann::json& args) const;
  Answer authenticate(const std::string& token, Caller& caller);
  Answer logout(const Caller& caller, kernel::EventLog& log);
  Answer query(const std::string& command, const nlohmann::json& args, const Caller& caller);
  Answer task_query(const std::string& command, const nlohmann::json& args);
  Answer metrics_query(const std::string& command, const nlohmann::json& args);
  // A group by its name or a unique prefix.
  std::expected<std::string, Fail> resolve_group(const std::string& asked) const;
  // policy.simulate (simulation.cpp): one at a time per gateway.
  Answer simulate_query(const nlohmann::json& args);
  std::atomic<bool> simulating_{false};
  Answer relocation_query(const std::string& command, const nlohmann::json& args, const Caller& caller);
  Answer change(const std::string& id, const std::string& command, const nlohmann::json& args, const Caller& caller,
                const std::string& address, kernel::EventLog& log);
  Answer refuse_recorded(const std::string& id, const std::string& command, const nlohmann::json& args,
                         const Caller& caller, const std::string& address, const Fail& why, kernel::EventLog& log);
  // Waits for the decision of command `id`, which a DecisionWaiter made
  // before the request was appended; `requested_sequence`: the request's
  // sequence when this call appended it (0: sent before, read its stream).
  Answer wait_decision(const std::string& id, uint64_t requested_sequence = 0);
  // Registers a waiter for a command's decision for its lifetime.
  struct DecisionWaiter {
    DecisionWaiter(Gateway& gateway, std::string id);
    ~DecisionWaiter();
    DecisionWaiter(const DecisionWaiter&) = delete;
    DecisionWaiter& operator=(const DecisionWaiter&) = delete;
    Gateway& gateway;
    std::string id;
  };
  Answer read_events(const nlohmann::json& args, const Caller& caller);
  void record_login_refusal(const std::string& user, const std::string& address, const std::string& reason,
                            kernel::EventLog& log);

  zmq::context_t& context_;
  GatewayDeps deps_;
  GatewayOptions options_;
  std::shared_ptr<spdlog::logger> logger_;
  bus::RequestServer server_;
  PamAuthenticator pam_;
  std::string root_token_hash_;
  kernel::ProjectionRunner<GatewayModel> runner_;
  mutable std::shared_mutex state_mutex_;  // guards runner_'s state
  std::mutex limits_mutex_;                // guards the three limiters
  inventory::RejectionLimiter refusals_, by_user_, by_address_;
  std::atomic<bool> stop_{false};
  std::thread follower_;
  std::atomic<uint64_t> snapshot_at_{0};  // the sequence of the last snapshot
  // Parked long polls (events.read with nothing new yet).
  struct Parked {
    bus::ServerRequest request;
    int64_t deadline_mono_ns;
    uint64_t after;  // wake when the head passes this
  };
  std::mutex parked_mutex_;
  std::vector<Parked> parked_;
  bool parking_closed_ = false;  // under parked_mutex_: set when stopping
  // Requests waiting for their command's decision: the follower reads the
  // new commits once for all of them and wakes the one whose decision came,
  // instead of every waiter reading its own stream at every commit.
  void scan_decisions(uint64_t head);
  std::mutex decisions_mutex_;
  std::condition_variable decisions_cv_;
  struct Waiting {
    size_t waiters = 0;              // requests waiting for it (a re-sent one too)
    std::optional<Event> decision;   // once read
  };
  std::map<std::string, Waiting> waiting_;  // by command id
  uint64_t scanned_ = 0;                     // commits read for decisions up to here
};

}  // namespace wpm::gateway
