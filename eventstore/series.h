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

namespace wpm::eventstore::series {

// The metrics wpm collects. The numbers are stored: never renumber.
enum class Metric : uint8_t {
  kCpu = 1,         // % of the host's CPU capacity (a WPAR: its share of the host's)
  kMemory = 2,      // % of the host's memory
  kLoad = 3,        // host: 1-minute load average
  kProcesses = 4,   // processes
  kThreads = 5,     // threads (tasks)
  kPageFaults = 6,  // page faults per second
};
inline constexpr uint8_t kMetricMax = 6;

struct MetricInfo {
  Metric id;
  std::string_view name;  // as the CLI and the policy name it
  std::string_view unit;
  int64_t scale;          // stored value = round(value × scale)
  bool utilisation;       // a percentage of a resource (policy limit fixed at 1)
};
std::span<const MetricInfo> metric_infos();
const MetricInfo& metric_info(Metric metric);
std::optional<Metric> metric_by_name(std::string_view name);

// Fixed point, rounded to the nearest step, and back.
int64_t to_fixed(Metric metric, double value);
double from_fixed(Metric metric, int64_t value);

// A value not collected at that time (e.g. no pids controller for threads).
inline constexpr int64_t kMissing = INT64_MIN;

// One metric's values at a block's times, in fixed point. `tag` names what
// the column holds: a metric's number, or (aggregates) metric × 4 + kind.
struct Column {
  uint8_t tag = 0;
  std::vector<int64_t> values;
  bool operator==(const Column&) const = default;
};

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

// Blocks of at most this many samples; a longer one is refused as corrupt.
inline constexpr size_t kBlockSamplesMax = 1u << 20;
inline constexpr size_t kBlockColumnsMax = 64;

}  // namespace wpm::eventstore::series
