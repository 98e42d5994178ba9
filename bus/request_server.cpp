#include "bus/request_server.h"

#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bus/frame.h"

namespace wpm::bus {

RequestServer::RequestServer(zmq::context_t& context, RequestServerOptions options)
    : context_(context), options_(std::move(options)), socket_(context, zmq::socket_type::router) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

RequestServer::~RequestServer() {
  stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Result<void> RequestServer::bind() {
  if (wake_fd_ < 0) return fail(ErrorCode::kIo, "cannot make an eventfd for the request server");
  try {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::maxmsgsize, options_.message_bytes_max);
    socket_.set(zmq::sockopt::rcvhwm, static_cast<int>(options_.queue_max * 4));
    socket_.set(zmq::sockopt::sndhwm, static_cast<int>(options_.queue_max * 4));
    socket_.set(zmq::sockopt::router_mandatory, 0);
    if (options_.curve) make_curve_server(socket_, *options_.curve, options_.zap_domain);
    socket_.bind(bind_spelling(options_.endpoint));
    bound_ = last_endpoint(socket_);
  } catch (const zmq::error_t& e) {
    return fail(ErrorCode::kIo, fmt::format("cannot listen on {}: {}; choose another endpoint (port 0 picks a "
                                            "free one)",
                                            options_.endpoint, e.what()));
  }
  return {};
}

void RequestServer::start(Handler handler, BusyReply busy) {
  handler_ = std::move(handler);
  busy_reply_ = std::move(busy);
  for (size_t i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
  loop_thread_ = std::thread([this] { loop(); });
}

void RequestServer::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  queue_cv_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
  stop_loop_ = true;
  wake();
  if (loop_thread_.joinable()) loop_thread_.join();
}

void RequestServer::wake() {
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void RequestServer::reply(ServerRequest request, std::string body) {
  {
    std::lock_guard lock(mutex_);
    outbox_.emplace_back(std::move(request), std::move(body));
  }
  wake();
}

void RequestServer::requeue(ServerRequest request) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    queue_.push_back(std::move(request));
  }
  queue_cv_.notify_one();
}

void RequestServer::work() {
  while (true) {
    ServerRequest request;
    {
      std::unique_lock lock(mutex_);
      queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left
      request = std::move(queue_.front());
      queue_.pop_front();
    }
    std::optional<std::string> body;
    try {
      body = handler_(request);
    } catch (const std::exception& e) {
      // A handler never lets an exception out; if one does, the client
      // still gets an answer and the server goes on.
      body = busy_reply_(request, fmt::format("internal error: {}", e.what()));
    }
    if (body) reply(std::move(request), std::move(*body));
  }
}

void RequestServer::loop() {
  zmq::pollitem_t items[] = {{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  // Once more after stop, so that the workers' last replies are sent.
  for (bool last = false; !last;) {
    last = stop_loop_.load();
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(500));
    } catch (const zmq::error_t&) {
      continue;  // EINTR
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t n = 0;
      (void)!::read(wake_fd_, &n, sizeof n);
    }
    // Replies first: they free clients waiting on this server.
    std::deque<std::pair<ServerRequest, std::string>> outbox;
    {
      std::lock_guard lock(mutex_);
      outbox.swap(outbox_);
    }
    for (auto& [request, body] : outbox) {
      try {
        for (const auto& frame : request.envelope) socket_.send(zmq::buffer(frame), zmq::send_flags::sndmore);
        socket_.send(zmq::buffer(body), zmq::send_flags::dontwait);
        ++served_;
      } catch (const zmq::error_t&) {
        // The peer went away: nobody to answer.
      }
    }
    // Then what arrived, at most a queue's worth per round.
    for (size_t n = 0; n < options_.queue_max; ++n) {
      ServerRequest request;
      std::vector<zmq::message_t> frames;
      try {
        while (true) {  // bounded: a multipart message has a finite number of frames
          zmq::message_t frame;
          if (!socket_.recv(frame, zmq::recv_flags::dontwait)) break;
          bool more = frame.more();
          frames.push_back(std::move(frame));
          if (!more) break;
        }
      } catch (const zmq::error_t&) {
        break;
      }
      if (frames.empty()) break;
      if (frames.size() < 2) continue;  // no routing id: not a client's request
      auto property = [&](const char* name) -> std::string {
        try {
          const char* value = frames.back().gets(name);
          return value != nullptr ? value : "";
        } catch (const zmq::error_t&) {
          return "";  // inproc: no peer address; plain: no user id
        }
      };
      request.peer_address = property("Peer-Address");
      if (options_.curve) request.user_id = property("User-Id");
      request.body = frames.back().to_string();
      for (size_t i = 0; i + 1 < frames.size(); ++i) request.envelope.push_back(frames[i].to_string());
      bool queued = false;
      {
        std::lock_guard lock(mutex_);
        if (!stopping_ && queue_.size() < options_.queue_max) {
          queue_.push_back(std::move(request));
          queued = true;
        }
      }
      if (queued) {
        queue_cv_.notify_one();
      } else {
        ++busy_;
        std::string body = busy_reply_(request, "the server is busy: too many requests queued; retry in a moment");
        try {
          for (const auto& frame : request.envelope) socket_.send(zmq::buffer(frame), zmq::send_flags::sndmore);
          socket_.send(zmq::buffer(body), zmq::send_flags::dontwait);
        } catch (const zmq::error_t&) {
        }
      }
    }
  }
}

}  // namespace wpm::bus
