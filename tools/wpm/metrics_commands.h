#pragma once
// `wpm system metrics NAME` and `wpm wpar metrics NAME` (seed "Viewing
// performance metrics"): the recent trend of selected metrics and the longer
// history, as a table with a small chart on a terminal, or the whole
// history with -o json.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "schemas/metrics.h"

#include "tools/wpm/log_commands.h"

namespace wpm::cli {

// Adds `metrics` under `parent` (the system or wpar command); `kind` is
// "system" or "wpar".
void add_metrics_command(CLI::App& parent, const std::string& kind, GlobalOptions& global, int& exit_code);

// Durations ("90s", "15m", "6h", "30d") are read by metrics::parse_duration_s.
using metrics::parse_duration_s;
// A chart of `values` in `width` columns of ▁▂▃▄▅▆▇█ (nulls as spaces), scaled
// from the smallest to the largest value.
std::string sparkline(const nlohmann::json& values, size_t width);
// The table of a metrics query's result.
std::string metrics_table(const nlohmann::json& result, bool chart);

}  // namespace wpm::cli
