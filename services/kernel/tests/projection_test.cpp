// The projection runner against a real store: folding, snapshots plus the
// tail equal a full fold, one-stream models, and events of unknown types.

#include "services/kernel/projection.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "schemas/testing/future_event.h"
#include "services/kernel/identity.h"

namespace wpm::kernel {
namespace {

namespace fs = std::filesystem;

// Counts of events per stream, and what the synthetic notes said.
struct Counts {
  std::map<std::string, uint64_t> per_stream;
  uint64_t notes = 0;
  bool operator==(const Counts&) const = default;
};
Counts fold_counts(Counts s, const Event& e) {
  ++s.per_stream[e.stream_id];
  if (const auto* x = std::get_if<Synthetic>(&e.payload); x != nullptr && !x->note.empty()) ++s.notes;
  return s;
}
std::string encode_counts(const Counts& s) {
  std::ostringstream out;
  out << s.notes;
  for (const auto& [k, v] : s.per_stream) out << ' ' << k << ' ' << v;
  return out.str();
}
Result<Counts> decode_counts(std::string_view bytes) {
  std::istringstream in{std::string(bytes)};
  Counts s;
  if (!(in >> s.notes)) return fail(ErrorCode::kCorruption, "bad counts");
  std::string k;
  uint64_t v;
  while (in >> k >> v) s.per_stream[k] = v;
  return s;
}

// The fold the two test models share; each names its source below.
struct CountsModel {
  using State = Counts;
  static State initial() { return {}; }
  static State evolve(State s, const Event& e) { return fold_counts(std::move(s), e); }
  static std::string encode(const State& s) { return encode_counts(s); }
  static Result<State> decode(std::string_view b) { return decode_counts(b); }
};
struct WholeLog : CountsModel {
  static constexpr std::string_view kName = "test-whole-log";
  static constexpr std::string_view kStream = "";
  static constexpr UnknownEvents kUnknown = UnknownEvents::kSkip;
};
struct OneStream : CountsModel {
  static constexpr std::string_view kName = "test-one-stream";
  static constexpr std::string_view kStream = "synthetic/b";
  static constexpr UnknownEvents kUnknown = UnknownEvents::kStop;
};
static_assert(ProjectionModel<WholeLog> && ProjectionModel<OneStream>);

class ProjectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("wpm-projection-{}-{}", ::getpid(),
                                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    open();
  }
  void TearDown() override {
    embedded_.reset();
    log_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  void open() {
    embedded_.reset();
    log_.reset();
    store_.reset();
    eventstore::StoreOptions o;
    o.data_dir = dir_.string();
    auto store = eventstore::Store::open(o, std::make_shared<spdlog::logger>(
                                                "projection", std::make_shared<spdlog::sinks::null_sink_mt>()));
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
    log_ = std::make_unique<LocalLog>(*store_, clock_, access_, std::string(kAdminIdentity));
    embedded_ = std::make_unique<EmbeddedStore>(*store_);
  }
  void append(const std::string& stream, Payload payload) {
    AppendRequest r;
    r.events.push_back(EventDraft{stream, "", "", "", std::move(payload)});
    auto done = log_->append(r);
    ASSERT_TRUE(done) << done.error().message;
  }
  void append_some(int n) {
    for (int i = 0; i < n; ++i) {
      append(i % 3 == 0 ? "synthetic/b" : "synthetic/a", Synthetic{"r", static_cast<uint64_t>(i), i % 2 ? "odd" : "", ""});
    }
  }

  fs::path dir_;
  SimulatedClock clock_;
  StreamAccess access_;
  std::unique_ptr<eventstore::Store> store_;
  std::unique_ptr<LocalLog> log_;
  std::unique_ptr<EmbeddedStore> embedded_;
};

// Counts the settings it folds; wants nothing else.
struct SettingsOnly : CountsModel {
  static constexpr std::string_view kName = "test-settings-only";
  static constexpr std::string_view kStream = "";
  static constexpr UnknownEvents kUnknown = UnknownEvents::kSkip;
  static bool wants(EventType type) { return type == EventType::kSettingChanged; }
};
static_assert(ProjectionModel<SettingsOnly>);

// Passes reads through and counts the records read; tells what can be
// skipped only when `summary` is set (as a log without the store in process).
class CountingLog final : public EventLog {
 public:
  CountingLog(EventLog& inner, bool summary) : inner_(inner), summary_(summary) {}
  Result<AppendResult> append(const AppendRequest& r) override { return inner_.append(r); }
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return inner_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override {
    auto reply = inner_.read_range(r);
    if (reply) records_read += reply->records.size();
    return reply;
  }
  uint64_t skippable_through(uint64_t after, eventstore::TypeMask wanted) override {
    return summary_ ? inner_.skippable_through(after, wanted) : after;
  }
  uint64_t records_read = 0;

