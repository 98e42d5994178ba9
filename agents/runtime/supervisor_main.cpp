// wpm-wpar-supervisor: the per-WPAR supervisor process (agents/runtime/supervisor.h).
// Started by the agent, never by hand.

#include <CLI/CLI.hpp>

#include "agents/runtime/supervisor.h"

int main(int argc, char** argv) {
  CLI::App app{"wpm-wpar-supervisor: runs one WPAR's workload for wpm-agent (not for direct use)"};
  std::string root, name, cgroup;
  int ready_fd = -1;
  app.add_option("--wpars-root", root)->required();
  app.add_option("--name", name)->required();
  app.add_option("--cgroup", cgroup)->required();
  app.add_option("--ready-fd", ready_fd)->required();
  std::vector<std::string> masks;
  app.add_option("--mask", masks, "host directory a system WPAR must not see (repeatable)");
  bool no_idmap = false;
  app.add_flag("--no-idmap", no_idmap, "never idmapped copies of the host's layers ([agent] idmap_host_layers = false)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return wpm::runtime::supervisor_main(root, name, cgroup, ready_fd, masks, !no_idmap);
}
