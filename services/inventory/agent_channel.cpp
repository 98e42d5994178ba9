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

std::string property(zmq::message_t& m, const char* name) {
  try {
    return m.gets(name);
  } catch (const zmq::error_t&) {
    return "";
  }
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

void send_reply(zmq::socket_t& socket, const zmq::message_t& identity, const ap::ManagerReply& reply) {
  std::string bytes = ap::encode(reply);
  zmq::message_t id(identity.data(), identity.size());
  socket.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  socket.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
}

}  // namespace

struct AgentChannel::Metrics {
  prometheus::Family<prometheus::Counter>& registrations;
  prometheus::Counter& accepted;
  prometheus::Counter& wrong_password;
  prometheus::Counter& rate_limited;
  prometheus::Counter& closed;
  prometheus::Counter& heartbeats;
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
  if (server_.joinable()) server_.join();
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
  try {
    public_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::router);
    bus::apply_defaults(*public_);
    public_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kPublicFrameBytesMax));
    public_->bind(bus::bind_spelling(options_.public_endpoint));
    bound_public_ = bus::last_endpoint(*public_);
    channel_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::router);
    bus::apply_defaults(*channel_);
    channel_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(ap::kAgentFrameBytesMax));
    bus::make_curve_server(*channel_, keys_, kZapDomain);
    channel_->bind(bus::bind_spelling(options_.channel_endpoint));
    bound_channel_ = bus::last_endpoint(*channel_);
  } catch (const zmq::error_t& e) {
    return fail(ErrorCode::kIo, fmt::format("cannot bind the agent endpoints ({} and {}): {}; choose other ports "
                                            "(port 0 picks a free one)",
                                            options_.public_endpoint, options_.channel_endpoint, e.what()));
  }
  server_ = std::thread([this] { serve(); });
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
    auto r = catch_up_registry();
    std::string error = r ? "" : r.error().message;
    if (error != last_error && !error.empty()) {
      log_->error("registry_follow_failed error=\"{}\"", error);
    }
    last_error = error;
  }
}

void AgentChannel::serve() {
  store_ = std::make_unique<bus::StoreClient>(context_, options_.store_endpoint, store_client_options());
  while (!stop_) {
    zmq::pollitem_t items[] = {{public_->handle(), 0, ZMQ_POLLIN, 0}, {channel_->handle(), 0, ZMQ_POLLIN, 0}};
    bus::poll(items, 2, 500ms);
    if (items[0].revents & ZMQ_POLLIN) on_public(*public_);
    if (items[1].revents & ZMQ_POLLIN) on_channel(*channel_);
    flush_rejections(clock().wall_ns());
  }
  public_.reset();
  channel_.reset();
  store_.reset();
}

// One request from `socket`, decoded; a malformed one is counted, logged
// (rate-limited: the public port is anyone's) and answered here.
std::optional<AgentChannel::Received> AgentChannel::receive(zmq::socket_t& socket, const char* port) {
  auto got = bus::recv_message(socket, 2, zmq::recv_flags::dontwait);
  if (!got) return std::nullopt;
  if (!*got || (*got)->size() != 2) {
    metrics_->malformed.Increment();
    return std::nullopt;
  }
  auto& frames = **got;
  auto request = ap::decode_manager_request(bus::view(frames[1]));
  if (!request) {
    metrics_->malformed.Increment();
    if (refusal_log_.allow(clock().wall_ns())) {
      log_->warn("agent_frame_malformed port={} error=\"{}\" suppressed_before={}", port, request.error().message,
                 refusal_log_.take_suppressed());
    }
    send_reply(socket, frames[0],
               error_reply(ap::peek_request_id(bus::view(frames[1])), ap::ErrorKind::kInvalidRequest,
                           request.error().message));
    return std::nullopt;
  }
  if (request->protocol_version < kProtocolVersionMin) {
    send_reply(socket, frames[0],
               error_reply(request->request_id, ap::ErrorKind::kInvalidRequest,
                           fmt::format("this agent speaks wpm protocol {}; the manager needs {} or later: upgrade "
                                       "wpm-agent",
                                       request->protocol_version, kProtocolVersionMin)));
    return std::nullopt;
  }
  return Received{std::move(frames), std::move(*request)};
}

