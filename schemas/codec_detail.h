#pragma once
// Internal helpers of the Cap'n Proto codecs (codec.cpp: events;
// store_codec.cpp: the store's requests and replies; agent_codec.cpp): value
// conversions, the flat encoder and the guarded decode. Not for use outside
// schemas/.

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/exception.h>

#include <bit>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "schemas/codec.h"
#include "schemas/error.h"
#include "schemas/events.capnp.h"
#include "schemas/hash.h"
#include "schemas/profile.h"
#include "schemas/store.capnp.h"

namespace wpm::codec_detail {

// ---- small helpers -------------------------------------------------------

inline capnp::Text::Reader text(const std::string& value) {
  return capnp::Text::Reader(value.c_str(), value.size());
}
inline capnp::Data::Reader data(const std::string& value) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()), value.size());
}
inline std::string str(capnp::Text::Reader value) { return std::string(value.cStr(), value.size()); }
inline std::string str(capnp::Data::Reader value) {
  return std::string(reinterpret_cast<const char*>(value.begin()), value.size());
}

inline capnp::Data::Reader data(const Sha256Digest& value) {
  return capnp::Data::Reader(value.data(), value.size());
}
inline void put_texts(const std::vector<std::string>& values, capnp::List<capnp::Text>::Builder b) {
  for (unsigned i = 0; i < values.size(); ++i) b.set(i, text(values[i]));
}
inline std::vector<std::string> get_texts(capnp::List<capnp::Text>::Reader r) {
  std::vector<std::string> out;
  out.reserve(r.size());
  for (auto t : r) out.push_back(str(t));
  return out;
}

// Thrown inside the guarded block for semantic refusals; caught by decode().
struct Refused {
  std::string message;
};

// Refuses bytes that are not a digest; empty is the zero digest.
inline Sha256Digest digest_of(capnp::Data::Reader value, const char* what) {
  Sha256Digest out{};
  if (value.size() == 0) return out;
  if (value.size() != out.size()) {
    throw Refused{fmt::format("{} holds {} bytes; a SHA-256 digest has {}", what, value.size(), out.size())};
  }
  std::memcpy(out.data(), value.begin(), out.size());
  return out;
}

template <typename Enum>
Enum checked_enum(uint16_t raw, uint16_t max, const char* what) {
  if (raw == 0 || raw > max) throw Refused{fmt::format("unknown {} value {}", what, raw)};
  return static_cast<Enum>(raw);
}

// The flat form of a one-segment message: the segment table, then the segment,
// after `prefix_bytes` zero bytes.
inline std::string flat_single(size_t prefix_bytes, kj::ArrayPtr<const capnp::word> segment) {
  size_t words = segment.size();
  std::string out;
  out.resize_and_overwrite(prefix_bytes + 8 + words * sizeof(capnp::word), [&](char* p, size_t n) {
    std::memset(p, 0, prefix_bytes);
    uint32_t table[2] = {0, static_cast<uint32_t>(words)};  // segment count - 1, size
    std::memcpy(p + prefix_bytes, table, 8);
    std::memcpy(p + prefix_bytes + 8, segment.begin(), words * sizeof(capnp::word));
    return n;
  });
  return out;
}

inline kj::Array<capnp::word> zeroed_words(size_t words) {
  auto a = kj::heapArray<capnp::word>(words);
  std::memset(a.begin(), 0, a.size() * sizeof(capnp::word));
  return a;
}

// Builds a message in a reused, zeroed first segment (Cap'n Proto zeroes a
// caller-provided segment again when the builder is destroyed) and writes it
// flat after `prefix_bytes` zero bytes: one allocation, one copy.
//
// The output is always one segment: a reader follows far pointers of a
// multi-segment message through a locked segment table, which made decoding a
// 256-event append a fifth slower. A message that outgrows the scratch segment
// is built again in one that fits, and the scratch grows (up to
// kScratchWordsMax) so that the next message of that size is built once.
template <typename Fill>
std::string build_flat(size_t prefix_bytes, Fill fill) {
  constexpr size_t kScratchWordsMin = 4096;      // 32 KiB: typical events and replies
  constexpr size_t kScratchWordsMax = 1u << 17;  // 1 MiB: an append of 4096 small events
  thread_local kj::Array<capnp::word> scratch = zeroed_words(kScratchWordsMin);
  size_t total_words = 0;
  {
    capnp::MallocMessageBuilder message(scratch.asPtr());
    fill(message);
    auto segments = message.getSegmentsForOutput();
    if (segments.size() == 1) return flat_single(prefix_bytes, segments[0]);
    for (auto segment : segments) total_words += segment.size();
  }
  // One segment of the multi-segment size always fits: it only drops far pointers.
  auto build_in = [&](capnp::MallocMessageBuilder& message) {
    fill(message);
    auto segments = message.getSegmentsForOutput();
    if (segments.size() == 1) return flat_single(prefix_bytes, segments[0]);
    kj::Array<capnp::word> flat = capnp::messageToFlatArray(segments);
    auto bytes = flat.asBytes();
    std::string out(prefix_bytes, '\0');
    out.append(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
    return out;
  };
  if (total_words <= kScratchWordsMax) {
    scratch = zeroed_words(std::bit_ceil(total_words));
    capnp::MallocMessageBuilder message(scratch.asPtr());
    return build_in(message);
  }
  capnp::MallocMessageBuilder message(static_cast<unsigned>(total_words),
                                      capnp::AllocationStrategy::FIXED_SIZE);
  return build_in(message);
}

// ---- the guarded decode ----------------------------------------------------

template <typename Root, typename Convert>
auto decode(std::string_view bytes, const DecodeLimits& limits, const char* what, Convert convert)
    -> Result<decltype(convert(std::declval<typename Root::Reader>()))> {
  if (bytes.size() > limits.max_frame_bytes) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} of {} bytes exceeds the limit of {} bytes", what, bytes.size(),
                            limits.max_frame_bytes));
  }
  if (bytes.size() < sizeof(capnp::word) || bytes.size() % sizeof(capnp::word) != 0) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} of {} bytes is not a Cap'n Proto message", what, bytes.size()));
  }
  // FlatArrayMessageReader needs word alignment; copy only when the bytes are not aligned.
  kj::Array<capnp::word> copy;
  const auto* words = reinterpret_cast<const capnp::word*>(bytes.data());
  size_t count = bytes.size() / sizeof(capnp::word);
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) != 0) {
    copy = kj::heapArray<capnp::word>(count);
    std::memcpy(copy.begin(), bytes.data(), bytes.size());
    words = copy.begin();
  }
  capnp::ReaderOptions options;
  options.traversalLimitInWords = count * limits.traversal_factor + 64;
  options.nestingLimit = limits.nesting_limit;
  try {
    capnp::FlatArrayMessageReader reader(kj::ArrayPtr<const capnp::word>(words, count), options);
    return convert(reader.getRoot<Root>());
  } catch (const Refused& r) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("{} refused: {}", what, r.message));
  } catch (const kj::Exception& e) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} is malformed: {}", what, e.getDescription().cStr()));
  }
}

void put_profile(const profile::SystemProfile& p, wpm::schema::SystemProfile::Builder b);
profile::SystemProfile get_profile(wpm::schema::SystemProfile::Reader r);
// An event as appended (codec.cpp; the store's append requests carry them).
void put_draft(const EventDraft& d, wpm::schema::EventDraft::Builder b);
EventDraft get_draft(wpm::schema::EventDraft::Reader r);

}  // namespace wpm::codec_detail
