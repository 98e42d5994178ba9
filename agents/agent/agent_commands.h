#pragma once
// The daemon's commands of wpm-agent: configure (register with a manager),
// run (foreground), start, stop, restart and status (the daemon with its pid
// file). Each stores its exit code (README: 0 ok, 1 failed, 2 usage,
// 3 not running for status).

#include <CLI/CLI.hpp>

#include "agents/agent/local_commands.h"

namespace wpm::agent {

void add_daemon_commands(CLI::App& app, const AgentPaths& paths, OutputFormat& format, int& exit_code);

}  // namespace wpm::agent
