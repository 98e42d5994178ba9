// Crash: kill -9 the store at random moments while `wpm log append` runs.
// After every restart, every acknowledged event is present exactly once,
// sequences are gap-free, and `wpm log verify` passes.
//
// WPM_CRASH_ROUNDS overrides the number of rounds (default 50); the whole test
// is bounded in time as well.

#include <gtest/gtest.h>
#include <signal.h>

#include <random>
#include <set>
#include <thread>

#include "tests/integration/helpers.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;

// Checks the log against every acknowledgement written so far.
void check_log(const Wpmd& wpmd, const std::string& ack_path, int round) {
  SCOPED_TRACE("after round " + std::to_string(round));
  auto verify = wpm(wpmd, {"log", "verify"});
  ASSERT_EQ(verify.exit_code, 0) << verify.out << verify.err;

  zmq::context_t ctx(1);
  bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options());
  std::vector<Event> events = read_all(client);
  auto stats = client.stats();
  ASSERT_TRUE(stats.has_value());
  ASSERT_EQ(events.size(), stats->head) << "sequences 1..head, gap-free";
  std::set<std::pair<std::string, uint64_t>> seen;  // (run, index): each event once
  for (size_t i = 0; i < events.size(); ++i) {
    ASSERT_EQ(events[i].sequence, i + 1);
    const auto& s = std::get<Synthetic>(events[i].payload);
    ASSERT_TRUE(seen.insert({s.run, s.index}).second)
        << "event " << s.run << "/" << s.index << " appears twice (again at " << i + 1 << ")";
  }
  auto acks = read_acks(ack_path);
  for (const Ack& a : acks) {
    ASSERT_GE(a.sequence, 1u);
    ASSERT_LE(a.sequence, events.size()) << "acknowledged sequence " << a.sequence << " lost";
    ASSERT_EQ(events[a.sequence - 1].idempotency_key, a.key)
        << "acknowledged sequence " << a.sequence << " holds another event";
  }
}

TEST(Crash, KillNineUnderLoadLosesNoAcknowledgedEvent) {
  int rounds = 50;
  if (const char* env = std::getenv("WPM_CRASH_ROUNDS")) rounds = std::atoi(env);
  std::random_device rd;
  unsigned seed = rd();
  std::printf("crash test: %d rounds, seed %u\n", rounds, seed);
  std::mt19937 rng(seed);
  TempDir dir;
  std::string ack_path = dir / "acks";
  Wpmd wpmd(Wpmd::Options{dir / "data", {}});
  auto deadline = std::chrono::steady_clock::now() + 10min;
  size_t acked_total = 0;
  for (int round = 0; round < rounds && std::chrono::steady_clock::now() < deadline; ++round) {
    ASSERT_TRUE(wpmd.start()) << "restart " << round << " failed:\n" << wpmd.log();
    if (round > 0) {
      check_log(wpmd, ack_path, round);
      if (::testing::Test::HasFatalFailure()) {
        std::fprintf(stderr, "%s\n", wpmd.log().c_str());
        return;
      }
    }
    // Up to 200 events: batches from about 100 events on sync the WAL early (eventstore/wal_sync.h).
    std::uniform_int_distribution<int> batch(1, 200);
    std::uniform_int_distribution<int> delay_ms(5, 250);
    pid_t writer = spawn({bin("wpm"), "--data", wpmd.data_dir(), "--store", wpmd.request(), "--timeout", "1000", "--attempts",
                          "2", "log", "append", "--synthetic", "10000000", "--batch",
                          std::to_string(batch(rng)), "--ack-file", ack_path, "--run",
                          "round" + std::to_string(round)},
                         dir / "writer.out", dir / "writer.err");
    // The random moment of the crash.
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    wpmd.kill(SIGKILL);
    ::kill(-writer, SIGKILL);
    wait_exit(writer, 10s);
    acked_total = read_acks(ack_path).size();
  }
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  check_log(wpmd, ack_path, rounds);
  EXPECT_GT(acked_total, 0u);
  std::printf("crash test: %zu acknowledged events checked\n", acked_total);
}

