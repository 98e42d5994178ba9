#pragma once
// `wpm log …`: read, follow, verify and load the event log.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>

#include "bus/client.h"
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

// A store client's options with the administrator's credentials from --data.
Result<bus::ClientOptions> client_options(const GlobalOptions& g);

// Checks the log of a data directory offline (wpmd stopped, or a backup):
// checksums, hash chain, gap-free sequences. Prints the verdict (with
// `extra` in its JSON object); the exit code.
int cmd_verify_offline(const GlobalOptions& g, const std::string& data_dir,
                       const nlohmann::json& extra = nlohmann::json::object());

}  // namespace wpm::cli
