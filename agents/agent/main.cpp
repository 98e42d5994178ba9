// wpm-agent: the wpm agent of a host (DESIGN.md §1, §5, §8): the daemon
// (configure, run, start, stop, restart, status) and the local WPAR commands.
// While a daemon runs on the data directory, local commands run through it
// (its root-only socket); without one they act on the host directly.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "agents/agent/agent_commands.h"
#include "agents/agent/daemon.h"
#include "agents/agent/local_commands.h"
#include "wpm_version.h"

namespace {

// The arguments to forward (without --data, which the daemon sets) when the
// command is a local WPAR command; empty otherwise.
std::vector<std::string> local_command_args(int argc, char** argv, const std::set<std::string>& local_commands) {
  std::vector<std::string> forwarded;
  bool local = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {  // the workload's own arguments: passed on untouched
      forwarded.insert(forwarded.end(), argv + i, argv + argc);
      break;
    }
    if (a == "--data" && i + 1 < argc) {
      ++i;
      continue;
    }
    if (a.starts_with("--data=")) continue;
    if (!local && (a == "-o" || a == "--output") && i + 1 < argc) {
      forwarded.push_back(a);
      forwarded.push_back(argv[++i]);
      continue;
    }
    if (!local && !a.starts_with("-")) {
      if (!local_commands.contains(a)) return {};
      local = true;
    }
    forwarded.push_back(a);
  }
  return local ? forwarded : std::vector<std::string>{};
}

}  // namespace

int main(int argc, char** argv) {
  using namespace wpm::agent;
  CLI::App app{"wpm-agent: the wpm agent of this host (daemon and local WPAR commands)", "wpm-agent"};
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
    paths = AgentPaths::configured(data);
    format = output == "json" ? OutputFormat::kJson : OutputFormat::kTable;
  });
  add_daemon_commands(app, paths, format, exit_code);
  std::set<std::string> daemon_commands;
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    daemon_commands.insert(sub->get_name());
  }
  add_local_commands(app, paths, format, exit_code);
  std::set<std::string> local_commands;
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (!daemon_commands.contains(sub->get_name())) local_commands.insert(sub->get_name());
  }
  // clogin is interactive: it needs this process's controlling terminal.
  local_commands.erase("clogin");

  if (std::getenv(kDirectEnv) == nullptr) {
    auto forwarded = local_command_args(argc, argv, local_commands);
    if (!forwarded.empty()) {
      // --data may come anywhere; find it the way the parser would.
      for (int i = 1; i < argc && std::string(argv[i]) != "--"; ++i) {
        std::string a = argv[i];
        if (a == "--data" && i + 1 < argc) data = argv[i + 1];
        if (a.starts_with("--data=")) data = a.substr(7);
      }
      if (auto code = forward_to_daemon(AgentPaths::from_data_dir(data).data_dir, forwarded)) return *code;
    }
  }
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
