#pragma once
// wpmd's side of the agents (DESIGN.md §3, §8): the public port (9513:
// manager key, registration) and the agent channel (9514: CURVE; its ZAP
// handler admits registered keys only). Registrations are proven with the
// registration password (bus/registration_proof.h) and recorded as
// SystemRegistered; refusals as aggregated RegistrationRejected. The allow-list
// is the Registry, rebuilt from the log at start and kept current by
// following it. Heartbeats only refresh liveness in memory (DESIGN.md §2).
//
// Both ports are served by the one request/reply loop (bus/request_server.h):
// handlers run on its workers, so a registration's append never delays a
// heartbeat's answer.
//
// Thread safety: start() and stop() from one thread; the service runs its own
// threads (the servers' loops and workers, the log follower, the ZAP handler).

#include <prometheus/registry.h>
#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "bus/client.h"
#include "bus/curve.h"
#include "bus/request_server.h"
#include "eventstore/samples.h"
#include "schemas/agent_protocol.h"
#include "schemas/error.h"
#include "services/inventory/registry.h"
#include "services/inventory/rejections.h"
#include "services/inventory/service.h"
#include "services/kernel/clock.h"
#include "services/kernel/projection.h"

namespace wpm::inventory {

struct AgentChannelOptions {
  // Public port: manager key and registration (no secrets). Port 0 picks one.
  // Default: tcp://0.0.0.0:9513.
  std::string public_endpoint = "tcp://0.0.0.0:9513";
  // Agent channel (CURVE). Default: tcp://0.0.0.0:9514.
  std::string channel_endpoint = "tcp://0.0.0.0:9514";
  // The event store's request endpoint (appends, catch-up reads) and how
  // this service proves its identity there (service:inventory).
  std::string store_endpoint;
  bus::StoreCredentials store_credentials;
  // Where the registry projection reads its stream and learns of new
  // commits: the store itself, in this process. Required; not owned.
  kernel::EventLog* registry_reads = nullptr;
  kernel::CommitSignal* commit_signal = nullptr;
  // Where the manager's key pair lives (created at first start).
  std::string keys_dir;
  // "scrypt$N$r$p$salt$hash" of the registration password; empty: closed.
  std::string password_hash;
  RejectionOptions rejections;
  // Where heartbeats and reports are noted for the inventory's Online and
  // Offline (on `clock`'s monotonic time). Optional; not owned.
  Liveness* liveness = nullptr;
  // The channel's time. Default (null): the system clock.
  const kernel::Clock* clock = nullptr;
  // Where agents' metrics reports are recorded (DESIGN.md §2: not log
  // events). Null: reports are acknowledged and dropped. Not owned.
  eventstore::SampleStore* samples = nullptr;
  // The reporting interval agents are told on every ack (the setting
  // metrics.interval), in ms; asked at most once a second. Null: not told.
  std::function<uint32_t()> metrics_interval_ms;
};

// A report as the sample store keeps it: at `time_s`, for `system`.
eventstore::HostSample to_host_sample(const std::string& system, int64_t time_s,
                                      const agentproto::MetricsReport& report);

struct AgentLiveness {
  int64_t last_seen_ns = 0;
  int64_t started_ns = 0;
  std::string agent_version;
  uint32_t wpars = 0;
  uint32_t wpars_active = 0;
};

class AgentChannel {
 public:
  // `zap` is the context's ZAP handler; the channel serves its domain there.
  static Result<std::unique_ptr<AgentChannel>> start(zmq::context_t& context, bus::ZapHandler& zap,
                                                     AgentChannelOptions options,
                                                     prometheus::Registry& metrics,
                                                     std::shared_ptr<spdlog::logger> log);
  ~AgentChannel();
  void stop();

  const std::string& public_endpoint() const { return bound_public_; }
  const std::string& channel_endpoint() const { return bound_channel_; }
  const bus::CurveKeyPair& keys() const { return keys_; }
  std::string fingerprint() const;
  size_t registered() const;

 private:
  const kernel::Clock& clock() const;
  struct Metrics;
  AgentChannel(zmq::context_t& context, bus::ZapHandler& zap, AgentChannelOptions options,
               std::shared_ptr<spdlog::logger> log);
  bus::ClientOptions store_client_options() const;
  Result<void> open(prometheus::Registry& metrics);
  void follow();
  // Folds what the registry stream gained; the only way keys are admitted
  // or revoked. Takes mutex_.
  Result<uint64_t> catch_up_registry();
  bool admitted(const std::string& public_key) const;
  // Folds this service's own append into the registry once it is readable.
  Result<uint64_t> apply_own(const AppendResult& appended);
  // A request decoded, or the reply that refuses it (malformed, too old).
  std::expected<agentproto::ManagerRequest, agentproto::ManagerReply> decode(const bus::ServerRequest& request,
                                                                             const char* port);
  std::optional<std::string> serve_public(bus::ServerRequest& request);
  std::optional<std::string> serve_channel(bus::ServerRequest& request);
  agentproto::ManagerReply on_channel(const agentproto::ManagerRequest& request, const bus::ServerRequest& from);
  agentproto::ManagerReply on_register(uint64_t id, const agentproto::Register* reg, const std::string& address,
                                       const std::string& connection_key);
  // Appends through this service's store client (one request at a time).
  Result<AppendResult> append(const AppendRequest& request);
  void flush_rejections(int64_t now_ns);
  agentproto::ManagerReply record_profile(uint64_t id, const std::string& system_id,
                                          const profile::SystemProfile& profile);
  void record_rejection(const RegistrationRejected& rejected);
  agentproto::ManagerReply record_metrics(uint64_t id, const std::string& system_id,
                                          const agentproto::MetricsReport& report);
  uint32_t metrics_interval_ms();

  zmq::context_t& context_;
  AgentChannelOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  bus::CurveKeyPair keys_;
  std::optional<std::pair<std::string, std::string>> password_;  // kdf text, key
  bus::ZapHandler& zap_;
  bool zap_served_ = false;
  std::unique_ptr<bus::RequestServer> public_;
  std::unique_ptr<bus::RequestServer> channel_;
  std::string bound_public_;
  std::string bound_channel_;
  std::unique_ptr<Metrics> metrics_;

  mutable std::mutex mutex_;  // guards registry_ and liveness_
  std::unique_ptr<kernel::ProjectionRunner<RegistryModel>> registry_;
  std::map<std::string, AgentLiveness> liveness_;

  std::mutex limits_mutex_;  // guards rejections_ and refusal_log_
  RejectionLimiter rejections_;
  LogLimiter refusal_log_;  // refusal log lines: the manager key is public
  std::mutex register_mutex_;  // one registration at a time (choose the id, append, fold)
  std::mutex store_mutex_;  // guards store_
  std::unique_ptr<bus::StoreClient> store_;
  std::atomic<bool> stop_{false};
  std::thread follower_;
  std::atomic<uint32_t> metrics_interval_ms_{0};
  std::atomic<int64_t> metrics_interval_read_ns_{0};  // monotonic; 0: never read
};

}  // namespace wpm::inventory
