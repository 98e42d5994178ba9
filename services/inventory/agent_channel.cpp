#include "services/inventory/agent_channel.h"

#include <fmt/format.h>
#include <openssl/rand.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include <fstream>

#include "bus/client.h"
#include "bus/frame.h"
#include "bus/registration_proof.h"
#include "schemas/codec.h"
#include "schemas/record.h"
#include "schemas/agent_protocol.h"
#include "schemas/hash.h"
#include "services/inventory/model.h"
#include "services/kernel/event_log.h"
#include "wpm_version.h"

namespace wpm::inventory {
namespace {

using namespace std::chrono_literals;
namespace ap = agentproto;

constexpr const char* kZapDomain = "agent";
// The registry aggregate: every registration, removal and profile change.
// The store stamps the actor (service:inventory); the correlation id is the
// request that caused the event (the append's idempotency key).
constexpr const char* kRegistryStream = "registry";
constexpr size_t kHostnameMax = 253;
// The ZAP user id of a connection whose key is not registered (yet).
constexpr std::string_view kPendingPrefix = "pending:";
// Unauthenticated frames: a registration with its profile is a few KiB.
constexpr size_t kPublicFrameBytesMax = 64 * 1024;

const kernel::SystemClock kSystemClock;

std::string random_key(std::string_view prefix) {
  uint8_t raw[16];
  RAND_bytes(raw, sizeof raw);
  return std::string(prefix) + to_hex(raw, sizeof raw);
}

bool valid_hostname(const std::string& h) {
  if (h.empty() || h.size() > kHostnameMax) return false;
  for (char c : h) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
  }
  return true;
}

ap::ManagerReply error_reply(uint64_t id, ap::ErrorKind kind, std::string message) {
  return ap::ManagerReply{id, ap::ProtocolError{kind, std::move(message)}};
}

// The reply to a request the server could not run (busy, or a handler failed).
std::string busy_reply(const bus::ServerRequest& request, std::string_view why) {
  return ap::encode(error_reply(ap::peek_request_id(request.body), ap::ErrorKind::kUnavailable, std::string(why)));
}

}  // namespace

struct AgentChannel::Metrics {
  prometheus::Family<prometheus::Counter>& registrations;
  prometheus::Counter& accepted;
  prometheus::Counter& wrong_password;
  prometheus::Counter& rate_limited;
  prometheus::Counter& closed;
  prometheus::Counter& heartbeats;
  prometheus::Counter& metric_reports;
  prometheus::Counter& malformed;
  prometheus::Gauge& registered;

  explicit Metrics(prometheus::Registry& r)
      : registrations(prometheus::BuildCounter()
                          .Name("wpm_agent_registrations_total")
                          .Help("Registration attempts by result")
                          .Register(r)),
        accepted(registrations.Add({{"result", "accepted"}})),
        wrong_password(registrations.Add({{"result", "wrong_password"}})),
        rate_limited(registrations.Add({{"result", "rate_limited"}})),
        closed(registrations.Add({{"result", "closed"}})),
        heartbeats(prometheus::BuildCounter()
                       .Name("wpm_agent_heartbeats_total")
                       .Help("Heartbeats received from agents")
                       .Register(r)
                       .Add({})),
        metric_reports(prometheus::BuildCounter()
                           .Name("wpm_agent_metric_reports_total")
                           .Help("Metrics reports received from agents and recorded")
                           .Register(r)
                           .Add({})),
        malformed(prometheus::BuildCounter()
                      .Name("wpm_agent_malformed_frames_total")
                      .Help("Frames from agents dropped as malformed")
                      .Register(r)
                      .Add({})),
        registered(prometheus::BuildGauge()
                       .Name("wpm_agents_registered")
                       .Help("Systems whose keys may use the agent channel")
                       .Register(r)
                       .Add({})) {}
};

AgentChannel::AgentChannel(zmq::context_t& context, bus::ZapHandler& zap, AgentChannelOptions options,
                           std::shared_ptr<spdlog::logger> log)
    : context_(context), options_(std::move(options)), log_(std::move(log)), zap_(zap),
      rejections_(options_.rejections) {}

bus::ClientOptions AgentChannel::store_client_options() const {
  bus::ClientOptions o;
  o.credentials = options_.store_credentials;
  return o;
}

