#pragma once
// The lifecycle commands of `wpm` (docs/executor.md): `wpm wpar deploy|start|
// stop|pause|resume|freeze|kill|remove`, each a task of the executor that the
// command waits for (progress on a terminal; --no-wait prints the task id),
// and `wpm task list|show|wait|cancel`.

#include <CLI/CLI.hpp>

#include "tools/wpm/log_commands.h"

namespace wpm::cli {

// Adds the lifecycle commands under `wpar` and the `task` command to `app`.
void add_lifecycle_commands(CLI::App& app, CLI::App& wpar, GlobalOptions& global, int& exit_code);

// Sends a lifecycle command (wpar.deploy, wpar.remove, …); waits for its
// task unless `no_wait`, with progress on a terminal. The exit code.
int run_task_command(const GlobalOptions& g, const std::string& command, const nlohmann::json& args, bool no_wait);

}  // namespace wpm::cli
