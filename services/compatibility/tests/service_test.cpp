// The compatibility service against a real store (RocksDB in a temporary
// directory): every pair recorded once, and a result whose append failed is
// recorded when the store answers again.

#include "services/compatibility/service.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <unistd.h>

#include <filesystem>

#include "services/kernel/identity.h"

namespace wpm::compatibility {
namespace {

namespace fs = std::filesystem;

// Fails appends while `failing` is set, as an unreachable store would.
class FlakyLog final : public kernel::EventLog {
 public:
  explicit FlakyLog(kernel::EventLog& inner) : inner_(inner) {}
  Result<AppendResult> append(const AppendRequest& r) override {
    if (failing) return fail(ErrorCode::kTimeout, "no reply from the store (injected)");
    return inner_.append(r);
  }
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return inner_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override { return inner_.read_range(r); }
  bool failing = false;

 private:
  kernel::EventLog& inner_;
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("wpm-compat-service-{}", ::getpid());
    fs::remove_all(dir_);
    eventstore::StoreOptions o;
    o.data_dir = dir_.string();
    auto store = eventstore::Store::open(o, log_);
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
    inventory_ = std::make_unique<kernel::LocalLog>(*store_, clock_, access_, kernel::service_identity("inventory"));
    compat_ = std::make_unique<kernel::LocalLog>(*store_, clock_, access_, kernel::service_identity("compatibility"));
    embedded_ = std::make_unique<kernel::EmbeddedStore>(*store_);
  }
  void TearDown() override {
    embedded_.reset();
    compat_.reset();
    inventory_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  void register_system(const std::string& id, const std::string& kernel) {
    profile::SystemProfile p;
    p.os_type = "Linux";
    p.kernel_version = kernel;
    AppendRequest r;
    r.events.push_back(EventDraft{"registry", "", "", "", SystemRegistered{id, id, "a", "key-" + id, p, 0}});
    ASSERT_TRUE(inventory_->append(r));
  }
  size_t compat_events() {
    size_t n = 0;
    auto all = store_->read_range(ReadRangeRequest{1, 0, 0});
    auto events = kernel::decode_records(all->records);
    for (const auto& e : *events) n += e.type() == EventType::kCompatibilityAnalyzed;
    return n;
  }

  std::shared_ptr<spdlog::logger> log_ =
      std::make_shared<spdlog::logger>("compat-service", std::make_shared<spdlog::sinks::null_sink_mt>());
  fs::path dir_;
  kernel::SimulatedClock clock_;
  kernel::StreamAccess access_;
  std::unique_ptr<eventstore::Store> store_;
  std::unique_ptr<kernel::LocalLog> inventory_, compat_;
  std::unique_ptr<kernel::EmbeddedStore> embedded_;
};

TEST_F(ServiceTest, AResultThatCouldNotBeRecordedIsRecordedWhenTheStoreAnswersAgain) {
  register_system("a", "6.1.0");
  register_system("b", "6.5.0");
  FlakyLog flaky(*compat_);
  CompatibilityService service(flaky, *embedded_, log_, ServiceOptions{1, std::chrono::milliseconds(1)});
  ASSERT_TRUE(service.start());
  flaky.failing = true;
  EXPECT_FALSE(service.step()) << "the append failed";
  EXPECT_EQ(service.pending_pairs(), 1u) << "one pair analysed (one per step), the other still pending";
  EXPECT_FALSE(service.step()) << "still failing: the analysed pair is kept, not the next one taken";
  EXPECT_EQ(service.pending_pairs(), 1u);
  flaky.failing = false;
  ASSERT_TRUE(service.step());
  ASSERT_TRUE(service.step());
  EXPECT_EQ(compat_events(), 2u) << "both pairs recorded, the failed one included";
  EXPECT_EQ(service.stats().recorded, 2u);
  EXPECT_EQ(service.state_of("a"), AnalysisState::kComplete);
}

TEST_F(ServiceTest, AnotherInstanceRecordsNothingTwice) {
  register_system("a", "6.1.0");
  register_system("b", "6.5.0");
  CompatibilityService first(*compat_, *embedded_, log_);
  ASSERT_TRUE(first.start());
  ASSERT_EQ(first.step().value_or(0), 2u);
  CompatibilityService second(*compat_, *embedded_, log_);
  ASSERT_TRUE(second.start());
  ASSERT_EQ(second.step().value_or(0), 2u);
  EXPECT_EQ(compat_events(), 2u);
  EXPECT_EQ(second.stats().already_recorded, 2u);
}

}  // namespace
}  // namespace wpm::compatibility