 private:
  EventLog& inner_;
  bool summary_;
};

TEST_F(ProjectionTest, AWholeLogFollowerSkipsUnreadTheCommitsWithNoneOfItsTypes) {
  CountingLog summarised(*log_, true), plain(*log_, false);
  ProjectionRunner<SettingsOnly> skipping(summarised, nullptr), reading(plain, nullptr);
  auto follow = [&] {
    ASSERT_TRUE(skipping.catch_up());
    ASSERT_TRUE(reading.catch_up());
    EXPECT_EQ(skipping.sequence(), reading.sequence());
    EXPECT_EQ(skipping.state(), reading.state());
  };
  append_some(100);
  follow();
  EXPECT_EQ(summarised.records_read, 0u) << "no setting in 1..100";
  EXPECT_EQ(plain.records_read, 100u);
  append("test/settings", SettingChanged{"heartbeat_timeout_s", "20", "15"});
  append_some(50);
  follow();
  EXPECT_EQ(skipping.state().per_stream.at("test/settings"), 1u);
  EXPECT_EQ(summarised.records_read, 51u) << "read from the setting on";
  append_some(30);
  follow();
  EXPECT_EQ(summarised.records_read, 51u);
  EXPECT_EQ(skipping.sequence(), 181u);
  EXPECT_EQ(skipping.stats().applied_events, 181u) << "skipped events count as passed over";
}

TEST_F(ProjectionTest, ASnapshotPlusTheTailEqualsAFullFold) {
  append_some(50);
  ProjectionRunner<WholeLog> first(*embedded_, embedded_.get());
  ASSERT_TRUE(first.start());
  EXPECT_EQ(first.sequence(), 50u);
  ASSERT_TRUE(first.snapshot());
  append_some(20);
  // A restart: the store reopened, the runner from the snapshot and the tail.
  open();
  ProjectionRunner<WholeLog> resumed(*embedded_, embedded_.get());
  ASSERT_TRUE(resumed.start());
  EXPECT_TRUE(resumed.stats().from_snapshot);
  EXPECT_EQ(resumed.stats().snapshot_sequence, 50u);
  EXPECT_EQ(resumed.stats().applied_events, 20u) << "only the tail was folded";
  ProjectionRunner<WholeLog> full(*embedded_, nullptr);
  ASSERT_TRUE(full.start());
  EXPECT_EQ(full.stats().applied_events, 70u);
  EXPECT_EQ(resumed.state(), full.state());
  EXPECT_EQ(resumed.sequence(), full.sequence());
}

TEST_F(ProjectionTest, OneStreamModelsReadOnlyTheirStreamAndResumeByVersion) {
  append_some(30);
  ProjectionRunner<OneStream> runner(*embedded_, embedded_.get());
  ASSERT_TRUE(runner.start());
  EXPECT_EQ(runner.stats().applied_events, 10u);
  EXPECT_EQ(runner.state().per_stream.size(), 1u);
  ASSERT_TRUE(runner.snapshot());
  append_some(6);
  ASSERT_EQ(runner.catch_up().value_or(0), 2u) << "following: only what is new";
  open();
  ProjectionRunner<OneStream> resumed(*embedded_, embedded_.get());
  ASSERT_TRUE(resumed.start());
  EXPECT_EQ(resumed.stats().applied_events, 2u);
  EXPECT_EQ(resumed.state(), runner.state());
}

TEST_F(ProjectionTest, UnknownEventsAreSkippedAndCountedOrStopAModelThatNeedsThem) {
  append_some(3);
  append("synthetic/b", testing::future_payload(99, "new"));
  append_some(3);
  ProjectionRunner<WholeLog> skipping(*embedded_, nullptr);
  ASSERT_TRUE(skipping.start());
  EXPECT_EQ(skipping.stats().skipped_unknown, 1u);
  EXPECT_EQ(skipping.sequence(), 7u) << "past the unknown event";
  ProjectionRunner<OneStream> stopping(*embedded_, nullptr);
  auto r = stopping.start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("event 4"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("unknown(99)"), std::string::npos) << r.error().message;
  EXPECT_FALSE(stopping.catch_up()) << "it stays stopped";
  // The store counts them too.
  EXPECT_EQ(store_->stats().unknown_events, 1u);
}

TEST_F(ProjectionTest, TheCommitSignalWakesAFollowerOnlyWhenSomethingIsNew) {
  append_some(2);
  uint64_t head = store_->head();
  auto t0 = std::chrono::steady_clock::now();
  embedded_->wait_beyond(head - 1, std::chrono::seconds(5));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1)) << "already beyond";
  std::thread writer([&] { append_some(1); });
  embedded_->wait_beyond(head, std::chrono::seconds(5));
  writer.join();
  EXPECT_GT(store_->head(), head);
}

TEST_F(ProjectionTest, AdminRebuildDropsDerivedDataAndTheNextOpenRebuildsIt) {
  append_some(40);
  ProjectionRunner<WholeLog> runner(*embedded_, embedded_.get());
  ASSERT_TRUE(runner.start());
  ASSERT_TRUE(runner.snapshot());
  auto before = store_->read_stream(ReadStreamRequest{"synthetic/b", 1, 0});
  ASSERT_TRUE(before);
  auto stats_before = store_->stats();
  ASSERT_TRUE(store_->drop_derived());
  open();
  auto after = store_->read_stream(ReadStreamRequest{"synthetic/b", 1, 0});
  ASSERT_TRUE(after);
  EXPECT_EQ(after->records, before->records) << "the stream index was rebuilt from the log";
  EXPECT_EQ(store_->stats().per_type, stats_before.per_type);
  auto snap = store_->get_snapshot(WholeLog::kName);
  ASSERT_TRUE(snap);
  EXPECT_FALSE(snap->has_value()) << "snapshots are dropped; services make them again";
}

}  // namespace
}  // namespace wpm::kernel
