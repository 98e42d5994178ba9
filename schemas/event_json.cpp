#include "schemas/event_json.h"

#include "schemas/profile.h"

namespace wpm {

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

nlohmann::json payload_to_json(const Payload& payload) {
  return std::visit(
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
        } else if constexpr (std::is_same_v<T, CommandRequested>) {
          return {{"commandRequested",
                   {{"command", p.command},
                    {"args", nlohmann::json::parse(p.args, nullptr, false)},
                    {"user", p.user},
                    {"roles", p.roles},
                    {"address", p.address}}}};
        } else if constexpr (std::is_same_v<T, CommandDecided>) {
          return {{"commandDecided",
                   {{"accepted", p.accepted}, {"code", p.code}, {"message", p.message}, {"decidedBy", p.decided_by}}}};
        } else if constexpr (std::is_same_v<T, WparDefined>) {
          return {{"wparDefined", {{"wpar", wpar_to_json(p.wpar)}, {"created", p.created}}}};
        } else if constexpr (std::is_same_v<T, WparRemoved>) {
          return {{"wparRemoved", {{"name", p.name}, {"reason", p.reason}}}};
        } else if constexpr (std::is_same_v<T, GroupDefined>) {
          return {{"groupDefined", {{"name", p.name}, {"description", p.description}, {"created", p.created}}}};
        } else if constexpr (std::is_same_v<T, GroupDeleted>) {
          return {{"groupDeleted", {{"name", p.name}}}};
        } else if constexpr (std::is_same_v<T, SettingChanged>) {
          return {{"settingChanged", {{"key", p.key}, {"value", p.value}, {"previous", p.previous}}}};
        } else if constexpr (std::is_same_v<T, RoleMappingChanged>) {
          return {{"roleMappingChanged", {{"role", p.role}, {"users", p.users}, {"groups", p.groups}}}};
        } else if constexpr (std::is_same_v<T, SessionOpened>) {
          return {{"sessionOpened",
                   {{"user", p.user}, {"tokenHash", p.token_hash}, {"expiresNs", p.expires_ns}, {"address", p.address}}}};
        } else if constexpr (std::is_same_v<T, SessionClosed>) {
          return {{"sessionClosed", {{"tokenHash", p.token_hash}, {"reason", p.reason}}}};
        } else if constexpr (std::is_same_v<T, LoginRefused>) {
          return {{"loginRefused",
                   {{"user", p.user},
                    {"address", p.address},
                    {"reason", p.reason},
                    {"attempts", p.attempts},
                    {"firstNs", p.first_ns},
                    {"lastNs", p.last_ns}}}};
        } else if constexpr (std::is_same_v<T, JoinTokenCreated>) {
          return {{"joinTokenCreated", {{"tokenHash", p.token_hash}, {"expiresNs", p.expires_ns}}}};
        } else if constexpr (std::is_same_v<T, JoinTokenUsed>) {
          return {{"joinTokenUsed", {{"tokenHash", p.token_hash}, {"systemId", p.system_id}}}};
        } else if constexpr (std::is_same_v<T, DomainDefined>) {
          return {{"domainDefined", {{"name", p.name}, {"description", p.description}, {"created", p.created}}}};
        } else if constexpr (std::is_same_v<T, DomainRemoved>) {
          return {{"domainRemoved", {{"name", p.name}}}};
        } else if constexpr (std::is_same_v<T, SystemDomainSet>) {
          return {{"systemDomainSet", {{"systemId", p.system_id}, {"domain", p.domain}, {"previous", p.previous}}}};
        } else if constexpr (std::is_same_v<T, AgentReportRefused>) {
          return {{"agentReportRefused", {{"systemId", p.system_id}, {"subject", p.subject}, {"reason", p.reason}}}};
        } else if constexpr (std::is_same_v<T, SystemStateChanged>) {
          return {{"systemStateChanged", {{"systemId", p.system_id}, {"state", p.state}, {"reason", p.reason}}}};
        } else {
          static_assert(std::is_same_v<T, RegistrationRejected>);
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
      payload);
}

nlohmann::json wpar_to_json(const WparDefinition& w) {
  return {{"name", w.name},
          {"type", w.type},
          {"command", w.command},
          {"checkpointable", w.checkpointable},
          {"triggerSignal", w.trigger_signal},
          {"triggerCommand", w.trigger_command},
          {"cpuShares", w.cpu_shares},
          {"cpuLimitPercent", w.cpu_limit_percent},
          {"memoryBytes", w.memory_bytes},
          {"processesMax", w.processes_max},
          {"address", w.address},
          {"capabilities", w.capabilities},
          {"group", w.group},
          {"system", w.system},
          {"discovered", w.discovered},
          {"reportedState", w.reported_state}};
}

nlohmann::json event_to_json(const Event& e) {
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
          {"payload", payload_to_json(e.payload)}};
}

}  // namespace wpm
