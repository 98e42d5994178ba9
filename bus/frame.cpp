#include "bus/frame.h"

#include <fmt/format.h>

#include <sys/un.h>

#include <algorithm>
#include <cctype>

#include "bus/constants.h"

namespace wpm::bus {

DecodeLimits frame_limits() {
  DecodeLimits limits;
  limits.max_frame_bytes = kFrameBytesMax;
  return limits;
}

zmq::message_t message_of(std::shared_ptr<const std::string> frame) {
  using Owner = std::shared_ptr<const std::string>;
  // ZeroMQ never writes to the data of a message it sends.
  void* data = const_cast<char*>(frame->data());
  size_t size = frame->size();
  auto owner = std::make_unique<Owner>(std::move(frame));
  zmq::message_t message(data, size, [](void*, void* hint) { delete static_cast<Owner*>(hint); },
                         owner.get());
  (void)owner.release();  // owned by `message` now
  return message;
}

std::optional<Result<std::vector<zmq::message_t>>> recv_message(zmq::socket_t& socket,
                                                                size_t max_frames,
                                                                zmq::recv_flags flags) {
  std::vector<zmq::message_t> frames;
  size_t total = 0;
  while (true) {
    zmq::message_t msg;
    auto got = socket.recv(msg, frames.empty() ? flags : zmq::recv_flags::none);
    if (!got) return std::nullopt;  // EAGAIN on the first frame only
    bool more = msg.more();
    ++total;
    if (frames.size() < max_frames) frames.push_back(std::move(msg));
    if (!more) break;
  }
  if (total > max_frames) {
    return Result<std::vector<zmq::message_t>>(std::unexpected(Error{
        ErrorCode::kInvalidRequest,
        fmt::format("message of {} frames; at most {} expected", total, max_frames)}));
  }
  return Result<std::vector<zmq::message_t>>(std::move(frames));
}

std::string connect_endpoint_problem(const std::string& endpoint) {
  auto problem = [&] {
    return fmt::format("'{}' is not an endpoint; expected tcp://HOST:PORT (for example "
                       "tcp://127.0.0.1:9515) or ipc://PATH",
                       endpoint);
  };
  if (endpoint.starts_with("ipc://")) {
    // The path goes into sockaddr_un::sun_path, NUL included.
    size_t path = endpoint.size() - 6;
    return path > 0 && path < sizeof(sockaddr_un::sun_path) ? "" : problem();
  }
  if (!endpoint.starts_with("tcp://")) return problem();
  std::string_view rest = std::string_view(endpoint).substr(6);
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return problem();
  // The characters ZeroMQ accepts in a host to connect to (it throws on others):
  // names, IPv4, [IPv6], an interface after ';'.
  std::string_view host = rest.substr(0, colon);
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  if (!alnum(host[0]) && host[0] != '[' && host[0] != ':') return problem();
  if (!std::all_of(host.begin(), host.end(), [&](char c) {
        return alnum(c) || std::string_view(".-:%;[]_").find(c) != std::string_view::npos;
      })) {
    return problem();
  }
  std::string_view port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return problem();
  }
  unsigned long number = std::stoul(std::string(port));
  return number >= 1 && number <= 65535 ? "" : problem();
}

std::string bind_spelling(const std::string& endpoint) {
  if (endpoint.starts_with("tcp://") && endpoint.ends_with(":0")) {
    return endpoint.substr(0, endpoint.size() - 1) + "*";
  }
  return endpoint;
}

std::string last_endpoint(zmq::socket_t& socket) {
  return socket.get(zmq::sockopt::last_endpoint);
}

void apply_defaults(zmq::socket_t& socket) {
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kFrameBytesMax));
}

std::string event_topic(EventType type) {
  return fmt::format("{}{}", kEventTopicPrefix, event_type_name(type));
}

int poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout) {
  try {
    return zmq::poll(items, count, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return 0;
    throw;
  }
}

}  // namespace wpm::bus
