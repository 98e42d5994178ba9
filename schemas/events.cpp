#include "schemas/events.h"

#include <array>
#include <string>

#include "schemas/error.h"
#include "schemas/hash.h"

namespace wpm {
namespace {

// The profile's lists dominate its size; its scalars are a small constant.
size_t profile_bytes(const profile::SystemProfile& p) {
  size_t bytes = 256 + p.cpu_model.size() + p.kernel_version.size();
  for (const auto& f : p.cpu_flags) bytes += f.size() + 8;
  for (const auto& c : p.capabilities) bytes += c.size() + 8;
  for (const auto& c : p.cgroups) bytes += c.name.size() + c.mount.size() + 32;
  for (const auto& c : p.checkpointers) bytes += c.reason.size() + c.version.size() + 48;
  for (const auto& n : p.namespaces) bytes += n.size() + 8;
  for (const auto& i : p.network_interfaces) {
    bytes += i.name.size() + 24;
    for (const auto& a : i.addresses) bytes += a.size() + 8;
  }
  return bytes;
}
template <typename... S>
size_t sum_sizes(const S&... texts) {
  return (texts.size() + ...);
}
size_t list_bytes(const std::vector<std::string>& list) {
  size_t bytes = 0;
  for (const auto& t : list) bytes += t.size() + 8;
  return bytes;
}
// Index = EventType ordinal. Names are stable: they appear in topics and JSON.
constexpr std::array<std::string_view, kEventTypeMax + 1> kTypeNames = {
    "unspecified", "synthetic", "systemRegistered", "systemRemoved", "registrationRejected",
    "systemProfileChanged", "compatibilityAnalyzed", "commandRequested", "commandDecided",
    "wparDefined", "wparRemoved", "groupDefined", "groupDeleted", "settingChanged",
    "roleMappingChanged", "sessionOpened", "sessionClosed", "loginRefused", "systemStateChanged",
    "agentReportRefused", "joinTokenCreated", "joinTokenUsed", "domainDefined", "domainRemoved",
    "systemDomainSet", "taskCreated", "operationStarted", "operationFinished", "taskFinished", "wparPlaced", "taskApproved",
    "groupPolicySet", "mobilityDecided"};
}  // namespace

std::string_view event_type_name(EventType type) {
  auto i = static_cast<size_t>(type);
  return i < kTypeNames.size() ? kTypeNames[i] : std::string_view("unknown");
}

std::string event_type_label(EventType type) {
  if (known_event_type(type)) return std::string(event_type_name(type));
  return "unknown(" + std::to_string(static_cast<uint16_t>(type)) + ")";
}

std::optional<EventType> event_type_from_name(std::string_view name) {
  for (size_t i = 1; i < kTypeNames.size(); ++i) {
    if (kTypeNames[i] == name) return static_cast<EventType>(i);
  }
  return std::nullopt;
}

std::string event_id_hex(const EventId& id) { return to_hex(id); }

size_t payload_bytes(const Payload& payload) {
  return std::visit(
      [](const auto& p) -> size_t {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, Synthetic>) {
          return p.run.size() + p.note.size() + p.blob.size();
        } else if constexpr (std::is_same_v<T, SystemRegistered>) {
          return p.system_id.size() + p.hostname.size() + p.address.size() + p.public_key.size() +
                 profile_bytes(p.profile);
        } else if constexpr (std::is_same_v<T, SystemProfileChanged>) {
          return p.system_id.size() + profile_bytes(p.profile);
        } else if constexpr (std::is_same_v<T, SystemRemoved>) {
          return p.system_id.size() + p.reason.size();
        } else if constexpr (std::is_same_v<T, UnknownPayload>) {
          return p.bytes.size();
        } else if constexpr (std::is_same_v<T, CompatibilityAnalyzed>) {
          size_t bytes = p.departure_properties.size() + p.arrival_properties.size();
          for (const auto& r : p.results) bytes += r.test.size() + r.departure.size() + r.arrival.size() + r.remedy.size() + 16;
          return bytes;
        } else if constexpr (std::is_same_v<T, RegistrationRejected>) {
          return p.address.size() + p.reason.size() + p.hostname.size() + p.public_key.size() + 32;
        } else if constexpr (std::is_same_v<T, CommandRequested>) {
          return sum_sizes(p.command, p.args, p.user, p.address) + list_bytes(p.roles) + 32;
        } else if constexpr (std::is_same_v<T, CommandDecided>) {
          return sum_sizes(p.code, p.message, p.decided_by) + 16;
        } else if constexpr (std::is_same_v<T, WparDefined>) {
          const auto& w = p.wpar;
          return sum_sizes(w.name, w.type, w.command, w.trigger_signal, w.trigger_command, w.address,
                           w.capabilities, w.group, w.system, w.reported_state, w.operation, w.cause) + 72;
        } else if constexpr (std::is_same_v<T, WparRemoved>) {
          return sum_sizes(p.name, p.reason) + 16;
        } else if constexpr (std::is_same_v<T, GroupDefined>) {
          return sum_sizes(p.name, p.description) + 16;
        } else if constexpr (std::is_same_v<T, GroupDeleted>) {
          return p.name.size() + 16;
        } else if constexpr (std::is_same_v<T, SettingChanged>) {
          return sum_sizes(p.key, p.value, p.previous) + 16;
        } else if constexpr (std::is_same_v<T, RoleMappingChanged>) {
          return p.role.size() + list_bytes(p.users) + list_bytes(p.groups) + 16;
        } else if constexpr (std::is_same_v<T, SessionOpened>) {
          return sum_sizes(p.user, p.token_hash, p.address) + 24;
        } else if constexpr (std::is_same_v<T, SessionClosed>) {
          return sum_sizes(p.token_hash, p.reason) + 16;
        } else if constexpr (std::is_same_v<T, LoginRefused>) {
          return sum_sizes(p.user, p.address, p.reason) + 32;
        } else if constexpr (std::is_same_v<T, SystemStateChanged>) {
          return sum_sizes(p.system_id, p.state, p.reason) + 16;
        } else if constexpr (std::is_same_v<T, AgentReportRefused>) {
          return sum_sizes(p.system_id, p.subject, p.reason) + 16;
        } else if constexpr (std::is_same_v<T, JoinTokenCreated>) {
          return p.token_hash.size() + 16;
        } else if constexpr (std::is_same_v<T, DomainDefined>) {
          return sum_sizes(p.name, p.description) + 16;
        } else if constexpr (std::is_same_v<T, DomainRemoved>) {
          return p.name.size() + 16;
        } else if constexpr (std::is_same_v<T, SystemDomainSet>) {
          return sum_sizes(p.system_id, p.domain, p.previous) + 16;
        } else if constexpr (std::is_same_v<T, TaskCreated>) {
          return sum_sizes(p.kind, p.wpar, p.system, p.args, p.parent, p.user) + 16;
        } else if constexpr (std::is_same_v<T, OperationStarted>) {
          return sum_sizes(p.operation_id, p.system, p.wpar, p.action) + 32;
        } else if constexpr (std::is_same_v<T, OperationFinished>) {
          return sum_sizes(p.operation_id, p.outcome, p.output, p.error, p.wpar_state) + 24;
        } else if constexpr (std::is_same_v<T, TaskFinished>) {
          return sum_sizes(p.state, p.error, p.recovery, p.wpar_state, p.cause) + 16;
        } else if constexpr (std::is_same_v<T, WparPlaced>) {
          return sum_sizes(p.wpar, p.system, p.previous) + 16;
        } else if constexpr (std::is_same_v<T, TaskApproved>) {
          return p.user.size() + 16;
        } else if constexpr (std::is_same_v<T, GroupPolicySet>) {
          return sum_sizes(p.group, p.policy) + 16;
        } else if constexpr (std::is_same_v<T, MobilityDecided>) {
          return sum_sizes(p.group, p.wpar, p.from, p.to, p.trigger, p.automation, p.command, p.explanation,
                           p.inputs) + 24;
        } else {
          static_assert(std::is_same_v<T, JoinTokenUsed>);
          return sum_sizes(p.token_hash, p.system_id) + 16;
        }
      },
      payload);
}

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNone: return "none";
    case ErrorCode::kInvalidRequest: return "invalid_request";
    case ErrorCode::kWrongExpectedVersion: return "wrong_expected_version";
    case ErrorCode::kIdempotencyKeyReused: return "idempotency_key_reused";
    case ErrorCode::kReadOnly: return "read_only";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kPermissionDenied: return "permission_denied";
    case ErrorCode::kIo: return "io";
    case ErrorCode::kCorruption: return "corruption";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kNotFound: return "not_found";
  }
  return "unknown";
}

}  // namespace wpm