AgentChannel::~AgentChannel() { stop(); }

const kernel::Clock& AgentChannel::clock() const {
  return options_.clock != nullptr ? *options_.clock : static_cast<const kernel::Clock&>(kSystemClock);
}

void AgentChannel::stop() {
  stop_ = true;
  if (public_) public_->stop();
  if (channel_) channel_->stop();
  if (follower_.joinable()) follower_.join();
  if (zap_served_) zap_.drop_domain(kZapDomain);
  zap_served_ = false;
}

bool AgentChannel::admitted(const std::string& public_key) const {
  std::lock_guard lock(mutex_);
  return registry_->state().by_key(public_key) != nullptr;
}

std::string AgentChannel::fingerprint() const { return bus::key_fingerprint(keys_.public_key); }

size_t AgentChannel::registered() const {
  std::lock_guard lock(mutex_);
  return registry_ ? registry_->state().size() : 0;
}

Result<std::unique_ptr<AgentChannel>> AgentChannel::start(zmq::context_t& context, bus::ZapHandler& zap,
                                                          AgentChannelOptions options,
                                                          prometheus::Registry& metrics,
                                                          std::shared_ptr<spdlog::logger> log) {
  std::unique_ptr<AgentChannel> channel(new AgentChannel(context, zap, std::move(options), std::move(log)));
  if (auto r = channel->open(metrics); !r) {
    channel->stop();
    return std::unexpected(r.error());
  }
  return channel;
}

Result<void> AgentChannel::open(prometheus::Registry& metrics) {
  metrics_ = std::make_unique<Metrics>(metrics);
  auto keys = bus::load_or_create_curve_keys(options_.keys_dir, "manager");
  if (!keys) return std::unexpected(keys.error());
  keys_ = *keys;
  if (!options_.password_hash.empty()) {
    auto parsed = bus::parse_password_hash(options_.password_hash);
    if (!parsed) return fail(ErrorCode::kInvalidRequest, "the stored registration password hash is unreadable: " +
                                                             parsed.error().message);
    password_ = std::pair{bus::format_kdf(parsed->first), parsed->second};
  }

  // The allow-list first: rebuilt from the log before any agent is admitted.
  if (options_.registry_reads == nullptr || options_.commit_signal == nullptr) {
    return fail(ErrorCode::kInternal, "the agent channel needs the store's reader and commit signal");
  }
  registry_ = std::make_unique<kernel::ProjectionRunner<RegistryModel>>(*options_.registry_reads, nullptr);
  {
    std::lock_guard lock(mutex_);
    if (auto r = registry_->start(); !r) {
      return fail(r.error().code, "cannot read the registered systems from the event store: " + r.error().message);
    }
  }
  // The store client first: the follower writes refused registrations through it.
  store_ = std::make_unique<bus::StoreClient>(context_, options_.store_endpoint, store_client_options());
  follower_ = std::thread([this] { follow(); });
  metrics_->registered.Set(static_cast<double>(registered()));

  zap_served_ = true;
  zap_.serve_domain(
      kZapDomain, [this](const std::string& /*address*/, const std::string& key) -> std::optional<std::string> {
        std::lock_guard lock(mutex_);
        if (registry_->state().by_key(key) != nullptr) return key;
        // Admitted to register, and to nothing else (on_channel).
        return std::string(kPendingPrefix) + key;
      });
  // The public port is anyone's: one worker, small frames. The channel:
  // registered keys (and keys registering), a few workers.
  public_ = std::make_unique<bus::RequestServer>(
      context_, bus::RequestServerOptions{options_.public_endpoint, 1, 256, static_cast<int64_t>(kPublicFrameBytesMax),
                                          std::nullopt, ""});
  channel_ = std::make_unique<bus::RequestServer>(
      context_, bus::RequestServerOptions{options_.channel_endpoint, 4, 4096,
                                          static_cast<int64_t>(ap::kAgentFrameBytesMax), keys_, kZapDomain});
  for (auto* server : {public_.get(), channel_.get()}) {
    if (auto r = server->bind(); !r) {
      return fail(ErrorCode::kIo, fmt::format("cannot bind the agent endpoints ({} and {}): {}",
                                              options_.public_endpoint, options_.channel_endpoint, r.error().message));
    }
  }
  bound_public_ = public_->endpoint();
  bound_channel_ = channel_->endpoint();
  public_->start([this](bus::ServerRequest& r) { return serve_public(r); }, busy_reply);
  channel_->start([this](bus::ServerRequest& r) { return serve_channel(r); }, busy_reply);
  return {};
}

