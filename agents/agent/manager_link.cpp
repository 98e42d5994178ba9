#include "agents/agent/manager_link.h"

#include <fmt/format.h>

#include "bus/frame.h"

namespace wpm::agent {
namespace {

namespace ap = agentproto;

Result<ap::ManagerReply> exchange(zmq::socket_t& socket, const ap::ManagerRequest& request,
                                  std::chrono::milliseconds timeout, const std::string& endpoint) {
  std::string bytes = ap::encode(request);
  if (!socket.send(zmq::buffer(bytes), zmq::send_flags::dontwait)) {
    return fail(ErrorCode::kUnavailable, fmt::format("cannot send to {}", endpoint));
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return fail(ErrorCode::kTimeout, fmt::format("no answer from {} within {} ms", endpoint, timeout.count()));
    }
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    if (bus::poll(&item, 1, left) <= 0) continue;
    zmq::message_t frame;
    if (!socket.recv(frame, zmq::recv_flags::dontwait)) continue;
    auto reply = ap::decode_manager_reply(bus::view(frame));
    if (!reply) return fail(ErrorCode::kInvalidRequest, "malformed reply from the manager: " + reply.error().message);
    if (reply->request_id != request.request_id) continue;  // a late answer to an earlier request
    if (reply->protocol_version < kProtocolVersionMin) {
      return fail(ErrorCode::kInvalidRequest,
                  fmt::format("the manager at {} speaks wpm protocol {}; this agent needs {} or later: upgrade wpmd",
                              endpoint, reply->protocol_version, kProtocolVersionMin));
    }
    return reply;
  }
}

}  // namespace

std::string tcp_endpoint(const std::string& host, uint16_t port) {
  bool v6 = host.find(':') != std::string::npos && !host.starts_with("[");
  return fmt::format("tcp://{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

Result<ap::ManagerReply> call_public(zmq::context_t& context, const std::string& host, uint16_t port,
                                     const ap::ManagerRequest& request, std::chrono::milliseconds timeout) {
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  bus::apply_defaults(socket);
  std::string endpoint = tcp_endpoint(host, port);
  try {
    socket.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("cannot use {}: {}", endpoint, e.what()));
  }
  return exchange(socket, request, timeout, endpoint);
}

ManagerSession::ManagerSession(zmq::context_t& context, std::string endpoint, bus::CurveKeyPair keys,
                               std::string manager_public_key)
    : context_(context), endpoint_(std::move(endpoint)), keys_(std::move(keys)),
      manager_key_(std::move(manager_public_key)) {
  connect();
}

void ManagerSession::connect() {
  socket_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  bus::apply_defaults(*socket_);
  bus::make_curve_client(*socket_, keys_, manager_key_);
  socket_->connect(endpoint_);
}

Result<ap::ManagerReply> ManagerSession::call(ap::ManagerRequest request, std::chrono::milliseconds timeout) {
  request.request_id = next_id_++;
  auto reply = exchange(*socket_, request, timeout, endpoint_);
  if (!reply && reply.error().code == ErrorCode::kTimeout) connect();
  return reply;
}

std::string describe(const ap::ProtocolError& error) {
  return fmt::format("{} ({})", error.message, ap::error_kind_name(error.kind));
}

}  // namespace wpm::agent
