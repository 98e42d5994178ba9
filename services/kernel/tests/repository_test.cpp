// The aggregate repository against a real store (RocksDB in a temporary
// directory): decide, append with the expected version, retry on conflict,
// and answer a re-sent command with its first outcome.

#include "services/kernel/repository.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <prometheus/registry.h>
#include <thread>
#include <zmq.hpp>

#include <filesystem>
#include <functional>

#include "eventstore/metrics.h"
#include "eventstore/server.h"
#include "services/kernel/identity.h"

namespace wpm::kernel {
namespace {

namespace fs = std::filesystem;

// A test aggregate: a tally that may not pass its limit. Its events are
// synthetic ones (index = the amount added), on a stream the administrator may write.
struct Tally {
  struct State {
    uint64_t total = 0;
    uint64_t adds = 0;
    bool operator==(const State&) const = default;
  };
  struct Command {
    uint64_t amount = 0;
    uint64_t limit = 0;
  };
  static State initial() { return {}; }
  static State evolve(State s, const Event& e) {
    if (const auto* x = std::get_if<Synthetic>(&e.payload)) {
      s.total += x->index;
      ++s.adds;
    }
    return s;
  }
  static Decision decide(const State& s, const Command& c, const Context& ctx) {
    if (c.amount == 0) return Decision{};  // nothing to do: no events
    if (s.total + c.amount > c.limit) {
      return std::unexpected(Rejection{RejectionCode::kConflict,
                                       fmt::format("adding {} to {} passes the limit {}", c.amount, s.total, c.limit)});
    }
    return Decision{std::vector<Payload>{Synthetic{"tally", c.amount, ctx.actor, ""}}};
  }
};
static_assert(Aggregate<Tally>);

// Runs `before_append` once, just before the first append goes through:
// another writer's decision lands between this one's load and its append.
class InterleavingLog final : public EventLog {
 public:
  InterleavingLog(EventLog& inner, std::function<void()> before_append)
      : inner_(inner), before_(std::move(before_append)) {}
  Result<AppendResult> append(const AppendRequest& r) override {
    ++appends_;
    if (before_) std::exchange(before_, nullptr)();
    return inner_.append(r);
  }
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return inner_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override { return inner_.read_range(r); }
  int appends_ = 0;

 private:
  EventLog& inner_;
  std::function<void()> before_;
};

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("wpm-repository-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    open();
  }
  void TearDown() override {
    log_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  void open() {
    log_.reset();
    store_.reset();
    eventstore::StoreOptions o;
    o.data_dir = dir_.string();
    auto store = eventstore::Store::open(o, std::make_shared<spdlog::logger>("repository", std::make_shared<spdlog::sinks::null_sink_mt>()));
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
    log_ = std::make_unique<LocalLog>(*store_, clock_, access_, std::string(kAdminIdentity));
  }
  Context ctx(const std::string& command) {
    return Context{clock_.wall_ns(), "user:alice", CommandId(command), "task-" + command};
  }

  fs::path dir_;
  SimulatedClock clock_;
  StreamAccess access_;
  std::unique_ptr<eventstore::Store> store_;
  std::unique_ptr<LocalLog> log_;
};

TEST_F(RepositoryTest, DecidesAppendsAndStampsTheEnvelope) {
  Repository<Tally> repo(*log_);
  auto out = repo.handle("synthetic/tally", Tally::Command{3, 10}, ctx("c1"));
  ASSERT_TRUE(out) << out.error().message;
  ASSERT_TRUE(out->accepted());
  ASSERT_EQ(out->events.size(), 1u);
  const Event& e = out->events[0];
  EXPECT_EQ(e.stream_version, 1u);
  EXPECT_EQ(e.correlation_id, "task-c1");
  EXPECT_EQ(e.causation_id, "c1");
  EXPECT_EQ(e.idempotency_key, "cmd/c1");
  EXPECT_EQ(e.actor, "admin") << "the log stamps who appended";
  EXPECT_FALSE(out->replayed);
  EXPECT_EQ(out->version, 1u);
  auto loaded = repo.load("synthetic/tally");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->state, (Tally::State{3, 1}));
}

TEST_F(RepositoryTest, ARejectionWritesNothingAndSaysWhy) {
  Repository<Tally> repo(*log_);
  ASSERT_TRUE(repo.handle("synthetic/tally", Tally::Command{8, 10}, ctx("c1")));
  auto out = repo.handle("synthetic/tally", Tally::Command{5, 10}, ctx("c2"));
  ASSERT_TRUE(out);
  ASSERT_FALSE(out->accepted());
  EXPECT_EQ(out->rejection->code, RejectionCode::kConflict);
  EXPECT_NE(out->rejection->message.find("limit 10"), std::string::npos);
  EXPECT_EQ(store_->head(), 1u);
  // A command that changes nothing is accepted with no events.
  auto none = repo.handle("synthetic/tally", Tally::Command{0, 10}, ctx("c3"));
  ASSERT_TRUE(none && none->accepted());
  EXPECT_TRUE(none->events.empty());
  EXPECT_EQ(store_->head(), 1u);
}

TEST_F(RepositoryTest, AReSentCommandWritesNothingAndGetsTheFirstOutcome) {
  Repository<Tally> repo(*log_);
  auto first = repo.handle("synthetic/tally", Tally::Command{4, 10}, ctx("c1"));
  ASSERT_TRUE(first && first->accepted());
  // Re-sent: deciding again on the new state would add 4 more; it must not.
  auto again = repo.handle("synthetic/tally", Tally::Command{4, 10}, ctx("c1"));
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->events, first->events);
  EXPECT_EQ(store_->head(), 1u);
  // After a restart of the service (and the store), the same.
  open();
  Repository<Tally> restarted(*log_);
  auto after = restarted.handle("synthetic/tally", Tally::Command{4, 10}, ctx("c1"));
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->replayed);
  EXPECT_EQ(after->events, first->events);
  EXPECT_EQ(store_->head(), 1u);
}

