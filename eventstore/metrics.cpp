#include "eventstore/metrics.h"

namespace wpm::eventstore {
namespace {
using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;
}  // namespace

StoreMetrics::StoreMetrics(prometheus::Registry& r)
    : requests_family(BuildCounter()
                          .Name("wpm_store_requests_total")
                          .Help("Requests served by the event store, by kind and result")
                          .Register(r)),
      appended_events(BuildCounter()
                          .Name("wpm_store_appended_events_total")
                          .Help("Events appended and acknowledged")
                          .Register(r)
                          .Add({})),
      duplicate_appends(BuildCounter()
                            .Name("wpm_store_duplicate_appends_total")
                            .Help("Appends answered from their idempotency key, writing nothing")
                            .Register(r)
                            .Add({})),
      conflicts(BuildCounter()
                    .Name("wpm_store_expected_version_conflicts_total")
                    .Help("Appends refused by an expected-version check")
                    .Register(r)
                    .Add({})),
      batch_events(BuildHistogram()
                       .Name("wpm_store_batch_events")
                       .Help("Events per group commit (one WAL sync)")
                       .Register(r)
                       .Add({}, Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
                                                            1024, 4096, 16384, 65536})),
      commit_seconds(BuildHistogram()
                         .Name("wpm_store_commit_seconds")
                         .Help("Time to make one batch durable: write, WAL sync, mark write")
                         .Register(r)
                         .Add({}, Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001,
                                                              0.0025, 0.005, 0.01, 0.025, 0.05,
                                                              0.1, 0.25, 1})),
      head_sequence(BuildGauge()
                        .Name("wpm_store_head_sequence")
                        .Help("Highest acknowledged sequence")
                        .Register(r)
                        .Add({})),
      log_bytes(BuildGauge()
                    .Name("wpm_store_log_bytes")
                    .Help("Bytes of stored records in the log")
                    .Register(r)
                    .Add({})),
      subscribers(BuildGauge()
                      .Name("wpm_store_subscribers")
                      .Help("Subscriptions to the publication endpoint")
                      .Register(r)
                      .Add({})),
      read_only(BuildGauge()
                    .Name("wpm_store_read_only")
                    .Help("1 when the store stopped writing after a write error")
                    .Register(r)
                    .Add({})),
      malformed_frames(BuildCounter()
                           .Name("wpm_bus_malformed_frames_total")
                           .Help("Frames dropped as malformed, by endpoint")
                           .Register(r)
                           .Add({{"endpoint", "store"}})),
      published_events(BuildCounter()
                           .Name("wpm_store_published_events_total")
                           .Help("Events published on the publication endpoint")
                           .Register(r)
                           .Add({})) {
  static_assert(static_cast<size_t>(RequestKind::kBackup) + 1 == kRequestKinds);
  static constexpr const char* kKinds[kRequestKinds] = {"append", "read_range",    "read_stream",  "stats",
                                                        "verify", "write_samples", "read_samples", "backup"};
  for (size_t k = 0; k < kRequestKinds; ++k) {
    requests_[k][0] = &requests_family.Add({{"kind", kKinds[k]}, {"result", "error"}});
    requests_[k][1] = &requests_family.Add({{"kind", kKinds[k]}, {"result", "ok"}});
  }
}

prometheus::Counter& StoreMetrics::request(RequestKind kind, bool ok) {
  return *requests_[static_cast<size_t>(kind)][ok ? 1 : 0];
}

}  // namespace wpm::eventstore
