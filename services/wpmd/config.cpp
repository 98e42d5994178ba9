#include "services/wpmd/config.h"

#include <fmt/format.h>

#include <set>
#include <toml++/toml.h>

#include "bus/frame.h"

namespace wpm::wpmd {
namespace {

Result<void> unknown_keys(const toml::table& table, const std::set<std::string>& known,
                          const std::string& where, const std::string& path) {
  for (const auto& [key, value] : table) {
    (void)value;
    if (!known.contains(std::string(key.str()))) {
      return fail(ErrorCode::kInvalidRequest,
                  fmt::format("{}: unknown key '{}{}'; known keys: {}", path, where, key.str(),
                              fmt::join(known, ", ")));
    }
  }
  return {};
}

template <typename T>
Result<void> read(const toml::table& t, const char* key, T& out, const std::string& path) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return {};
  if constexpr (std::is_same_v<T, std::string>) {
    if (auto v = node->value<std::string>()) {
      out = *v;
      return {};
    }
  } else {
    if (auto v = node->value<int64_t>(); v && *v >= 0) {
      out = static_cast<T>(*v);
      return {};
    }
  }
  return fail(ErrorCode::kInvalidRequest,
              fmt::format("{}: key '{}' has the wrong type (expected {})", path, key,
                          std::is_same_v<T, std::string> ? "a string" : "a non-negative integer"));
}

}  // namespace

Result<void> load_config_file(const std::string& path, WpmdOptions& o) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("cannot read configuration {}: {} (line {})", path, e.description(),
                            e.source().begin.line));
  }
  if (auto r = unknown_keys(root, {"data", "log_level", "store", "metrics", "agents", "gateway", "backup"}, "", path); !r) return r;
  if (auto r = read(root, "data", o.data_dir, path); !r) return r;
  if (auto r = read(root, "log_level", o.log_level, path); !r) return r;
  if (const auto* store = root["store"].as_table()) {
    if (auto r = unknown_keys(*store,
                              {"request_endpoint", "publish_endpoint", "publish_hwm",
                               "idempotency_window_s", "batch_events_max", "read_page_events_max",
                               "mark_sync_interval_ms", "wal_early_sync_bytes"},
                              "store.", path);
        !r) {
      return r;
    }
    if (auto r = read(*store, "request_endpoint", o.server.request_endpoint, path); !r) return r;
    if (auto r = read(*store, "publish_endpoint", o.server.publish_endpoint, path); !r) return r;
    if (auto r = read(*store, "publish_hwm", o.server.publish_hwm, path); !r) return r;
    if (auto r = read(*store, "idempotency_window_s", o.store.idempotency_window_s, path); !r) return r;
    if (auto r = read(*store, "batch_events_max", o.store.batch_events_max, path); !r) return r;
    if (auto r = read(*store, "read_page_events_max", o.store.read_page_events_max, path); !r) return r;
    if (auto r = read(*store, "mark_sync_interval_ms", o.store.mark_sync_interval_ms, path); !r) return r;
    if (auto r = read(*store, "wal_early_sync_bytes", o.store.wal_early_sync_bytes, path); !r) return r;
  }
  if (const auto* agents = root["agents"].as_table()) {
    if (auto r = unknown_keys(*agents, {"public_endpoint", "channel_endpoint", "registration_password_file"},
                              "agents.", path);
        !r) {
      return r;
    }
    if (auto r = read(*agents, "public_endpoint", o.agent_public_endpoint, path); !r) return r;
    if (auto r = read(*agents, "channel_endpoint", o.agent_channel_endpoint, path); !r) return r;
    if (auto r = read(*agents, "registration_password_file", o.registration_password_file, path); !r) return r;
  }
  if (const auto* gateway = root["gateway"].as_table()) {
    if (auto r = unknown_keys(*gateway, {"endpoint", "pam_service", "session_ttl_s"}, "gateway.", path); !r) return r;
    if (auto r = read(*gateway, "endpoint", o.gateway_endpoint, path); !r) return r;
    if (auto r = read(*gateway, "pam_service", o.pam_service, path); !r) return r;
    if (auto r = read(*gateway, "session_ttl_s", o.session_ttl_s, path); !r) return r;
  }
  if (const auto* backup = root["backup"].as_table()) {
    if (auto r = unknown_keys(*backup, {"dir", "interval_s", "keep"}, "backup.", path); !r) return r;
    if (auto r = read(*backup, "dir", o.backup_dir, path); !r) return r;
    if (auto r = read(*backup, "interval_s", o.backup_interval_s, path); !r) return r;
    if (auto r = read(*backup, "keep", o.backup_keep, path); !r) return r;
    if (o.backup_interval_s != 0 && (o.backup_interval_s < 60 || o.backup_interval_s > 30 * 86'400)) {
      return fail(ErrorCode::kInvalidRequest,
                  fmt::format("{}: backup.interval_s {} must be 0 (no schedule) or from 60 to 2592000 (30 days)", path,
                              o.backup_interval_s));
    }
    if (o.backup_keep < 1 || o.backup_keep > 1000) {
      return fail(ErrorCode::kInvalidRequest, fmt::format("{}: backup.keep {} must be from 1 to 1000", path,
                                                          o.backup_keep));
    }
  }
  if (const auto* metrics = root["metrics"].as_table()) {
    if (auto r = unknown_keys(*metrics, {"listen", "discovery_dir", "raw_retention_s", "aggregate_retention_s"}, "metrics.",
                                path);
        !r) {
      return r;
    }
    if (auto r = read(*metrics, "listen", o.metrics_listen, path); !r) return r;
    if (auto r = read(*metrics, "discovery_dir", o.discovery_dir, path); !r) return r;
    if (auto r = read(*metrics, "raw_retention_s", o.samples.raw_retention_s, path); !r) return r;
    if (auto r = read(*metrics, "aggregate_retention_s", o.samples.aggregate_retention_s, path); !r) return r;
  }
  return {};
}