Result<uint64_t> AgentChannel::catch_up_registry() {
  std::lock_guard lock(mutex_);
  auto applied = registry_->catch_up();
  if (applied && *applied > 0) metrics_->registered.Set(static_cast<double>(registry_->state().size()));
  return applied;
}

Result<uint64_t> AgentChannel::apply_own(const AppendResult& appended) {
  // The store answers an append before its stream index is written: wait
  // for the commit signal to say the events are readable by stream.
  uint64_t last = appended.first_sequence + appended.count - 1;
  if (options_.commit_signal->wait_beyond(last - 1, 5s) < last) {
    return fail(ErrorCode::kTimeout, fmt::format("sequence {} is not readable after 5 s", last));
  }
  return catch_up_registry();
}

void AgentChannel::follow() {
  // Woken by the store's commit signal (no publication per event): the
  // registry is one stream, so a wake-up reads what it gained, if anything.
  uint64_t seen = 0;
  std::string last_error;
  while (!stop_) {
    seen = options_.commit_signal->wait_beyond(seen, 500ms);
    flush_rejections(clock().wall_ns());
    auto r = catch_up_registry();
    std::string error = r ? "" : r.error().message;
    if (error != last_error && !error.empty()) {
      log_->error("registry_follow_failed error=\"{}\"", error);
    }
    last_error = error;
  }
}

Result<AppendResult> AgentChannel::append(const AppendRequest& request) {
  std::lock_guard lock(store_mutex_);
  return store_->append(request);
}

std::expected<ap::ManagerRequest, ap::ManagerReply> AgentChannel::decode(const bus::ServerRequest& from,
                                                                         const char* port) {
  auto request = ap::decode_manager_request(from.body);
  if (!request) {
    metrics_->malformed.Increment();
    std::lock_guard lock(limits_mutex_);
    if (refusal_log_.allow(clock().wall_ns())) {
      log_->warn("agent_frame_malformed port={} error=\"{}\" suppressed_before={}", port, request.error().message,
                 refusal_log_.take_suppressed());
    }
    return std::unexpected(
        error_reply(ap::peek_request_id(from.body), ap::ErrorKind::kInvalidRequest, request.error().message));
  }
  if (request->protocol_version < kProtocolVersionMin) {
    return std::unexpected(error_reply(request->request_id, ap::ErrorKind::kInvalidRequest,
                                       fmt::format("this agent speaks wpm protocol {}; the manager needs {} or later: "
                                                   "upgrade wpm-agent",
                                                   request->protocol_version, kProtocolVersionMin)));
  }
  return std::move(*request);
}

std::optional<std::string> AgentChannel::serve_public(bus::ServerRequest& from) {
  auto request = decode(from, "public");
  if (!request) return ap::encode(request.error());
  uint64_t id = request->request_id;
  if (std::holds_alternative<ap::GetManagerKey>(request->body)) {
    ap::ManagerKey key{keys_.public_key, fingerprint(), 0, kVersion, password_ ? password_->first : ""};
    auto colon = bound_channel_.rfind(':');
    key.agent_channel_port = static_cast<uint16_t>(std::stoi(bound_channel_.substr(colon + 1)));
    return ap::encode(ap::ManagerReply{id, key});
  }
  if (std::holds_alternative<ap::Register>(request->body)) {
    return ap::encode(error_reply(id, ap::ErrorKind::kInvalidRequest,
                                  "registrations are taken on the agent channel, over CURVE to the pinned manager "
                                  "key, not on the public port: upgrade wpm-agent"));
  }
  return ap::encode(error_reply(id, ap::ErrorKind::kInvalidRequest,
                                "only getManagerKey is served on the public port; use the agent channel"));
}

std::optional<std::string> AgentChannel::serve_channel(bus::ServerRequest& from) {
  auto request = decode(from, "channel");
  if (!request) return ap::encode(request.error());
  return ap::encode(on_channel(*request, from));
}