void AgentChannel::on_public(zmq::socket_t& socket) {
  auto received = receive(socket, "public");
  if (!received) return;
  auto& frames = received->frames;
  const auto* request = &received->request;
  uint64_t id = request->request_id;
  std::string address = property(frames[1], "Peer-Address");
  if (std::holds_alternative<ap::GetManagerKey>(request->body)) {
    ap::ManagerKey key{keys_.public_key, fingerprint(), 0, kVersion, password_ ? password_->first : ""};
    auto colon = bound_channel_.rfind(':');
    key.agent_channel_port = static_cast<uint16_t>(std::stoi(bound_channel_.substr(colon + 1)));
    send_reply(socket, frames[0], ap::ManagerReply{id, key});
    return;
  }
  if (std::holds_alternative<ap::Register>(request->body)) {
    send_reply(socket, frames[0],
               error_reply(id, ap::ErrorKind::kInvalidRequest,
                           "registrations are taken on the agent channel, over CURVE to the pinned manager key, "
                           "not on the public port: upgrade wpm-agent"));
    return;
  }
  send_reply(socket, frames[0],
             error_reply(id, ap::ErrorKind::kInvalidRequest,
                         "only getManagerKey is served on the public port; use the agent channel"));
}

// A registration, over CURVE on the agent channel: `connection_key` is the
// key the connection's handshake proved, which the registration must name.
void AgentChannel::on_register(zmq::socket_t& socket, const zmq::message_t& identity, uint64_t id,
                               const ap::Register* reg, const std::string& address,
                               const std::string& connection_key) {
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
    if (auto event = rejections_.refuse(address, reason, hostname, claimed_key, now)) record_rejection(*event);
    if (refusal_log_.allow(now)) {
      log_->warn("registration_refused address={} hostname={} reason=\"{}\" suppressed_before={}", address,
                 hostname, reason, refusal_log_.take_suppressed());
    }
    send_reply(socket, identity, error_reply(id, kind, message));
  };
  if (!valid) {
    refuse(ap::ErrorKind::kInvalidRequest, "invalid host name or key",
           "the registration carries an invalid host name or public key");
    return;
  }
  if (reg->public_key != connection_key) {
    refuse(ap::ErrorKind::kInvalidRequest, "key of the registration is not the connection's",
           "the registration names another key than the one this connection proved; register with the agent's "
           "own key");
    return;
  }
  const bool with_token = !reg->token.empty();
  if (!password_ && !with_token) {
    metrics_->closed.Increment();
    refuse(ap::ErrorKind::kRegistrationClosed, "no registration password set",
           "the manager accepts no registrations: it has no registration password; on the manager run wpmd "
           "--registration-password-file FILE (or set registration_password_file under [agents])");
    return;
  }
  if (rejections_.blocked(address, now)) {
    metrics_->rate_limited.Increment();
    refuse(ap::ErrorKind::kRateLimited, "rate limited",
           fmt::format("too many refused registrations from {}; wait {} s and check the password", address,
                       options_.rejections.window_ns / 1'000'000'000));
    return;
  }
  // A join token (single use, expiring) in place of the password's proof:
  // it travels only over CURVE to this manager's key; only its hash is kept.
  std::string token_stream;
  if (with_token) {
    std::string hash = to_hex(sha256(reg->token));
    token_stream = join_token_stream(hash);
    auto events = kernel::read_stream_events(*options_.registry_reads, token_stream, 1, 16);
    if (!events) {
      send_reply(socket, identity, error_reply(id, ap::ErrorKind::kUnavailable, "cannot read the join token; retry"));
      return;
    }
    if (!events->empty()) {
      const auto* created = std::get_if<JoinTokenCreated>(&events->front().payload);
      if (created == nullptr || created->token_hash != hash) events->clear();  // another token's prefix: unknown
    }
    if (auto problem = join_token_problem(*events, now)) {
      metrics_->wrong_password.Increment();
      refuse(ap::ErrorKind::kWrongPassword, "join token refused", *problem);
      return;
    }
  } else if (!bus::proof_matches(password_->second, keys_.public_key, reg->public_key, reg->hostname, reg->proof)) {
    metrics_->wrong_password.Increment();
    refuse(ap::ErrorKind::kWrongPassword, "wrong registration password",
           "wrong registration password; give the one set on the manager (--password-file or "
           "WPM_REGISTRATION_PASSWORD)");
    return;
  }
  std::string fp = bus::key_fingerprint(reg->public_key);
  std::string system_id;
  {
    std::lock_guard lock(mutex_);
    if (const auto* known = registry_->state().by_key(reg->public_key)) {
      send_reply(socket, identity, ap::ManagerReply{id, ap::Registered{known->system_id, true}});
      return;
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
  auto result = store_->append(append);
  if (!result && with_token && result.error().code == ErrorCode::kWrongExpectedVersion) {
    refuse(ap::ErrorKind::kWrongPassword, "join token refused",
           "this join token was just used by another registration; make another with `wpm system token create`");
    return;
  }
  if (!result) {
    log_->error("registration_not_recorded system={} error=\"{}\"", system_id, result.error().message);
    send_reply(socket, identity,
               error_reply(id, ap::ErrorKind::kUnavailable,
                           "the manager could not record the registration (" + result.error().message + "); retry"));
    return;
  }
  // Admitted through the registry projection, like every key.
  if (auto folded = apply_own(*result); !folded || !admitted(reg->public_key)) {
    log_->error("registration_not_applied system={} sequence={} error=\"{}\"", system_id, result->first_sequence,
                folded ? "the registry did not admit the key" : folded.error().message);
    send_reply(socket, identity,
               error_reply(id, ap::ErrorKind::kUnavailable,
                           "the manager recorded the registration but could not apply it yet; retry"));
    return;
  }
  metrics_->accepted.Increment();
  metrics_->registered.Set(static_cast<double>(this->registered()));
  log_->info("system_registered system={} hostname={} address={} key_fingerprint={} sequence={}", system_id,
             reg->hostname, address, fp, result->first_sequence);
  send_reply(socket, identity, ap::ManagerReply{id, ap::Registered{system_id, false}});
}

void AgentChannel::on_channel(zmq::socket_t& socket) {
  auto received = receive(socket, "channel");
  if (!received) return;
  auto& frames = received->frames;
  const auto* request = &received->request;
  // The ZAP handler admitted the connection with its key as user id; the key
  // is resolved again for every message, so a key revoked while its
  // connection is open is refused at once, even if its id is reused.
  std::string key = property(frames[1], "User-Id");
  uint64_t id = request->request_id;
  // An unregistered key gets through the handshake only to register: the
  // registration password's proof travels over CURVE to the pinned key.
  bool pending = key.starts_with(kPendingPrefix);
  if (pending) key = key.substr(kPendingPrefix.size());
  if (const auto* reg = std::get_if<ap::Register>(&request->body)) {
    on_register(socket, frames[0], id, reg, property(frames[1], "Peer-Address"), key);
    return;
  }
  std::string system_id;
  {
    std::lock_guard lock(mutex_);
    if (const auto* system = registry_->state().by_key(key)) system_id = system->system_id;
  }
  if (system_id.empty()) {
    send_reply(socket, frames[0],
               error_reply(id, ap::ErrorKind::kNotRegistered,
                           pending ? "this agent's key is not registered; run wpm-agent configure"
                                   : "this agent's key is no longer registered; run wpm-agent configure --force"));
    return;
  }
  int64_t now = clock().wall_ns();
  if (options_.liveness != nullptr) options_.liveness->seen(system_id, clock().monotonic_ns());
  if (const auto* started = std::get_if<ap::Started>(&request->body)) {
    if (options_.liveness != nullptr && started->agent_port != 0) {
      options_.liveness->set_agent_port(system_id, started->agent_port);
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
    send_reply(socket, frames[0], record_profile(id, system_id, started->profile));
  } else if (const auto* report = std::get_if<ap::ProfileReport>(&request->body)) {
    {
      std::lock_guard lock(mutex_);
      liveness_[system_id].last_seen_ns = now;
    }
    send_reply(socket, frames[0], record_profile(id, system_id, report->profile));
  } else if (const auto* beat = std::get_if<ap::Heartbeat>(&request->body)) {
    {
      std::lock_guard lock(mutex_);
      auto& l = liveness_[system_id];
      l.last_seen_ns = now;
      l.wpars = beat->wpars;
      l.wpars_active = beat->wpars_active;
    }
    metrics_->heartbeats.Increment();
    send_reply(socket, frames[0], ap::ManagerReply{id, ap::Ack{}});
  } else if (std::holds_alternative<ap::Unregister>(request->body)) {
    AppendRequest append;
    append.idempotency_key = random_key("unregister-");
    append.events.push_back(EventDraft{kRegistryStream, append.idempotency_key, "", "",
                                       SystemRemoved{system_id, "unregistered by its agent"}});
    auto result = store_->append(append);
    if (!result) {
      send_reply(socket, frames[0],
                 error_reply(id, ap::ErrorKind::kUnavailable, "cannot record it: " + result.error().message));
      return;
    }
    // Acknowledged only once the registry projection has revoked the key.
    if (auto folded = apply_own(*result); !folded || admitted(key)) {
      send_reply(socket, frames[0],
                 error_reply(id, ap::ErrorKind::kUnavailable, "the removal is recorded but not applied yet; retry"));
      return;
    }
    {
      std::lock_guard lock(mutex_);
      liveness_.erase(system_id);
    }
    log_->info("system_unregistered system={} sequence={}", system_id, result->first_sequence);
    send_reply(socket, frames[0], ap::ManagerReply{id, ap::Ack{}});
  } else if (std::holds_alternative<ap::GetManagerKey>(request->body)) {
    send_reply(socket, frames[0],
               ap::ManagerReply{id, ap::ManagerKey{keys_.public_key, fingerprint(), 0, kVersion, ""}});
  } else {
    send_reply(socket, frames[0],
               error_reply(id, ap::ErrorKind::kInvalidRequest, "register on the public port, not the agent channel"));
  }
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
  auto result = store_->append(append);
  if (!result) {
    log_->warn("profile_not_recorded system={} error=\"{}\"", system_id, result.error().message);
    return error_reply(id, ap::ErrorKind::kUnavailable, "cannot record the profile: " + result.error().message);
  }
  (void)apply_own(*result);  // the follower retries a failure, and the agent re-sends an unacknowledged profile
  log_->info("system_profile_changed system={} kernel={} sequence={}", system_id, profile.kernel_version,
             result->first_sequence);
  return ap::ManagerReply{id, ap::Ack{}};
}

void AgentChannel::flush_rejections(int64_t now) {
  for (const auto& r : rejections_.due(now)) record_rejection(r);
}

void AgentChannel::record_rejection(const RegistrationRejected& rejected) {
  AppendRequest append;
  append.idempotency_key = random_key("rejected-");
  append.events.push_back(EventDraft{"registration-rejections", append.idempotency_key, "", "", rejected});
  if (auto r = store_->append(append); !r) {
    log_->warn("registration_rejection_not_recorded address={} attempts={} error=\"{}\"", rejected.address,
               rejected.attempts, r.error().message);
  }
}

}  // namespace wpm::inventory
