#pragma once
// wpm-demo-counter's checkable state and the formats of its checkpoint files
// (DESIGN.md §5, the cooperative protocol). Pure functions only: no I/O, no
// clock, no randomness (the seed comes in from main). Thread safety: none
// needed, nothing here holds state.
//
// A checkpoint directory holds:
//   count       the counter's value, decimal text and a newline
//   state.bin   `bytes` bytes of pattern (only when the state is not empty)
//   state.meta  key=value lines: format, seed, bytes, crc32c of state.bin
//   .complete   empty marker, created last, after everything above is synced
// The pattern is xorshift64 started from splitmix64(seed), each 64-bit word
// stored little-endian, so a restored state is checked twice: its CRC-32C
// against state.meta, and every byte against the pattern its seed produces.

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "schemas/error.h"

namespace wpm::demo_counter {

inline constexpr std::string_view kCountFile = "count";
inline constexpr std::string_view kStateFile = "state.bin";
inline constexpr std::string_view kMetaFile = "state.meta";
inline constexpr std::string_view kCompleteMarker = ".complete";
// Written in state.meta; a reader refuses any other value.
inline constexpr uint32_t kStateFormat = 1;
// Largest state accepted by --state-bytes and on restore (it is held in memory).
inline constexpr uint64_t kStateBytesMax = uint64_t{1} << 30;
// Largest count and state.meta files read on restore; anything longer is damaged.
inline constexpr size_t kCountFileBytesMax = 64;
inline constexpr size_t kMetaFileBytesMax = 4096;

struct StateMeta {
  uint32_t format = kStateFormat;
  uint64_t seed = 0;
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
  bool operator==(const StateMeta&) const = default;
};

namespace detail {
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t xorshift64(uint64_t& x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

inline uint64_t first_xorshift_state(uint64_t seed) {
  uint64_t x = splitmix64(seed);
  return x != 0 ? x : 0x2545f4914f6cdd1dULL;  // xorshift64 is stuck at 0
}

inline uint64_t to_little_endian(uint64_t v) {
  if constexpr (std::endian::native == std::endian::big) return std::byteswap(v);
  return v;
}

// Generates the pattern of `seed` in 8-byte words and hands each run of bytes to
// `sink(offset, bytes, size)`; stops (returning the offset) when sink returns false.
template <typename Sink>
size_t walk_pattern(uint64_t seed, size_t size, Sink&& sink) {
  uint64_t x = first_xorshift_state(seed);
  size_t off = 0;
  for (; off + 8 <= size; off += 8) {
    uint64_t word = to_little_endian(xorshift64(x));
    if (!sink(off, &word, size_t{8})) return off;
  }
  if (off < size) {
    uint64_t word = to_little_endian(xorshift64(x));
    if (!sink(off, &word, size - off)) return off;
  }
  return size;
}
}  // namespace detail

// Fills `out` with the pattern of `seed`.
inline void fill_pattern(uint64_t seed, std::span<uint8_t> out) {
  uint8_t* base = out.data();
  detail::walk_pattern(seed, out.size(), [base](size_t off, const uint64_t* word, size_t n) {
    std::memcpy(base + off, word, n);
    return true;
  });
}

// The offset of the first 8-byte word of `bytes` that differs from the pattern
// of `seed`, or nullopt when all of it matches.
inline std::optional<size_t> first_pattern_mismatch(uint64_t seed, std::span<const uint8_t> bytes) {
  const uint8_t* base = bytes.data();
  size_t stop =
      detail::walk_pattern(seed, bytes.size(), [base](size_t off, const uint64_t* word, size_t n) {
        return std::memcmp(base + off, word, n) == 0;
      });
  if (stop == bytes.size()) return std::nullopt;
  return stop;
}

inline std::string encode_count(uint64_t count) { return fmt::format("{}\n", count); }

// Decimal digits and an optional final newline, nothing else.
inline std::optional<uint64_t> parse_count(std::string_view text) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

inline std::string encode_meta(const StateMeta& meta) {
  return fmt::format("format={}\nseed={}\nbytes={}\ncrc32c={:08x}\n", meta.format, meta.seed,
                     meta.bytes, meta.crc32c);
}

namespace detail {
// The value of `key` in `fields` as a number in `base`.
inline Result<uint64_t> meta_number(const std::map<std::string_view, std::string_view>& fields,
                                    std::string_view key, int base = 10) {
  auto it = fields.find(key);
  if (it == fields.end()) return fail(ErrorCode::kCorruption, fmt::format("'{}' is missing", key));
  std::string_view v = it->second;
  uint64_t parsed = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), parsed, base);
  if (v.empty() || ec != std::errc{} || end != v.data() + v.size())
    return fail(ErrorCode::kCorruption, fmt::format("'{}' has the bad value '{}'", key, v));
  return parsed;
}
}  // namespace detail

// Strict: the four keys of encode_meta, each once, nothing else.
inline Result<StateMeta> parse_meta(std::string_view text) {
  constexpr std::array<std::string_view, 4> kKeys{"format", "seed", "bytes", "crc32c"};
  std::map<std::string_view, std::string_view> fields;
  while (!text.empty()) {  // bounded: each turn consumes a line
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    size_t eq = line.find('=');
    std::string_view key = line.substr(0, eq);
    if (eq == std::string_view::npos || std::ranges::find(kKeys, key) == kKeys.end())
      return fail(ErrorCode::kCorruption, fmt::format("unexpected line '{}'", line.substr(0, 40)));
    if (!fields.emplace(key, line.substr(eq + 1)).second)
      return fail(ErrorCode::kCorruption, fmt::format("'{}' appears twice", key));
  }
  auto format = detail::meta_number(fields, "format");
  auto seed = detail::meta_number(fields, "seed");
  auto bytes = detail::meta_number(fields, "bytes");
  auto crc = detail::meta_number(fields, "crc32c", 16);
  for (const auto* r : {&format, &seed, &bytes, &crc})
    if (!*r) return std::unexpected(r->error());
  if (*format != kStateFormat)
    return fail(ErrorCode::kCorruption,
                fmt::format("format {} is not the supported {}", *format, kStateFormat));
  if (*crc > UINT32_MAX)
    return fail(ErrorCode::kCorruption, fmt::format("crc32c {:x} is over 32 bits", *crc));
  return StateMeta{kStateFormat, *seed, *bytes, static_cast<uint32_t>(*crc)};
}

}  // namespace wpm::demo_counter