// A registration, over CURVE on the agent channel: `connection_key` is the
// key the connection's handshake proved, which the registration must name.
ap::ManagerReply AgentChannel::on_register(uint64_t id, const ap::Register* reg, const std::string& address,
                                           const std::string& connection_key) {
  // One registration at a time: the system id is chosen from the registry,
  // appended and folded before the next one chooses (two agents with the
  // same host name, or an agent's retry, must not pick the same id).
  std::lock_guard registering(register_mutex_);
  int64_t now = clock().wall_ns();
  // Only validated values reach the log and the event: anything else is
  // described, never copied (it could be a megabyte of junk or forged lines).
  const bool valid = valid_hostname(reg->hostname) && bus::valid_curve_key(reg->public_key);
  std::string hostname = valid_hostname(reg->hostname) ? reg->hostname
                                                       : fmt::format("<invalid, {} bytes>", reg->hostname.size());
  std::string claimed_key = bus::valid_curve_key(reg->public_key)
                                ? reg->public_key
                                : fmt::format("<invalid, {} bytes>", reg->public_key.size());
  auto refuse = [&](ap::ErrorKind kind, const std::string& reason, const std::string& message) {
    std::optional<RegistrationRejected> event;
    {
      std::lock_guard lock(limits_mutex_);
      event = rejections_.refuse(address, reason, hostname, claimed_key, now);
      if (refusal_log_.allow(now)) {
        log_->warn("registration_refused address={} hostname={} reason=\"{}\" suppressed_before={}", address,
                   hostname, reason, refusal_log_.take_suppressed());
      }
    }
    if (event) record_rejection(*event);
    return error_reply(id, kind, message);
  };
  if (!valid) {
    return refuse(ap::ErrorKind::kInvalidRequest, "invalid host name or key",
                  "the registration carries an invalid host name or public key");
  }
  if (reg->public_key != connection_key) {
    return refuse(ap::ErrorKind::kInvalidRequest, "key of the registration is not the connection's",
                  "the registration names another key than the one this connection proved; register with the "
                  "agent's own key");
  }
  const bool with_token = !reg->token.empty();
  if (!password_ && !with_token) {
    metrics_->closed.Increment();
    return refuse(ap::ErrorKind::kRegistrationClosed, "no registration password set",
                  "the manager accepts no registrations: it has no registration password; on the manager run wpmd "
                  "--registration-password-file FILE (or set registration_password_file under [agents])");
  }
  bool blocked = false;
  {
    std::lock_guard lock(limits_mutex_);
    blocked = rejections_.blocked(address, now);
  }
  if (blocked) {
    metrics_->rate_limited.Increment();
    return refuse(ap::ErrorKind::kRateLimited, "rate limited",
                  fmt::format("too many refused registrations from {}; wait {} s and check the password", address,
                              options_.rejections.window_ns / 1'000'000'000));
  }
  // A join token (single use, expiring) in place of the password's proof:
  // it travels only over CURVE to this manager's key; only its hash is kept.
  std::string token_stream;
  if (with_token) {
    std::string hash = to_hex(sha256(reg->token));
    token_stream = join_token_stream(hash);
    auto events = kernel::read_stream_events(*options_.registry_reads, token_stream, 1, 16);
    if (!events) return error_reply(id, ap::ErrorKind::kUnavailable, "cannot read the join token; retry");
    if (!events->empty()) {
      const auto* created = std::get_if<JoinTokenCreated>(&events->front().payload);
      if (created == nullptr || created->token_hash != hash) events->clear();  // another token's prefix: unknown
    }
    if (auto problem = join_token_problem(*events, now)) {
      metrics_->wrong_password.Increment();
      return refuse(ap::ErrorKind::kWrongPassword, "join token refused", *problem);
    }
  } else if (!bus::proof_matches(password_->second, keys_.public_key, reg->public_key, reg->hostname, reg->proof)) {
    metrics_->wrong_password.Increment();
    return refuse(ap::ErrorKind::kWrongPassword, "wrong registration password",
                  "wrong registration password; give the one set on the manager (--password-file or "
                  "WPM_REGISTRATION_PASSWORD)");
  }
  std::string fp = bus::key_fingerprint(reg->public_key);
  std::string system_id;
  {
    std::lock_guard lock(mutex_);
    if (const auto* known = registry_->state().by_key(reg->public_key)) {
      return ap::ManagerReply{id, ap::Registered{known->system_id, true}};
    }
    system_id = registry_->state().choose_system_id(reg->hostname, fp);
  }
  std::string host = address;
  SystemRegistered registered{system_id, reg->hostname, host, reg->public_key, reg->profile, reg->agent_port};
  AppendRequest append;
  append.idempotency_key = random_key("register-");
  append.events.push_back(EventDraft{kRegistryStream, append.idempotency_key, "", "", registered});
  if (with_token) {
    // Used once: the registration and the token's use are one append that
    // expects the token unused (version 1), so two agents cannot both use it.
    append.expectations.push_back(StreamExpectation{token_stream, ExpectKind::kExact, 1});
    append.events.push_back(EventDraft{token_stream, append.idempotency_key, "", "",
                                       JoinTokenUsed{to_hex(sha256(reg->token)), system_id}});
  }
  auto result = this->append(append);
  if (!result && with_token && result.error().code == ErrorCode::kWrongExpectedVersion) {
    return refuse(ap::ErrorKind::kWrongPassword, "join token refused",
                  "this join token was just used by another registration; make another with `wpm system token "
                  "create`");
  }
  if (!result) {
    log_->error("registration_not_recorded system={} error=\"{}\"", system_id, result.error().message);
    return error_reply(id, ap::ErrorKind::kUnavailable,
                       "the manager could not record the registration (" + result.error().message + "); retry");
  }
  // Admitted through the registry projection, like every key.
  if (auto folded = apply_own(*result); !folded || !admitted(reg->public_key)) {
    log_->error("registration_not_applied system={} sequence={} error=\"{}\"", system_id, result->first_sequence,
                folded ? "the registry did not admit the key" : folded.error().message);
    return error_reply(id, ap::ErrorKind::kUnavailable,
                       "the manager recorded the registration but could not apply it yet; retry");
  }
  metrics_->accepted.Increment();
  metrics_->registered.Set(static_cast<double>(this->registered()));
  log_->info("system_registered system={} hostname={} address={} key_fingerprint={} sequence={}", system_id,
             reg->hostname, address, fp, result->first_sequence);
  return ap::ManagerReply{id, ap::Registered{system_id, false}};
}

ap::ManagerReply AgentChannel::on_channel(const ap::ManagerRequest& request_value, const bus::ServerRequest& from) {
  const auto* request = &request_value;
  // The ZAP handler admitted the connection with its key as user id; the key
  // is resolved again for every message, so a key revoked while its
  // connection is open is refused at once, even if its id is reused.
  std::string key = from.user_id;
  uint64_t id = request->request_id;
  // An unregistered key gets through the handshake only to register: the
  // registration password's proof travels over CURVE to the pinned key.
  bool pending = key.starts_with(kPendingPrefix);
  if (pending) key = key.substr(kPendingPrefix.size());
  if (const auto* reg = std::get_if<ap::Register>(&request->body)) {
    return on_register(id, reg, from.peer_address, key);
  }
  std::string system_id;
  {
    std::lock_guard lock(mutex_);
    if (const auto* system = registry_->state().by_key(key)) system_id = system->system_id;
  }
  if (system_id.empty()) {
    return error_reply(id, ap::ErrorKind::kNotRegistered,
                       pending ? "this agent's key is not registered; run wpm-agent configure"
                               : "this agent's key is no longer registered; run wpm-agent configure --force");
  }
  int64_t now = clock().wall_ns();
  if (options_.liveness != nullptr) options_.liveness->seen(system_id, clock().monotonic_ns());
  if (const auto* started = std::get_if<ap::Started>(&request->body)) {
    if (options_.liveness != nullptr) {
      if (started->agent_port != 0) options_.liveness->set_agent_port(system_id, started->agent_port);
      options_.liveness->clear_probe(system_id);  // a failure from before the agent listened
      // It started again: reconciled before it gets a command (docs/executor.md).
      options_.liveness->reconnected(system_id, clock().monotonic_ns());
    }
    {
      std::lock_guard lock(mutex_);
      auto& l = liveness_[system_id];
      l.last_seen_ns = now;
      l.started_ns = now;
      l.agent_version = started->agent_version;
      l.wpars = started->wpars;
    }
    log_->info("agent_started system={} version={} wpars={}", system_id, started->agent_version, started->wpars);
    return record_profile(id, system_id, started->profile);
  } else if (const auto* report = std::get_if<ap::ProfileReport>(&request->body)) {
    {
      std::lock_guard lock(mutex_);
      liveness_[system_id].last_seen_ns = now;
    }
    return record_profile(id, system_id, report->profile);
  } else if (const auto* beat = std::get_if<ap::Heartbeat>(&request->body)) {
    {
      std::lock_guard lock(mutex_);
      auto& l = liveness_[system_id];
      l.last_seen_ns = now;
      l.wpars = beat->wpars;
      l.wpars_active = beat->wpars_active;
    }
    if (options_.liveness != nullptr && beat->cpus > 0) {
      options_.liveness->set_load(system_id, static_cast<double>(beat->load1) / beat->cpus);
    }
    // A manager started after the agent's Started learns its port here.
    if (options_.liveness != nullptr && beat->agent_port != 0 &&
        options_.liveness->agent_port(system_id) != beat->agent_port) {
      options_.liveness->set_agent_port(system_id, beat->agent_port);
    }
    metrics_->heartbeats.Increment();
    ap::ManagerReply reply{id, ap::Ack{}};
    reply.metrics_interval_ms = metrics_interval_ms();
    return reply;
  } else if (const auto* report = std::get_if<ap::MetricsReport>(&request->body)) {
    return record_metrics(id, system_id, *report);
  } else if (std::holds_alternative<ap::Unregister>(request->body)) {
    AppendRequest append;
    append.idempotency_key = random_key("unregister-");
    append.events.push_back(EventDraft{kRegistryStream, append.idempotency_key, "", "",
                                       SystemRemoved{system_id, "unregistered by its agent"}});
    auto result = this->append(append);
    if (!result) return error_reply(id, ap::ErrorKind::kUnavailable, "cannot record it: " + result.error().message);
    // Acknowledged only once the registry projection has revoked the key.
    if (auto folded = apply_own(*result); !folded || admitted(key)) {
      return error_reply(id, ap::ErrorKind::kUnavailable, "the removal is recorded but not applied yet; retry");
    }
    {
      std::lock_guard lock(mutex_);
      liveness_.erase(system_id);
    }
    log_->info("system_unregistered system={} sequence={}", system_id, result->first_sequence);
    return ap::ManagerReply{id, ap::Ack{}};
  } else if (std::holds_alternative<ap::GetManagerKey>(request->body)) {
    return ap::ManagerReply{id, ap::ManagerKey{keys_.public_key, fingerprint(), 0, kVersion, ""}};
  }
  return error_reply(id, ap::ErrorKind::kInvalidRequest, "register on the public port, not the agent channel");
}

// Records the profile when it differs from the one on record; acknowledged
// only once it is durable, so that the agent sends it again otherwise.
ap::ManagerReply AgentChannel::record_profile(uint64_t id, const std::string& system_id,
                                              const profile::SystemProfile& profile) {
  {
    std::lock_guard lock(mutex_);
    const auto* known = registry_->state().by_id(system_id);
    if (known == nullptr || known->profile == profile) return ap::ManagerReply{id, ap::Ack{}};
  }
  AppendRequest append;
  append.idempotency_key = random_key("profile-");
  append.events.push_back(
      EventDraft{kRegistryStream, append.idempotency_key, "", "", SystemProfileChanged{system_id, profile}});
  auto result = this->append(append);
  if (!result) {
    log_->warn("profile_not_recorded system={} error=\"{}\"", system_id, result.error().message);
    return error_reply(id, ap::ErrorKind::kUnavailable, "cannot record the profile: " + result.error().message);
  }
  (void)apply_own(*result);  // the follower retries a failure, and the agent re-sends an unacknowledged profile
  log_->info("system_profile_changed system={} kernel={} sequence={}", system_id, profile.kernel_version,
             result->first_sequence);
  return ap::ManagerReply{id, ap::Ack{}};
}

eventstore::HostSample to_host_sample(const std::string& system, int64_t time_s, const ap::MetricsReport& report) {
  using eventstore::series::Metric;
  static_assert(ap::kMetricCpuBit == 1u << static_cast<unsigned>(Metric::kCpu) &&
                ap::kMetricMemoryBit == 1u << static_cast<unsigned>(Metric::kMemory) &&
                ap::kMetricLoadBit == 1u << static_cast<unsigned>(Metric::kLoad) &&
                ap::kMetricProcessesBit == 1u << static_cast<unsigned>(Metric::kProcesses) &&
                ap::kMetricThreadsBit == 1u << static_cast<unsigned>(Metric::kThreads) &&
                ap::kMetricPageFaultsBit == 1u << static_cast<unsigned>(Metric::kPageFaults),
                "the protocol's metric bits are the stored metric numbers");
  auto convert = [](const ap::MetricSet& m) {
    eventstore::MetricValues v;
    auto put = [&](Metric metric, double value) {
      if ((m.present >> static_cast<unsigned>(metric)) & 1u) v.set(metric, value);
    };
    put(Metric::kCpu, m.cpu_percent);
    put(Metric::kMemory, m.memory_percent);
    put(Metric::kLoad, m.load1);
    put(Metric::kProcesses, m.processes);
    put(Metric::kThreads, m.threads);
    put(Metric::kPageFaults, m.page_faults_per_s);
    return v;
  };
  eventstore::HostSample s{system, time_s, convert(report.host), {}};
  s.wpars.reserve(report.wpars.size());
  for (const auto& w : report.wpars) s.wpars.push_back({w.name, convert(w.metrics)});
  return s;
}

uint32_t AgentChannel::metrics_interval_ms() {
  if (!options_.metrics_interval_ms) return 0;
  int64_t now = clock().monotonic_ns();
  int64_t read = metrics_interval_read_ns_.load(std::memory_order_relaxed);
  if (read == 0 || now - read > 1'000'000'000) {
    metrics_interval_read_ns_.store(now, std::memory_order_relaxed);
    metrics_interval_ms_.store(options_.metrics_interval_ms(), std::memory_order_relaxed);
  }
  return metrics_interval_ms_.load(std::memory_order_relaxed);
}

// A metrics report: recorded in the sample store (not the log), stamped
// with the manager's time. A WPAR's name is checked like any other input.
ap::ManagerReply AgentChannel::record_metrics(uint64_t id, const std::string& system_id,
                                              const ap::MetricsReport& report) {
  for (const auto& w : report.wpars) {
    if (w.name.empty() || w.name.size() > 255 || w.name.find('\0') != std::string::npos) {
      metrics_->malformed.Increment();
      return error_reply(id, ap::ErrorKind::kInvalidRequest,
                         fmt::format("a metrics report names a WPAR '{}' that is not a valid name", w.name));
    }
  }
  if (options_.samples != nullptr) {
    int64_t time_s = clock().wall_ns() / 1'000'000'000;
    if (auto r = options_.samples->write(to_host_sample(system_id, time_s, report)); !r) {
      std::lock_guard lock(limits_mutex_);
      if (refusal_log_.allow(clock().wall_ns())) {
        log_->warn("metrics_not_recorded system={} error=\"{}\" suppressed_before={}", system_id,
                   r.error().message, refusal_log_.take_suppressed());
      }
      return error_reply(id, ap::ErrorKind::kUnavailable, "cannot record the metrics: " + r.error().message);
    }
  }
  metrics_->metric_reports.Increment();
  if (options_.liveness != nullptr) {
    options_.liveness->set_metrics_scope(system_id, report.host_scope);
    options_.liveness->set_metrics_port(system_id, report.metrics_port);
  }
  ap::ManagerReply reply{id, ap::Ack{}};
  reply.metrics_interval_ms = metrics_interval_ms();
  return reply;
}

void AgentChannel::flush_rejections(int64_t now) {
  std::vector<RegistrationRejected> due;
  {
    std::lock_guard lock(limits_mutex_);
    due = rejections_.due(now);
  }
  for (const auto& r : due) record_rejection(r);
}

void AgentChannel::record_rejection(const RegistrationRejected& rejected) {
  AppendRequest append;
  append.idempotency_key = random_key("rejected-");
  append.events.push_back(EventDraft{"registration-rejections", append.idempotency_key, "", "", rejected});
  if (auto r = this->append(append); !r) {
    log_->warn("registration_rejection_not_recorded address={} attempts={} error=\"{}\"", rejected.address,
               rejected.attempts, r.error().message);
  }
}

}  // namespace wpm::inventory
