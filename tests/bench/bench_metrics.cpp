// wpm-bench-metrics: metric history (issue 15's targets), printed:
//
//   1. storage: a day of reports from H hosts with 10 WPARs each, every 10 s,
//      written to the sample store, sealed and compacted; bytes per stored
//      sample value on disk (target <= 2), and the disk 30 days of a
//      10,000-host fleet would take (24 h raw, 30 days of 5-minute
//      aggregates). The values follow a model of real hosts: CPU a random
//      walk with noise, memory drifting in small steps, process counts that
//      rarely change, page faults in bursts.
//   2. ingest: a real wpmd, N systems (default 10,000) registered, each a
//      CURVE connection on the agent channel sending a heartbeat every 5 s
//      and a metrics report with 10 WPARs every 10 s (the real protocol);
//      wpmd's CPU time per second of wall time with heartbeats only, then
//      with the metrics too (target: the metrics' share < 0.2 of one core).
//
//   wpm-bench-metrics [--hosts H] [--systems N] [--seconds S] [--storage-only|--ingest-only]

#include <fmt/format.h>
#include <spdlog/sinks/null_sink.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <fcntl.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <rocksdb/db.h>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "bus/client.h"
#include "bus/curve.h"
#include "bus/frame.h"
#include "eventstore/samples.h"
#include "eventstore/store.h"
#include "schemas/agent_protocol.h"
#include "schemas/events.h"
#include "tests/support/process.h"

namespace {

using namespace wpm;
using namespace wpm::testing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace ap = agentproto;
namespace fs = std::filesystem;
using eventstore::series::Metric;

constexpr int kWparsPerHost = 10;
constexpr int64_t kIntervalS = 10;

// A host's or a WPAR's metrics, moving as real ones do.
struct Walker {
  std::mt19937_64 rng;
  double cpu, memory, processes, threads, faults;
  explicit Walker(uint64_t seed) : rng(seed) {
    std::uniform_real_distribution<double> u(0, 1);
    cpu = 5 + 60 * u(rng);
    memory = 1 + 30 * u(rng);
    processes = 1 + std::floor(40 * u(rng));
    threads = processes * 3;
    faults = 50 * u(rng);
  }
  void step() {
    std::normal_distribution<double> n(0, 1);
    std::uniform_real_distribution<double> u(0, 1);
    cpu = std::clamp(cpu + 0.8 * n(rng), 0.0, 100.0);
    if (u(rng) < 0.2) memory = std::clamp(memory + 0.05 * n(rng), 0.0, 100.0);
    if (u(rng) < 0.02) processes = std::max(1.0, processes + (u(rng) < 0.5 ? -1 : 1));
    if (u(rng) < 0.05) threads = std::max(processes, threads + (u(rng) < 0.5 ? -1 : 1));
    faults = u(rng) < 0.1 ? 200 * u(rng) : std::max(0.0, faults * 0.5 + 3 * n(rng));
  }
  ap::MetricSet set(bool host) const {
    ap::MetricSet m;
    m.present = ap::kMetricCpuBit | ap::kMetricMemoryBit | ap::kMetricProcessesBit | ap::kMetricThreadsBit |
                ap::kMetricPageFaultsBit | (host ? ap::kMetricLoadBit : 0);
    m.cpu_percent = static_cast<float>(cpu);
    m.memory_percent = static_cast<float>(memory);
    m.load1 = static_cast<float>(cpu / 25);
    m.processes = static_cast<uint32_t>(processes);
    m.threads = static_cast<uint32_t>(threads);
    m.page_faults_per_s = static_cast<float>(faults);
    return m;
  }
  eventstore::MetricValues values(bool host) const {
    eventstore::MetricValues v;
    v.set(Metric::kCpu, cpu);
    v.set(Metric::kMemory, memory);
    if (host) v.set(Metric::kLoad, cpu / 25);
    v.set(Metric::kProcesses, processes);
    v.set(Metric::kThreads, threads);
    v.set(Metric::kPageFaults, faults);
    return v;
  }
};

struct Host {
  Walker host;
  std::vector<Walker> wpars;
  explicit Host(uint64_t seed) : host(seed) {
    for (int w = 0; w < kWparsPerHost; ++w) wpars.emplace_back(seed * 100 + static_cast<uint64_t>(w) + 1);
  }
  void step() {
    host.step();
    for (auto& w : wpars) w.step();
  }
};

std::string wpar_name(size_t host, int w) { return fmt::format("h{:05}-w{:02}", host, w); }

// Sizes of the stored keys and values by kind (the first byte of the key).
std::map<char, std::pair<uint64_t, uint64_t>> logical_sizes(const eventstore::Store& store) {
  std::map<char, std::pair<uint64_t, uint64_t>> out;
  auto column = store.metrics_column();
  std::unique_ptr<rocksdb::Iterator> it(column.db->NewIterator(rocksdb::ReadOptions(), column.cf));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    auto& s = out[it->key()[0]];
    s.first += 1;
    s.second += it->key().size() + it->value().size();
  }
  return out;
}

