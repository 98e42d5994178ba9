#pragma once
// The agent's side of the agent protocol (schemas/agent.capnp): one request
// and its reply to the manager's public port or agent channel, with a
// deadline. A transport failure (no reply in time) is an Error; a refusal by
// the manager is a ProtocolError in the reply.
//
// Thread safety: a ManagerSession belongs to one thread.

#include <chrono>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "bus/curve.h"
#include "schemas/agent_protocol.h"
#include "schemas/error.h"

namespace wpm::agent {

// tcp://HOST:PORT (IPv6 literals bracketed).
std::string tcp_endpoint(const std::string& host, uint16_t port);

// One request on the public port (no encryption: nothing secret is sent).
Result<agentproto::ManagerReply> call_public(zmq::context_t& context, const std::string& host, uint16_t port,
                                             const agentproto::ManagerRequest& request,
                                             std::chrono::milliseconds timeout);

// The agent channel: CURVE with the agent's key pair and the pinned manager
// key. After a timeout the socket is replaced, so a late reply never answers
// the next request.
class ManagerSession {
 public:
  ManagerSession(zmq::context_t& context, std::string endpoint, bus::CurveKeyPair keys,
                 std::string manager_public_key);
  Result<agentproto::ManagerReply> call(agentproto::ManagerRequest request, std::chrono::milliseconds timeout);
  const std::string& endpoint() const { return endpoint_; }

 private:
  void connect();
  zmq::context_t& context_;
  std::string endpoint_;
  bus::CurveKeyPair keys_;
  std::string manager_key_;
  std::unique_ptr<zmq::socket_t> socket_;
  uint64_t next_id_ = 1;
};

// The message of a manager's refusal, for the operator.
std::string describe(const agentproto::ProtocolError& error);

}  // namespace wpm::agent
