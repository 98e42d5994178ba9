#pragma once
// Metric samples (DESIGN.md §2; seed "Viewing performance metrics"): the
// metrics an agent reports, and the compact encoding of a block of samples
// that the metrics column family stores (eventstore/samples.h).
//
// A block is one entity's samples (a host, or a WPAR on one host) over a
// span of time: the times once, then one column per metric. Values are
// fixed point (value × the metric's scale, an integer), so that a steady
// metric costs one bit a sample and a noisy one the bits of its change:
//   - times, in whole seconds: the first as is, then delta-of-delta in
//     buckets (0 → 1 bit; ±63 → 9 bits; ±255 → 12; ±2047 → 16; else 68),
//     the scheme of Gorilla and Prometheus' TSDB;
//   - each column: each value's change from the previous one (the first's
//     from zero), zigzag, in buckets (0 → 1 bit; < 16 → 6; < 256 → 11;
//     < 4096 → 16; < 2^20 → 25; else 69).
// Gorilla XORs the floats' bits instead; our values are quantised to a
// fixed resolution (0.01 % for utilisation), whose decimal steps XOR into
// dozens of mantissa bits, while their integer change takes a few.
//
// Thread safety: plain values and free functions.

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schemas/error.h"
#include "schemas/metrics.h"

namespace wpm::eventstore::series {

// The metrics and their fixed point (schemas/metrics.h), as this file names them.
using metrics::Metric;
using metrics::MetricInfo;
using metrics::kMetricMax;
using metrics::metric_infos;
using metrics::metric_info;
using metrics::metric_by_name;
using metrics::to_fixed;
using metrics::from_fixed;
using metrics::kMissing;
using Column = metrics::Column;

// Aggregate kinds in a column's tag (aggregate blocks).
enum class Aggregate : uint8_t { kMin = 1, kMean = 2, kMax = 3 };
inline uint8_t aggregate_tag(Metric m, Aggregate a) {
  return static_cast<uint8_t>(static_cast<uint8_t>(m) * 4 + static_cast<uint8_t>(a));
}

struct Block {
  std::vector<int64_t> times_s;  // increasing
  std::vector<Column> columns;   // each as long as times_s
  bool operator==(const Block&) const = default;
};

// The bytes of a block. Requires increasing times and columns of equal length.
std::string encode_block(const Block& block);
// kCorruption for bytes that are not a block (short, over-long, bad header).
Result<Block> decode_block(std::string_view bytes);

// The integer coding blocks and stored rows share: zigzag (small magnitudes,
// either sign, to small numbers) and LEB128 varints. get_varint consumes
// what it reads; nothing when the bytes end or run past 64 bits.
uint64_t zigzag(int64_t v);
int64_t unzigzag(uint64_t u);
void put_varint(std::string& out, uint64_t v);
std::optional<uint64_t> get_varint(std::string_view& in);

// Blocks of at most this many samples; a longer one is refused as corrupt.
inline constexpr size_t kBlockSamplesMax = 1u << 20;
inline constexpr size_t kBlockColumnsMax = 64;

}  // namespace wpm::eventstore::series
