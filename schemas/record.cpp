#include "schemas/record.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "schemas/assert.h"
#include "schemas/codec.h"

namespace wpm {
namespace {
void put_u32(char* p, uint32_t v) { std::memcpy(p, &v, 4); }  // x86-64: little-endian
uint32_t get_u32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
static_assert(std::endian::native == std::endian::little, "records are little-endian");
}  // namespace

void seal_record(std::string& record, const Sha256Digest& previous, Sha256& hasher,
                 Sha256Digest* chain_out) {
  WPM_ASSERT(record.size() >= kRecordHeaderBytes, "record of {} bytes", record.size());
  hasher.update(previous.data(), previous.size());
  hasher.update(record.data() + kRecordHeaderBytes, record.size() - kRecordHeaderBytes);
  Sha256Digest chain = hasher.final();
  put_u32(record.data() + 4, kRecordFormat);
  std::memcpy(record.data() + 8, chain.data(), chain.size());
  put_u32(record.data(), crc32c(record.data() + 4, record.size() - 4));
  if (chain_out != nullptr) *chain_out = chain;
}

std::string make_record(const Sha256Digest& previous, std::string_view event_bytes,
                        Sha256& hasher, Sha256Digest* chain_out) {
  std::string record(kRecordHeaderBytes + event_bytes.size(), '\0');
  std::memcpy(record.data() + kRecordHeaderBytes, event_bytes.data(), event_bytes.size());
  seal_record(record, previous, hasher, chain_out);
  return record;
}

Result<RecordView> parse_record(std::string_view record) {
  if (record.size() < kRecordHeaderBytes + 8) {
    return fail(ErrorCode::kCorruption, fmt::format("record of {} bytes is too short", record.size()));
  }
  uint32_t stored = get_u32(record.data());
  uint32_t actual = crc32c(record.data() + 4, record.size() - 4);
  if (stored != actual) {
    return fail(ErrorCode::kCorruption,
                fmt::format("checksum mismatch (stored {:08x}, computed {:08x})", stored, actual));
  }
  uint32_t format = get_u32(record.data() + 4);
  if (format != kRecordFormat) {
    return fail(ErrorCode::kCorruption, fmt::format("unknown record format {}", format));
  }
  RecordView view;
  std::memcpy(view.chain.data(), record.data() + 8, view.chain.size());
  view.event_bytes = record.substr(kRecordHeaderBytes);
  return view;
}

ChainVerifier::ChainVerifier(uint64_t expected_first, Sha256Digest previous)
    : next_(expected_first), chain_(previous) {}

Result<std::pair<std::string_view, Sha256Digest>> ChainVerifier::link(uint64_t key_sequence,
                                                                     std::string_view record) {
  auto bad = [&](uint64_t seq, std::string why) {
    return fail(ErrorCode::kCorruption, fmt::format("sequence {}: {}", seq, why));
  };
  if (key_sequence != next_) {
    return key_sequence > next_
               ? bad(next_, fmt::format("missing (the log jumps from {} to {})", next_ - 1,
                                        key_sequence))
               : bad(key_sequence, fmt::format("out of order (expected {})", next_));
  }
  auto view = parse_record(record);
  if (!view) return bad(next_, view.error().message);
  hasher_.update(chain_.data(), chain_.size());
  hasher_.update(view->event_bytes);
  Sha256Digest computed = hasher_.final();
  if (computed != view->chain) {
    return bad(next_, "hash chain broken (the event was edited, replaced or reordered)");
  }
  return std::pair{view->event_bytes, computed};
}

void ChainVerifier::advance(const Sha256Digest& computed) {
  chain_ = computed;
  ++next_;
  ++count_;
}

Result<Event> ChainVerifier::feed(uint64_t key_sequence, std::string_view record) {
  auto linked = link(key_sequence, record);
  if (!linked) return std::unexpected(linked.error());
  DecodeLimits limits;
  limits.max_frame_bytes = kRecordEventBytesMax;
  auto event = decode_event(linked->first, limits);
  if (!event) return fail(ErrorCode::kCorruption, fmt::format("sequence {}: {}", next_, event.error().message));
  if (event->sequence != key_sequence) {
    return fail(ErrorCode::kCorruption, fmt::format("sequence {}: stored under key {} but says sequence {}", next_,
                                                    key_sequence, event->sequence));
  }
  advance(linked->second);
  return event;
}

Result<void> ChainVerifier::check(uint64_t key_sequence, std::string_view record) {
  auto linked = link(key_sequence, record);
  if (!linked) return std::unexpected(linked.error());
  DecodeLimits limits;
  limits.max_frame_bytes = kRecordEventBytesMax;
  auto sequence = peek_event_sequence(linked->first, limits);
  if (!sequence) return fail(ErrorCode::kCorruption, fmt::format("sequence {}: {}", next_, sequence.error().message));
  if (*sequence != key_sequence) {
    return fail(ErrorCode::kCorruption, fmt::format("sequence {}: stored under key {} but says sequence {}", next_,
                                                    key_sequence, *sequence));
  }
  advance(linked->second);
  return {};
}

}  // namespace wpm
