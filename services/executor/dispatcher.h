#pragma once
// The executor's client of the agents' ports (9510; docs/executor.md): sends
// each operation to its agent over CURVE with the manager key and asks
// again, with the same operation id, until the agent answers with a final
// result. The agent answers a repeated id from its journal ("running", or
// the first result), so asking again never runs anything twice. The first
// question is answered at once; each later one lets the agent hold its
// answer until the operation ends (up to `hold`), so an ending is known at
// once rather than at the next poll; an agent that answers those at once
// too (an older one) is asked again with a backoff.
//
// One thread owns every socket (one DEALER per system, closed when idle) and
// polls them together, so a thousand agents cost one thread, not a thousand.
// An agent that has not answered at all within `unreachable_after` gives the
// operation up as unreachable.
//
// Thread safety: send(), in_flight(), take() from any thread; run() on its own.

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "bus/curve.h"
#include "schemas/agent_protocol.h"

namespace wpm::executor {

struct AgentTarget {
  std::string system_id;
  std::string address;
  uint16_t port = 0;
  std::string public_key;  // the agent's CURVE key, Z85
};

// The agent's port as a ZeroMQ endpoint (tcp://address:port; IPv6 in brackets).
std::string endpoint_of(const AgentTarget& target);

struct DispatchResult {
  std::string task_id;
  std::string operation_id;
  uint32_t attempt = 1;
  std::optional<agentproto::OperationResult> result;  // the agent's final answer
  std::string problem;                                 // when there is none: why
  bool refused_by_protocol = false;                    // the agent refused the request itself (protocol error)
  bool sent = true;                                    // false: it never left the manager (see problem)
};

struct DispatcherOptions {
  // Between two questions about an operation that runs, at most (the first
  // come sooner: 10 ms, doubling). Default: 200 ms.
  std::chrono::milliseconds poll_interval{200};
  // How long an agent may hold its answer about a running operation and
  // answer as soon as it ends (Operation.wait_ms, a long poll); asked again
  // at once after a held answer. Below answer_timeout. 0: no long poll.
  // Default: 1 s.
  std::chrono::milliseconds hold{1'000};
  // A question unanswered this long is asked again. Default: 3 s.
  std::chrono::milliseconds answer_timeout{3'000};
  // No answer at all this long: unreachable. Default: 10 s.
  std::chrono::milliseconds unreachable_after{10'000};
  // An agent that answered about an operation and then stopped answering
  // for this long: its outcome is unknown (unreachable). Default: 20 s.
  std::chrono::milliseconds silent_after{20'000};
  // A system's socket with nothing in flight this long is closed. Default: 60 s.
  std::chrono::milliseconds idle_close{60'000};
};

class Dispatcher {
 public:
  static constexpr int kSocketsMax = 65'536;
  // The dispatcher has its own ZeroMQ context: one socket per agent in
  // flight (closed when idle) would outgrow a shared context's limit of
  // 1,023 sockets at fleet scale; its own allows kSocketsMax.
  Dispatcher(bus::CurveKeyPair manager_keys, std::shared_ptr<spdlog::logger> logger, DispatcherOptions options = {});
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  void start();
  void stop();
  // Called (from the dispatcher's thread) when results are ready to take.
  void on_result(std::function<void()> wake) { wake_ = std::move(wake); }

  // `patient`: never given up as unreachable (an operation recorded as
  // started before a restart: asked about until its deadline).
  void send(const std::string& task_id, const AgentTarget& target, agentproto::Operation operation,
            bool patient = false);
  // Whether an operation (this attempt) is being sent or asked about.
  bool in_flight(const std::string& operation_id, uint32_t attempt) const;
  std::vector<DispatchResult> take();

 private:
  struct Flight {
    std::string task_id;
    AgentTarget target;
    agentproto::Operation operation;
    std::chrono::steady_clock::time_point first_sent{};
    std::chrono::steady_clock::time_point sent{};
    std::chrono::steady_clock::time_point next{};  // when to ask next
    bool awaiting = false;                          // a question is out
    bool answered = false;                          // the agent answered at least once
    std::chrono::steady_clock::time_point last_answer{};
    uint32_t polls = 0;  // "running" answers so far
    bool patient = false;
    std::vector<uint64_t> requests;  // the request ids asked with (in requests_), the newest 16
  };
  struct Connection {
    std::unique_ptr<zmq::socket_t> socket;
    std::string endpoint;
    std::string key;
    std::chrono::steady_clock::time_point used{};
  };
  void run();
  Connection* connection(const AgentTarget& target, std::chrono::steady_clock::time_point now);
  void finish(const std::string& operation_id, DispatchResult result);
  // Forgets a flight and its request ids.
  void drop(std::map<std::string, Flight>::iterator flight);

  zmq::context_t context_;
  bus::CurveKeyPair keys_;
  std::shared_ptr<spdlog::logger> logger_;
  DispatcherOptions options_;
  std::function<void()> wake_;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  mutable std::mutex mutex_;              // guards incoming_, flying_, results_
  std::vector<Flight> incoming_;
  std::set<std::pair<std::string, uint32_t>> flying_;  // operation id, attempt
  std::vector<DispatchResult> results_;

  // The run() thread's own.
  std::map<std::string, Flight> flights_;  // by operation id
  struct Asked {
    std::string operation_id;
    std::chrono::steady_clock::time_point sent{};
    uint32_t wait_ms = 0;  // what it let the agent hold the answer for
  };
  std::map<uint64_t, Asked> requests_;  // request id → the question, while its flight lasts
  std::map<std::string, Connection> connections_;  // by system id
  uint64_t next_request_ = 1;
};

}  // namespace wpm::executor
