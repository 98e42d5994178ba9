#pragma once
// `wpm admin …`: repairs of a data directory with wpmd stopped.

#include <CLI/CLI.hpp>

#include "tools/wpm/log_commands.h"

namespace wpm::cli {

void add_admin_commands(CLI::App& app, GlobalOptions& global, int& exit_code);

}  // namespace wpm::cli
