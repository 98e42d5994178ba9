#include "services/executor/dispatcher.h"

#include <fmt/format.h>

#include <thread>

#include "bus/frame.h"

namespace wpm::executor {
namespace {

namespace ap = agentproto;
using Clock = std::chrono::steady_clock;

}  // namespace

std::string endpoint_of(const AgentTarget& t) {
  return fmt::format("tcp://{}:{}", t.address.find(':') != std::string::npos ? "[" + t.address + "]" : t.address,
                     t.port);
}

Dispatcher::Dispatcher(bus::CurveKeyPair manager_keys, std::shared_ptr<spdlog::logger> logger,
                       DispatcherOptions options)
    : keys_(std::move(manager_keys)), logger_(std::move(logger)), options_(options) {
  context_.set(zmq::ctxopt::max_sockets, kSocketsMax);
}

Dispatcher::~Dispatcher() { stop(); }

void Dispatcher::start() {
  thread_ = std::thread([this] { run(); });
}

void Dispatcher::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void Dispatcher::send(const std::string& task_id, const AgentTarget& target, ap::Operation operation, bool patient) {
  std::lock_guard lock(mutex_);
  if (!flying_.insert({operation.operation_id, operation.attempt}).second) return;  // already on its way
  Flight f{task_id, target, std::move(operation)};
  f.patient = patient;
  incoming_.push_back(std::move(f));
}

bool Dispatcher::in_flight(const std::string& operation_id, uint32_t attempt) const {
  std::lock_guard lock(mutex_);
  return flying_.contains({operation_id, attempt});
}

std::vector<DispatchResult> Dispatcher::take() {
  std::lock_guard lock(mutex_);
  // In flight until taken: the caller never sends again what it is about to record.
  for (const auto& r : results_) flying_.erase({r.operation_id, r.attempt});
  return std::exchange(results_, {});
}

void Dispatcher::finish(const std::string& operation_id, DispatchResult result) {
  auto it = flights_.find(operation_id);
  if (it == flights_.end()) return;
  {
    std::lock_guard lock(mutex_);
    results_.push_back(std::move(result));
  }
  drop(it);
  if (wake_) wake_();
}

void Dispatcher::drop(std::map<std::string, Flight>::iterator flight) {
  for (uint64_t r : flight->second.requests) requests_.erase(r);
  flights_.erase(flight);
}

Dispatcher::Connection* Dispatcher::connection(const AgentTarget& target, Clock::time_point now) {
  auto& c = connections_[target.system_id];
  std::string endpoint = endpoint_of(target);
  if (c.socket && (c.endpoint != endpoint || c.key != target.public_key)) c.socket.reset();  // it moved or re-keyed
  if (!c.socket) {
    try {
      auto s = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
      s->set(zmq::sockopt::linger, 0);
      s->set(zmq::sockopt::sndhwm, 1000);
      // Nothing is queued for an agent that is not connected: a question
      // given up on must not arrive when it comes back.
      s->set(zmq::sockopt::immediate, 1);
      bus::make_curve_client(*s, keys_, target.public_key);
      s->connect(endpoint);
      c.socket = std::move(s);
      c.endpoint = endpoint;
      c.key = target.public_key;
    } catch (const zmq::error_t& e) {
      logger_->warn("agent_connect_failed system={} endpoint={} error=\"{}\"", target.system_id, endpoint, e.what());
      connections_.erase(target.system_id);
      return nullptr;
    }
  }
  c.used = now;
  return &c;
}

void Dispatcher::run() {
  std::vector<zmq::pollitem_t> items;
  std::vector<std::string> systems;
  while (!stop_.load()) {
    auto now = Clock::now();
    {
      std::lock_guard lock(mutex_);
      for (auto& f : incoming_) {
        f.first_sent = now;
        f.next = now;
        std::string id = f.operation.operation_id;
        flights_[id] = std::move(f);
      }
      incoming_.clear();
    }
    // Ask what is due.
    std::vector<std::string> unreachable, expired, silent;
    const int64_t wall = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();
    for (auto& [id, f] : flights_) {
      // Past its deadline the executor records the timeout itself: stop asking.
      if (f.operation.deadline_ns != 0 && wall > f.operation.deadline_ns + 2'000'000'000) {
        expired.push_back(id);
        continue;
      }
      if (f.awaiting && now - f.sent > options_.answer_timeout) f.awaiting = false;  // ask again
      if (!f.answered && !f.patient && now - f.first_sent > options_.unreachable_after) {
        unreachable.push_back(id);
        continue;
      }
      if (f.answered && now - f.last_answer > options_.silent_after) {
        silent.push_back(id);
        continue;
      }
      if (f.awaiting || now < f.next) continue;
      auto* c = connection(f.target, now);
      if (c == nullptr) continue;
      const uint64_t request = next_request_++;
      // The first question is answered at once (the agent took it, or not:
      // unreachable_after counts from it); later ones may be held.
      f.operation.wait_ms = f.answered ? static_cast<uint32_t>(options_.hold.count()) : 0;
      requests_[request] = Asked{id, now, f.operation.wait_ms};
      f.requests.push_back(request);
      if (f.requests.size() > 16) {  // a late answer to an older one is not needed
        requests_.erase(f.requests.front());
        f.requests.erase(f.requests.begin());
      }
      std::string bytes = ap::encode(ap::AgentCommand{request, f.operation});
      try {
        if (!c->socket->send(zmq::buffer(bytes), zmq::send_flags::dontwait)) continue;  // full: next turn
      } catch (const zmq::error_t& e) {
        logger_->warn("agent_send_failed system={} error=\"{}\"", f.target.system_id, e.what());
        continue;
      }
      f.awaiting = true;
      f.sent = now;
    }
    for (const auto& id : expired) {
      const auto& f = flights_.at(id);
      {
        std::lock_guard lock(mutex_);
        flying_.erase({id, f.operation.attempt});
      }
      drop(flights_.find(id));
    }
    for (const auto& id : unreachable) {
      const auto& f = flights_.at(id);
      connections_.erase(f.target.system_id);  // what is queued for it goes too
      finish(id, DispatchResult{f.task_id, id, f.operation.attempt, std::nullopt,
                                fmt::format("the agent of {} did not answer on {} within {} s (is wpm-agent running "
                                            "there, and is its port open to the manager?)",
                                            f.target.system_id, endpoint_of(f.target),
                                            options_.unreachable_after.count() / 1000)});
    }
    for (const auto& id : silent) {
      const auto& f = flights_.at(id);
      connections_.erase(f.target.system_id);
      finish(id, DispatchResult{f.task_id, id, f.operation.attempt, std::nullopt,
                                fmt::format("the agent of {} stopped answering on {} for {} s while the operation "
                                            "ran (its host or link is down?); its outcome there is unknown",
                                            f.target.system_id, endpoint_of(f.target),
                                            options_.silent_after.count() / 1000)});
    }
    // Close what has been idle.
    std::set<std::string> busy;
    for (const auto& [id, f] : flights_) busy.insert(f.target.system_id);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (!busy.contains(it->first) && now - it->second.used > options_.idle_close) {
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
    items.clear();
    systems.clear();
    for (auto& [system, c] : connections_) {
      items.push_back(zmq::pollitem_t{c.socket->handle(), 0, ZMQ_POLLIN, 0});
      systems.push_back(system);
    }
    auto wait = std::chrono::milliseconds(flights_.empty() && incoming_.empty() ? 50 : 10);
    if (items.empty()) {
      std::this_thread::sleep_for(wait);
      continue;
    }
    if (bus::poll(items.data(), items.size(), wait) <= 0) continue;
    now = Clock::now();
    for (size_t i = 0; i < items.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
      auto& c = connections_.at(systems[i]);
      zmq::message_t frame;
      for (int n = 0; n < 256; ++n) {  // bounded: what arrived, at most 256 per turn
        try {
          if (!c.socket->recv(frame, zmq::recv_flags::dontwait)) break;
        } catch (const zmq::error_t&) {
          break;
        }
        auto reply = ap::decode_agent_reply(bus::view(frame));
        if (!reply) {
          logger_->warn("agent_reply_malformed system={} error=\"{}\"", systems[i], reply.error().message);
          continue;
        }
        if (const auto* e = std::get_if<ap::ProtocolError>(&reply->body)) {
          // Not about one operation we can name: every flight to this system
          // that awaits an answer. Busy: asked again a little later.
          if (e->kind == ap::ErrorKind::kUnavailable) {
            // The question it names (every one to this system awaiting an
            // answer when it names none): asked again a little later.
            auto asked = requests_.find(reply->request_id);
            for (auto& [id, f] : flights_) {
              if (f.target.system_id != systems[i] || !f.awaiting) continue;
              const bool named = asked != requests_.end();
              if (named && (asked->second.operation_id != id || f.requests.back() != reply->request_id)) continue;
              f.awaiting = false;
              f.answered = true;
              f.last_answer = now;
              f.next = now + options_.poll_interval;
            }
            continue;
          }
          // Refused: the one operation the request was about.
          std::vector<std::string> refused;
          if (auto r = requests_.find(reply->request_id); r != requests_.end() && flights_.contains(r->second.operation_id)) {
            refused.push_back(r->second.operation_id);
          }
          for (const auto& id : refused) {
            const auto& f = flights_.at(id);
            DispatchResult r{f.task_id, id, f.operation.attempt, std::nullopt,
                             fmt::format("the agent of {} refused the request: {}", systems[i], e->message), true};
            finish(id, std::move(r));
          }
          continue;
        }
        const auto* result = std::get_if<ap::OperationResult>(&reply->body);
        if (result == nullptr) continue;
        auto it = flights_.find(result->operation_id);
        if (it == flights_.end() || it->second.operation.attempt != result->attempt) continue;  // a late answer
        Flight& f = it->second;
        f.answered = true;
        f.last_answer = now;
        if (result->running) {
          // A "running" to a question asked before the newest (asked again
          // after answer_timeout): the newest is still out.
          if (f.requests.empty() || f.requests.back() != reply->request_id) continue;
          f.awaiting = false;
          const auto asked = requests_.find(reply->request_id);
          const bool first = asked != requests_.end() && asked->second.wait_ms == 0;
          const bool held =
              asked != requests_.end() && asked->second.wait_ms > 0 && now - asked->second.sent >= options_.hold / 2;
          // The first question, or one the agent held (the long poll): at
          // once again, with a wait. One with a wait answered at once (an
          // agent without the long poll): soon at first (most operations
          // take tens of milliseconds), then less often: 10, 20, 40, … ms up
          // to poll_interval.
          if (options_.hold.count() > 0 && (first || held)) {
            f.next = now;
            continue;
          }
          auto backoff = std::chrono::milliseconds(10) * (1 << std::min<uint32_t>(f.polls++, 5));
          f.next = now + std::min<std::chrono::milliseconds>(backoff, options_.poll_interval);
          continue;
        }
        finish(result->operation_id, DispatchResult{f.task_id, result->operation_id, result->attempt, *result, ""});
      }
    }
  }
}

}  // namespace wpm::executor
