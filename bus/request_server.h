#pragma once
// A request/reply server loop (DESIGN.md §2 bus/): one ROUTER socket served
// by one loop thread that never runs a handler, a bounded queue, and a pool
// of worker threads that do. A request beyond the queue is answered at once
// with the caller's "busy" reply; a frame over the size limit is dropped by
// ZeroMQ (ZMQ_MAXMSGSIZE) before it is read. Replies travel back through an
// outbox the loop drains when an eventfd says there is something in it, so
// a handler that waits (for a decision, for new events) never blocks the
// loop or the other connections' replies.
//
// A handler returns its reply, or nothing when it parks the request (moves
// it somewhere to answer later with reply() or to run again with requeue()):
// a long poll holds no worker while it waits.
//
// Thread safety: bind/start/stop from the owner's thread; reply() and
// requeue() from any thread.

#include <zmq.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bus/curve.h"
#include "schemas/error.h"

namespace wpm::bus {

struct RequestServerOptions {
  std::string endpoint;
  // Worker threads. Default: 4.
  size_t workers = 4;
  // Requests queued for a worker; beyond it "busy". Default: 256.
  size_t queue_max = 256;
  // Largest request frame. Default: 1 MiB.
  int64_t message_bytes_max = 1 << 20;
  // CURVE server keys and ZAP domain; unset: plain (loopback only, the
  // owner decides).
  std::optional<CurveKeyPair> curve;
  std::string zap_domain;
};

struct ServerRequest {
  std::vector<std::string> envelope;  // routing frames, echoed back
  std::string body;
  std::string peer_address;  // "" over inproc
  std::string user_id;       // what the ZAP handler said of a CURVE peer; "" otherwise
};

class RequestServer {
 public:
  using Handler = std::function<std::optional<std::string>(ServerRequest& request)>;
  // The reply to a request the server cannot run (`why`: busy, or a
  // handler that failed unexpectedly).
  using BusyReply = std::function<std::string(const ServerRequest& request, std::string_view why)>;

  RequestServer(zmq::context_t& context, RequestServerOptions options);
  ~RequestServer();
  RequestServer(const RequestServer&) = delete;
  RequestServer& operator=(const RequestServer&) = delete;

  // Binds the endpoint; the bound address (port 0 resolved) is endpoint().
  Result<void> bind();
  const std::string& endpoint() const { return bound_; }
  // Starts the loop and the workers.
  void start(Handler handler, BusyReply busy);
  // Stops taking requests, lets the workers finish, joins every thread.
  void stop();

  // Sends `body` as the reply to a parked request.
  void reply(ServerRequest request, std::string body);
  // Puts a parked request back in the queue (its handler runs again).
  void requeue(ServerRequest request);

  uint64_t served() const { return served_.load(); }
  uint64_t busy() const { return busy_.load(); }

 private:
  void loop();
  void work();
  void wake();

  zmq::context_t& context_;
  RequestServerOptions options_;
  zmq::socket_t socket_;
  std::string bound_;
  int wake_fd_ = -1;
  Handler handler_;
  BusyReply busy_reply_;
  std::mutex mutex_;  // guards queue_, outbox_, stopping_
  std::condition_variable queue_cv_;
  std::deque<ServerRequest> queue_;
  std::deque<std::pair<ServerRequest, std::string>> outbox_;
  bool stopping_ = false;
  std::atomic<bool> stop_loop_{false};
  std::atomic<uint64_t> served_{0};
  std::atomic<uint64_t> busy_{0};
  std::thread loop_thread_;
  std::vector<std::thread> workers_;
};

}  // namespace wpm::bus
