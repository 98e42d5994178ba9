// wpm-agent: the per-host agent of wpm (DESIGN.md §1, §5). This first part
// holds the local WPAR commands; the daemon, registration and the manager
// channel come next (agents/README.md).

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>

#include "agents/agent/local_commands.h"
#include "wpm_version.h"

int main(int argc, char** argv) {
  using namespace wpm::agent;
  CLI::App app{"wpm-agent: the wpm agent of this host (local WPAR commands)", "wpm-agent"};
  app.set_version_flag("--version", std::string("wpm-agent ") + wpm::kVersion);
  app.require_subcommand(1);
  app.fallthrough();  // --data and -o may come before or after the subcommand
  std::string data = std::getenv("WPM_AGENT_DATA") != nullptr ? std::getenv("WPM_AGENT_DATA") : "/var/lib/wpm-agent";
  app.add_option("--data", data, "data directory (default /var/lib/wpm-agent, or WPM_AGENT_DATA)");
  std::string output = "table";
  app.add_option("-o,--output", output, "output of listings: table or json")
      ->check(CLI::IsMember({"table", "json"}));
  AgentPaths paths;
  OutputFormat format = OutputFormat::kTable;
  int exit_code = 0;
  app.parse_complete_callback([&] {
    paths = AgentPaths::from_data_dir(data);
    format = output == "json" ? OutputFormat::kJson : OutputFormat::kTable;
  });
  add_local_commands(app, paths, format, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string sub = app.get_subcommands().empty() ? "" : app.get_subcommands().front()->get_name();
    std::fprintf(stderr, "wpm-agent: %s\nRun with --help for usage.\n", e.what());
    return usage_exit_code(sub);
  }
  return exit_code;
}
