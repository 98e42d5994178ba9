#pragma once
// The manager's probe of every agent's port (DESIGN.md §3, §8; the seed's
// "marked offline while the agent runs" case): at an interval, and at once
// when asked (`wpm system discover`), it connects to each registered
// system's agent port, proves itself with the manager key over CURVE and
// asks for the WPAR list. The outcome goes into the Liveness table: the
// inventory turns a system Unreachable when its heartbeats arrive but its
// port does not answer (with the reason: "connection refused", "no answer
// within 2 s", "no CURVE handshake …"), and reconciles the WPARs it reported.
//
// `wpm system update-profile` goes the same way: the prober asks that one
// agent to collect its profile again and send it on the agent channel,
// where a change is recorded as any other.
//
// Probes run on a few threads at once, each bounded by its timeout.
//
// Thread safety: run() on its own thread; kick() from any.

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <zmq.hpp>

#include "bus/curve.h"
#include "schemas/agent_protocol.h"
#include "services/inventory/service.h"
#include "services/kernel/clock.h"

namespace wpm::inventory {

struct ProberOptions {
  // Between rounds. Default: 30 s.
  std::chrono::milliseconds interval{30'000};
  // Per step of one probe (TCP connect, then the CURVE request). Default: 2 s.
  std::chrono::milliseconds timeout{2'000};
  // Probes at once. Default: 16.
  size_t parallel = 16;
};

struct ProbeTarget {
  std::string system_id;
  std::string address;  // host or IP
  uint16_t port = 0;
  std::string public_key;  // the agent's CURVE key, Z85
};

class Prober {
 public:
  Prober(zmq::context_t& context, bus::CurveKeyPair manager_keys, const InventoryView& inventory,
         Liveness& liveness, const kernel::Clock& clock, std::shared_ptr<spdlog::logger> logger,
         ProberOptions options = {});

  // Rounds until `stop`: one every interval, or at once after kick().
  void run(const std::atomic<bool>& stop);
  // Starts a round now (wpm system discover).
  void kick();
  // Probes one system soon, from the run() thread, without a whole round
  // (the executor holds its operations until its agent is reconciled).
  void probe_soon(const std::string& system_id);
  // Asks one system's agent to send its profile again, from the run() thread
  // (wpm system update-profile).
  void refresh_profile(const std::string& system_id);
  // One round over every registered system (or only those in `only`);
  // returns how many answered.
  size_t round(const std::set<std::string>* only = nullptr);
  // One probe (tests).
  Liveness::Probe probe(const ProbeTarget& target);
  // Sends RefreshProfile to one agent; the problem when it did not answer.
  std::optional<std::string> ask_profile(const ProbeTarget& target);
  uint64_t rounds() const { return rounds_.load(); }

 private:
  // One request to an agent's port and its answer, or what went wrong.
  std::expected<agentproto::AgentReply, std::string> exchange(const ProbeTarget& target,
                                                             const agentproto::AgentCommand& command);
  void refresh_round();
  zmq::context_t& context_;
  bus::CurveKeyPair keys_;
  const InventoryView& inventory_;
  Liveness& liveness_;
  const kernel::Clock& clock_;
  std::shared_ptr<spdlog::logger> logger_;
  ProberOptions options_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool kicked_ = false;
  std::set<std::string> refresh_;  // systems whose profile is asked for, under mutex_
  std::set<std::string> soon_;     // systems to probe now, under mutex_
  std::atomic<uint64_t> rounds_{0};
};

}  // namespace wpm::inventory
