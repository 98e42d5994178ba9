#pragma once
// Events as C++ value types. Cap'n Proto readers and builders never leave the
// codec (schemas/codec.h): everything else works on these structs.
// Thread safety: plain values.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "schemas/profile.h"

namespace wpm {

// Matches schema EventType ordinals; never renumber (schemas/README.md).
enum class EventType : uint16_t {
  kSynthetic = 1,
  kSystemRegistered = 2,
  kSystemRemoved = 3,
  kRegistrationRejected = 4,
  kSystemProfileChanged = 5,
  kCompatibilityAnalyzed = 6,
  kCommandRequested = 7,
  kCommandDecided = 8,
  kWparDefined = 9,
  kWparRemoved = 10,
  kGroupDefined = 11,
  kGroupDeleted = 12,
  kSettingChanged = 13,
  kRoleMappingChanged = 14,
  kSessionOpened = 15,
  kSessionClosed = 16,
  kLoginRefused = 17,
  kSystemStateChanged = 18,
  kAgentReportRefused = 19,
  kJoinTokenCreated = 20,
  kJoinTokenUsed = 21,
  kDomainDefined = 22,
  kDomainRemoved = 23,
  kSystemDomainSet = 24,
  kTaskCreated = 25,
  kOperationStarted = 26,
  kOperationFinished = 27,
  kTaskFinished = 28,
  kWparPlaced = 29,
  kTaskApproved = 30,
  kGroupPolicySet = 31,
  kMobilityDecided = 32,
};
inline constexpr uint16_t kEventTypeMax = 32;

// The stable name of a known type ("unknown" for others).
std::string_view event_type_name(EventType type);
// The name, or "unknown(N)" for a type this binary does not know.
std::string event_type_label(EventType type);
inline bool known_event_type(EventType type) {
  auto t = static_cast<uint16_t>(type);
  return t >= 1 && t <= kEventTypeMax;
}
std::optional<EventType> event_type_from_name(std::string_view name);

struct Synthetic {
  std::string run;
  uint64_t index = 0;
  std::string note;
  std::string blob;
  bool operator==(const Synthetic&) const = default;
};

struct SystemRegistered {
  std::string system_id;
  std::string hostname;
  std::string address;
  std::string public_key;
  profile::SystemProfile profile;
  uint16_t agent_port = 0;
  bool operator==(const SystemRegistered&) const = default;
};

struct SystemRemoved {
  std::string system_id;
  std::string reason;
  bool operator==(const SystemRemoved&) const = default;
};

struct RegistrationRejected {
  std::string address;
  std::string reason;
  uint32_t attempts = 0;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
  std::string hostname;
  std::string public_key;
  bool operator==(const RegistrationRejected&) const = default;
};

struct SystemProfileChanged {
  std::string system_id;
  profile::SystemProfile profile;
  bool operator==(const SystemProfileChanged&) const = default;
};

struct CompatResult {
  std::string test;
  bool passed = false;
  std::string departure;
  std::string arrival;
  std::string remedy;
  bool operator==(const CompatResult&) const = default;
};

struct CompatibilityAnalyzed {
  std::string departure_properties;
  std::string arrival_properties;
  std::vector<CompatResult> results;
  bool operator==(const CompatibilityAnalyzed&) const = default;
};

// A user's command as the gateway received it (stream command/<id>).
struct CommandRequested {
  std::string command;  // "wpar.create", …
  std::string args;     // JSON object
  std::string user;
  std::vector<std::string> roles;
  std::string address;
  bool operator==(const CommandRequested&) const = default;
};

struct CommandDecided {
  bool accepted = false;
  std::string code;     // when refused (kernel::rejection_code_name)
  std::string message;
  std::string decided_by;
  bool operator==(const CommandDecided&) const = default;
};

struct WparDefinition {
  std::string name;
  std::string type;  // "system" | "application"
  std::string command;
  bool checkpointable = false;
  std::string trigger_signal;
  std::string trigger_command;
  uint32_t cpu_shares = 0;
  uint32_t cpu_limit_percent = 0;
  uint64_t memory_bytes = 0;
  uint32_t processes_max = 0;
  std::string address;
  std::string capabilities;
  std::string group;
  std::string system;
  bool discovered = false;
  std::string reported_state;
  uint64_t epoch = 0;      // placement epoch (WparPlaced)
  std::string operation;   // in progress while Transitional
  std::string cause;       // why it is Broken
  bool privileged = false; // no system call filter, the host's PID and IPC namespaces (agents/README.md)
  bool operator==(const WparDefinition&) const = default;
};

struct WparDefined {
  WparDefinition wpar;
  bool created = false;
  bool operator==(const WparDefined&) const = default;
};

struct WparRemoved {
  std::string name;
  std::string reason;
  bool operator==(const WparRemoved&) const = default;
};

struct GroupDefined {
  std::string name;
  std::string description;
  bool created = false;
  bool operator==(const GroupDefined&) const = default;
};

struct GroupDeleted {
  std::string name;
  bool operator==(const GroupDeleted&) const = default;
};

struct SettingChanged {
  std::string key;
  std::string value;
  std::string previous;
  bool operator==(const SettingChanged&) const = default;
};

struct RoleMappingChanged {
  std::string role;
  std::vector<std::string> users;
  std::vector<std::string> groups;
  bool operator==(const RoleMappingChanged&) const = default;
};

struct SessionOpened {
  std::string user;
  std::string token_hash;
  int64_t expires_ns = 0;
  std::string address;
  bool operator==(const SessionOpened&) const = default;
};

struct SessionClosed {
  std::string token_hash;
  std::string reason;
  bool operator==(const SessionClosed&) const = default;
};

struct LoginRefused {
  std::string user;
  std::string address;
  std::string reason;
  uint32_t attempts = 0;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
  bool operator==(const LoginRefused&) const = default;
};

struct SystemStateChanged {
  std::string system_id;
  std::string state;  // "online" | "offline" | "unreachable"
  std::string reason;
  bool operator==(const SystemStateChanged&) const = default;
};

struct AgentReportRefused {
  std::string system_id;
  std::string subject;
  std::string reason;
  bool operator==(const AgentReportRefused&) const = default;
};

struct JoinTokenCreated {
  std::string token_hash;
  int64_t expires_ns = 0;
  bool operator==(const JoinTokenCreated&) const = default;
};

struct JoinTokenUsed {
  std::string token_hash;
  std::string system_id;
  bool operator==(const JoinTokenUsed&) const = default;
};

struct DomainDefined {
  std::string name;
  std::string description;
  bool created = false;
  bool operator==(const DomainDefined&) const = default;
};

struct DomainRemoved {
  std::string name;
  bool operator==(const DomainRemoved&) const = default;
};

struct SystemDomainSet {
  std::string system_id;
  std::string domain;
  std::string previous;
  bool operator==(const SystemDomainSet&) const = default;
};

// The executor's tasks and placements (events.capnp).
struct TaskCreated {
  std::string kind;
  std::string wpar;
  std::string system;
  std::string args;  // JSON object
  std::string parent;
  std::string user;
  bool operator==(const TaskCreated&) const = default;
};
struct OperationStarted {
  std::string operation_id;
  std::string system;
  std::string wpar;
  std::string action;
  uint64_t epoch = 0;
  uint32_t attempt = 1;
  int64_t deadline_ns = 0;
  bool operator==(const OperationStarted&) const = default;
};
struct OperationFinished {
  std::string operation_id;
  uint32_t attempt = 1;
  std::string outcome;  // ok failed refused timeout unreachable
  int32_t exit_code = 0;
  std::string output;
  std::string error;
  std::string wpar_state;
  bool operator==(const OperationFinished&) const = default;
};
struct TaskFinished {
  std::string state;  // succeeded failed cancelled
  std::string error;
  std::string recovery;
  std::string wpar_state;  // the state the task leaves the WPAR in when no operation said ("" nothing said)
  std::string cause;       // with "B": why it is Broken
  bool operator==(const TaskFinished&) const = default;
};
struct TaskApproved {
  std::string user;
  bool operator==(const TaskApproved&) const = default;
};
struct GroupPolicySet {
  std::string group;
  std::string policy;  // JSON (events.capnp)
  bool operator==(const GroupPolicySet&) const = default;
};
struct MobilityDecided {
  std::string group;
  std::string wpar;
  std::string from;
  std::string to;
  std::string trigger;
  std::string automation;
  std::string command;
  std::string explanation;
  std::string inputs;  // JSON
  int64_t watermark_s = 0;
  bool operator==(const MobilityDecided&) const = default;
};
struct WparPlaced {
  std::string wpar;
  std::string system;
  uint64_t epoch = 0;
  std::string previous;
  bool operator==(const WparPlaced&) const = default;
};

// An event of a type this binary does not know (written by a newer one;
// DESIGN.md §9 "old readers, new events"): kept opaque. Its record's checksum
// and chain are verified as any other; consumers skip it and count it, and a
// projection that must see every event of its streams stops, naming it.
struct UnknownPayload {
  uint16_t type = 0;  // the EventType ordinal as stored
  std::string bytes;  // the Payload struct, as one flat Cap'n Proto message
  bool operator==(const UnknownPayload&) const = default;
};

// Alternative index == EventType ordinal; index 0 (the ordinal "unspecified",
// never written) holds events of unknown types.
using Payload = std::variant<UnknownPayload, Synthetic, SystemRegistered, SystemRemoved,
                             RegistrationRejected, SystemProfileChanged, CompatibilityAnalyzed,
                             CommandRequested, CommandDecided, WparDefined, WparRemoved, GroupDefined,
                             GroupDeleted, SettingChanged, RoleMappingChanged, SessionOpened,
                             SessionClosed, LoginRefused, SystemStateChanged, AgentReportRefused,
                             JoinTokenCreated, JoinTokenUsed, DomainDefined, DomainRemoved, SystemDomainSet,
                             TaskCreated, OperationStarted, OperationFinished, TaskFinished, WparPlaced,
                             TaskApproved, GroupPolicySet, MobilityDecided>;
static_assert(std::variant_size_v<Payload> == kEventTypeMax + 1, "one alternative per event type");

inline bool is_unknown(const Payload& payload) { return payload.index() == 0; }
inline EventType payload_type(const Payload& payload) {
  if (const auto* u = std::get_if<UnknownPayload>(&payload)) return static_cast<EventType>(u->type);
  return static_cast<EventType>(payload.index());
}

// Bytes of text and data a payload carries (an upper bound's main part).
size_t payload_bytes(const Payload& payload);

// What an appender supplies; the store assigns the rest.
struct EventDraft {
  std::string stream_id;
  std::string correlation_id;
  std::string causation_id;
  std::string actor;
  Payload payload;
  bool operator==(const EventDraft&) const = default;
};

using EventId = std::array<uint8_t, 16>;

// A committed event: the envelope of DESIGN.md §4.
struct Event {
  uint64_t sequence = 0;
  EventId event_id{};
  int64_t timestamp_ns = 0;
  std::string stream_id;
  uint64_t stream_version = 0;
  std::string correlation_id;
  std::string causation_id;
  std::string actor;
  std::string idempotency_key;
  Payload payload;

  EventType type() const { return payload_type(payload); }
  bool operator==(const Event&) const = default;
};

std::string event_id_hex(const EventId& id);

}  // namespace wpm
