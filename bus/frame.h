#pragma once
// Framing of Cap'n Proto messages on ZeroMQ: one message per frame, bounded
// multipart receives, endpoint helpers. zmq errors stay inside bus/.
// Thread safety: ZeroMQ sockets belong to one thread; these are free functions.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "schemas/codec.h"
#include "schemas/error.h"
#include "schemas/events.h"

namespace wpm::bus {

// Limits for decoding frames from peers.
DecodeLimits frame_limits();

// Receives one whole multipart message. Messages with more than `max_frames`
// frames are drained and refused. Empty optional: nothing available (dontwait).
std::optional<Result<std::vector<zmq::message_t>>> recv_message(zmq::socket_t& socket,
                                                                size_t max_frames,
                                                                zmq::recv_flags flags);

// A message that sends `frame` without copying it; ZeroMQ drops its reference
// when it is done with the message (sent, dropped or closed), so the same
// frame can be sent again meanwhile.
zmq::message_t message_of(std::shared_ptr<const std::string> frame);

inline std::string_view view(const zmq::message_t& m) {
  return std::string_view(static_cast<const char*>(m.data()), m.size());
}

// Why `endpoint` cannot be connected to, or empty when it has the form
// tcp://HOST:PORT or ipc://PATH (ZeroMQ throws on other spellings).
std::string connect_endpoint_problem(const std::string& endpoint);

// "tcp://host:0" means "pick a port": ZeroMQ spells it "tcp://host:*".
std::string bind_spelling(const std::string& endpoint);
std::string last_endpoint(zmq::socket_t& socket);

// Options every wpm socket gets: linger 0, max message size.
void apply_defaults(zmq::socket_t& socket);

std::string event_topic(EventType type);

// zmq::poll that returns 0 when a signal interrupts it (EINTR) instead of throwing.
int poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout);

}  // namespace wpm::bus
