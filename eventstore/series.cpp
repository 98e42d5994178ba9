#include "eventstore/series.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "schemas/assert.h"

namespace wpm::eventstore::series {
namespace {

constexpr uint8_t kBlockFormat = 1;  // nothing stored before this format

// Payload widths of the buckets: bucket i is written as i one-bits and a
// zero (the last: its one-bits alone), then `width` bits of the value.
constexpr std::array<int, 5> kTimeBuckets = {0, 7, 9, 12, 64};
constexpr std::array<int, 6> kValueBuckets = {0, 4, 8, 12, 20, 64};

// Changes wrap (two's complement), so that any two values, kMissing too,
// have a change that decodes back exactly.
int64_t wrapping_sub(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}
int64_t wrapping_add(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}

class BitWriter {
 public:
  explicit BitWriter(std::string& out) : out_(out) {}
  void put(uint64_t bits, int n) {
    for (int i = n - 1; i >= 0; --i) {
      acc_ = static_cast<uint8_t>((acc_ << 1) | ((bits >> i) & 1));
      if (++used_ == 8) {
        out_.push_back(static_cast<char>(acc_));
        acc_ = 0;
        used_ = 0;
      }
    }
  }
  void finish() {
    if (used_ > 0) out_.push_back(static_cast<char>(acc_ << (8 - used_)));
    used_ = 0;
    acc_ = 0;
  }

 private:
  std::string& out_;
  uint8_t acc_ = 0;
  int used_ = 0;
};

class BitReader {
 public:
  explicit BitReader(std::string_view in) : in_(in) {}
  std::optional<uint64_t> get(int n) {
    if (n > 0 && bit_ + static_cast<size_t>(n) > in_.size() * 8) return std::nullopt;
    uint64_t v = 0;
    for (int i = 0; i < n; ++i, ++bit_) {
      v = (v << 1) | ((static_cast<uint8_t>(in_[bit_ / 8]) >> (7 - bit_ % 8)) & 1);
    }
    return v;
  }

 private:
  std::string_view in_;
  size_t bit_ = 0;
};

template <size_t N>
void put_bucketed(BitWriter& w, uint64_t u, const std::array<int, N>& widths) {
  for (size_t i = 0; i < N; ++i) {
    bool fits = widths[i] >= 64 || u < (uint64_t{1} << widths[i]);
    if (!fits) continue;
    if (i + 1 < N) {
      w.put((uint64_t{1} << (i + 1)) - 2, static_cast<int>(i + 1));  // i ones, then a zero
    } else {
      w.put((uint64_t{1} << i) - 1, static_cast<int>(i));
    }
    w.put(u, widths[i]);
    return;
  }
}

template <size_t N>
std::optional<uint64_t> get_bucketed(BitReader& r, const std::array<int, N>& widths) {
  size_t i = 0;
  while (i + 1 < N) {
    auto bit = r.get(1);
    if (!bit) return std::nullopt;
    if (*bit == 0) break;
    ++i;
  }
  return r.get(widths[i]);
}

Error corrupt(std::string_view what) {
  return Error{ErrorCode::kCorruption, fmt::format("a stored metric block is damaged: {}", what)};
}

}  // namespace

uint64_t zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
int64_t unzigzag(uint64_t u) { return static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1)); }

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

std::optional<uint64_t> get_varint(std::string_view& in) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    auto b = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return v;
  }
  return std::nullopt;
}

std::string encode_block(const Block& block) {
  const size_t n = block.times_s.size();
  WPM_ASSERT(block.columns.size() <= kBlockColumnsMax, "{} columns in one block", block.columns.size());
  std::string out;
  out.reserve(16 + block.columns.size() + n * (1 + block.columns.size()));
  out.push_back(static_cast<char>(kBlockFormat));
  put_varint(out, n);
  put_varint(out, block.columns.size());
  for (const auto& c : block.columns) {
    WPM_ASSERT(c.values.size() == n, "column {} has {} values for {} times", c.tag, c.values.size(), n);
    out.push_back(static_cast<char>(c.tag));
  }
  BitWriter w(out);
  int64_t previous = 0, previous_delta = 0;
  for (size_t i = 0; i < n; ++i) {
    int64_t t = block.times_s[i];
    if (i == 0) {
      w.put(static_cast<uint64_t>(t), 64);
    } else {
      WPM_ASSERT(t > previous, "times must increase: {} after {}", t, previous);
      int64_t delta = t - previous;
      put_bucketed(w, zigzag(delta - previous_delta), kTimeBuckets);
      previous_delta = delta;
    }
    previous = t;
  }
  for (const auto& c : block.columns) {
    for (size_t i = 0; i < n; ++i) {
      // The first value as a change from zero: most are small.
      put_bucketed(w, zigzag(wrapping_sub(c.values[i], i == 0 ? 0 : c.values[i - 1])), kValueBuckets);
    }
  }
  w.finish();
  return out;
}

Result<Block> decode_block(std::string_view in) {
  if (in.empty() || static_cast<uint8_t>(in[0]) != kBlockFormat) return std::unexpected(corrupt("unknown format"));
  in.remove_prefix(1);
  auto n = get_varint(in);
  auto m = get_varint(in);
  if (!n || !m || *n > kBlockSamplesMax || *m > kBlockColumnsMax || in.size() < *m) {
    return std::unexpected(corrupt("bad header"));
  }
  // Every sample takes at least a bit per column and per time (the first time 64):
  // a header claiming more than the bytes can hold is refused before anything is reserved.
  if (*n > 0 && (63 + *n + *n * *m) > (in.size() - *m) * 8) return std::unexpected(corrupt("bad header"));
  Block block;
  block.columns.resize(*m);
  for (auto& c : block.columns) {
    c.tag = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    c.values.reserve(*n);
  }
  block.times_s.reserve(*n);
  BitReader r(in);
  int64_t previous = 0, previous_delta = 0;
  for (uint64_t i = 0; i < *n; ++i) {
    auto bits = i == 0 ? r.get(64) : get_bucketed(r, kTimeBuckets);
    if (!bits) return std::unexpected(corrupt("times cut short"));
    int64_t t = static_cast<int64_t>(*bits);
    if (i > 0) {
      previous_delta = wrapping_add(previous_delta, unzigzag(*bits));
      if (previous_delta <= 0 || previous > INT64_MAX - previous_delta) {
        return std::unexpected(corrupt("times do not increase"));
      }
      t = previous + previous_delta;
    }
    block.times_s.push_back(t);
    previous = t;
  }
  for (auto& c : block.columns) {
    int64_t v = 0;
    for (uint64_t i = 0; i < *n; ++i) {
      auto bits = get_bucketed(r, kValueBuckets);
      if (!bits) return std::unexpected(corrupt(fmt::format("column {} cut short", c.tag)));
      v = wrapping_add(v, unzigzag(*bits));
      c.values.push_back(v);
    }
  }
  return block;
}

}  // namespace wpm::eventstore::series
