#include "tools/wpm/output.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace wpm::cli {

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  if (size_t rest = bytes.size() - i; rest > 0) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    if (rest == 2) v |= uint8_t(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string format_time(int64_t ns) {
  std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, (ns / 1'000'000) % 1000);
}

nlohmann::json event_to_json(const Event& e) {
  nlohmann::json payload = std::visit(
      [](const auto& p) -> nlohmann::json {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, Synthetic>) {
          return {{"synthetic",
                   {{"run", p.run}, {"index", p.index}, {"note", p.note}, {"blob", base64(p.blob)}}}};
        } else if constexpr (std::is_same_v<T, SystemRegistered>) {
          return {{"systemRegistered",
                   {{"systemId", p.system_id},
                    {"hostname", p.hostname},
                    {"address", p.address},
                    {"publicKey", p.public_key},
                    {"profile", profile::profile_to_json(p.profile)},
                    {"agentPort", p.agent_port}}}};
        } else if constexpr (std::is_same_v<T, SystemRemoved>) {
          return {{"systemRemoved", {{"systemId", p.system_id}, {"reason", p.reason}}}};
        } else if constexpr (std::is_same_v<T, CompatibilityAnalyzed>) {
          nlohmann::json results = nlohmann::json::array();
          for (const auto& r : p.results) {
            results.push_back({{"test", r.test}, {"passed", r.passed}, {"departure", r.departure},
                               {"arrival", r.arrival}, {"remedy", r.remedy}});
          }
          return {{"compatibilityAnalyzed",
                   {{"departureProperties", p.departure_properties},
                    {"arrivalProperties", p.arrival_properties},
                    {"results", results}}}};
        } else if constexpr (std::is_same_v<T, UnknownPayload>) {
          // A newer binary's event: kept as the bytes of its payload.
          return {{"unknown", {{"type", p.type}, {"bytes", base64(p.bytes)}}}};
        } else if constexpr (std::is_same_v<T, SystemProfileChanged>) {
          return {{"systemProfileChanged",
                   {{"systemId", p.system_id}, {"profile", profile::profile_to_json(p.profile)}}}};
        } else {
          return {{"registrationRejected",
                   {{"address", p.address},
                    {"reason", p.reason},
                    {"attempts", p.attempts},
                    {"firstNs", p.first_ns},
                    {"lastNs", p.last_ns},
                    {"hostname", p.hostname},
                    {"publicKey", p.public_key}}}};
        }
      },
      e.payload);
  return {{"sequence", e.sequence},
          {"eventId", event_id_hex(e.event_id)},
          {"timestampNs", e.timestamp_ns},
          {"type", event_type_label(e.type())},
          {"streamId", e.stream_id},
          {"streamVersion", e.stream_version},
          {"correlationId", e.correlation_id},
          {"causationId", e.causation_id},
          {"actor", e.actor},
          {"idempotencyKey", e.idempotency_key},
          {"payload", payload}};
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
