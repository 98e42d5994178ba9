#include "services/inventory/prober.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "bus/frame.h"
#include "schemas/agent_protocol.h"

namespace wpm::inventory {
namespace {

namespace ap = agentproto;

// Whether a TCP connection to address:port opens within `timeout`; the
// reason when it does not.
std::optional<std::string> tcp_problem(const std::string& address, uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    return fmt::format("cannot resolve {}: {}", address, ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> holder(found, ::freeaddrinfo);
  int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fmt::format("socket: {}", std::strerror(errno));
  std::optional<std::string> problem;
  if (::connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      problem = errno == ECONNREFUSED ? "connection refused" : std::string(std::strerror(errno));
    } else {
      pollfd p{fd, POLLOUT, 0};
      int ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (ready == 0) {
        problem = fmt::format("no answer within {} ms (the port is filtered, or the host is down)", timeout.count());
      } else {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) problem = err == ECONNREFUSED ? "connection refused" : std::string(std::strerror(err));
      }
    }
  }
  ::close(fd);
  return problem;
}

}  // namespace

Prober::Prober(zmq::context_t& context, bus::CurveKeyPair manager_keys, const InventoryView& inventory,
               Liveness& liveness, const kernel::Clock& clock, std::shared_ptr<spdlog::logger> logger,
               ProberOptions options)
    : context_(context),
      keys_(std::move(manager_keys)),
      inventory_(inventory),
      liveness_(liveness),
      clock_(clock),
      logger_(std::move(logger)),
      options_(options) {}

void Prober::kick() {
  {
    std::lock_guard lock(mutex_);
    kicked_ = true;
  }
  cv_.notify_all();
}

void Prober::probe_soon(const std::string& system_id) {
  {
    std::lock_guard lock(mutex_);
    if (!soon_.insert(system_id).second) return;
  }
  cv_.notify_all();
}

void Prober::run(const std::atomic<bool>& stop) {
  // The first round at once: nothing is reconciled when wpmd starts.
  auto deadline = std::chrono::steady_clock::now();
  while (!stop.load()) {
    bool due = false;
    std::set<std::string> soon;
    {
      std::unique_lock lock(mutex_);
      // Woken early to stop, by kick(), probe_soon() or refresh_profile();
      // checked every 200 ms for stop.
      while (!kicked_ && refresh_.empty() && soon_.empty() && !stop.load() &&
             std::chrono::steady_clock::now() < deadline) {
        cv_.wait_for(lock, std::chrono::milliseconds(200));
      }
      due = kicked_ || std::chrono::steady_clock::now() >= deadline;
      kicked_ = false;
      soon.swap(soon_);
    }
    if (stop.load()) break;
    refresh_round();
    if (due) {
      round();
      deadline = std::chrono::steady_clock::now() + options_.interval;
    } else if (!soon.empty()) {
      round(&soon);
    }
  }
}

