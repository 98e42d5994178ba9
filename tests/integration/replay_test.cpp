// Replay: a projection folded live from publications equals the same
// projection rebuilt from the log (DESIGN.md §2), also after a restart.

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "bus/subscriber.h"
#include "projections/log_summary.h"
#include "schemas/codec.h"
#include "tests/integration/helpers.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;

AppendRequest system_event(const std::string& key, const std::string& id, bool remove) {
  AppendRequest req;
  req.idempotency_key = key;
  Payload p = remove ? Payload{SystemRemoved{id, "decommissioned"}}
                     : Payload{SystemRegistered{id, "host-" + id, "10.1.0." + id, "key-" + id}};
  req.events.push_back(EventDraft{"test-system/" + id, "task-" + key, "", "root", p});
  req.expectations = {{"test-system/" + id, remove ? ExpectKind::kStreamExists : ExpectKind::kNoStream, 0}};
  return req;
}

projections::LogSummary rebuild(bus::StoreClient& client) {
  projections::LogSummary s = projections::initial();
  for (const Event& e : read_all(client)) s = projections::evolve(std::move(s), e);
  return s;
}

TEST(Replay, LiveProjectionEqualsProjectionRebuiltFromTheLog) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  zmq::context_t ctx(1);
  bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options());
  // Some history before the subscriber starts: it must catch up on it.
  ASSERT_TRUE(client.append(synthetic_request("pre", "synthetic/pre", 50)).has_value());

  projections::LogSummary live = projections::initial();
  std::atomic<uint64_t> live_sequence{0};
  std::atomic<bool> stop{false};
  bus::SubscriberOptions o;
  o.store_endpoint = wpmd.request();
  o.client = wpmd.client_options();
  // publish_endpoint left empty: the subscriber asks the store where to subscribe.
  o.idle_check_ms = 100;
  bus::CatchUpSubscriber sub(ctx, o, [&](const Event& e) {
    live = projections::evolve(std::move(live), e);
    live_sequence = e.sequence;
  });
  std::thread consumer([&] {
    auto r = sub.run([&] { return stop.load(); });
    EXPECT_TRUE(r.has_value()) << r.error().message;
  });

  zmq::context_t producer_ctx(1);
  bus::StoreClient producer(producer_ctx, wpmd.request(), wpmd.client_options());
  for (int i = 0; i < 20; ++i) {
    std::string id = std::to_string(i);
    ASSERT_TRUE(producer.append(system_event("reg" + id, id, false)).has_value());
    ASSERT_TRUE(producer.append(synthetic_request("s" + id, "synthetic/live", 10, 10 * i)).has_value());
    if (i % 3 == 0) {
      ASSERT_TRUE(producer.append(system_event("rem" + id, id, true)).has_value());
    }
  }
  uint64_t head = producer.stats()->head;
  ASSERT_TRUE(wait_until([&] { return live_sequence.load() == head; }, 30s))
      << "live projection stuck at " << live_sequence.load() << " of " << head;
  stop = true;
  consumer.join();

  projections::LogSummary rebuilt = rebuild(client);
  EXPECT_EQ(rebuilt.last_sequence, head);
  EXPECT_EQ(rebuilt.systems.size(), 13u);  // 20 registered, 7 removed
  EXPECT_TRUE(live == rebuilt) << "live and rebuilt projections differ";

  // After a restart the log folds to the same state again.
  ASSERT_EQ(wpmd.stop(), 0);
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  bus::StoreClient again(ctx, wpmd.request(), wpmd.client_options());
  EXPECT_TRUE(rebuild(again) == live);
}

}  // namespace
}  // namespace wpm::testing
