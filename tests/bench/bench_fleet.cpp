// wpm-bench-fleet: the control plane at fleet scale, end to end, through a
// real wpmd and the real `wpm` command (issue 13's targets):
//
//   1. a log of control-plane events: WPAR definitions (1% of them on a
//      system, Active) and changes to them, appended as the inventory would;
//   2. a query of the WPARs filtered by state through the gateway (round
//      trip of one request: median of 20), target < 50 ms;
//   3. `wpm -o json wpar list` of every WPAR as an operator runs it (wall
//      time, median of 5), target < 1 s;
//   4. wpmd ready after a restart with its snapshots (wall time from start
//      to the endpoints file), target ≤ 2 s on 1,000,000 events;
//   5. the inventory projection folded from sequence 1 in this process
//      (what a rebuild costs), target ≥ 500,000 events/s;
//   6. `wpm log verify` online and offline (--data), wall time, target
//      ≥ 1,000,000 events/s.
//
// Figures are printed; nothing fails on a slow machine. WPM_BENCH_KEEP_DATA=DIR
// keeps a copy of wpmd's data directory there (to profile a step by hand).
//   wpm-bench-fleet [--wpars N] [--events M]   (defaults 100000, 1000000)
//   wpm-bench-fleet --fold-only DIR            (step 5 alone, on a kept data directory)

#include <fmt/format.h>
#include <spdlog/sinks/null_sink.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "bus/client.h"
#include "bus/curve.h"
#include "services/inventory/model.h"
#include "services/kernel/projection.h"
#include "tests/support/process.h"

