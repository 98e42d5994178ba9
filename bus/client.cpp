#include "bus/client.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <chrono>

#include "bus/frame.h"
#include "schemas/assert.h"
#include "schemas/codec.h"

namespace wpm::bus {

StoreClient::StoreClient(zmq::context_t& context, std::string endpoint, ClientOptions options)
    : context_(context), endpoint_(std::move(endpoint)), options_(options) {
  WPM_ASSERT(options_.attempts >= 1 && options_.timeout_ms > 0, "bad client options");
  // Random start, so that replies meant for an earlier process are never taken.
  uint64_t seed = 0;
  if (::getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = static_cast<uint64_t>(::time(nullptr));
  next_request_id_ = (seed >> 16) + 1;
  reconnect();
}

void apply_credentials(zmq::socket_t& socket, const StoreCredentials& credentials) {
  if (!credentials.store_public_key.empty()) {
    make_curve_client(socket, credentials.client_keys, credentials.store_public_key);
  }
  if (!credentials.local_identity.empty()) {
    uint64_t nonce = 0;
    if (::getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) nonce = static_cast<uint64_t>(::time(nullptr));
    // "local/<identity>/<nonce>" (eventstore/access.h); unique per socket.
    socket.set(zmq::sockopt::routing_id,
               fmt::format("local/{}/{:016x}", credentials.local_identity, nonce));
  }
}

void StoreClient::reconnect() {
  socket_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  apply_defaults(*socket_);
  apply_credentials(*socket_, options_.credentials);
  socket_->connect(endpoint_);
}

Result<Reply> StoreClient::call(RequestBody body, Repeat repeat) {
  Request request{next_request_id_++, std::move(body)};
  return exchange(request.request_id, encode_request(request), repeat);
}

Result<Reply> StoreClient::exchange(uint64_t request_id, std::string encoded, Repeat repeat) {
  // Sent without a copy (a 256-event append is ~90 KB), and again as is on a retry.
  auto frame = std::make_shared<const std::string>(std::move(encoded));
  int attempts = repeat == Repeat::kSafe ? options_.attempts : 1;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    socket_->send(message_of(frame), zmq::send_flags::none);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.timeout_ms);
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0}};
      poll(items, 1, left);
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      auto msg = recv_message(*socket_, 1, zmq::recv_flags::dontwait);
      if (!msg || !*msg) continue;  // nothing, or an over-long message: keep waiting
      auto reply = decode_reply(view((**msg)[0]), frame_limits());
      if (!reply) {
        return fail(ErrorCode::kInternal,
                    fmt::format("malformed reply from {}: {}", endpoint_, reply.error().message));
      }
      if (reply->request_id != request_id) continue;  // a late reply to an old attempt
      if (reply->protocol_version < kProtocolVersionMin) {
        return fail(ErrorCode::kInvalidRequest,
                    fmt::format("the store at {} speaks wpm protocol {}; this client needs {} or later: "
                                "upgrade wpmd",
                                endpoint_, reply->protocol_version, kProtocolVersionMin));
      }
      return reply;
    }
    reconnect();
  }
  return fail(ErrorCode::kTimeout,
              fmt::format("no reply from the store at {} after {} attempt(s) of {} ms; is wpmd "
                          "running, and is this client's key listed? (the endpoints are in "
                          "DATA/endpoints; set --data or WPM_DATA, or --store or WPM_STORE)",
                          endpoint_, attempts, options_.timeout_ms));
}

namespace {
template <typename T>
Result<T> expect_body(Result<Reply> reply) {
  if (!reply) return std::unexpected(reply.error());
  if (auto* err = std::get_if<Error>(&reply->body)) return std::unexpected(*err);
  if (auto* body = std::get_if<T>(&reply->body)) return std::move(*body);
  return fail(ErrorCode::kInternal, "reply of the wrong kind from the store");
}
}  // namespace

Result<AppendResult> StoreClient::append(const AppendRequest& request) {
  Repeat repeat = request.idempotency_key.empty() ? Repeat::kNever : Repeat::kSafe;
  uint64_t id = next_request_id_++;
  return expect_body<AppendResult>(exchange(id, encode_request(id, request), repeat));
}

Result<ReadReply> StoreClient::read_range(const ReadRangeRequest& request) {
  return expect_body<ReadReply>(call(request, Repeat::kSafe));
}

Result<ReadReply> StoreClient::read_stream(const ReadStreamRequest& request) {
  return expect_body<ReadReply>(call(request, Repeat::kSafe));
}

Result<StatsReply> StoreClient::stats() {
  return expect_body<StatsReply>(call(StatsRequest{}, Repeat::kSafe));
}

Result<VerifyReply> StoreClient::verify(const VerifyRequest& request) {
  return expect_body<VerifyReply>(call(request, Repeat::kSafe));
}

Result<void> StoreClient::write_samples(const metrics::HostSample& sample) {
  auto r = expect_body<SamplesWritten>(call(WriteSamplesRequest{sample}, Repeat::kNever));
  if (!r) return std::unexpected(r.error());
  return {};
}

Result<metrics::History> StoreClient::read_samples(const ReadSamplesRequest& request) {
  return expect_body<metrics::History>(call(request, Repeat::kSafe));
}

Result<BackupReply> StoreClient::backup(const BackupRequest& request) {
  return expect_body<BackupReply>(call(request, Repeat::kNever));
}

Result<std::string> StoreClient::call_raw(const std::string& frame) {
  socket_->send(zmq::buffer(frame), zmq::send_flags::none);
  zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0}};
  poll(items, 1, std::chrono::milliseconds(options_.timeout_ms));
  if (!(items[0].revents & ZMQ_POLLIN)) {
    reconnect();
    return fail(ErrorCode::kTimeout, fmt::format("no reply from {}", endpoint_));
  }
  zmq::message_t msg;
  (void)socket_->recv(msg, zmq::recv_flags::none);
  return std::string(view(msg));
}

}  // namespace wpm::bus