// A crash after the WAL sync but before the mark is written: the batch is on
// disk but was never acknowledged. It is discarded at the next start; the client's
// retry with the same key appends it as new, exactly once.
TEST(KillPoint, BatchNotYetAcknowledgedIsDiscardedAndTheRetryAppendsIt) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  zmq::context_t ctx(1);
  {
    bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options());
    ASSERT_TRUE(client.append(synthetic_request("a", "synthetic/kp", 5)).has_value());
  }
  ASSERT_EQ(wpmd.stop(), 0);
  wpmd.options().env = {{"WPM_TEST_KILL_POINT", "after_wal_sync"}};
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  auto b = synthetic_request("b", "synthetic/kp", 3, 5);
  {
    bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options(500, 1));
    auto r = client.append(b);
    ASSERT_FALSE(r.has_value()) << "no acknowledgement: the process died first";
  }
  EXPECT_TRUE(wait_until([&] { return wait_exit(wpmd.pid(), 0ms).has_value(); }, 10s));
  wpmd.options().env = {};
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  EXPECT_NE(wpmd.log().find("recovery_discarded_unacknowledged from=6 to=8 count=3"),
            std::string::npos)
      << wpmd.log();
  bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options());
  EXPECT_EQ(client.stats()->head, 5u);
  auto again = client.append(b);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_FALSE(again->duplicate) << "the discarded batch was never acknowledged";
  EXPECT_EQ(again->first_sequence, 6u);
  EXPECT_EQ(read_all(client).size(), 8u);
  EXPECT_EQ(wpm(wpmd, {"log", "verify"}).exit_code, 0);
}

// The same crash, then a restart of the machine (a new boot id) before wpmd
// starts again: the mark on disk may trail what was acknowledged (it is synced
// within mark_sync_interval_ms, not before each reply), so the records above
// it are kept. The client's retry is a duplicate of them.
TEST(KillPoint, AfterARebootRecordsAboveTheMarkAreKeptAndTheRetryIsADuplicate) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}, std::chrono::seconds(20),
                          {{"WPM_TEST_BOOT_ID", "boot-1"}}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  zmq::context_t ctx(1);
  {
    bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options());
    ASSERT_TRUE(client.append(synthetic_request("a", "synthetic/kp", 5)).has_value());
  }
  ASSERT_EQ(wpmd.stop(), 0);
  wpmd.options().env = {{"WPM_TEST_BOOT_ID", "boot-1"}, {"WPM_TEST_KILL_POINT", "after_wal_sync"}};
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  auto b = synthetic_request("b", "synthetic/kp", 3, 5);
  {
    bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options(500, 1));
    ASSERT_FALSE(client.append(b).has_value()) << "no acknowledgement: the process died first";
  }
  EXPECT_TRUE(wait_until([&] { return wait_exit(wpmd.pid(), 0ms).has_value(); }, 10s));
  wpmd.options().env = {{"WPM_TEST_BOOT_ID", "boot-2"}};
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  EXPECT_NE(wpmd.log().find("recovery_kept_above_mark from=6 to=8 count=3"), std::string::npos)
      << wpmd.log();
  bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options());
  EXPECT_EQ(client.stats()->head, 8u);
  auto again = client.append(b);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->first_sequence, 6u);
  EXPECT_EQ(read_all(client).size(), 8u);
  EXPECT_EQ(wpm(wpmd, {"log", "verify"}).exit_code, 0);
}

// A crash after the mark is written but before the reply: the batch is acknowledged
// in the log, the client never heard. Its retry gets the original sequences.
TEST(KillPoint, BatchAcknowledgedButNotAnsweredIsKeptAndTheRetryIsADuplicate) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}, std::chrono::seconds(20),
                          {{"WPM_TEST_KILL_POINT", "after_mark_write"}}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  zmq::context_t ctx(1);
  auto req = synthetic_request("only", "synthetic/kp", 4);
  {
    bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options(500, 1));
    ASSERT_FALSE(client.append(req).has_value());
  }
  EXPECT_TRUE(wait_until([&] { return wait_exit(wpmd.pid(), 0ms).has_value(); }, 10s));
  wpmd.options().env = {};
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  EXPECT_NE(wpmd.log().find("recovery_rebuilt_derived from=1 to=4"), std::string::npos)
      << wpmd.log();
  bus::StoreClient client(ctx, wpmd.request(), wpmd.client_options());
  auto again = client.append(req);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->first_sequence, 1u);
  EXPECT_EQ(client.stats()->head, 4u);
}

}  // namespace
}  // namespace wpm::testing
