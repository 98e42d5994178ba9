// wpmd: the wpm control plane. For now it hosts the event store (DESIGN.md
// §2): the durable log, its request endpoint and its publication endpoint,
// plus Prometheus metrics. main() builds and wires every resource.

#include <fcntl.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <zmq.hpp>

#include "eventstore/metrics.h"
#include "eventstore/server.h"
#include "eventstore/store.h"
#include "bus/curve.h"
#include "bus/registration_proof.h"
#include "services/compatibility/service.h"
#include "services/executor/service.h"
#include "eventstore/backup.h"
#include "services/gateway/discovery.h"
#include "services/gateway/fleet_metrics.h"
#include "services/gateway/gateway.h"
#include "services/inventory/agent_channel.h"
#include "services/inventory/prober.h"
#include "services/inventory/service.h"
#include "services/policy/service.h"
#include "services/kernel/identity.h"
#include "services/kernel/keyring.h"
#include "services/kernel/projection.h"
#include "services/wpmd/config.h"
#include "wpm_version.h"

namespace {

using namespace wpm;

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const std::string& level) {
  std::shared_ptr<spdlog::logger> log;
  if (std::getenv("NO_COLOR") != nullptr || !::isatty(STDERR_FILENO)) {
    log = spdlog::stderr_logger_mt(name);
  } else {
    log = spdlog::stderr_color_mt(name);
  }
  log->set_level(spdlog::level::from_str(level));
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %n %v");
  log->flush_on(spdlog::level::warn);
  return log;
}

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Writes DIR/endpoints atomically: one `name=address` per line.
bool write_endpoints(const std::string& dir, const std::string& content) {
  std::string tmp = dir + "/endpoints.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
    out.flush();
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), (dir + "/endpoints").c_str()) == 0;
}

// The registration password's salted hash: made from the password file when
// one is given (and stored in DATA/registration.hash, mode 0600), otherwise
// the stored one. Empty: registrations are refused until a password is set.
Result<std::string> registration_password_hash(const wpmd::WpmdOptions& options,
                                               spdlog::logger& log) {
  std::string stored_path = options.data_dir + "/registration.hash";
  if (options.registration_password_file.empty()) {
    std::ifstream in(stored_path);
    std::string line;
    if (in && std::getline(in, line)) {
      if (auto parsed = bus::parse_password_hash(line); !parsed) {
        return fail(ErrorCode::kCorruption,
                    fmt::format("{} is unreadable ({}); set the password again with "
                                "--registration-password-file FILE",
                                stored_path, parsed.error().message));
      }
      return line;
    }
    log.warn("registration_closed reason=\"no registration password\" hint=\"start wpmd with "
             "--registration-password-file FILE\"");
    return std::string();
  }
  std::ifstream in(options.registration_password_file);
  std::string password;
  if (!in || !std::getline(in, password)) {
    return fail(ErrorCode::kNotFound, fmt::format("cannot read the registration password from {}",
                                                  options.registration_password_file));
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (password.size() < 8) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("the registration password in {} is shorter than 8 characters; choose a "
                            "longer one (it protects who may join this manager)",
                            options.registration_password_file));
  }
  auto kdf = bus::new_kdf();
  auto key = bus::derive_password_key(password, kdf);
  if (!key) return std::unexpected(key.error());
  std::string hash = bus::format_password_hash(kdf, *key);
  std::string tmp = stored_path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::write(fd, (hash + "\n").data(), hash.size() + 1) == static_cast<ssize_t>(hash.size() + 1) &&
            ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok || std::rename(tmp.c_str(), stored_path.c_str()) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", stored_path, std::strerror(errno)));
  }
  log.info("registration_password_set stored_as=salted_hash file={}", stored_path);
  return hash;
}

// SIGTERM and SIGINT arrive through a signalfd; -1 when it cannot be made.
int block_stop_signals(spdlog::logger& log) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  int signal_fd = ::signalfd(-1, &signals, SFD_CLOEXEC);
  if (signal_fd < 0) log.error("signalfd_failed error=\"{}\"", std::strerror(errno));
  return signal_fd;
}

// Until SIGTERM or SIGINT: an intentionally unbounded wait.
void wait_for_stop_signal(int signal_fd) {
  while (true) {
    pollfd p{signal_fd, POLLIN, 0};
    if (::poll(&p, 1, -1) > 0) return;
  }
}

// The compatibility service inside wpmd: appends over inproc as
// service:compatibility, reads the store directly.
struct EmbeddedCompatibility {
  std::unique_ptr<bus::StoreClient> client;
  std::unique_ptr<kernel::EmbeddedLog> log;
  std::unique_ptr<compatibility::CompatibilityService> service;