size_t Prober::round(const std::set<std::string>* only) {
  std::vector<ProbeTarget> targets;
  inventory_.read([&](const Inventory& inv) {
    if (only != nullptr) {
      for (const auto& id : *only) {
        if (const auto* s = inv.registry.by_id(id)) targets.push_back(ProbeTarget{id, s->address, s->agent_port, s->public_key});
      }
      return;
    }
    for (const auto& [id, s] : inv.registry.systems()) {
      targets.push_back(ProbeTarget{id, s.address, s.agent_port, s.public_key});
    }
  });
  for (auto& t : targets) {
    if (uint16_t said = liveness_.agent_port(t.system_id); said != 0) t.port = said;
  }
  const uint64_t number = ++rounds_;
  std::atomic<size_t> next{0}, answered{0};
  auto worker = [&] {
    while (true) {  // bounded: each round takes one target
      size_t i = next.fetch_add(1);
      if (i >= targets.size()) return;
      if (targets[i].port == 0) continue;  // the agent has not said where it listens
      Liveness::Probe p = probe(targets[i]);
      p.round = number;
      if (p.ok) ++answered;
      liveness_.set_probe(targets[i].system_id, std::move(p));
    }
  };
  std::vector<std::thread> threads;
  for (size_t t = 0; t < std::min(options_.parallel, targets.size()); ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  logger_->debug("probe_round number={} systems={} answered={}", number, targets.size(), answered.load());
  return answered.load();
}

namespace {
std::string endpoint_of(const ProbeTarget& target) {
  return fmt::format("tcp://{}:{}",
                     target.address.find(':') != std::string::npos ? "[" + target.address + "]" : target.address,
                     target.port);
}
}  // namespace

std::expected<agentproto::AgentReply, std::string> Prober::exchange(const ProbeTarget& target,
                                                                    const agentproto::AgentCommand& command) {
  auto where = fmt::format("agent port {}:{}", target.address, target.port);
  if (auto problem = tcp_problem(target.address, target.port, options_.timeout)) {
    return std::unexpected(fmt::format("{}: {}", where, *problem));
  }
  try {
    zmq::socket_t s(context_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    bus::make_curve_client(s, keys_, target.public_key);
    s.connect(endpoint_of(target));
    std::string bytes = ap::encode(command);
    s.send(zmq::buffer(bytes), zmq::send_flags::none);
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    zmq::message_t frame;
    if (bus::poll(&item, 1, options_.timeout) <= 0 || !s.recv(frame, zmq::recv_flags::dontwait)) {
      return std::unexpected(fmt::format("{}: no CURVE handshake or answer within {} ms (another program on the "
                                         "port, or the agent's key changed: re-run wpm-agent configure)",
                                         where, options_.timeout.count()));
    }
    auto reply = ap::decode_agent_reply(bus::view(frame));
    if (!reply) return std::unexpected(fmt::format("{}: unreadable answer ({})", where, reply.error().message));
    if (const auto* e = std::get_if<ap::ProtocolError>(&reply->body)) {
      return std::unexpected(fmt::format("{}: the agent refused the request: {}", where, e->message));
    }
    return *reply;
  } catch (const zmq::error_t& e) {
    return std::unexpected(fmt::format("{}: {}", where, e.what()));
  }
}

Liveness::Probe Prober::probe(const ProbeTarget& target) {
  Liveness::Probe out;
  out.at_ns = clock_.monotonic_ns();
  out.wall_ns = clock_.wall_ns();
  auto reply = exchange(target, ap::AgentCommand{1, ap::ListWpars{}});
  if (!reply) {
    out.reason = reply.error();
    return out;
  }
  if (const auto* list = std::get_if<std::vector<ap::WparSummary>>(&reply->body)) {
    for (const auto& w : *list) out.wpars.push_back(ReportedWpar{w.name, w.type, w.state, w.epoch});
    out.ok = true;
    return out;
  }
  out.reason = fmt::format("agent port {}:{}: an unexpected answer", target.address, target.port);
  return out;
}

std::optional<std::string> Prober::ask_profile(const ProbeTarget& target) {
  auto reply = exchange(target, ap::AgentCommand{2, ap::RefreshProfile{}});
  if (!reply) return reply.error();
  if (!std::holds_alternative<ap::Pong>(reply->body)) {
    return fmt::format("agent port {}:{}: an unexpected answer", target.address, target.port);
  }
  return std::nullopt;
}

void Prober::refresh_profile(const std::string& system_id) {
  {
    std::lock_guard lock(mutex_);
    refresh_.insert(system_id);
  }
  cv_.notify_all();
}

// The systems whose agents were asked for their profile.
void Prober::refresh_round() {
  std::set<std::string> wanted;
  {
    std::lock_guard lock(mutex_);
    wanted.swap(refresh_);
  }
  if (wanted.empty()) return;
  std::vector<ProbeTarget> targets;
  inventory_.read([&](const Inventory& inv) {
    for (const auto& id : wanted) {
      if (const auto* s = inv.registry.by_id(id)) targets.push_back(ProbeTarget{id, s->address, s->agent_port, s->public_key});
    }
  });
  for (auto& t : targets) {
    if (uint16_t said = liveness_.agent_port(t.system_id); said != 0) t.port = said;
    if (t.port == 0) {
      logger_->warn("profile_refresh_skipped system={} reason=\"the agent has not said which port it listens on\"",
                    t.system_id);
      continue;
    }
    if (auto problem = ask_profile(t)) {
      logger_->warn("profile_refresh_failed system={} error=\"{}\"", t.system_id, *problem);
    } else {
      logger_->info("profile_refresh_asked system={}", t.system_id);
    }
  }
}

}  // namespace wpm::inventory
