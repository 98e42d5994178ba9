#pragma once
// Output helpers of the wpm CLI: JSON with the schema's field names, tables,
// colour only on a terminal and never with NO_COLOR.

#include <nlohmann/json.hpp>
#include <string>

#include "schemas/event_json.h"
#include "schemas/events.h"
#include "schemas/protocol.h"

namespace wpm::cli {

enum class Format { kTable, kJson };

// Exit codes (README "Exit codes").
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNotFound = 3;

nlohmann::json stats_to_json(const StatsReply& stats);
std::string format_time(int64_t timestamp_ns);

// One table row per event: SEQUENCE TIME TYPE STREAM VERSION ACTOR.
std::string event_table_header();
std::string event_table_row(const Event& event);

bool stderr_is_terminal();
// Prints "wpm: <message>" to stderr (red on a terminal unless NO_COLOR).
void print_error(const std::string& message);

}  // namespace wpm::cli