Result<std::set<std::string>> parse_services(const std::string& list) {
  static const std::set<std::string> kBuilt = {"store", "inventory", "compatibility", "executor", "policy", "gateway"};
  std::set<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {  // bounded: each round moves past a comma
    size_t comma = list.find(',', start);
    std::string name = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!kBuilt.contains(name)) {
      return fail(ErrorCode::kInvalidRequest,
                  fmt::format("--services: '{}' is not a service; choose from {}", name, fmt::join(kBuilt, ",")));
    }
    out.insert(name);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

Result<void> validate(const WpmdOptions& o) {
  if (o.samples.raw_retention_s < 3600 || o.samples.raw_retention_s > 90 * 86'400) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("metrics.raw_retention_s = {} must be from 3600 (1 h) to 7776000 (90 days)",
                            o.samples.raw_retention_s));
  }
  if (o.samples.aggregate_retention_s < o.samples.raw_retention_s || o.samples.aggregate_retention_s > 5 * 365 * 86'400) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("metrics.aggregate_retention_s = {} must be at least metrics.raw_retention_s ({}) and "
                            "at most 5 years",
                            o.samples.aggregate_retention_s, o.samples.raw_retention_s));
  }
  if (o.services.empty()) return fail(ErrorCode::kInvalidRequest, "--services names no service");
  if (o.services.contains("store") && !o.remote_store.empty()) {
    return fail(ErrorCode::kInvalidRequest,
                "--store names a remote store, but this wpmd runs the store itself; drop --store, or leave "
                "store out of --services");
  }
  if (!o.services.contains("store")) {
    if (o.remote_store.empty()) {
      return fail(ErrorCode::kInvalidRequest,
                  "without the store service, give the store to use: --store tcp://HOST:9515 --publish "
                  "tcp://HOST:9516");
    }
    if (o.services.contains("inventory")) {
      return fail(ErrorCode::kInvalidRequest,
                  "inventory runs inside the wpmd that hosts the store (it serves the agents' ports from the "
                  "store's own reads); run it with --services store,inventory");
    }
    if (auto problem = bus::connect_endpoint_problem(o.remote_store); !problem.empty()) {
      return fail(ErrorCode::kInvalidRequest, "--store: " + problem);
    }
  }
  if (o.services.contains("executor") && !o.services.contains("inventory")) {
    return fail(ErrorCode::kInvalidRequest,
                "the executor decides from the inventory in its own process: run it with --services "
                "store,inventory,executor (or leave it out)");
  }
  if (o.services.contains("policy") && !o.services.contains("executor")) {
    return fail(ErrorCode::kInvalidRequest,
                "the policy decides from the inventory and the executor in their process: run it with --services "
                "store,inventory,executor,policy (or leave it out)");
  }
  if (o.services.contains("gateway") && !o.services.contains("inventory")) {
    return fail(ErrorCode::kInvalidRequest,
                "the gateway answers from the inventory in its own process: run it with --services "
                "store,inventory,gateway (or leave it out)");
  }
  if (!o.gateway_endpoint.starts_with("tcp://") && !o.gateway_endpoint.starts_with("ipc://")) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("gateway endpoint '{}' must start with tcp:// or ipc://", o.gateway_endpoint));
  }
  if (o.session_ttl_s < 60 || o.session_ttl_s > 30 * 86'400) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("session_ttl_s is {}; use 60 (a minute) to 2592000 (30 days)", o.session_ttl_s));
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info",    "warn",
                                                "error", "critical", "off"};
  if (!kLevels.contains(o.log_level)) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("log level '{}' is not one of {}", o.log_level, fmt::join(kLevels, ", ")));
  }
  for (const auto* e : {&o.server.request_endpoint, &o.server.publish_endpoint}) {
    if (!e->starts_with("tcp://") && !e->starts_with("ipc://") && !e->starts_with("inproc://")) {
      return fail(ErrorCode::kInvalidRequest,
                  fmt::format("endpoint '{}' must start with tcp://, ipc:// or inproc://", *e));
    }
  }
  for (const auto* e : {&o.agent_public_endpoint, &o.agent_channel_endpoint}) {
    if (!e->starts_with("tcp://")) {
      return fail(ErrorCode::kInvalidRequest,
                  fmt::format("agent endpoint '{}' must start with tcp:// (agents connect from other hosts)", *e));
    }
  }
  if (o.server.publish_hwm < 0) {
    return fail(ErrorCode::kInvalidRequest, "publish_hwm must be 0 (no limit) or more");
  }
  if (o.store.mark_sync_interval_ms > 1000) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("mark_sync_interval_ms is {}; use 0 (sync before every reply) to 1000",
                            o.store.mark_sync_interval_ms));
  }
  if (o.store.batch_events_max == 0 || o.store.read_page_events_max == 0) {
    return fail(ErrorCode::kInvalidRequest, "batch_events_max and read_page_events_max must be > 0");
  }
  return {};
}

}  // namespace wpm::wpmd
