// wpm: the command line of the Workload Partition Manager: the fleet
// commands (through wpmd's gateway), `wpm log` (the event log tools) and
// `wpm admin`. main() parses and dispatches only.

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "bus/frame.h"
#include "tools/wpm/admin_commands.h"
#include "tools/wpm/backup_commands.h"
#include "tools/wpm/fleet_commands.h"
#include "tools/wpm/log_commands.h"
#include "tools/wpm/output.h"
#include "wpm_version.h"

namespace {
constexpr const char* kDefaultStore = "tcp://127.0.0.1:9515";  // DESIGN.md §3

// wpmd's default: ./var/wpm from a checkout, /var/lib/wpm when installed.
std::string default_data_dir() {
  std::error_code ec;
  return std::filesystem::is_directory("./var/wpm", ec) ? "./var/wpm" : "/var/lib/wpm";
}

// The request endpoint wpmd wrote into DATA/endpoints; empty when none.
std::string endpoint_in(const std::string& data_dir) {
  std::ifstream in(data_dir + "/endpoints");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("request=")) return line.substr(8);
  }
  return "";
}
}  // namespace

int main(int argc, char** argv) {
  using namespace wpm::cli;
  auto log = spdlog::stderr_logger_mt("wpm");
  log->set_level(spdlog::level::warn);

  CLI::App app{"wpm: Workload Partition Manager command line", "wpm"};
  app.set_version_flag("--version", std::string("wpm ") + wpm::kVersion);
  app.require_subcommand(1);
  GlobalOptions g;
  const char* env_store = std::getenv("WPM_STORE");
  g.store = env_store != nullptr ? env_store : "";
  const char* env_data = std::getenv("WPM_DATA");
  g.data_dir = env_data != nullptr ? env_data : "";
  app.add_option("--data", g.data_dir,
                 "wpmd's data directory: its endpoints and the administrator key (root only) "
                 "(default: WPM_DATA, else ./var/wpm when it exists, else /var/lib/wpm)");
  app.add_option("--store", g.store,
                 "event store request endpoint (default: WPM_STORE, else the one in DATA/endpoints, "
                 "else tcp://127.0.0.1:9515)");
  g.gateway = std::getenv("WPM_GATEWAY") != nullptr ? std::getenv("WPM_GATEWAY") : "";
  g.gateway_key = std::getenv("WPM_GATEWAY_KEY") != nullptr ? std::getenv("WPM_GATEWAY_KEY") : "";
  app.add_option("--gateway", g.gateway,
                 "the gateway's endpoint (default: WPM_GATEWAY, else the one in DATA/endpoints, else "
                 "tcp://127.0.0.1:9520)");
  app.add_option("--gateway-key", g.gateway_key,
                 "the gateway's CURVE public key, when it listens beyond loopback (default: WPM_GATEWAY_KEY, else "
                 "DATA/endpoints)");
  std::string output = "table";
  app.add_option("-o,--output", output, "output format: table or json")
      ->check(CLI::IsMember({"table", "json"}));
  app.add_option("--timeout", g.timeout_ms, "milliseconds to wait for each reply (default 5000)")
      ->check(CLI::Range(1, 3'600'000));
  app.add_option("--attempts", g.attempts, "attempts for a request that is safe to repeat (default 3)")
      ->check(CLI::Range(1, 100));
  app.fallthrough();
  int exit_code = kExitOk;
  add_fleet_commands(app, g, exit_code);
  add_log_commands(app, g, exit_code);
  add_admin_commands(app, g, exit_code);
  add_backup_commands(app, g, exit_code);
  app.parse_complete_callback([&] {
    g.format = output == "json" ? Format::kJson : Format::kTable;
    // Checked here, after --help, and whether it came from --store or the
    // environment (an empty WPM_STORE means unset).
    if (g.data_dir.empty()) g.data_dir = default_data_dir();
    if (g.store.empty()) g.store = endpoint_in(g.data_dir);
    if (g.store.empty()) g.store = kDefaultStore;
    if (auto problem = wpm::bus::connect_endpoint_problem(g.store); !problem.empty()) {
      throw CLI::ValidationError("--store", problem);
    }
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "wpm: %s\nRun with --help for usage.\n", e.what());
    return kExitUsage;
  } catch (const zmq::error_t& e) {
    // An endpoint ZeroMQ refuses that the check above let through.
    std::fprintf(stderr, "wpm: cannot use the endpoint (%s); expected tcp://HOST:PORT or ipc://PATH\n",
                 e.what());
    return kExitUsage;
  }
  return exit_code;
}
