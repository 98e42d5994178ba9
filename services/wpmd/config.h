#pragma once
// wpmd's options: defaults, then the TOML configuration file, then flags.

#include <optional>
#include <string>

#include "eventstore/options.h"
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
  // Agents (DESIGN.md §3, §8): the public port (manager key, registration)
  // and the CURVE agent channel. Defaults: tcp://0.0.0.0:9513 and :9514.
  std::string agent_public_endpoint = "tcp://0.0.0.0:9513";
  std::string agent_channel_endpoint = "tcp://0.0.0.0:9514";
  // File holding the registration password (first line). wpmd keeps only a
  // salted hash of it (DATA/registration.hash). Empty: keep the stored hash,
  // or refuse registrations when there is none.
  std::string registration_password_file;
  eventstore::StoreOptions store;
  eventstore::ServerOptions server;
};

// Reads `path` (TOML) over `options`. Unknown keys are errors, so that a typo
// never silently falls back to a default.
[[nodiscard]] Result<void> load_config_file(const std::string& path, WpmdOptions& options);

// Checks values that flags and files cannot check themselves.
[[nodiscard]] Result<void> validate(const WpmdOptions& options);

}  // namespace wpm::wpmd
