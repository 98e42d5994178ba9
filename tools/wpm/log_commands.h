#pragma once
// `wpm log …`: read, follow, verify and load the event log.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "tools/wpm/output.h"

namespace wpm::cli {

struct GlobalOptions {
  // The data directory of the wpmd to use: its DATA/endpoints and the
  // administrator key in DATA/keys (root only).
  std::string data_dir;
  std::string store;  // request endpoint of the store
  std::string gateway;      // the gateway's endpoint ("" = DATA/endpoints, else tcp://127.0.0.1:9520)
  std::string gateway_key;  // the gateway's CURVE public key when it listens beyond loopback
  Format format = Format::kTable;
  int timeout_ms = 5000;
  int attempts = 3;
};

// Registers the `log` subcommands on `app`; they run through `run_command`.
void add_log_commands(CLI::App& app, GlobalOptions& global, int& exit_code);

}  // namespace wpm::cli