TEST_F(RepositoryTest, TheStoreAnswersAKeyItKnowsWithTheSequencesItFirstWrote) {
  // The first decision's events went to the log, but this repository's load
  // does not see them (another writer's append overtook this one's read):
  // the store's idempotency key answers with the first outcome.
  Repository<Tally> repo(*log_);
  auto first = repo.handle("synthetic/tally", Tally::Command{2, 10}, ctx("c1"));
  ASSERT_TRUE(first);
  AppendRequest same;
  same.idempotency_key = "cmd/c1";
  same.events.push_back(EventDraft{"synthetic/tally", "task-c1", "c1", "user:alice",
                                   Synthetic{"tally", 2, "user:alice", ""}});
  auto r = log_->append(same);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->duplicate);
  EXPECT_EQ(r->first_sequence, first->events[0].sequence);
}

TEST_F(RepositoryTest, AConflictingConcurrentDecisionIsDecidedAgainAndSucceeds) {
  Repository<Tally> other(*log_);
  InterleavingLog interleaved(*log_, [&] {
    ASSERT_TRUE(other.handle("synthetic/tally", Tally::Command{3, 10}, ctx("other")));
  });
  Repository<Tally> repo(interleaved);
  auto out = repo.handle("synthetic/tally", Tally::Command{5, 10}, ctx("mine"));
  ASSERT_TRUE(out) << out.error().message;
  ASSERT_TRUE(out->accepted());
  EXPECT_EQ(interleaved.appends_, 2) << "the first append met the conflict, the second went through";
  EXPECT_EQ(out->events[0].stream_version, 2u);
  auto loaded = repo.load("synthetic/tally");
  EXPECT_EQ(loaded->state, (Tally::State{8, 2}));
}

TEST_F(RepositoryTest, AConflictingConcurrentDecisionThatNoLongerHoldsIsRejectedCleanly) {
  Repository<Tally> other(*log_);
  InterleavingLog interleaved(*log_, [&] {
    ASSERT_TRUE(other.handle("synthetic/tally", Tally::Command{7, 10}, ctx("other")));
  });
  Repository<Tally> repo(interleaved);
  auto out = repo.handle("synthetic/tally", Tally::Command{5, 10}, ctx("mine"));
  ASSERT_TRUE(out);
  ASSERT_FALSE(out->accepted()) << "decided again on the new state: 7 + 5 passes 10";
  EXPECT_EQ(store_->head(), 1u);
}