  static Result<std::unique_ptr<EmbeddedCompatibility>> start(zmq::context_t& context, const std::string& endpoint,
                                                              eventstore::Store& store,
                                                              kernel::EmbeddedStore& embedded,
                                                              std::shared_ptr<spdlog::logger> logger) {
    auto c = std::make_unique<EmbeddedCompatibility>();
    bus::ClientOptions o;
    o.credentials.local_identity = kernel::service_identity("compatibility");
    c->client = std::make_unique<bus::StoreClient>(context, endpoint, o);
    c->log = std::make_unique<kernel::EmbeddedLog>(*c->client, store);
    c->service = std::make_unique<compatibility::CompatibilityService>(*c->log, embedded, std::move(logger));
    if (auto r = c->service->start(); !r) return std::unexpected(r.error());
    return c;
  }
};

// A service's own connection to the store inside wpmd: appends over inproc
// as its identity, reads straight from the Store.
class OwnedEmbeddedLog final : public kernel::EventLog {
 public:
  OwnedEmbeddedLog(zmq::context_t& context, const std::string& endpoint, const std::string& service,
                   eventstore::Store& store)
      : client_(context, endpoint, options_for(service)), log_(client_, store) {}
  Result<AppendResult> append(const AppendRequest& r) override { return log_.append(r); }
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return log_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override { return log_.read_range(r); }
  uint64_t skippable_through(uint64_t after, eventstore::TypeMask wanted) override {
    return log_.skippable_through(after, wanted);
  }

 private:
  static bus::ClientOptions options_for(const std::string& service) {
    bus::ClientOptions o;
    o.credentials.local_identity = kernel::service_identity(service);
    return o;
  }
  bus::StoreClient client_;
  kernel::EmbeddedLog log_;
};

bool loopback(const std::string& endpoint) {
  return endpoint.starts_with("tcp://127.") || endpoint.starts_with("tcp://localhost:") ||
         endpoint.starts_with("tcp://[::1]:") || endpoint.starts_with("ipc://");
}

