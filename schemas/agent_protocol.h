#pragma once
// The agent protocol (schemas/agent.capnp) as C++ value types, and its codec.
// Decoding follows the rules of schemas/codec.h: limits first, guarded
// conversion, unknown enums and union members refused, never throws.
// Thread safety: plain values and free functions.

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "schemas/codec.h"
#include "schemas/error.h"
#include "schemas/profile.h"

namespace wpm::agentproto {

// ---- agent → manager (9513, 9514) ---------------------------------------------

struct GetManagerKey {
  bool operator==(const GetManagerKey&) const = default;
};
struct Register {
  std::string proof;  // see agent.capnp
  std::string hostname;
  uint16_t agent_port = 0;
  profile::SystemProfile profile;
  std::string public_key;  // Z85
  std::string token;       // a join token in place of the proof (empty: the password's proof)
  bool operator==(const Register&) const = default;
};
struct Started {
  std::string agent_version;
  profile::SystemProfile profile;
  uint32_t wpars = 0;
  uint16_t agent_port = 0;  // the port the agent listens on now (the manager probes it)
  bool operator==(const Started&) const = default;
};
struct Heartbeat {
  int64_t sent_ns = 0;
  uint32_t wpars = 0;
  uint32_t wpars_active = 0;
  float load1 = 0;
  uint16_t cpus = 0;
  uint16_t agent_port = 0;  // as in Started: a manager restarted since learns it here
  bool operator==(const Heartbeat&) const = default;
};
struct Unregister {
  bool operator==(const Unregister&) const = default;
};
struct ProfileReport {
  profile::SystemProfile profile;
  bool operator==(const ProfileReport&) const = default;
};

// Metrics of one entity (agent.capnp MetricSet); bit n of `present` for
// metric n as stored (eventstore/series.h).
inline constexpr uint16_t kMetricCpuBit = 1u << 1;
inline constexpr uint16_t kMetricMemoryBit = 1u << 2;
inline constexpr uint16_t kMetricLoadBit = 1u << 3;
inline constexpr uint16_t kMetricProcessesBit = 1u << 4;
inline constexpr uint16_t kMetricThreadsBit = 1u << 5;
inline constexpr uint16_t kMetricPageFaultsBit = 1u << 6;
struct MetricSet {
  uint16_t present = 0;
  float cpu_percent = 0;
  float memory_percent = 0;
  float load1 = 0;
  uint32_t processes = 0;
  uint32_t threads = 0;
  float page_faults_per_s = 0;
  bool operator==(const MetricSet&) const = default;
};
struct WparMetrics {
  std::string name;
  MetricSet metrics;
  bool operator==(const WparMetrics&) const = default;
};
struct MetricsReport {
  uint32_t interval_ms = 0;
  MetricSet host;
  std::vector<WparMetrics> wpars;
  std::string host_scope = "host";  // or "wpars"
  uint16_t metrics_port = 0;  // the agent's own /metrics (wpmd's Prometheus discovery file); 0: none
  bool operator==(const MetricsReport&) const = default;
};
// WPARs one report carries at most.
inline constexpr size_t kMetricsWparsMax = 10'000;

struct ManagerRequest {
  uint64_t request_id = 0;
  std::variant<GetManagerKey, Register, Started, Heartbeat, Unregister, ProfileReport, MetricsReport> body;
  uint16_t protocol_version = kProtocolVersion;
  bool operator==(const ManagerRequest&) const = default;
};

// ---- replies and errors ----------------------------------------------------------

enum class ErrorKind : uint16_t {
  kInvalidRequest = 1,
  kWrongPassword = 2,
  kRegistrationClosed = 3,
  kNotRegistered = 4,
  kRateLimited = 5,
  kUnavailable = 6,
  kInternal = 7,
  kNotFound = 8,
};
inline constexpr uint16_t kErrorKindMax = 8;
const char* error_kind_name(ErrorKind kind);

struct ProtocolError {
  ErrorKind kind = ErrorKind::kInternal;
  std::string message;
  bool operator==(const ProtocolError&) const = default;
};

struct ManagerKey {
  std::string public_key;   // Z85
  std::string fingerprint;  // sha256:<hex>
  uint16_t agent_channel_port = 0;
  std::string version;
  std::string password_kdf;  // scrypt$N$r$p$salt; empty: registration closed
  bool operator==(const ManagerKey&) const = default;
};
struct Registered {
  std::string system_id;
  bool already_registered = false;
  bool operator==(const Registered&) const = default;
};
struct Ack {
  bool operator==(const Ack&) const = default;
};

struct ManagerReply {
  uint64_t request_id = 0;
  std::variant<ManagerKey, Registered, Ack, ProtocolError> body;
  uint16_t protocol_version = kProtocolVersion;
  uint32_t metrics_interval_ms = 0;  // on acks of the agent channel; 0: not said
  bool operator==(const ManagerReply&) const = default;
};

// ---- manager → agent (9510) ---------------------------------------------------

struct Ping {
  bool operator==(const Ping&) const = default;
};
struct ListWpars {
  bool operator==(const ListWpars&) const = default;
};
struct RefreshProfile {
  bool operator==(const RefreshProfile&) const = default;
};
// One lifecycle operation (agent.capnp Operation).
struct Operation {
  std::string operation_id;
  uint32_t attempt = 1;
  std::string wpar;
  uint64_t epoch = 0;
  std::string action;
  std::string definition;  // JSON
  bool preserve_fs = false;
  bool start_after = false;
  int64_t deadline_ns = 0;
  std::string peer_endpoint;  // relocation: the other agent (agent.capnp)
  std::string peer_key;
  std::string state_id;
  bool force = false;         // remove: end whatever runs first
  std::string state_root;     // a shared state root ("" the agent's own)
  uint32_t wait_ms = 0;       // while it runs, hold the answer up to this long (agent.capnp)
  bool operator==(const Operation&) const = default;
};
// Agent to agent: part of a state file (relocation); an empty path lists it.
struct FetchState {
  std::string wpar;
  std::string state_id;
  std::string path;
  uint64_t offset = 0;
  uint32_t length = 0;
  bool operator==(const FetchState&) const = default;
};
// The largest part of a state file one reply carries (below the frame limit).
inline constexpr uint32_t kStateChunkBytes = 512 * 1024;
struct AgentCommand {
  uint64_t request_id = 0;
  std::variant<Ping, ListWpars, RefreshProfile, Operation, FetchState> body;
  uint16_t protocol_version = kProtocolVersion;
  bool operator==(const AgentCommand&) const = default;
};

struct Pong {
  std::string system_id;
  std::string agent_version;
  bool operator==(const Pong&) const = default;
};
struct WparSummary {
  std::string name;
  std::string type;
  std::string state;
  uint64_t epoch = 0;  // the highest placement epoch a command for it carried here (0: none)
  bool operator==(const WparSummary&) const = default;
};
struct OperationResult {
  std::string operation_id;
  uint32_t attempt = 1;
  bool running = false;
  int32_t exit_code = 0;
  std::string output;
  std::string error;
  std::string wpar_state;
  bool refused = false;
  bool operator==(const OperationResult&) const = default;
};
struct StateFile {
  std::string path;
  uint64_t size = 0;
  bool operator==(const StateFile&) const = default;
};
struct StateData {
  std::vector<StateFile> files;
  std::string data;
  uint64_t size = 0;
  bool operator==(const StateData&) const = default;
};
struct AgentReply {
  uint64_t request_id = 0;
  std::variant<Pong, std::vector<WparSummary>, ProtocolError, OperationResult, StateData> body;
  uint16_t protocol_version = kProtocolVersion;
  bool operator==(const AgentReply&) const = default;
};

// Frames from the network are bounded well below the event limits: the largest
// legitimate message is a registration with its profile.
inline constexpr size_t kAgentFrameBytesMax = 1u << 20;
inline DecodeLimits agent_limits() { return DecodeLimits{kAgentFrameBytesMax, 4, 16}; }

std::string encode(const ManagerRequest& request);
std::string encode(const ManagerReply& reply);
std::string encode(const AgentCommand& command);
std::string encode(const AgentReply& reply);
Result<ManagerRequest> decode_manager_request(std::string_view bytes);
Result<ManagerReply> decode_manager_reply(std::string_view bytes);
Result<AgentCommand> decode_agent_command(std::string_view bytes);
Result<AgentReply> decode_agent_reply(std::string_view bytes);
// The request id of a frame that failed to decode (0 when unreadable), so
// that its error reply still reaches the caller.
uint64_t peek_request_id(std::string_view bytes);

}  // namespace wpm::agentproto
