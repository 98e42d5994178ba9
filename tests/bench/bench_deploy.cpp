// wpm-bench-deploy: deploy tasks end to end through a real wpmd's gateway and
// executor against many agents that acknowledge at once (issue 14's first
// target: ≥ 2,000 deploys/s, with the p99 from request to Active).
//
// The agents are lightweight: one process holds them all, each with its own
// CURVE key pair and its own agent port (a ROUTER socket on loopback that
// admits only the manager's key), registered with a join token over the
// real agent channel. They answer every operation at once with success and
// list what they were given (so the manager's probe finds it there).
// Operators are client threads sending `wpar.deploy` through the gateway
// as `wpm` does; a follower reads `taskFinished` events to time each task.
// Figures are printed; nothing fails on a slow machine.
//
//   wpm-bench-deploy [--agents N] [--wpars W] [--clients C]   (defaults 1000, 20000, 256)

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "agents/agent/manager_link.h"
#include "agents/profile/profile.h"
#include "bus/curve.h"
#include "bus/frame.h"
#include "schemas/agent_protocol.h"
#include "tests/support/process.h"

namespace {

using namespace wpm;
using namespace wpm::testing;
using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace ap = agentproto;

// One request to the gateway on a socket kept by the caller.
json gateway_call(zmq::socket_t& s, const std::string& token, const std::string& command, const json& args,
                  const std::string& id = "") {
  json request = {{"v", 1}, {"token", token}, {"command", command}, {"args", args}};
  if (!id.empty()) request["id"] = id;
  s.send(zmq::message_t(), zmq::send_flags::sndmore);
  s.send(zmq::buffer(request.dump()));
  zmq::message_t delimiter, reply;
  if (!s.recv(delimiter) || !s.recv(reply)) return json{{"ok", false}, {"error", {{"message", "no reply"}}}};
  std::string text = reply.to_string();
  return json::parse(text.substr(0, text.find('\n')), nullptr, false);
}

zmq::socket_t gateway_socket(zmq::context_t& context, const std::string& endpoint) {
  zmq::socket_t s(context, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 120'000);
  s.connect(endpoint);
  return s;
}

struct FakeAgent {
  std::string name;
  bus::CurveKeyPair keys;
  std::unique_ptr<zmq::socket_t> socket;
  uint16_t port = 0;
  std::map<std::string, std::string> wpars;  // name → state letter
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wpm-bench-deploy: deploy tasks through the gateway and executor against many fake agents"};
  size_t agents_n = 1000, wpars_n = 20000, clients = 256;
  app.add_option("--agents", agents_n, "agents (default 1000)");
  app.add_option("--wpars", wpars_n, "WPARs deployed (default 20000)");
  app.add_option("--clients", clients, "operator client threads (default 256)");
  CLI11_PARSE(app, argc, argv);

  TempDir dir("wpm-bench-deploy");
  Wpmd::Options o;
  o.data_dir = dir / "wpmd";
  o.extra_args = {"--log-level", "warn"};
  Wpmd wpmd(o);
  if (!wpmd.start()) {
    std::fprintf(stderr, "wpmd did not start: %s\n", wpmd.log().c_str());
    return 1;
  }
  std::string root;
  std::getline(std::ifstream(wpmd.data_dir() + "/keys/root.credential"), root);
  zmq::context_t context(2);
  context.set(zmq::ctxopt::max_sockets, 65'536);  // an agent port each
  auto admin = gateway_socket(context, wpmd.gateway());
  // Systems stay Online without heartbeats for the run.
  gateway_call(admin, root, "settings.set", {{"key", "heartbeat.timeout"}, {"value", "1h"}}, "bench-hb");

  // ---- the agents
  auto manager = agent::call_public(context, "127.0.0.1",
                                    static_cast<uint16_t>(std::stoi(wpmd.agent_public().substr(wpmd.agent_public().rfind(':') + 1))),
                                    ap::ManagerRequest{1, ap::GetManagerKey{}}, 5s);
  const auto* key = manager ? std::get_if<ap::ManagerKey>(&manager->body) : nullptr;
  if (key == nullptr) {
    std::fprintf(stderr, "no manager key from %s\n", wpmd.agent_public().c_str());
    return 1;
  }
  const std::string manager_key = key->public_key;
  bus::ZapHandler zap(context);
  zap.serve_domain("agent-port", [&](const std::string&, const std::string& k) -> std::optional<std::string> {
    if (k == manager_key) return std::string("manager");
    return std::nullopt;
  });
  profile::SystemProfile profile = profile::collect_profile();
  std::vector<FakeAgent> agents(agents_n);
  auto t_register = Clock::now();
  for (size_t i = 0; i < agents_n; ++i) {
    auto& a = agents[i];
    a.name = fmt::format("fake{:05}", i);
    a.keys = *bus::generate_curve_keys();
    a.socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::router);
    a.socket->set(zmq::sockopt::linger, 0);
    bus::make_curve_server(*a.socket, a.keys, "agent-port");
    a.socket->bind("tcp://127.0.0.1:0");
    std::string ep = a.socket->get(zmq::sockopt::last_endpoint);
    a.port = static_cast<uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1)));
    json token = gateway_call(admin, root, "system.token-create", {{"ttl", "1h"}}, fmt::format("bench-tok-{}", i));
    if (!token.value("ok", false)) {
      std::fprintf(stderr, "token: %s\n", token.dump().c_str());
      return 1;
    }
    agent::ManagerSession session(context, wpmd.agent_channel(), a.keys, manager_key);
    auto r = session.call(ap::ManagerRequest{1, ap::Register{"", a.name, a.port, profile, a.keys.public_key,
                                                             token["result"]["token"].get<std::string>()}},
                          10s);
    if (!r || !std::holds_alternative<ap::Registered>(r->body)) {
      std::fprintf(stderr, "registration of %s failed\n", a.name.c_str());
      return 1;
    }
  }
  double register_s = std::chrono::duration<double>(Clock::now() - t_register).count();
  std::printf("%zu agents registered in %.1f s\n", agents_n, register_s);

  // They answer on one thread: every operation succeeds at once.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> operations{0};
  std::thread serve([&] {
    std::vector<zmq::pollitem_t> items;
    for (auto& a : agents) items.push_back({a.socket->handle(), 0, ZMQ_POLLIN, 0});
    while (!stop.load()) {
      if (zmq::poll(items.data(), items.size(), 50ms) <= 0) continue;
      for (size_t i = 0; i < items.size(); ++i) {
        if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
        auto& a = agents[i];
        for (int n = 0; n < 64; ++n) {
          std::vector<zmq::message_t> parts;
          zmq::message_t part;
          if (!a.socket->recv(part, zmq::recv_flags::dontwait)) break;
          parts.push_back(std::move(part));
          while (parts.back().more()) {
            zmq::message_t next;
            (void)a.socket->recv(next);
            parts.push_back(std::move(next));
          }
          auto command = ap::decode_agent_command(bus::view(parts.back()));
          if (!command) continue;
          ap::AgentReply reply{command->request_id, ap::Pong{a.name, "bench"}};
          if (const auto* op = std::get_if<ap::Operation>(&command->body)) {
            std::string state = op->action == "deploy" ? "D" : op->action == "remove" ? "" : "A";
            if (state.empty()) {
              a.wpars.erase(op->wpar);
            } else {
              a.wpars[op->wpar] = state;
            }
            reply.body = ap::OperationResult{op->operation_id, op->attempt, false, 0, "", "", state, false};
            ++operations;
          } else if (std::holds_alternative<ap::ListWpars>(command->body)) {
            std::vector<ap::WparSummary> list;
            for (const auto& [name, st] : a.wpars) list.push_back({name, "system", st});
            reply.body = std::move(list);
          }
          std::string bytes = ap::encode(reply);
          for (size_t p = 0; p + 1 < parts.size(); ++p) a.socket->send(parts[p], zmq::send_flags::sndmore);
          a.socket->send(zmq::buffer(bytes), zmq::send_flags::dontwait);
        }
      }
    }
  });

  // ---- the definitions
  auto t_define = Clock::now();
  {
    std::vector<std::thread> threads;
    for (size_t c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        auto s = gateway_socket(context, wpmd.gateway());
        for (size_t w = c; w < wpars_n; w += clients) {
          json r = gateway_call(s, root, "wpar.create", {{"name", fmt::format("w{:06}", w)}}, fmt::format("bench-def-{}", w));
          if (!r.value("ok", false)) std::fprintf(stderr, "define w%zu: %s\n", w, r.dump().c_str());
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  double define_s = std::chrono::duration<double>(Clock::now() - t_define).count();
  std::printf("%zu WPARs defined in %.1f s (%.0f/s)\n", wpars_n, define_s, static_cast<double>(wpars_n) / define_s);

  // ---- the deploys, timed from the request to the task's end
  json head = gateway_call(admin, root, "events.read", {{"from", UINT64_MAX / 2}, {"max", 1}});
  uint64_t from = head["result"].value("head", uint64_t{0}) + 1;
  std::vector<Clock::time_point> sent(wpars_n), done(wpars_n);
  std::vector<char> finished(wpars_n, 0);
  std::atomic<size_t> finished_n{0};
  size_t failed_n = 0;
  std::thread follower([&] {
    auto s = gateway_socket(context, wpmd.gateway());
    uint64_t next = from;
    auto deadline = Clock::now() + 600s;
    while (finished_n.load() < wpars_n && Clock::now() < deadline) {
      json r = gateway_call(s, root, "events.read",
                            {{"from", next}, {"max", 5000}, {"waitMs", 1000}, {"types", {"taskFinished"}}});
      if (!r.value("ok", false)) continue;
      auto now = Clock::now();
      for (const auto& e : r["result"]["events"]) {
        std::string stream = e.value("streamId", "");
        if (!stream.starts_with("task/bench-dep-")) continue;
        size_t w = std::stoul(stream.substr(15));
        if (w >= wpars_n || finished[w]) continue;
        finished[w] = 1;
        done[w] = now;
        if (e["payload"]["taskFinished"].value("state", "") != "succeeded" && ++failed_n <= 3) {
          std::fprintf(stderr, "task %s: %s\n", stream.c_str(), e["payload"]["taskFinished"].dump().c_str());
        }
        ++finished_n;
      }
      next = r["result"].value("next", next);
    }
  });
  auto t_deploy = Clock::now();
  {
    std::vector<std::thread> threads;
    for (size_t c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        auto s = gateway_socket(context, wpmd.gateway());
        for (size_t w = c; w < wpars_n; w += clients) {
          sent[w] = Clock::now();
          json r = gateway_call(s, root, "wpar.deploy",
                                {{"name", fmt::format("w{:06}", w)}, {"system", agents[w % agents_n].name}},
                                fmt::format("bench-dep-{}", w));
          if (!r.value("ok", false)) std::fprintf(stderr, "deploy w%zu: %s\n", w, r.dump().c_str());
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  double accepted_s = std::chrono::duration<double>(Clock::now() - t_deploy).count();
  follower.join();
  auto last = t_deploy;
  std::vector<double> latency_ms;
  for (size_t w = 0; w < wpars_n; ++w) {
    if (!finished[w]) continue;
    last = std::max(last, done[w]);
    latency_ms.push_back(std::chrono::duration<double, std::milli>(done[w] - sent[w]).count());
  }
  double total_s = std::chrono::duration<double>(last - t_deploy).count();
  std::printf("deploys: %zu of %zu ended (%zu failed) in %.2f s: %.0f deploys/s (target ≥ 2,000/s: %s); accepted "
              "by the gateway in %.2f s; request → Active p50 %.0f ms, p99 %.0f ms, max %.0f ms; %llu operations "
              "answered\n",
              finished_n.load(), wpars_n, failed_n, total_s, static_cast<double>(finished_n.load()) / total_s,
              static_cast<double>(finished_n.load()) / total_s >= 2000 ? "meets" : "under", accepted_s,
              percentile(latency_ms, 0.5), percentile(latency_ms, 0.99), percentile(latency_ms, 1.0),
              static_cast<unsigned long long>(operations.load()));
  stop = true;
  serve.join();
  (void)wpmd.stop();
  return 0;
}
