#pragma once
// The fleet commands of `wpm`, sent to wpmd's gateway: login, logout, whoami,
// system, wpar, group, compat, role, settings and events.

#include <CLI/CLI.hpp>

#include "tools/wpm/log_commands.h"

namespace wpm::cli {

void add_fleet_commands(CLI::App& app, GlobalOptions& global, int& exit_code);

}  // namespace wpm::cli
