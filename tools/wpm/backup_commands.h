#pragma once
// `wpm backup create|list|verify` (README "Backup and restore").

#include <CLI/CLI.hpp>

#include "tools/wpm/log_commands.h"

namespace wpm::cli {

void add_backup_commands(CLI::App& app, GlobalOptions& global, int& exit_code);

}  // namespace wpm::cli
