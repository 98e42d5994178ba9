#pragma once
// Prometheus metrics of the event store (STYLE.md §7: wpm_ prefix, base units,
// bounded labels). Owned by main(), lent to the server. Thread-safe (atomics).

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>

namespace wpm::eventstore {

enum class RequestKind { kAppend, kReadRange, kReadStream, kStats, kVerify, kWriteSamples, kReadSamples, kBackup };

struct StoreMetrics {
  explicit StoreMetrics(prometheus::Registry& registry);

  prometheus::Counter& request(RequestKind kind, bool ok);

  prometheus::Family<prometheus::Counter>& requests_family;
  prometheus::Counter& appended_events;
  prometheus::Counter& duplicate_appends;
  prometheus::Counter& conflicts;
  prometheus::Histogram& batch_events;
  prometheus::Histogram& commit_seconds;
  prometheus::Gauge& head_sequence;
  prometheus::Gauge& log_bytes;
  prometheus::Gauge& subscribers;
  prometheus::Gauge& read_only;
  prometheus::Counter& malformed_frames;
  prometheus::Counter& published_events;

 private:
  // Every kind and result, made at start: zeros are exported from the start,
  // and the hot path skips the family's locked label lookup.
  static constexpr size_t kRequestKinds = 8;
  std::array<std::array<prometheus::Counter*, 2>, kRequestKinds> requests_{};
};

}  // namespace wpm::eventstore
