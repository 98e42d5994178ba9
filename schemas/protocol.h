#pragma once
// The store protocol (schemas/store.capnp) as C++ value types.

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "schemas/error.h"
#include "schemas/events.h"
#include "schemas/hash.h"
#include "schemas/metrics.h"

namespace wpm {

enum class ExpectKind : uint16_t { kAny = 0, kNoStream = 1, kExact = 2, kStreamExists = 3 };
inline constexpr uint16_t kExpectKindMax = 3;

struct StreamExpectation {
  std::string stream_id;
  ExpectKind kind = ExpectKind::kAny;
  uint64_t version = 0;
  bool operator==(const StreamExpectation&) const = default;
};

struct AppendRequest {
  std::string idempotency_key;
  std::vector<StreamExpectation> expectations;
  std::vector<EventDraft> events;
  bool operator==(const AppendRequest&) const = default;
};

struct AppendResult {
  uint64_t first_sequence = 0;
  uint32_t count = 0;
  bool duplicate = false;
  bool operator==(const AppendResult&) const = default;
};

struct ReadRangeRequest {
  uint64_t from = 1;
  uint64_t to = 0;  // 0 = up to the head
  uint32_t max_events = 0;
  bool operator==(const ReadRangeRequest&) const = default;
};

struct ReadStreamRequest {
  std::string stream_id;
  uint64_t from_version = 1;
  uint32_t max_events = 0;
  bool operator==(const ReadStreamRequest&) const = default;
};

struct StatsRequest {
  bool operator==(const StatsRequest&) const = default;
};

struct ReadReply {
  std::vector<std::string> records;  // stored record bytes (eventstore/record.h)
  uint64_t head = 0;
  uint64_t next = 0;
  bool end = false;
  bool operator==(const ReadReply&) const = default;
};

struct TypeCount {
  EventType type = EventType::kSynthetic;
  uint64_t count = 0;
  bool operator==(const TypeCount&) const = default;
};

struct StatsReply {
  uint64_t head = 0;
  uint64_t event_count = 0;
  uint64_t log_bytes = 0;
  uint64_t disk_bytes = 0;
  std::vector<TypeCount> per_type;
  bool read_only = false;
  std::string read_only_reason;
  std::string data_dir;
  std::string publish_endpoint;
  uint64_t unknown_events = 0;  // events of types this binary does not know
  bool operator==(const StatsReply&) const = default;
};

// The store checks its own log from `from` to `to` (0: the head), chained to
// `previous_chain` (the chain of record from-1): `wpm log verify` online.
struct VerifyRequest {
  uint64_t from = 1;
  uint64_t to = 0;
  Sha256Digest previous_chain{};
  uint32_t max_events = 0;  // 0 = the store's limit per request
  bool operator==(const VerifyRequest&) const = default;
};

struct VerifyReply {
  uint64_t checked = 0;       // records checked and sound
  uint64_t next = 0;          // the sequence to ask for next
  Sha256Digest chain{};       // the chain of record next-1
  std::string problem;        // empty: sound; else the first fault, naming its sequence
  uint64_t head = 0;          // acknowledged head when the check started
  bool end = false;           // the range is checked, or a problem stopped it
  bool operator==(const VerifyReply&) const = default;
};

// Metric samples (store.capnp): a write, and a read of one entity's history.
struct WriteSamplesRequest {
  metrics::HostSample sample;  // time_s 0: the store's now
  bool operator==(const WriteSamplesRequest&) const = default;
};
struct ReadSamplesRequest {
  bool wpar = false;
  std::string name;
  int64_t from_s = 0;
  int64_t to_s = 0;
  bool aggregates = false;
  bool operator==(const ReadSamplesRequest&) const = default;
};
struct SamplesWritten {
  bool operator==(const SamplesWritten&) const = default;
};

// An online backup (store.capnp), admin only.
struct BackupRequest {
  std::string dir;  // empty: the store's configured backup directory
  bool operator==(const BackupRequest&) const = default;
};
struct BackupReply {
  std::string name;
  std::string path;
  uint64_t head = 0;
  uint64_t bytes = 0;
  uint32_t files = 0;
  int64_t created_ns = 0;
  bool operator==(const BackupReply&) const = default;
};

using RequestBody = std::variant<AppendRequest, ReadRangeRequest, ReadStreamRequest, StatsRequest, VerifyRequest,
                                 WriteSamplesRequest, ReadSamplesRequest, BackupRequest>;
struct Request {
  uint64_t request_id = 0;
  RequestBody body;
  uint16_t protocol_version = kProtocolVersion;
  bool operator==(const Request&) const = default;
};

using ReplyBody =
    std::variant<Error, AppendResult, ReadReply, StatsReply, VerifyReply, metrics::History, SamplesWritten, BackupReply>;
struct Reply {
  uint64_t request_id = 0;
  ReplyBody body;
  uint16_t protocol_version = kProtocolVersion;
  bool operator==(const Reply&) const = default;
};

struct Publication {
  uint64_t sequence = 0;
  std::string record;
  bool operator==(const Publication&) const = default;
};

}  // namespace wpm