int storage(size_t hosts) {
  TempDir dir("wpm-bench-metrics");
  eventstore::StoreOptions so;
  so.data_dir = dir.path();
  auto log = std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  auto store = eventstore::Store::open(so, log);
  if (!store) {
    std::fprintf(stderr, "cannot open a store: %s\n", store.error().message.c_str());
    return 1;
  }
  auto samples = eventstore::SampleStore::open(**store, eventstore::SampleOptions{}, log);
  if (!samples) return 1;
  const int64_t t0 = 1'700'002'800;  // an hour's start
  const int64_t reports = 86'400 / kIntervalS;
  std::vector<Host> fleet;
  for (size_t h = 0; h < hosts; ++h) fleet.emplace_back(h + 1);
  uint64_t values = 0;
  auto start = Clock::now();
  for (int64_t r = 0; r < reports; ++r) {
    int64_t t = t0 + r * kIntervalS;
    for (size_t h = 0; h < hosts; ++h) {
      auto& host = fleet[h];
      host.step();
      eventstore::HostSample s{fmt::format("s{:05}", h), t + static_cast<int64_t>(h % kIntervalS), host.host.values(true), {}};
      for (int w = 0; w < kWparsPerHost; ++w) s.wpars.push_back({wpar_name(h, w), host.wpars[w].values(false)});
      values += 6 + 5 * kWparsPerHost;
      if (auto ok = (*samples)->write(s); !ok) {
        std::fprintf(stderr, "write failed: %s\n", ok.error().message.c_str());
        return 1;
      }
    }
  }
  double write_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("storage: %zu hosts x %d WPARs, one day every %lld s: %llu reports, %llu values written in %.1f s "
              "(%.1f us per report)\n",
              hosts, kWparsPerHost, static_cast<long long>(kIntervalS),
              static_cast<unsigned long long>(reports * static_cast<int64_t>(hosts)),
              static_cast<unsigned long long>(values), write_s, write_s * 1e6 / static_cast<double>(reports * hosts));
  start = Clock::now();
  auto sealed = (*samples)->maintain(t0 + 86'400 + 3600);
  if (!sealed) {
    std::fprintf(stderr, "seal failed: %s\n", sealed.error().message.c_str());
    return 1;
  }
  double seal_s = std::chrono::duration<double>(Clock::now() - start).count();
  (*samples)->compact();
  auto sizes = logical_sizes(**store);
  uint64_t disk = (*samples)->disk_bytes();
  double raw_logical = static_cast<double>(sizes['c'].second);
  double aggregate_logical = static_cast<double>(sizes['a'].second);
  double per_value_disk_upper = static_cast<double>(disk) / static_cast<double>(values);
  std::printf("storage: sealed %d blocks (%llu rows, %llu chunks) in %.1f s; left unsealed: %llu rows\n",
              sealed->sealed_blocks, static_cast<unsigned long long>(sealed->sealed_rows),
              static_cast<unsigned long long>(sealed->chunks_written), seal_s,
              static_cast<unsigned long long>(sizes['r'].first));
  std::printf("storage: raw chunks %.2f bytes per sample value (keys included, before RocksDB's compression); "
              "5-minute aggregates %.2f MB a day\n",
              raw_logical / static_cast<double>(values), aggregate_logical / 1e6);
  std::printf("storage: on disk after compaction %.1f MB for the day, raw and aggregates together: %.2f bytes per "
              "sample value (target <= 2: %s)\n",
              static_cast<double>(disk) / 1e6, per_value_disk_upper, per_value_disk_upper <= 2 ? "meets" : "over");
  // Reads as the what-if simulation makes them: each entity's day an hour (a block) at a time.
  start = Clock::now();
  uint64_t hour_reads = 0, read_values = 0;
  for (size_t h = 0; h < hosts; ++h) {
    for (int e = -1; e < kWparsPerHost; ++e) {
      for (int64_t from = t0; from < t0 + 86'400; from += 3600) {
        const std::string system = fmt::format("s{:05}", h);  // where the simulation knows the WPAR ran
        auto r = e < 0 ? (*samples)->read(false, system, from, from + 3599, eventstore::Resolution::kRaw, &system)
                       : (*samples)->read(true, wpar_name(h, e), from, from + 3599, eventstore::Resolution::kRaw, &system);
        if (!r) {
          std::fprintf(stderr, "read failed: %s\n", r.error().message.c_str());
          return 1;
        }
        ++hour_reads;
        read_values += r->times_s.size() * r->columns.size();
      }
    }
  }
  const double read_s = std::chrono::duration<double>(Clock::now() - start).count();
  const double per_read_us = read_s * 1e6 / static_cast<double>(hour_reads);
  std::printf("storage: %llu reads of an hour of raw samples (as the what-if simulation reads), %.1f us each, "
              "%.0f values/s; a day of 10,000 WPARs on 1,000 hosts (264,000 reads) would read for %.1f s\n",
              static_cast<unsigned long long>(hour_reads), per_read_us,
              static_cast<double>(read_values) / read_s, per_read_us * 264'000 / 1e6);
  double scale = 10'000.0 / static_cast<double>(hosts);
  double disk_day_raw = static_cast<double>(disk) * raw_logical / (raw_logical + aggregate_logical);
  double disk_day_aggregate = static_cast<double>(disk) - disk_day_raw;
  std::printf("storage: projected for 10,000 hosts: %.1f GB of raw samples (24 h) + %.1f GB of aggregates (30 days) "
              "= %.1f GB\n",
              disk_day_raw * scale / 1e9, disk_day_aggregate * 30 * scale / 1e9,
              (disk_day_raw + 30 * disk_day_aggregate) * scale / 1e9);
  return 0;
}

// wpmd's CPU time (user + system), in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  double utime = 0, stime = 0;
  for (int i = 3; fields >> f; ++i) {
    if (i == 14) utime = std::stod(f);
    if (i == 15) {
      stime = std::stod(f);
      break;
    }
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// One load process: `keys` as connections on the agent channel, sending
// what is due. On `control` (non-blocking): 'm' turns the metrics reports
// on, 's' ends it; it writes "beats metrics replies errors" to `out`.
void load_process(const std::vector<bus::CurveKeyPair>& keys, size_t first, const std::string& endpoint,
                  const std::string& manager_key, int control, int out) {
  bool metrics_on = false, stop = false;
  zmq::context_t context(1);
  context.set(zmq::ctxopt::max_sockets, 65'536);
  std::vector<std::unique_ptr<zmq::socket_t>> sockets;
  std::vector<Host> fleet;
  for (size_t k = 0; k < keys.size(); ++k) {
    auto s = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    s->set(zmq::sockopt::linger, 0);
    bus::make_curve_client(*s, keys[k], manager_key);
    s->connect(endpoint);
    sockets.push_back(std::move(s));
    fleet.emplace_back(first + k + 1);
  }
  const size_t n = keys.size();
  auto t_start = Clock::now();
  std::vector<Clock::time_point> next_beat(n), next_metrics(n);
  for (size_t k = 0; k < n; ++k) {
    next_beat[k] = t_start + std::chrono::milliseconds(5000 * k / n);
    next_metrics[k] = t_start + std::chrono::milliseconds(10'000 * k / n);
  }
  uint64_t id = 1, beats = 0, metrics = 0, replies = 0, errors = 0;
  size_t drain = 0;
  while (!stop) {
    char c = 0;
    while (::read(control, &c, 1) == 1) {
      if (c == 'm') metrics_on = true;
      if (c == 's') stop = true;
    }
    auto now = Clock::now();
    for (size_t k = 0; k < n; ++k) {
      ap::ManagerRequest request;
      if (now >= next_beat[k]) {
        next_beat[k] += 5s;
        request = ap::ManagerRequest{id++, ap::Heartbeat{0, kWparsPerHost, kWparsPerHost, 1.0f, 2}};
        ++beats;
      } else if (now >= next_metrics[k]) {
        next_metrics[k] += 10s;
        if (!metrics_on) continue;
        fleet[k].step();
        ap::MetricsReport m{10'000, fleet[k].host.set(true), {}, "host"};
        for (int w = 0; w < kWparsPerHost; ++w) {
          m.wpars.push_back({wpar_name(first + k, w), fleet[k].wpars[w].set(false)});
        }
        request = ap::ManagerRequest{id++, std::move(m)};
        ++metrics;
      } else {
        continue;
      }
      auto bytes = ap::encode(request);
      if (!sockets[k]->send(zmq::buffer(bytes), zmq::send_flags::dontwait)) ++errors;
    }
    // A slice of the sockets drained each round.
    for (size_t c = 0; c < std::max<size_t>(1, n / 20); ++c, drain = (drain + 1) % n) {
      zmq::message_t reply;
      while (sockets[drain]->recv(reply, zmq::recv_flags::dontwait)) {
        auto r = ap::decode_manager_reply(bus::view(reply));
        if (r && std::holds_alternative<ap::Ack>(r->body)) {
          ++replies;
        } else {
          ++errors;
        }
      }
    }
    std::this_thread::sleep_for(2ms);
  }
  std::string line = fmt::format("{} {} {} {}\n", beats, metrics, replies, errors);
  (void)!::write(out, line.data(), line.size());
}

int ingest(size_t systems, int seconds) {
  TempDir dir("wpm-bench-metrics-ingest");
  Wpmd::Options o;
  o.data_dir = dir / "wpmd";
  o.extra_args = {"--log-level", "warn"};
  o.start_timeout = 60s;
  Wpmd wpmd(o);
  if (!wpmd.start()) {
    std::fprintf(stderr, "wpmd did not start: %s\n", wpmd.log().c_str());
    return 1;
  }
  // The systems, registered as the inventory records a registration.
  if (run({bin("wpmd"), "--data", wpmd.data_dir(), "keys", "add-service", "inventory", "--replace"}).exit_code != 0) {
    std::fprintf(stderr, "cannot make the inventory key\n");
    return 1;
  }
  std::vector<bus::CurveKeyPair> keys(systems);
  {
    auto inventory_keys = bus::load_curve_keys(wpmd.data_dir() + "/keys/services", "inventory");
    auto client_options = wpmd.client_options(60'000, 1);
    client_options.credentials.client_keys = *inventory_keys;
    zmq::context_t context(1);
    bus::StoreClient inventory(context, wpmd.request(), client_options);
    for (size_t first = 0; first < systems; first += 1000) {
      AppendRequest r;
      for (size_t i = first; i < std::min(systems, first + 1000); ++i) {
        keys[i] = *bus::generate_curve_keys();
        std::string id = fmt::format("s{:05}", i);
        r.events.push_back(EventDraft{"registry", "", "", "", SystemRegistered{id, id, "127.0.0.1", keys[i].public_key,
                                                                                 profile::SystemProfile{}, 1}});
      }
      if (auto a = inventory.append(r); !a) {
        std::fprintf(stderr, "registration append failed: %s\n", a.error().message.c_str());
        return 1;
      }
    }
  }
  auto manager_key = bus::load_public_key(wpmd.data_dir() + "/keys", "manager");
  if (!manager_key) return 1;
  std::this_thread::sleep_for(2s);  // the registry projection admits the keys
  // Two load processes (a socket takes two descriptors; each process stays
  // within its open-file limit).
  constexpr int kProcesses = 2;
  std::vector<pid_t> children;
  std::vector<int> pipes, controls;
  for (int p = 0; p < kProcesses; ++p) {
    size_t first = systems * p / kProcesses, last = systems * (p + 1) / kProcesses;
    int fds[2], control[2];
    if (::pipe(fds) != 0 || ::pipe2(control, O_NONBLOCK) != 0) return 1;
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      ::close(control[1]);
      std::vector<bus::CurveKeyPair> mine(keys.begin() + static_cast<long>(first), keys.begin() + static_cast<long>(last));
      load_process(mine, first, wpmd.agent_channel(), *manager_key, control[0], fds[1]);
      ::_exit(0);
    }
    ::close(fds[1]);
    ::close(control[0]);
    children.push_back(pid);
    pipes.push_back(fds[0]);
    controls.push_back(control[1]);
  }
  auto tell = [&](char c) {
    for (int fd : controls) (void)!::write(fd, &c, 1);
  };
  // Warm up (handshakes, the prober's first rounds), then measure.
  std::this_thread::sleep_for(20s);
  auto measure = [&](const char* what) {
    double c0 = cpu_seconds(wpmd.pid());
    auto w0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    double wall = std::chrono::duration<double>(Clock::now() - w0).count();
    double cores = (cpu_seconds(wpmd.pid()) - c0) / wall;
    std::printf("ingest: %s: wpmd used %.3f of one core\n", what, cores);
    return cores;
  };
  double beats_only = measure("heartbeats only");
  tell('m');
  std::this_thread::sleep_for(12s);  // every system has sent its first report
  double with_metrics = measure("heartbeats and metrics");
  uint64_t beats = 0, metrics = 0, replies = 0, errors = 0;
  tell('s');
  for (size_t p = 0; p < children.size(); ++p) {
    char buf[256] = {};
    ssize_t got = ::read(pipes[p], buf, sizeof buf - 1);
    ::waitpid(children[p], nullptr, 0);
    ::close(pipes[p]);
    unsigned long long b = 0, m = 0, r = 0, e = 0;
    if (got > 0 && std::sscanf(buf, "%llu %llu %llu %llu", &b, &m, &r, &e) == 4) {
      beats += b, metrics += m, replies += r, errors += e;
    }
  }
  auto stats = run({bin("wpm"), "--data", wpmd.data_dir(), "-o", "json", "log", "stats"});
  double share = with_metrics - beats_only;
  std::printf("ingest: %zu hosts x %d WPARs every 10 s (%.0f reports/s, %.0f heartbeats/s): the metrics cost wpmd "
              "%.3f of one core (target < 0.2: %s)\n",
              systems, kWparsPerHost, static_cast<double>(systems) / 10, static_cast<double>(systems) / 5, share,
              share < 0.2 ? "meets" : "over");
  std::printf("ingest: sent %llu heartbeats and %llu metrics reports; %llu acknowledged, %llu errors\n",
              static_cast<unsigned long long>(beats), static_cast<unsigned long long>(metrics),
              static_cast<unsigned long long>(replies), static_cast<unsigned long long>(errors));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  size_t hosts = 200, systems = 10'000;
  int seconds = 30;
  bool do_storage = true, do_ingest = true;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--hosts" && i + 1 < argc) hosts = std::strtoull(argv[++i], nullptr, 10);
    if (flag == "--systems" && i + 1 < argc) systems = std::strtoull(argv[++i], nullptr, 10);
    if (flag == "--seconds" && i + 1 < argc) seconds = std::atoi(argv[++i]);
    if (flag == "--storage-only") do_ingest = false;
    if (flag == "--ingest-only") do_storage = false;
  }
  if (do_storage && storage(hosts) != 0) return 1;
  if (do_ingest && ingest(systems, seconds) != 0) return 1;
  return 0;
}
