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
  eventstore::StoreOptions store;
  eventstore::ServerOptions server;
};

// Reads `path` (TOML) over `options`. Unknown keys are errors, so that a typo
// never silently falls back to a default.
[[nodiscard]] Result<void> load_config_file(const std::string& path, WpmdOptions& options);

// Checks values that flags and files cannot check themselves.
[[nodiscard]] Result<void> validate(const WpmdOptions& options);

}  // namespace wpm::wpmd
