#include "eventstore/server.h"

#include "eventstore/backup.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <rocksdb/perf_level.h>

#include <chrono>
#include <thread>

#include "bus/constants.h"
#include "bus/frame.h"
#include "eventstore/backup.h"
#include "eventstore/verify.h"
#include "schemas/assert.h"
#include "schemas/codec.h"

namespace wpm::eventstore {
namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

struct StoreServer::PendingAppend {
  zmq::message_t identity;
  uint64_t request_id;
  AppendRequest request;
};

StoreServer::StoreServer(Store& store, zmq::context_t& context, ServerOptions options,
                         const AppendAccess& access, StoreMetrics& metrics,
                         std::shared_ptr<spdlog::logger> log)
    : store_(store),
      options_(std::move(options)),
      access_(access),
      metrics_(metrics),
      log_(std::move(log)),
      context_(context),
      router_(context, zmq::socket_type::router),
      xpub_(context, zmq::socket_type::xpub),
      to_readers_(context, zmq::socket_type::push),
      from_readers_(context, zmq::socket_type::pull) {
  bus::apply_defaults(router_);
  router_.set(zmq::sockopt::sndhwm, options_.reply_hwm);
  bus::apply_defaults(xpub_);
  xpub_.set(zmq::sockopt::sndhwm, options_.publish_hwm);
  // Pass every (un)subscription through, so the subscriber gauge counts all.
  xpub_.set(zmq::sockopt::xpub_verboser, 1);
  for (size_t t = 1; t <= kEventTypeMax; ++t) topics_[t] = bus::event_topic(static_cast<EventType>(t));
  topics_[0] = std::string(bus::kEventTopicPrefix) + "unknown";
  WPM_ASSERT(bus::valid_curve_key(options_.keys.public_key), "the store needs its CURVE key pair");
  // Every tcp:// and ipc:// endpoint handshakes with CURVE; inproc has no handshake.
  bus::make_curve_server(router_, options_.keys, kStoreZapDomain);
  bus::make_curve_server(xpub_, options_.keys, kStoreZapDomain);
  WPM_ASSERT(options_.reader_threads >= 1 && options_.reader_queue >= 1, "bad reader options");
  bus::apply_defaults(to_readers_);
  to_readers_.set(zmq::sockopt::sndhwm, options_.reader_queue);
  bus::apply_defaults(from_readers_);
  auto unique = reinterpret_cast<uintptr_t>(this);
  readers_endpoint_ = fmt::format("inproc://wpm-store-readers-{:x}", unique);
  replies_endpoint_ = fmt::format("inproc://wpm-store-read-replies-{:x}", unique);
  to_readers_.bind(readers_endpoint_);
  from_readers_.bind(replies_endpoint_);
}

Result<void> StoreServer::bind() {
  auto bind_one = [&](zmq::socket_t& s, const std::string& endpoint, const char* what,
                      std::string& bound) -> Result<void> {
    try {
      s.bind(bus::bind_spelling(endpoint));
    } catch (const zmq::error_t& e) {
      return fail(ErrorCode::kUnavailable,
                  fmt::format("cannot bind the {} endpoint {}: {}; choose another address or port "
                              "(0 picks a free one), or stop the program using it",
                              what, endpoint, e.what()));
    }
    bound = bus::last_endpoint(s);
    return {};
  };
  for (const auto* endpoint : {&options_.request_endpoint, &options_.publish_endpoint}) {
    if (endpoint->starts_with("inproc://")) {
      return fail(ErrorCode::kInvalidRequest,
                  fmt::format("{} cannot be the store's network endpoint: use tcp://HOST:PORT",
                              *endpoint));
    }
  }
  if (auto r = bind_one(router_, options_.request_endpoint, "request", bound_request_); !r) return r;
  if (auto r = bind_one(xpub_, options_.publish_endpoint, "publication", bound_publish_); !r) return r;
  std::string unused;
  if (!options_.local_request_endpoint.empty()) {
    if (auto r = bind_one(router_, options_.local_request_endpoint, "local request", unused); !r) {
      return r;
    }
  }
  if (!options_.local_publish_endpoint.empty()) {
    if (auto r = bind_one(xpub_, options_.local_publish_endpoint, "local publication", unused); !r) {
      return r;
    }
  }
  return {};
}

std::string StoreServer::identity_of(const zmq::message_t& routing_id, zmq::message_t& body) {
  // A CURVE connection carries the user id its ZAP handler gave it; a message
  // without one came over inproc, whose clients declare who they are.
  const char* user = zmq_msg_gets(body.handle(), "User-Id");
  if (user != nullptr && *user != '\0') return user;
  // Only inproc messages may declare an identity: anything that came over a
  // network or ipc connection carries the peer's address. (Without a ZAP
  // handler libzmq lets every CURVE key in with no user id; that must not
  // open the local identities to the network.)
  if (zmq_msg_gets(body.handle(), "Peer-Address") != nullptr) return "";
  return identity_of_local_routing_id(bus::view(routing_id));
}

Result<void> StoreServer::authorize(const std::string& identity, AppendRequest& append) const {
  for (auto& draft : append.events) {
    auto actor = access_.authorize(identity, draft);
    if (!actor) return std::unexpected(actor.error());
    draft.actor = std::move(*actor);
  }
  return {};
}

void StoreServer::malformed(const std::string& why) {
  metrics_.malformed_frames.Increment();
  int64_t now_s = now_ns() / 1'000'000'000;
  if (now_s != malformed_window_start_s_) {
    if (malformed_suppressed_ > 0) {
      log_->warn("malformed_frames_suppressed count={}", malformed_suppressed_);
    }
    malformed_window_start_s_ = now_s;
    malformed_suppressed_ = 0;
    log_->warn("malformed_frame endpoint=request reason=\"{}\"", why);
  } else {
    ++malformed_suppressed_;
  }
}

void StoreServer::reply(const zmq::message_t& identity, const Reply& r) {
  std::string frame = encode_reply(r);
  router_.send(zmq::buffer(identity.data(), identity.size()), zmq::send_flags::sndmore);
  router_.send(zmq::buffer(frame), zmq::send_flags::none);
}

void StoreServer::read_subscriptions() {
  for (int i = 0; i < 1024; ++i) {  // bounded drain
    zmq::message_t msg;
    if (!xpub_.recv(msg, zmq::recv_flags::dontwait)) return;
    if (msg.size() == 0) continue;
    auto first = static_cast<const uint8_t*>(msg.data())[0];
    if (first == 1) ++subscriptions_;
    if (first == 0 && subscriptions_ > 0) --subscriptions_;
    sample_subscribers_.store(subscriptions_ > 0, std::memory_order_relaxed);
    metrics_.subscribers.Set(static_cast<double>(subscriptions_));
  }
}

void StoreServer::serve_requests(std::vector<PendingAppend>& pending) {
  size_t pending_events = 0;
  size_t pending_bytes = 0;
  // Bounded drain: at most batch_requests_max messages per round.
  for (size_t i = 0; i < options_.batch_requests_max; ++i) {
    auto msg = bus::recv_message(router_, bus::kRequestFramesMax, zmq::recv_flags::dontwait);
    if (!msg) return;
    if (!*msg) {
      malformed(msg->error().message);
      continue;
    }
    auto& frames = **msg;
    if (frames.size() != 2) {
      malformed(fmt::format("message of {} frames; expected [identity][request]", frames.size()));
      continue;
    }
    auto request = decode_request(bus::view(frames[1]), bus::frame_limits());
    if (!request) {
      malformed(request.error().message);
      reply(frames[0], Reply{peek_request_id(bus::view(frames[1]), bus::frame_limits()),
                             request.error()});
      continue;
    }
    uint64_t id = request->request_id;
    if (request->protocol_version < kProtocolVersionMin) {
      reply(frames[0], Reply{id, Error{ErrorCode::kInvalidRequest,
                                       fmt::format("this client speaks wpm protocol {}; the store needs {} or "
                                                   "later: upgrade the client (wpm, or the service's wpmd)",
                                                   request->protocol_version, kProtocolVersionMin)}});
      continue;
    }
    std::string identity = identity_of(frames[0], frames[1]);
    if (identity.empty()) {
      metrics_.request(RequestKind::kStats, false).Increment();
      reply(frames[0], Reply{id, Error{ErrorCode::kPermissionDenied,
                                       "unauthenticated request: connect with CURVE and a listed key"}});
      continue;
    }
    if (auto* append = std::get_if<AppendRequest>(&request->body)) {
      if (auto allowed = authorize(identity, *append); !allowed) {
        metrics_.request(RequestKind::kAppend, false).Increment();
        log_->warn("append_refused identity={} stream={} reason=\"{}\"", identity,
                   allowed.error().stream_id, allowed.error().message);
        reply(frames[0], Reply{id, allowed.error()});
        continue;
      }
      pending_events += append->events.size();
      pending_bytes += frames[1].size();
      pending.push_back(PendingAppend{std::move(frames[0]), id, std::move(*append)});
      if (pending_events >= store_.options().batch_events_max ||
          pending_bytes >= options_.batch_bytes_max) {
        return;
      }
      continue;
    }
    if (auto* backup = std::get_if<BackupRequest>(&request->body)) {
      if (identity != "admin") {
        metrics_.request(RequestKind::kBackup, false).Increment();
        reply(frames[0], Reply{id, Error{ErrorCode::kPermissionDenied,
                                         fmt::format("{} may not make backups (the administrator's key may: wpm "
                                                     "backup create as root on the manager)",
                                                     identity)}});
      } else {
        start_backup(frames[0], id, *backup);
      }
      continue;
    }
    if (auto* write = std::get_if<WriteSamplesRequest>(&request->body); write && !may_write_samples(identity)) {
      reply(frames[0], Reply{id, Error{ErrorCode::kPermissionDenied,
                                       fmt::format("{} may not write metric samples (the inventory's agent channel "
                                                   "does)",
                                                   identity)}});
      continue;
    }
    // A read (or a sample, which is no log event): served by a reader thread, never here.
    if (!hand_to_readers(frames[0], frames[1])) {
      reply(frames[0], Reply{id, Error{ErrorCode::kUnavailable,
                                       fmt::format("{} reads are waiting already; retry later",
                                                   options_.reader_queue)}});
    }
  }
}

bool StoreServer::hand_to_readers(zmq::message_t& identity, zmq::message_t& request) {
  // Both frames go as one message or not at all: a full queue refuses the
  // first frame, and a PUSH socket takes a whole message once it took its first.
  if (!to_readers_.send(identity, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
  (void)to_readers_.send(request, zmq::send_flags::none);
  return true;
}

void StoreServer::forward_read_replies() {
  for (int i = 0; i < 4096; ++i) {  // bounded drain
    auto got = bus::recv_message(from_readers_, 2, zmq::recv_flags::dontwait);
    if (!got) return;
    if (!*got || (*got)->size() != 2) continue;  // cannot happen: our own readers
    auto& frames = **got;
    router_.send(frames[0], zmq::send_flags::sndmore);
    router_.send(frames[1], zmq::send_flags::none);
  }
}

void StoreServer::serve_reads(int index) {
  zmq::socket_t in(context_, zmq::socket_type::pull);
  zmq::socket_t out(context_, zmq::socket_type::push);
  bus::apply_defaults(in);
  bus::apply_defaults(out);
  in.set(zmq::sockopt::rcvhwm, options_.reader_queue);
  in.connect(readers_endpoint_);
  out.connect(replies_endpoint_);
  readers_ready_.fetch_add(1);
  readers_ready_.notify_all();
  log_->debug("store_reader_started index={}", index);
  while (!readers_stop_.load()) {
    zmq::pollitem_t item{in.handle(), 0, ZMQ_POLLIN, 0};
    if (bus::poll(&item, 1, std::chrono::milliseconds(200)) <= 0) continue;
    auto got = bus::recv_message(in, 2, zmq::recv_flags::dontwait);
    if (!got || !*got || (*got)->size() != 2) continue;
    auto& frames = **got;
    auto request = decode_request(bus::view(frames[1]), bus::frame_limits());
    if (!request) continue;  // decoded once already by the loop
    if (options_.before_read_for_test) options_.before_read_for_test();
    RequestKind kind = RequestKind::kStats;
    Result<ReplyBody> body = std::visit(
        [&](auto& b) -> Result<ReplyBody> {
          using T = std::decay_t<decltype(b)>;
          if constexpr (std::is_same_v<T, ReadRangeRequest>) {
            kind = RequestKind::kReadRange;
            return store_.read_range(b);
          } else if constexpr (std::is_same_v<T, ReadStreamRequest>) {
            kind = RequestKind::kReadStream;
            return store_.read_stream(b);
          } else if constexpr (std::is_same_v<T, StatsRequest>) {
            StatsReply stats = store_.stats();
            stats.publish_endpoint = bound_publish_;
            return stats;
          } else if constexpr (std::is_same_v<T, VerifyRequest>) {
            kind = RequestKind::kVerify;
            return verify_request(store_, b, options_.verify_events_max);
          } else if constexpr (std::is_same_v<T, WriteSamplesRequest> || std::is_same_v<T, ReadSamplesRequest>) {
            kind = std::is_same_v<T, WriteSamplesRequest> ? RequestKind::kWriteSamples : RequestKind::kReadSamples;
            return serve_samples_request(request->body);
          } else {
            return fail(ErrorCode::kInternal, "an append reached a reader");
          }
        },
        request->body);
    metrics_.request(kind, body.has_value()).Increment();
    std::string frame = encode_reply(Reply{request->request_id, body ? std::move(*body) : ReplyBody{body.error()}});
    out.send(frames[0], zmq::send_flags::sndmore);
    out.send(zmq::buffer(frame), zmq::send_flags::none);
  }
}

void StoreServer::commit(std::vector<PendingAppend>& pending) {
  std::vector<AppendRequest> requests;
  requests.reserve(pending.size());
  for (auto& p : pending) requests.push_back(std::move(p.request));
  auto t0 = std::chrono::steady_clock::now();
  CommitOutcome outcome = store_.commit(requests, now_ns());
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (outcome.batch_events > 0) {
    metrics_.commit_seconds.Observe(seconds);
    metrics_.batch_events.Observe(static_cast<double>(outcome.batch_events));
    metrics_.appended_events.Increment(static_cast<double>(outcome.batch_events));
  }
  // Gauges first: a client that reads /metrics after its reply sees its batch.
  metrics_.head_sequence.Set(static_cast<double>(store_.head()));
  metrics_.read_only.Set(store_.read_only() ? 1 : 0);
  metrics_.log_bytes.Set(static_cast<double>(store_.log_bytes()));
  for (size_t i = 0; i < pending.size(); ++i) {
    auto& result = outcome.results[i];
    metrics_.request(RequestKind::kAppend, result.has_value()).Increment();
    if (result && result->duplicate) metrics_.duplicate_appends.Increment();
    if (!result && result.error().code == ErrorCode::kWrongExpectedVersion) {
      metrics_.conflicts.Increment();
    }
    reply(pending[i].identity,
          Reply{pending[i].request_id, result ? ReplyBody{*result} : ReplyBody{result.error()}});
  }
  publish(outcome.committed);
  // Derived data after the replies: off the acknowledgement's critical path.
  (void)store_.apply_index();  // an error turned the store read-only and was logged
  store_.sync_mark();
  metrics_.read_only.Set(store_.read_only() ? 1 : 0);  // apply_index may have turned it read-only
  pending.clear();
}

void StoreServer::publish(const std::vector<Committed>& committed) {
  // Nobody subscribed: ZeroMQ would drop every frame, so do not build them. A
  // subscriber whose subscription is still in flight reads what it missed.
  if (subscriptions_ == 0) return;
  for (const auto& c : committed) {
    // Slot 0: a type this binary does not know ("event.unknown").
    const std::string& topic = topics_[known_event_type(c.type) ? static_cast<size_t>(c.type) : 0];
    // The frame is handed to ZeroMQ without another copy; it frees it when sent.
    auto message =
        bus::message_of(std::make_shared<const std::string>(encode_publication(c.sequence, c.record)));
    xpub_.send(zmq::buffer(topic), zmq::send_flags::sndmore);
    xpub_.send(message, zmq::send_flags::dontwait);
  }
  metrics_.published_events.Increment(static_cast<double>(committed.size()));
}

namespace {
// Samples queued for publication at most (a subscriber further behind reads the history).
constexpr size_t kSampleQueueMax = 100'000;
}  // namespace

StoreServer::~StoreServer() {
  if (sample_fd_ >= 0) ::close(sample_fd_);
}

bool may_write_samples(const std::string& identity) {
  return identity == "service:inventory" || identity == "admin";
}

void StoreServer::serve_samples(SampleStore& samples) {
  samples_ = &samples;
  sample_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  samples.subscribe([this](const HostSample& sample) {
    if (!sample_subscribers_.load(std::memory_order_relaxed) || sample_fd_ < 0) return;
    {
      std::lock_guard lock(sample_queue_mutex_);
      if (sample_queue_.size() >= 2 * kSampleQueueMax) return;  // a subscriber far behind reads the history
      sample_queue_.push_back(sample.system);
      sample_queue_.push_back(encode_host_sample(sample));
    }
    uint64_t one = 1;
    (void)!::write(sample_fd_, &one, sizeof one);
  });
}

Result<ReplyBody> StoreServer::serve_samples_request(const RequestBody& body) {
  if (samples_ == nullptr) return fail(ErrorCode::kUnavailable, "this store keeps no metric history");
  if (const auto* write = std::get_if<WriteSamplesRequest>(&body)) {
    HostSample sample = write->sample;
    if (sample.system.empty()) return fail(ErrorCode::kInvalidRequest, "a metric sample needs its system");
    if (sample.time_s == 0) sample.time_s = now_ns() / 1'000'000'000;
    if (auto r = samples_->write(sample); !r) return std::unexpected(r.error());
    return SamplesWritten{};
  }
  const auto& read = std::get<ReadSamplesRequest>(body);
  auto history = samples_->read(read.wpar, read.name, read.from_s, read.to_s,
                                read.aggregates ? Resolution::kAggregate : Resolution::kRaw);
  if (!history) return std::unexpected(history.error());
  return std::move(*history);
}

void StoreServer::publish_samples() {
  uint64_t n = 0;
  (void)!::read(sample_fd_, &n, sizeof n);
  std::deque<std::string> queue;
  {
    std::lock_guard lock(sample_queue_mutex_);
    queue.swap(sample_queue_);
  }
  if (subscriptions_ == 0) return;
  for (size_t i = 0; i + 1 < queue.size(); i += 2) {
    std::string topic = "metrics." + queue[i];
    xpub_.send(zmq::buffer(topic), zmq::send_flags::sndmore);
    xpub_.send(zmq::buffer(queue[i + 1]), zmq::send_flags::dontwait);
  }
}

void StoreServer::start_backup(zmq::message_t& identity, uint64_t request_id, const BackupRequest& request) {
  std::string dir = request.dir.empty() ? options_.backups_dir : request.dir;
  auto refuse = [&](ErrorCode code, std::string why) {
    metrics_.request(RequestKind::kBackup, false).Increment();
    reply(identity, Reply{request_id, Error{code, std::move(why)}});
  };
  if (dir.empty()) return refuse(ErrorCode::kInvalidRequest, "name the directory for the backup (no [backup] dir is configured)");
  if (dir.front() != '/') return refuse(ErrorCode::kInvalidRequest, fmt::format("'{}' is not an absolute path", dir));
  if (backup_running_.exchange(true)) {
    return refuse(ErrorCode::kUnavailable, "a backup is being made already; retry when it ends (wpm backup list)");
  }
  if (backup_thread_.joinable()) backup_thread_.join();  // the last one, finished
  std::string routing(static_cast<const char*>(identity.data()), identity.size());
  backup_thread_ = std::thread([this, routing, request_id, dir] {
    zmq::socket_t out(context_, zmq::socket_type::push);
    bus::apply_defaults(out);
    out.connect(replies_endpoint_);
    auto t0 = std::chrono::steady_clock::now();
    log_->info("backup_started dir={}", dir);
    auto made = create_backup(store_, store_.options().data_dir, dir, now_ns(), options_.version);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ReplyBody body = Error{};
    if (made) {
      log_->info("backup_made path={} head={} bytes={} files={} seconds={:.2f}", made->path, made->head, made->bytes,
                 made->files.size(), seconds);
      body = BackupReply{made->name, made->path, made->head, made->bytes, static_cast<uint32_t>(made->files.size()),
                         made->created_ns};
    } else {
      log_->error("backup_failed dir={} error=\"{}\"", dir, made.error().message);
      body = made.error();
    }
    metrics_.request(RequestKind::kBackup, made.has_value()).Increment();
    std::string frame = encode_reply(Reply{request_id, std::move(body)});
    out.send(zmq::buffer(routing), zmq::send_flags::sndmore);
    out.send(zmq::buffer(frame), zmq::send_flags::none);
    backup_running_ = false;
  });
}

void StoreServer::run(int stop_fd) {
  // RocksDB counts per-thread perf statistics by default (a thread-local
  // lookup per counter); nothing reads them, and the sequencer is the hot path.
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  metrics_.head_sequence.Set(static_cast<double>(store_.head()));
  metrics_.log_bytes.Set(static_cast<double>(store_.log_bytes()));
  std::vector<PendingAppend> pending;
  std::vector<std::thread> readers;
  for (int i = 0; i < options_.reader_threads; ++i) readers.emplace_back([this, i] { serve_reads(i); });
  struct JoinReaders {
    StoreServer& server;
    std::vector<std::thread>& threads;
    ~JoinReaders() {
      server.readers_stop_ = true;
      for (auto& t : threads) t.join();
      if (server.backup_thread_.joinable()) server.backup_thread_.join();  // a backup in progress ends first
    }
  } join_readers{*this, readers};
  // Reads are handed over only once every reader is connected (a PUSH socket
  // without peers would refuse them).
  for (int ready = readers_ready_.load(); ready < options_.reader_threads; ready = readers_ready_.load()) {
    readers_ready_.wait(ready);
  }
  // Runs until a stop signal: an intentionally unbounded service loop.
  while (true) {
    zmq::pollitem_t items[] = {
        {router_.handle(), 0, ZMQ_POLLIN, 0},
        {xpub_.handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, stop_fd, ZMQ_POLLIN, 0},
        {from_readers_.handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, sample_fd_, ZMQ_POLLIN, 0},
    };
    // Wakes in time to sync the acknowledged-sequence mark when no batch does.
    auto timeout = std::min(std::chrono::milliseconds(1000), store_.mark_sync_due_in());
    bus::poll(items, sample_fd_ >= 0 ? 5 : 4, timeout);
    store_.sync_mark();
    if (sample_fd_ >= 0 && (items[4].revents & ZMQ_POLLIN)) publish_samples();
    if (items[3].revents & ZMQ_POLLIN) forward_read_replies();
    if (items[1].revents & ZMQ_POLLIN) read_subscriptions();
    if (items[0].revents & ZMQ_POLLIN) {
      serve_requests(pending);
      if (!pending.empty()) commit(pending);
    }
    if (items[2].revents & ZMQ_POLLIN) {
      log_->info("store_stopping head={}", store_.head());
      return;
    }
  }
}

}  // namespace wpm::eventstore