int serve(const wpmd::WpmdOptions& options, std::shared_ptr<spdlog::logger> log) {
  int signal_fd = block_stop_signals(*log);
  if (signal_fd < 0) return 1;

  eventstore::StoreOptions store_options = options.store;
  store_options.data_dir = options.data_dir;
  store_options.low_priority_compactions = true;  // this process is the store's
  if (const char* kill_point = std::getenv("WPM_TEST_KILL_POINT")) {
    store_options.kill_point = kill_point;
    log->warn("test_kill_point_armed name={}", kill_point);
  }
  if (const char* boot = std::getenv("WPM_TEST_BOOT_ID")) {
    store_options.boot_id_for_test = boot;
    log->warn("test_boot_id_set value={}", boot);
  }
  if (!options.restore_from.empty()) {
    auto restored = eventstore::restore_backup(options.restore_from, options.data_dir);
    if (!restored) {
      log->error("restore_failed backup={} data={} error=\"{}\"", options.restore_from, options.data_dir,
                 restored.error().message);
      std::fprintf(stderr, "wpmd: cannot restore %s: %s\n", options.restore_from.c_str(),
                   restored.error().message.c_str());
      return 1;
    }
    // What happened after the backup is not in the log: every agent is
    // reconciled (placements newer than the log adopted) before the
    // executor sends it anything (docs/backup.md).
    log->warn("restored backup={} head={} created_ns={} version={} data={}", restored->name, restored->head,
              restored->created_ns, restored->version, options.data_dir);
    std::fprintf(stderr, "wpmd: restored backup %s (events 1..%llu) into %s\n", restored->name.c_str(),
                 static_cast<unsigned long long>(restored->head), options.data_dir.c_str());
  }
  auto store = eventstore::Store::open(store_options, log);
  if (!store) {
    log->error("store_open_failed dir={} error=\"{}\"", options.data_dir, store.error().message);
    std::fprintf(stderr, "wpmd: %s\n", store.error().message.c_str());
    return 1;
  }

  // Metric history beside the log, in its own column family (not events).
  auto samples = eventstore::SampleStore::open(**store, options.samples, log);
  if (!samples) {
    std::fprintf(stderr, "wpmd: %s\n", samples.error().message.c_str());
    return 1;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  eventstore::StoreMetrics metrics(*registry);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(options.metrics_listen, 2);
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "wpmd: cannot listen for metrics on %s: %s; choose another --metrics-listen "
                 "(port 0 picks a free one)\n",
                 options.metrics_listen.c_str(), e.what());
    return 1;
  }
  exposer->RegisterCollectable(registry);
  auto ports = exposer->GetListeningPorts();
  std::string metrics_host = options.metrics_listen.substr(0, options.metrics_listen.rfind(':'));
  std::string metrics_url =
      fmt::format("http://{}:{}/metrics", metrics_host, ports.empty() ? 0 : ports.front());

  auto password_hash = registration_password_hash(options, *log);
  if (!password_hash) {
    std::fprintf(stderr, "wpmd: %s\n", password_hash.error().message.c_str());
    return 1;
  }

  // The store trusts no one it has not authenticated (DESIGN.md §9): its
  // network endpoints are CURVE, with the keys listed in DATA/keys.
  auto keys = kernel::ensure_store_keys(options.data_dir);
  if (!keys) {
    std::fprintf(stderr, "wpmd: %s\n", keys.error().message.c_str());
    return 1;
  }
  // Declared before the ZAP handler, whose thread calls into them until it ends.
  kernel::StoreKeyring keyring(options.data_dir + "/keys");
  inventory::LogLimiter refusal_log;
  zmq::context_t context(1);
  // One ZAP handler for the context: it serves the store's domain here and
  // the agent channel's below.
  bus::ZapHandler zap(context);
  zap.serve_domain(eventstore::kStoreZapDomain,
                   [&](const std::string& address, const std::string& key) -> std::optional<std::string> {
                     auto identity = keyring.identify(key);
                     if (!identity && refusal_log.allow(wall_ns())) {
                       log->warn("store_client_refused address={} key_fingerprint={} reason=\"key not "
                                 "listed\" suppressed_before={}",
                                 address, bus::key_fingerprint(key), refusal_log.take_suppressed());
                     }
                     return identity;
                   });
  kernel::StreamAccess access;
  eventstore::ServerOptions server_options = options.server;
  server_options.keys = keys->store;
  const std::string backup_dir = options.backup_dir.empty() ? options.data_dir + "/backups" : options.backup_dir;
  server_options.backups_dir = std::filesystem::absolute(backup_dir).lexically_normal().string();
  server_options.version = kVersion;
  eventstore::StoreServer server(**store, context, server_options, access, metrics, log);
  server.serve_samples(**samples);
  if (auto r = server.bind(); !r) {
    std::fprintf(stderr, "wpmd: %s\n", r.error().message.c_str());
    return 1;
  }
  // The store serves on its own thread: the services below read from it
  // while they start. It stops when stop_store becomes readable.
  int stop_store = ::eventfd(0, EFD_CLOEXEC);
  if (stop_store < 0) {
    std::fprintf(stderr, "wpmd: eventfd: %s\n", std::strerror(errno));
    return 1;
  }
  auto stop_store_thread = [&] {
    uint64_t one = 1;
    (void)!::write(stop_store, &one, sizeof one);
  };
  std::thread store_thread([&] { server.run(stop_store); });

  // The services in this process read the log straight from the store, on
  // their own threads, woken by its commit signal.
  kernel::EmbeddedStore embedded(**store);
  const kernel::SystemClock clock;
  inventory::Liveness liveness;
  // The inventory once it has started (the agent channel, started first,
  // asks it for the metrics interval).
  std::atomic<inventory::InventoryService*> published_inventory{nullptr};
  std::unique_ptr<inventory::AgentChannel> agents;
  auto stop_early = [&](const std::string& why) {
    std::fprintf(stderr, "wpmd: %s\n", why.c_str());
    if (agents) agents->stop();
    stop_store_thread();
    store_thread.join();
    return 1;
  };
  if (options.services.contains("inventory")) {
    inventory::AgentChannelOptions agent_options;
    agent_options.public_endpoint = options.agent_public_endpoint;
    agent_options.channel_endpoint = options.agent_channel_endpoint;
    agent_options.store_endpoint = server_options.local_request_endpoint;
    agent_options.store_credentials.local_identity = kernel::service_identity("inventory");
    agent_options.registry_reads = &embedded;
    agent_options.commit_signal = &embedded;
    agent_options.keys_dir = options.data_dir + "/keys";
    agent_options.password_hash = *password_hash;
    agent_options.liveness = &liveness;
    agent_options.clock = &clock;
    agent_options.samples = samples->get();
    agent_options.metrics_interval_ms = [&published_inventory]() -> uint32_t {
      auto* inventory = published_inventory.load();
      if (inventory == nullptr) return 0;
      uint32_t ms = 0;
      inventory->read([&](const inventory::Inventory& state) {
        ms = static_cast<uint32_t>(inventory::parse_duration_ns(state.setting("metrics.interval")).value_or(0) /
                                   1'000'000);
      });
      return ms;
    };
    Result<std::unique_ptr<inventory::AgentChannel>> started = fail(ErrorCode::kInternal, "not started");
    try {
      started = inventory::AgentChannel::start(context, zap, agent_options, *registry, log);
    } catch (const std::exception& e) {
      started = fail(ErrorCode::kInternal, fmt::format("cannot start the agent channel: {}", e.what()));
    }
    if (!started) {
      log->error("agent_channel_failed error=\"{}\"", started.error().message);
      return stop_early(started.error().message);
    }
    agents = std::move(*started);
  }
  std::atomic<bool> stop_services{false};
  std::unique_ptr<EmbeddedCompatibility> compatibility;
  if (options.services.contains("compatibility")) {
    auto made = EmbeddedCompatibility::start(context, server_options.local_request_endpoint, **store, embedded, log);
    if (!made) return stop_early("the compatibility service cannot start: " + made.error().message);
    compatibility = std::move(*made);
  }
  std::thread compatibility_thread;
  if (compatibility) compatibility_thread = std::thread([&] { compatibility->service->run(stop_services); });
  // The inventory decides commands and systems' states on its own thread.
  std::unique_ptr<OwnedEmbeddedLog> inventory_log;
  std::unique_ptr<inventory::InventoryService> inventory_service;
  std::thread inventory_thread;
  if (options.services.contains("inventory")) {
    inventory_log = std::make_unique<OwnedEmbeddedLog>(context, server_options.local_request_endpoint, "inventory", **store);
    inventory_service = std::make_unique<inventory::InventoryService>(*inventory_log, &embedded, embedded, clock,
                                                                      &liveness, log);
    if (auto r = inventory_service->start(); !r) {
      stop_services = true;
      if (compatibility_thread.joinable()) compatibility_thread.join();
      return stop_early("the inventory service cannot start: " + r.error().message);
    }
  }
  // The probe of the agents' ports (Unreachable, discovered WPARs); the
  // inventory kicks it for `wpm system discover`.
  std::unique_ptr<inventory::Prober> prober;
  std::thread prober_thread;
  if (inventory_service) {
    auto manager_keys = bus::load_curve_keys(options.data_dir + "/keys", "manager");
    if (manager_keys) {
      inventory::ProberOptions po;
      if (const char* interval = std::getenv("WPM_TEST_PROBE_INTERVAL_MS")) {
        po.interval = std::chrono::milliseconds(std::strtoll(interval, nullptr, 10));
        log->warn("test_probe_interval_ms value={}", po.interval.count());
      }
      prober = std::make_unique<inventory::Prober>(context, *manager_keys, *inventory_service, liveness, clock, log, po);
      inventory_service->on_discover([&] { prober->kick(); });
      inventory_service->on_update_profile([&](const std::string& id) { prober->refresh_profile(id); });
      // An agent that (re)connects is probed at once: reconciled before
      // anyone has a command for it, rather than when the first one is held.
      liveness.on_reconnected([&](const std::string& id) { prober->probe_soon(id); });
      prober_thread = std::thread([&] { prober->run(stop_services); });
    } else {
      log->warn("prober_disabled error=\"{}\"", manager_keys.error().message);
    }
    inventory_thread = std::thread([&] { inventory_service->run(stop_services); });
    published_inventory.store(inventory_service.get());
  }
  // The executor: tasks of operations on the agents' ports.
  std::unique_ptr<executor::Dispatcher> dispatcher;
  std::unique_ptr<OwnedEmbeddedLog> executor_log;
  std::unique_ptr<executor::ExecutorService> executor_service;
  std::thread executor_thread;
  if (options.services.contains("executor") && inventory_service) {
    if (auto manager_keys = bus::load_curve_keys(options.data_dir + "/keys", "manager")) {
      dispatcher = std::make_unique<executor::Dispatcher>(*manager_keys, log);
      dispatcher->start();
    } else {
      log->warn("executor_without_agent_client error=\"{}\"", manager_keys.error().message);
    }
    executor_log = std::make_unique<OwnedEmbeddedLog>(context, server_options.local_request_endpoint, "executor", **store);
    executor::ExecutorServiceOptions executor_options;
    if (const char* kill_point = std::getenv("WPM_TEST_KILL_POINT")) executor_options.kill_point = kill_point;
    if (prober) executor_options.request_probe = [&](const std::string& id) { prober->probe_soon(id); };
    executor_service = std::make_unique<executor::ExecutorService>(*executor_log, &embedded, embedded, clock,
                                                                   *inventory_service, dispatcher.get(), &liveness, log,
                                                                   executor_options);
    if (auto r = executor_service->start(); !r) {
      stop_services = true;
      if (dispatcher) dispatcher->stop();
      if (prober_thread.joinable()) prober_thread.join();
      liveness.on_reconnected({});
      if (inventory_thread.joinable()) inventory_thread.join();
      if (compatibility_thread.joinable()) compatibility_thread.join();
      return stop_early("the executor cannot start: " + r.error().message);
    }
    executor_thread = std::thread([&] { executor_service->run(stop_services); });
  }
  // The policy: group policies evaluated on the interval's grid, from the
  // samples it is handed as they are written.
  std::unique_ptr<OwnedEmbeddedLog> policy_log;
  std::unique_ptr<policy::PolicyService> policy_service;
  std::thread policy_thread;
  if (options.services.contains("policy") && executor_service) {
    auto windows = std::make_shared<policy::SampleWindows>();
    (*samples)->subscribe([windows](const metrics::HostSample& s) { windows->add(s); });
    policy_log = std::make_unique<OwnedEmbeddedLog>(context, server_options.local_request_endpoint, "policy", **store);
    policy_service = std::make_unique<policy::PolicyService>(*policy_log, *inventory_service, *executor_service, clock,
                                                             windows, log);
    policy_thread = std::thread([&] { policy_service->run(stop_services); });
  }
  std::unique_ptr<gateway::Gateway> gateway_service;
  std::string gateway_key;
  // The fleet's gauges on /metrics (refreshed every 10 s), fed each host's
  // newest sample.
  std::shared_ptr<gateway::FleetMetrics> fleet_metrics;
  if (inventory_service) {
    fleet_metrics = std::make_shared<gateway::FleetMetrics>(*registry, kVersion);
    (*samples)->subscribe([fleet_metrics](const metrics::HostSample& s) { fleet_metrics->note(s); });
  }
  // Seals finished hours of metric history and drops what is past
  // retention, every minute (and once at start); refreshes the fleet's gauges.
  // Prometheus' discovery files (deploy/prometheus.yml), written by the
  // samples thread when what they list changes.
  gateway::DiscoveryFiles discovery(options.discovery_dir.empty() ? options.data_dir + "/prometheus"
                                                                  : options.discovery_dir);
  auto write_discovery = [&] {
    std::vector<gateway::ScrapeTarget> agents;
    if (inventory_service) {
      auto ports = liveness.metrics_ports();
      inventory_service->read([&](const inventory::Inventory& inv) { agents = gateway::agent_targets(inv.registry, ports); });
    }
    auto self = gateway::wpmd_target(metrics_host, ports.empty() ? 0 : static_cast<uint16_t>(ports.front()));
    for (auto [name, targets] : {std::pair{"wpmd.json", std::vector{self}}, std::pair{"agents.json", agents}}) {
      if (auto r = discovery.write(name, gateway::file_sd_json(targets)); !r) {
        log->warn("discovery_not_written error=\"{}\"", r.error().message);
      } else if (*r) {
        log->info("discovery_written file={}/{} targets={}", discovery.dir(), name, targets.size());
      }
    }
  };
  std::thread samples_thread([&] {
    auto* history = samples->get();
    for (uint64_t tick = 0; !stop_services; ++tick) {
      if (tick % 600 == 0) {
        auto sealed = history->maintain(clock.wall_ns() / 1'000'000'000);
        if (!sealed) {
          log->warn("metric_history_maintenance_failed error=\"{}\"", sealed.error().message);
        } else if (sealed->sealed_blocks > 0) {
          log->info("metric_history_sealed blocks={} rows={} chunks={}", sealed->sealed_blocks, sealed->sealed_rows,
                    sealed->chunks_written);
        }
      }
      if (tick % 100 == 0) {
        if (fleet_metrics) fleet_metrics->refresh(*inventory_service, executor_service.get(), policy_service.get());
        write_discovery();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  // Scheduled backups ([backup] interval_s; off by default): the next is
  // due an interval after the newest finished one (the first a minute after
  // start); each is followed by pruning to [backup] keep.
  std::thread backup_thread;
  if (options.backup_interval_s > 0) {
    backup_thread = std::thread([&] {
      const int64_t interval_ns = options.backup_interval_s * 1'000'000'000;
      int64_t first_delay_ns = 60'000'000'000;
      if (const char* ms = std::getenv("WPM_TEST_BACKUP_FIRST_MS")) {
        first_delay_ns = std::strtoll(ms, nullptr, 10) * 1'000'000;
        log->warn("test_backup_first_ms value={}", first_delay_ns / 1'000'000);
      }
      const int64_t first_ns = clock.wall_ns() + first_delay_ns;
      for (uint64_t tick = 0; !stop_services; ++tick) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (tick % 100 != 0) continue;  // every 10 s
        auto all = eventstore::list_backups(server_options.backups_dir);
        int64_t due = all && !all->empty() ? all->back().created_ns + interval_ns : first_ns;
        if (clock.wall_ns() < due) continue;
        auto made = eventstore::create_backup(**store, options.data_dir, server_options.backups_dir, clock.wall_ns(),
                                              kVersion);
        if (!made) {
          log->error("scheduled_backup_failed dir={} error=\"{}\"", server_options.backups_dir,
                     made.error().message);
          // Tried again at the next interval, not every 10 s.
          for (int64_t until = clock.wall_ns() + std::min<int64_t>(interval_ns, 3'600'000'000'000);
               !stop_services && clock.wall_ns() < until;) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
          }
          continue;
        }
        auto pruned = eventstore::prune_backups(server_options.backups_dir, static_cast<size_t>(options.backup_keep));
        log->info("scheduled_backup_made path={} head={} bytes={} pruned={}", made->path, made->head, made->bytes,
                  pruned ? *pruned : 0);
      }
    });
  }
  auto stop_inner = [&] {
    if (gateway_service) gateway_service->stop();
    stop_services = true;
    if (backup_thread.joinable()) backup_thread.join();
    if (samples_thread.joinable()) samples_thread.join();
    if (policy_thread.joinable()) policy_thread.join();
    if (executor_thread.joinable()) executor_thread.join();
    if (dispatcher) dispatcher->stop();
    if (prober_thread.joinable()) prober_thread.join();
    liveness.on_reconnected({});
    if (inventory_thread.joinable()) inventory_thread.join();
    if (compatibility_thread.joinable()) compatibility_thread.join();
  };
  if (options.services.contains("gateway")) {
    gateway::GatewayOptions g;
    g.endpoint = options.gateway_endpoint;
    g.data_dir = options.data_dir;
    g.pam.service = options.pam_service;
    g.pam.config_dir = options.pam_config_dir;
    g.session_ttl_ns = options.session_ttl_s * 1'000'000'000;
    if (!loopback(options.gateway_endpoint)) {
      // Beyond loopback passwords travel only under CURVE; any client key
      // may connect (the user proves who it is through PAM).
      auto keys = bus::load_or_create_curve_keys(options.data_dir + "/keys", "gateway");
      if (!keys) {
        stop_inner();
        return stop_early(keys.error().message);
      }
      g.curve = *keys;
      gateway_key = keys->public_key;
      zap.serve_domain("gateway", [](const std::string&, const std::string&) -> std::optional<std::string> {
        return std::string("client");
      });
    }
    gateway::GatewayDeps deps;
    const std::string local = server_options.local_request_endpoint;
    eventstore::Store* raw_store = store->get();
    deps.make_log = [&context, local, raw_store] {
      return std::make_unique<OwnedEmbeddedLog>(context, local, "gateway", *raw_store);
    };
    deps.reads = &embedded;
    deps.snapshots = &embedded;
    deps.signal = &embedded;
    deps.inventory = inventory_service.get();
    deps.executor = executor_service.get();
    deps.liveness = &liveness;
    deps.clock = &clock;
    deps.samples = samples->get();
    deps.policy = policy_service.get();
    gateway_service = std::make_unique<gateway::Gateway>(context, deps, g, log);
    if (auto r = gateway_service->start(); !r) {
      stop_inner();
      return stop_early("the gateway cannot start: " + r.error().message);
    }
  }
  std::string fingerprint = agents ? agents->fingerprint() : "";
  std::string agent_public = agents ? agents->public_endpoint() : "";
  std::string agent_channel = agents ? agents->channel_endpoint() : "";
  std::string gateway_endpoint = gateway_service ? gateway_service->endpoint() : "";
  std::string endpoints = fmt::format(
      "request={}\npublish={}\nmetrics={}\nagent_public={}\nagent_channel={}\nmanager_key={}\n"
      "store_key={}\ngateway={}\ngateway_key={}\n",
      server.request_endpoint(), server.publish_endpoint(), metrics_url, agent_public, agent_channel, fingerprint,
      keys->store.public_key, gateway_endpoint, gateway_key);
  auto stop_services_now = [&] {
    stop_inner();
    // The agent channel first: its workers ask the inventory for the metrics interval.
    if (agents) agents->stop();
    published_inventory.store(nullptr);
    gateway_service.reset();
    policy_service.reset();
    policy_log.reset();
    executor_service.reset();
    executor_log.reset();
    dispatcher.reset();
    inventory_service.reset();
    inventory_log.reset();
    compatibility.reset();
  };
  if (!write_endpoints(options.data_dir, endpoints)) {
    stop_services_now();
    return stop_early(fmt::format("cannot write {}/endpoints", options.data_dir));
  }
  log->info("wpmd_ready version={} data={} services={} request={} publish={} metrics={} gateway={} agent_public={} "
            "agent_channel={} manager_key={} registered_systems={} registration={} head={}",
            kVersion, options.data_dir, fmt::join(options.services, ","), server.request_endpoint(),
            server.publish_endpoint(), metrics_url, gateway_endpoint, agent_public, agent_channel, fingerprint,
            agents ? agents->registered() : 0, password_hash->empty() ? "closed" : "open", (*store)->head());
  std::printf("wpmd %s serving %s (%s)\n  event store requests:     %s\n  event store publications: %s\n"
              "  metrics:                  %s\n",
              kVersion, options.data_dir.c_str(), fmt::format("{}", fmt::join(options.services, ",")).c_str(),
              server.request_endpoint().c_str(), server.publish_endpoint().c_str(), metrics_url.c_str());
  if (gateway_service) {
    std::printf("  gateway (wpm):            %s\n", gateway_endpoint.c_str());
  }
  if (agents) {
    std::printf("  agent registration:       %s\n  agent channel (CURVE):    %s\n  manager key:              %s\n",
                agent_public.c_str(), agent_channel.c_str(), fingerprint.c_str());
    if (password_hash->empty()) {
      std::printf("  registrations are refused: no registration password (--registration-password-file)\n");
    }
  }
  std::fflush(stdout);
  sd_notify(0, "READY=1");

  wait_for_stop_signal(signal_fd);
  sd_notify(0, "STOPPING=1");
  // The services stop before the store they use.
  stop_services_now();
  stop_store_thread();
  store_thread.join();
  ::close(stop_store);
  ::close(signal_fd);
  log->info("wpmd_stopped head={}", (*store)->head());
  return 0;
}

// A service as its own process against a remote store (`wpmd --services
// compatibility --store tcp://HOST:9515`): CURVE with the service's key from
// DATA/keys/services/NAME.key, the store checked against DATA/keys/store.pub.
int serve_remote(const wpmd::WpmdOptions& options, std::shared_ptr<spdlog::logger> log) {
  int signal_fd = block_stop_signals(*log);
  if (signal_fd < 0) return 1;
  const std::string name = "compatibility";  // the one service that runs remotely so far
  auto keys = bus::load_curve_keys(options.data_dir + "/keys/services", name);
  auto store_key = bus::load_public_key(options.data_dir + "/keys", "store");
  if (!keys || !store_key) {
    std::fprintf(stderr,
                 "wpmd: %s; on the store's host run `wpmd keys add-service %s` and copy keys/services/%s.key and "
                 "keys/store.pub into %s/keys here\n",
                 (!keys ? keys.error() : store_key.error()).message.c_str(), name.c_str(), name.c_str(),
                 options.data_dir.c_str());
    return 1;
  }
  zmq::context_t context(1);
  bus::ClientOptions client_options;
  client_options.credentials.client_keys = *keys;
  client_options.credentials.store_public_key = *store_key;
  bus::StoreClient client(context, options.remote_store, client_options);
  if (auto st = client.stats(); !st) {
    std::fprintf(stderr, "wpmd: %s\n", st.error().message.c_str());
    return 1;
  }
  kernel::ClientLog remote(client);
  kernel::PollingSignal signal(client, std::chrono::milliseconds(200));
  compatibility::CompatibilityService service(remote, signal, log);
  if (auto r = service.start(); !r) {
    std::fprintf(stderr, "wpmd: the compatibility service cannot start: %s\n", r.error().message.c_str());
    return 1;
  }
  std::atomic<bool> stop{false};
  std::thread worker([&] { service.run(stop); });
  log->info("wpmd_ready version={} services={} store={}", kVersion, name, options.remote_store);
  std::printf("wpmd %s running %s against the store at %s\n", kVersion, name.c_str(), options.remote_store.c_str());
  std::fflush(stdout);
  sd_notify(0, "READY=1");
  wait_for_stop_signal(signal_fd);
  sd_notify(0, "STOPPING=1");
  stop = true;
  worker.join();
  ::close(signal_fd);
  auto stats = service.stats();
  log->info("wpmd_stopped recorded={} already_recorded={}", stats.recorded, stats.already_recorded);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  wpmd::WpmdOptions options;
  CLI::App app{"wpmd: the wpm control plane (event store, services, metrics)", "wpmd"};
  app.set_version_flag("--version", std::string("wpmd ") + wpm::kVersion);
  std::string config_path;
  app.add_option("--config", config_path, "TOML configuration file (flags override it)")
      ->check(CLI::ExistingFile);
  std::string data_dir, log_level, request, publish, metrics_listen;
  int publish_hwm = -1;
  int64_t idem_window = -1;
  app.add_option("--data", data_dir, "data directory (default ./var/wpm)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|critical|off (default info)");
  app.add_option("--store-endpoint", request,
                 "event store request endpoint (default tcp://127.0.0.1:9515; port 0 = pick one)");
  app.add_option("--publish-endpoint", publish,
                 "event publication endpoint (default tcp://127.0.0.1:9516; port 0 = pick one)");
  app.add_option("--metrics-listen", metrics_listen,
                 "Prometheus /metrics address host:port (default 127.0.0.1:9521; port 0 = pick one)");
  app.add_option("--publish-hwm", publish_hwm,
                 "publications queued per subscriber before dropping (default 100000)");
  app.add_option("--idempotency-window", idem_window,
                 "seconds an append's idempotency key is remembered (default 86400)");
  std::string services_list, remote_store, remote_publish;
  app.add_option("--services", services_list,
                 "the services this process runs, from store,inventory,compatibility,executor,policy,gateway (default: "
                 "all)");
  app.add_option("--store", remote_store,
                 "without the store service: the remote store's request endpoint (tcp://HOST:9515)");
  app.add_option("--publish", remote_publish,
                 "without the store service: the remote store's publication endpoint (tcp://HOST:9516)");
  std::string gateway_endpoint, pam_service, pam_config_dir;
  int64_t session_ttl = -1;
  app.add_option("--gateway-endpoint", gateway_endpoint,
                 "where wpm and the console send requests (default tcp://127.0.0.1:9520; beyond loopback CURVE "
                 "with DATA/keys/gateway.key; port 0 = pick one)");
  app.add_option("--pam-service", pam_service, "the PAM service that checks logins (default wpm: /etc/pam.d/wpm)");
  app.add_option("--pam-config-dir", pam_config_dir, "read the PAM service file from this directory (tests)")
      ->group("");
  app.add_option("--session-ttl", session_ttl, "seconds a login lasts (default 28800, 8 h)");
  std::string agent_public, agent_channel, password_file;
  bool show_key = false;
  app.add_option("--agent-public-endpoint", agent_public,
                 "agent registration endpoint, no secrets (default tcp://0.0.0.0:9513; port 0 = pick one)");
  app.add_option("--agent-channel-endpoint", agent_channel,
                 "agent channel, CURVE, registered keys only (default tcp://0.0.0.0:9514)");
  app.add_option("--registration-password-file", password_file,
                 "file whose first line is the agents' registration password (kept only as a salted hash)")
      ->check(CLI::ExistingFile);
  app.add_flag("--show-key", show_key, "print the manager key's fingerprint and public key, then exit");
  std::string restore_from;
  app.add_option("--restore", restore_from,
                 "copy this backup (wpm backup list) into the empty data directory first, then start on it")
      ->check(CLI::ExistingDirectory);
  auto* keys_cmd = app.add_subcommand("keys", "manage the keys that may use the event store");
  keys_cmd->require_subcommand(1);
  auto* add_service = keys_cmd->add_subcommand(
      "add-service", "make a key pair for a service run as its own process (wpmd --services NAME --store …)");
  std::string service_name;
  bool replace_key = false;
  add_service->add_option("NAME", service_name, "inventory, compatibility, gateway, executor or policy")
      ->required();
  add_service->add_flag("--replace", replace_key, "replace the service's existing key (the old one stops working)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;  // usage errors: exit 2
  }
  if (!config_path.empty()) {
    if (auto r = wpmd::load_config_file(config_path, options); !r) {
      std::fprintf(stderr, "wpmd: %s\n", r.error().message.c_str());
      return 2;
    }
  }
  if (!data_dir.empty()) options.data_dir = data_dir;
  if (!log_level.empty()) options.log_level = log_level;
  if (!request.empty()) options.server.request_endpoint = request;
  if (!publish.empty()) options.server.publish_endpoint = publish;
  if (!metrics_listen.empty()) options.metrics_listen = metrics_listen;
  if (publish_hwm >= 0) options.server.publish_hwm = publish_hwm;
  if (!agent_public.empty()) options.agent_public_endpoint = agent_public;
  if (!gateway_endpoint.empty()) options.gateway_endpoint = gateway_endpoint;
  if (!pam_service.empty()) options.pam_service = pam_service;
  if (!pam_config_dir.empty()) options.pam_config_dir = pam_config_dir;
  if (session_ttl >= 0) options.session_ttl_s = session_ttl;
  if (!agent_channel.empty()) options.agent_channel_endpoint = agent_channel;
  if (!password_file.empty()) options.registration_password_file = password_file;
  if (idem_window >= 0) options.store.idempotency_window_s = static_cast<uint32_t>(idem_window);
  if (!services_list.empty()) {
    auto services = wpmd::parse_services(services_list);
    if (!services) {
      std::fprintf(stderr, "wpmd: %s\n", services.error().message.c_str());
      return 2;
    }
    options.services = *services;
  }
  if (!restore_from.empty()) options.restore_from = restore_from;
  if (!remote_store.empty()) options.remote_store = remote_store;
  if (!remote_publish.empty()) options.remote_publish = remote_publish;
  if (auto r = wpmd::validate(options); !r) {
    std::fprintf(stderr, "wpmd: %s\n", r.error().message.c_str());
    return 2;
  }
  if (add_service->parsed()) {
    auto made = kernel::add_service_key(options.data_dir, service_name,
                                        replace_key ? kernel::ReplaceKey::kYes : kernel::ReplaceKey::kNo);
    if (!made) {
      std::fprintf(stderr, "wpmd: %s\n", made.error().message.c_str());
      return made.error().code == ErrorCode::kInvalidRequest ? 2 : 1;
    }
    std::printf("service key made: %s/keys/services/%s.key (keep it secret; copy it to where the service runs)\n"
                "fingerprint: %s\nthe store admits it from now on as service:%s\n",
                options.data_dir.c_str(), service_name.c_str(), bus::key_fingerprint(made->public_key).c_str(),
                service_name.c_str());
    return 0;
  }
  if (show_key) {
    auto keys = bus::load_or_create_curve_keys(options.data_dir + "/keys", "manager");
    if (!keys) {
      std::fprintf(stderr, "wpmd: %s\n", keys.error().message.c_str());
      return 1;
    }
    std::printf("fingerprint: %s\npublic key:  %s\n", bus::key_fingerprint(keys->public_key).c_str(),
                keys->public_key.c_str());
    return 0;
  }
  auto log = make_logger("wpmd", options.log_level);
  log->debug("options config={} data={} request={} publish={} metrics={} publish_hwm={} "
             "idempotency_window_s={}",
             config_path.empty() ? "none" : config_path, options.data_dir,
             options.server.request_endpoint, options.server.publish_endpoint,
             options.metrics_listen, options.server.publish_hwm,
             options.store.idempotency_window_s);
  if (!options.services.contains("store")) return serve_remote(options, log);
  return serve(options, log);
}
