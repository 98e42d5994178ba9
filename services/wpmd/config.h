#pragma once
// wpmd's options: defaults, then the TOML configuration file, then flags.

#include <optional>
#include <set>
#include <string>

#include "eventstore/options.h"
#include "eventstore/samples.h"
#include "eventstore/server.h"
#include "schemas/error.h"

namespace wpm::wpmd {

struct WpmdOptions {
  // Data directory. Default: ./var/wpm (a checkout); /var/lib/wpm when installed.
  std::string data_dir = "./var/wpm";
  // trace, debug, info, warn, error, critical, off. Default: info.
  std::string log_level = "info";
  // Prometheus endpoint, host:port; port 0 picks one. Default: 127.0.0.1:9521.
  std::string metrics_listen = "127.0.0.1:9521";
  // Where wpmd writes Prometheus' file-based discovery (wpmd.json, the
  // agents in agents.json; deploy/prometheus.yml). Default: DATA/prometheus.
  std::string discovery_dir;
  // Agents (DESIGN.md §3, §8): the public port (manager key, registration)
  // and the CURVE agent channel. Defaults: tcp://0.0.0.0:9513 and :9514.
  std::string agent_public_endpoint = "tcp://0.0.0.0:9513";
  std::string agent_channel_endpoint = "tcp://0.0.0.0:9514";
  // File holding the registration password (first line). wpmd keeps only a
  // salted hash of it (DATA/registration.hash). Empty: keep the stored hash,
  // or refuse registrations when there is none.
  std::string registration_password_file;
  // The services this process runs (DESIGN.md §2): any of store, inventory,
  // compatibility, gateway. The embedded default runs them all; a service
  // may run as its own process against a remote store (compatibility so
  // far; the gateway runs beside the inventory). Default: all.
  std::set<std::string> services = {"store", "inventory", "compatibility", "executor", "policy", "gateway"};
  // The gateway (operators' requests). Beyond loopback it uses CURVE with
  // DATA/keys/gateway.key. Default: tcp://127.0.0.1:9520.
  std::string gateway_endpoint = "tcp://127.0.0.1:9520";
  // The PAM service logins are checked with (/etc/pam.d/<name>). Default: wpm.
  std::string pam_service = "wpm";
  // A directory holding that service file instead of /etc/pam.d (tests).
  std::string pam_config_dir;
  // How long a login lasts, seconds. Default: 28800 (8 h).
  int64_t session_ttl_s = 28'800;
  // Without the store: the remote store's request and publication
  // endpoints. This process proves who it is with DATA/keys/services/NAME.key
  // (from `wpmd keys add-service NAME` on the store's host) and checks the
  // store with DATA/keys/store.pub. Default: none.
  std::string remote_store;
  std::string remote_publish;
  eventstore::StoreOptions store;
  eventstore::ServerOptions server;
  // Metric history ([metrics] raw_retention_s, aggregate_retention_s).
  // Defaults: 24 h of raw samples, 30 days of 5-minute aggregates.
  eventstore::SampleOptions samples;
  // Backups ([backup]): where `wpm backup create` without a directory and
  // the schedule write (default DATA/backups); how often the schedule makes
  // one (interval_s; 0: never, the default; deploy/wpmd.toml: daily), and
  // how many finished ones it keeps (keep; default 7).
  std::string backup_dir;
  int64_t backup_interval_s = 0;
  int64_t backup_keep = 7;
  // --restore: a backup copied into the (empty) data directory before start.
  std::string restore_from;
};

// Parses --services: names separated by commas.
[[nodiscard]] Result<std::set<std::string>> parse_services(const std::string& list);

// Reads `path` (TOML) over `options`. Unknown keys are errors, so that a typo
// never silently falls back to a default.
[[nodiscard]] Result<void> load_config_file(const std::string& path, WpmdOptions& options);

// Checks values that flags and files cannot check themselves.
[[nodiscard]] Result<void> validate(const WpmdOptions& options);

}  // namespace wpm::wpmd