TEST_F(RepositoryTest, AStreamThatNeverSettlesEndsInAClearError) {
  // Every append is overtaken by another writer.
  struct Overtaken final : EventLog {
    explicit Overtaken(LocalLog& inner) : inner(inner) {}
    Result<AppendResult> append(const AppendRequest& r) override {
      AppendRequest other = r;
      other.idempotency_key = fmt::format("other-{}", n++);
      other.expectations.clear();
      (void)inner.append(other);
      return inner.append(r);
    }
    Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return inner.read_stream(r); }
    Result<ReadReply> read_range(const ReadRangeRequest& r) override { return inner.read_range(r); }
    LocalLog& inner;
    int n = 0;
  } overtaken(*log_);
  Repository<Tally> repo(overtaken, RepositoryOptions{3, 1000});
  auto out = repo.handle("synthetic/tally", Tally::Command{1, 1000}, ctx("c1"));
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(out.error().message.find("3 decisions were overtaken"), std::string::npos) << out.error().message;
}

}  // namespace
}  // namespace wpm::kernel

namespace wpm::kernel {
namespace {

// The same repository inside wpmd: appends through the store server over
// inproc (as a declared identity), reads straight from the store.
TEST(EmbeddedRepository, EveryCommandSeesTheWritesOfThePreviousOne) {
  auto dir = fs::temp_directory_path() / fmt::format("wpm-embedded-{}", ::getpid());
  fs::remove_all(dir);
  auto log = std::make_shared<spdlog::logger>("embedded", std::make_shared<spdlog::sinks::null_sink_mt>());
  eventstore::StoreOptions so;
  so.data_dir = dir.string();
  auto store = eventstore::Store::open(so, log);
  ASSERT_TRUE(store) << store.error().message;
  prometheus::Registry registry;
  eventstore::StoreMetrics metrics(registry);
  zmq::context_t context(1);
  eventstore::ServerOptions options;
  options.request_endpoint = "tcp://127.0.0.1:0";
  options.publish_endpoint = "tcp://127.0.0.1:0";
  options.local_request_endpoint = "inproc://embedded-test";
  options.local_publish_endpoint = "";
  options.keys = *bus::generate_curve_keys();
  StreamAccess access;
  eventstore::StoreServer server(**store, context, options, access, metrics, log);
  ASSERT_TRUE(server.bind());
  int stop = ::eventfd(0, EFD_CLOEXEC);
  std::thread serving([&] { server.run(stop); });
  {
    bus::ClientOptions co;
    co.credentials.local_identity = std::string(kAdminIdentity);
    bus::StoreClient client(context, "inproc://embedded-test", co);
    EmbeddedLog embedded(client, **store);
    Repository<Tally> repo(embedded);
    SimulatedClock clock;
    for (uint64_t i = 1; i <= 50; ++i) {
      auto out = repo.handle("synthetic/tally", Tally::Command{1, 1000},
                             Context{clock.wall_ns(), "user:alice", CommandId(fmt::format("c{}", i)), "t"});
      ASSERT_TRUE(out) << out.error().message;
      ASSERT_TRUE(out->accepted());
      ASSERT_EQ(out->version, i) << "decided on the state that includes the previous command";
      EXPECT_EQ(out->events[0].actor, "admin") << "the declared inproc identity, stamped by the store";
    }
    // Never decided on a stale stream (which a retry would hide).
    auto conflicts = registry.Collect();
    double total = -1;
    for (const auto& family : conflicts) {
      if (family.name == "wpm_store_expected_version_conflicts_total") total = family.metric.at(0).counter.value;
    }
    EXPECT_EQ(total, 0) << "an append was decided on a stream read before the previous one was indexed";
    // An identity that may not write the stream is refused by the server.
    bus::ClientOptions other;
    other.credentials.local_identity = "service:inventory";
    bus::StoreClient refused_client(context, "inproc://embedded-test", other);
    EmbeddedLog refused(refused_client, **store);
    Repository<Tally> denied(refused);
    auto out = denied.handle("synthetic/tally", Tally::Command{1, 1000}, Context{0, "", CommandId("x"), "t"});
    ASSERT_FALSE(out);
    EXPECT_EQ(out.error().code, ErrorCode::kPermissionDenied);
  }
  uint64_t one = 1;
  ASSERT_EQ(::write(stop, &one, sizeof one), 8);
  serving.join();
  ::close(stop);
  store->reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace wpm::kernel
