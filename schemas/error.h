#pragma once
// The error value shared by every component (STYLE.md §3): operational
// failures travel as std::expected<T, Error>. `code` is the store protocol's
// error code where one applies, so an error crosses the bus unchanged.

#include <cstdint>
#include <expected>
#include <string>

namespace wpm {

// Codes up to kWireErrorCodeMax travel on the wire (store.capnp ErrorCode).
enum class ErrorCode : uint16_t {
  kNone = 0,
  kInvalidRequest = 1,        // malformed input or over a limit
  kWrongExpectedVersion = 2,  // optimistic concurrency conflict
  kIdempotencyKeyReused = 3,  // same key, different batch
  kReadOnly = 4,              // the store stopped writing after a write error
  kUnavailable = 5,           // shutting down, overloaded, or unreachable
  kInternal = 6,
  kPermissionDenied = 7,      // the authenticated identity may not do this
  // Not on the wire (local to a process):
  kIo = 100,         // file system or database I/O
  kCorruption = 101, // checksum, chain or gap found in stored data
  kTimeout = 102,    // no reply within the deadline, after the allowed retries
  kNotFound = 103,
};

inline constexpr uint16_t kWireErrorCodeMax = 7;

// The protocol every handshake and request carries (store, agent, service,
// CLI). A peer that speaks less than kProtocolVersionMin is refused with a
// message saying which side to upgrade; messages of peers from before the
// field existed read as 0.
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr uint16_t kProtocolVersionMin = 1;

const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  // Only for kWrongExpectedVersion:
  std::string stream_id;
  uint64_t expected_version = 0;
  uint64_t actual_version = 0;

  bool operator==(const Error&) const = default;
};

template <typename T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(ErrorCode code, std::string message) {
  return std::unexpected(Error{code, std::move(message)});
}

}  // namespace wpm