namespace {

using namespace wpm;
using namespace wpm::testing;
using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string verdict(bool ok) { return ok ? "meets" : "over"; }

json gateway_call(zmq::context_t& context, const std::string& endpoint, const std::string& token,
                  const std::string& command, const json& args) {
  zmq::socket_t s(context, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 60'000);
  s.connect(endpoint);
  json request = {{"v", 1}, {"token", token}, {"command", command}, {"args", args}};
  s.send(zmq::message_t(), zmq::send_flags::sndmore);
  s.send(zmq::buffer(request.dump()));
  zmq::message_t delimiter, reply;
  if (!s.recv(delimiter) || !s.recv(reply)) return json{{"ok", false}};
  return json::parse(reply.to_string());
}

// Step 5: the inventory projection folded from sequence 1 of the log in
// `data_dir` (wpmd stopped), in this process.
int fold_from_sequence_1(const std::string& data_dir) {
  eventstore::StoreOptions so;
  so.data_dir = data_dir;
  so.read_only = true;
  auto log = std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  auto store = eventstore::Store::open(so, log);
  if (!store) {
    std::fprintf(stderr, "cannot open the store: %s\n", store.error().message.c_str());
    return 1;
  }
  kernel::EmbeddedStore embedded(**store);
  kernel::ProjectionRunner<inventory::InventoryModel> runner(embedded, nullptr);
  auto t0 = Clock::now();
  auto r = runner.start();
  double s = ms_since(t0) / 1000;
  std::printf("inventory projection folded from sequence 1: %llu events in %.2f s, %.0f events/s (target >= "
              "500,000: %s)%s\n",
              static_cast<unsigned long long>(runner.sequence()), s, runner.sequence() / s,
              verdict(runner.sequence() / s >= 5e5).c_str(), r ? "" : " FAILED");
  return r ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  size_t wpars = 100'000, events = 1'000'000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--wpars") wpars = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--events") events = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--fold-only") return fold_from_sequence_1(argv[i + 1]);  // step 5 alone, on a kept log
  }
  events = std::max(events, wpars);
  TempDir dir("wpm-bench-fleet");
  Wpmd::Options o;
  o.data_dir = dir / "wpmd";
  o.extra_args = {"--log-level", "warn"};
  o.start_timeout = 120s;
  Wpmd wpmd(o);
  if (!wpmd.start()) {
    std::fprintf(stderr, "wpm-bench-fleet: wpmd did not start: %s\n", wpmd.log().c_str());
    return 1;
  }
  // 1. The log, appended as the inventory service would (its own key).
  if (run({bin("wpmd"), "--data", wpmd.data_dir(), "keys", "add-service", "inventory", "--replace"}).exit_code != 0) {
    std::fprintf(stderr, "wpm-bench-fleet: cannot make the inventory key\n");
    return 1;
  }
  auto keys = bus::load_curve_keys(wpmd.data_dir() + "/keys/services", "inventory");
  auto options = wpmd.client_options(60'000, 1);
  options.credentials.client_keys = *keys;
  zmq::context_t context(1);
  {
    bus::StoreClient inventory(context, wpmd.request(), options);
    auto t0 = Clock::now();
    constexpr size_t kBatch = 1000;
    for (size_t first = 0; first < events; first += kBatch) {
      AppendRequest r;
      for (size_t i = first; i < std::min(events, first + kBatch); ++i) {
        size_t n = i % wpars;
        WparDefinition w;
        w.name = fmt::format("w{:06}", n);
        w.type = n % 2 == 0 ? "system" : "application";
        w.command = "/usr/bin/app --serve";
        w.group = "default";
        w.cpu_shares = static_cast<uint32_t>(100 + i / wpars);
        if (n % 100 == 0) {
          w.system = fmt::format("node{:03}", n / 1000);
          w.discovered = true;
          w.reported_state = "A";
        }
        r.events.push_back(EventDraft{"wpar/" + w.name, "", "", "", WparDefined{w, i < wpars}});
      }
      if (auto a = inventory.append(r); !a) {
        std::fprintf(stderr, "wpm-bench-fleet: append failed: %s\n", a.error().message.c_str());
        return 1;
      }
    }
    std::printf("log: %zu control-plane events (%zu WPARs) appended in %.0f ms\n", events, wpars, ms_since(t0));
  }
  std::string token;
  std::getline(std::ifstream(wpmd.data_dir() + "/keys/root.credential"), token);
  auto active_count = [&] {
    json r = gateway_call(context, wpmd.gateway(), token, "wpar.list", {{"state", "A"}});
    return r.value("ok", false) ? r["result"].size() : 0;
  };
  {
    auto t0 = Clock::now();
    bool folded = wait_until([&] { return active_count() == wpars / 100; }, 300s, 50ms);
    std::printf("wpmd's followers (inventory, gateway) caught up %s in %.0f ms after the last append\n",
                folded ? "" : "(NOT)", ms_since(t0));
  }
  // 2. A query filtered by state through the gateway.
  {
    std::vector<double> t;
    size_t n = 0;
    for (int i = 0; i < 20; ++i) {
      auto t0 = Clock::now();
      n = active_count();
      t.push_back(ms_since(t0));
    }
    double m = median(t);
    std::printf("gateway query wpar.list --state A over %zu WPARs (%zu match): median %.2f ms, min %.2f, max %.2f "
                "(target < 50 ms: %s)\n",
                wpars, n, m, *std::min_element(t.begin(), t.end()), *std::max_element(t.begin(), t.end()),
                verdict(m < 50).c_str());
  }
  // 3. `wpm -o json wpar list` of every WPAR.
  {
    std::vector<double> t;
    size_t bytes = 0;
    for (int i = 0; i < 5; ++i) {
      auto t0 = Clock::now();
      auto r = run({bin("wpm"), "--data", wpmd.data_dir(), "-o", "json", "wpar", "list"}, 120s);
      t.push_back(ms_since(t0));
      bytes = r.out.size();
      if (r.exit_code != 0) std::fprintf(stderr, "wpm wpar list failed: %s\n", r.err.c_str());
    }
    double m = median(t);
    std::printf("wpm -o json wpar list of %zu WPARs (%zu bytes): median %.0f ms of 5 (target < 1 s: %s)\n", wpars,
                bytes, m, verdict(m < 1000).c_str());
  }
  // 6a. verify online, as an operator runs it.
  {
    auto t0 = Clock::now();
    auto r = run({bin("wpm"), "--data", wpmd.data_dir(), "log", "verify"}, 600s);
    double s = ms_since(t0) / 1000;
    std::printf("wpm log verify (online) of %zu events: %.2f s, %.0f events/s (target >= 1,000,000: %s)%s\n", events,
                s, events / s, verdict(events / s >= 1e6).c_str(), r.exit_code == 0 ? "" : " FAILED");
  }
  // 4. Ready after a restart with snapshots (a clean stop writes them).
  wpmd.stop(120s);
  {
    auto t0 = Clock::now();
    bool up = wpmd.start();
    double ms = ms_since(t0);
    std::printf("wpmd ready after a restart with snapshots on %zu events: %.0f ms (target <= 2 s: %s)%s\n", events, ms,
                verdict(ms <= 2000).c_str(), up ? "" : " DID NOT START");
    std::printf("  and answering from it: %zu active WPARs\n", active_count());
  }
  wpmd.stop(120s);
  // For profiling by hand: a copy of the data directory, kept.
  if (const char* keep = std::getenv("WPM_BENCH_KEEP_DATA")) run({"/bin/cp", "-a", wpmd.data_dir(), keep}, 600s);
  // 6b. verify offline.
  {
    auto t0 = Clock::now();
    auto r = run({bin("wpm"), "log", "verify", "--data", wpmd.data_dir()}, 600s);
    double s = ms_since(t0) / 1000;
    std::printf("wpm log verify --data (offline) of %zu events: %.2f s, %.0f events/s (target >= 1,000,000: %s)%s\n",
                events, s, events / s, verdict(events / s >= 1e6).c_str(), r.exit_code == 0 ? "" : " FAILED");
  }
  // 5. The inventory projection from sequence 1, in this process.
  if (fold_from_sequence_1(wpmd.data_dir()) != 0) return 1;
  return 0;
}
