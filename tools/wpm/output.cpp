#include "tools/wpm/output.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace wpm::cli {

std::string format_time(int64_t ns) {
  std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, (ns / 1'000'000) % 1000);
}

nlohmann::json stats_to_json(const StatsReply& s) {
  nlohmann::json per_type = nlohmann::json::object();
  for (const auto& t : s.per_type) per_type[std::string(event_type_name(t.type))] = t.count;
  return {{"head", s.head},
          {"eventCount", s.event_count},
          {"logBytes", s.log_bytes},
          {"diskBytes", s.disk_bytes},
          {"perType", per_type},
          {"unknownEvents", s.unknown_events},
          {"readOnly", s.read_only},
          {"readOnlyReason", s.read_only_reason},
          {"dataDir", s.data_dir}};
}

std::string event_table_header() {
  return fmt::format("{:<10} {:<24} {:<18} {:<32} {:>8} {}", "SEQUENCE", "TIME", "TYPE", "STREAM",
                     "VERSION", "ACTOR");
}

std::string event_table_row(const Event& e) {
  return fmt::format("{:<10} {:<24} {:<18} {:<32} {:>8} {}", e.sequence, format_time(e.timestamp_ns),
                     event_type_label(e.type()), e.stream_id, e.stream_version, e.actor);
}

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) != 0; }

void print_error(const std::string& message) {
  bool colour = stderr_is_terminal() && std::getenv("NO_COLOR") == nullptr;
  std::fprintf(stderr, "%swpm: %s%s\n", colour ? "\033[31m" : "", message.c_str(),
               colour ? "\033[0m" : "");
}

}  // namespace wpm::cli
