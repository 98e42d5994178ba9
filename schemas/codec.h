#pragma once
// Conversion between the value types (events.h, protocol.h) and their Cap'n
// Proto encoding: one frame = one unpacked, single-segment-or-more flat message.
//
// Decoding treats bytes as untrusted (DESIGN.md §9, CVE-2022-46149): the size
// is checked against DecodeLimits before anything is allocated, the reader runs
// with traversal and nesting limits, unknown enum values and union members are
// refused, and the whole conversion to owned structs happens inside the guarded
// block (Cap'n Proto applies its limits lazily). A decode never throws.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "schemas/error.h"
#include "schemas/events.h"
#include "schemas/protocol.h"

namespace wpm {

struct DecodeLimits {
  // Largest frame accepted, in bytes. Default: 16 MiB (bus/constants.h).
  size_t max_frame_bytes = 16u << 20;
  // Cap'n Proto traversal limit, in words, as a multiple of the frame's size:
  // bounds amplification by pointers that overlap. Default: 4.
  uint64_t traversal_factor = 4;
  // Cap'n Proto nesting limit. Default: 16 (our schemas nest 5 deep).
  int nesting_limit = 16;
};

std::string encode_event(const Event& event);

// The store's part of an envelope; the rest comes from the appender's draft.
struct EventHeader {
  uint64_t sequence = 0;
  EventId event_id{};
  int64_t timestamp_ns = 0;
  uint64_t stream_version = 0;
  const std::string& idempotency_key;
};
// Encodes the event made of `header` and `draft` after `prefix_bytes` zero
// bytes (room for a record header, schemas/record.h), without copying the draft.
std::string encode_event(const EventHeader& header, const EventDraft& draft, size_t prefix_bytes);
Result<Event> decode_event(std::string_view bytes, const DecodeLimits& limits = {});
// Only the envelope's sequence, without converting the rest (the verifier's
// fast path: the record's checksum and chain already cover every byte).
Result<uint64_t> peek_event_sequence(std::string_view bytes, const DecodeLimits& limits = {});
// The envelope's sequence, type and stream version alone: a follower skips
// the events it does not fold without converting them.
struct EventHeaderPeek {
  uint64_t sequence = 0;
  EventType type{};
  uint64_t stream_version = 0;
};
Result<EventHeaderPeek> peek_event_header(std::string_view bytes, const DecodeLimits& limits = {});

std::string encode_request(const Request& request);
// The same for an append, without copying its events into a Request first.
std::string encode_request(uint64_t request_id, const AppendRequest& append);
Result<Request> decode_request(std::string_view bytes, const DecodeLimits& limits = {});
// Reads only the request id of a request that failed to decode, so that the
// error reply reaches the caller waiting for it. 0 when unreadable.
uint64_t peek_request_id(std::string_view bytes, const DecodeLimits& limits = {});

std::string encode_reply(const Reply& reply);
Result<Reply> decode_reply(std::string_view bytes, const DecodeLimits& limits = {});

std::string encode_publication(uint64_t sequence, std::string_view record);
// A metric sample as published on "metrics.<system>" (store.capnp HostSample).
std::string encode_host_sample(const metrics::HostSample& sample);
Result<metrics::HostSample> decode_host_sample(std::string_view bytes, const DecodeLimits& limits = {});
Result<Publication> decode_publication(std::string_view bytes, const DecodeLimits& limits = {});

}  // namespace wpm
