#pragma once
// `wpm group policy show|set`, `wpm group state`, `wpm group explain` (seed
// "Policy-based relocation", "Metric policy settings", "Group policy
// settings"; docs/policy.md).

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>

#include "tools/wpm/log_commands.h"

namespace wpm::cli {

// Adds them under `group`; `print_decision` prints a change's decision.
// wpm policy simulate: the what-if simulation.
void add_simulate_command(CLI::App& app, GlobalOptions& global, int& exit_code);

void add_policy_commands(CLI::App& group, GlobalOptions& global, int& exit_code,
                         std::function<void(const nlohmann::json&)> print_decision);

// The tables of group.state and group.explain, and of a policy.
std::string group_state_table(const nlohmann::json& state);
std::string policy_table(const nlohmann::json& policy);

}  // namespace wpm::cli
