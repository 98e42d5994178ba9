// Schema evolution and repair (DESIGN.md §9 "old readers, new events"): an
// event of a type this binary does not know, written by a newer wpm, is
// verified, dumped and counted; a projection that needs it stops wpmd with a
// message naming it; `wpm admin rebuild` rebuilds derived data offline.

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>

#include <nlohmann/json.hpp>
#include <span>

#include "eventstore/store.h"
#include "schemas/testing/future_event.h"
#include "tests/integration/helpers.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;

// Appends one event as a newer wpm would, with wpmd stopped.
void append_offline(const std::string& data_dir, const std::string& stream, Payload payload) {
  eventstore::StoreOptions o;
  o.data_dir = data_dir;
  auto store = eventstore::Store::open(o, std::make_shared<spdlog::logger>(
                                              "offline", std::make_shared<spdlog::sinks::null_sink_mt>()));
  ASSERT_TRUE(store) << store.error().message;
  AppendRequest r;
  r.events.push_back(EventDraft{stream, "", "", "service:inventory", std::move(payload)});
  auto out = (*store)->commit(std::span<const AppendRequest>(&r, 1), 1'800'000'000'000'000'000);
  ASSERT_TRUE(out.results.at(0)) << out.results.at(0).error().message;
  ASSERT_TRUE((*store)->apply_index());
}

class Evolution : public ::testing::Test {
 protected:
  void SetUp() override {
    wpmd_ = std::make_unique<Wpmd>(Wpmd::Options{dir_ / "data", {}});
    ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
    auto appended = wpm(*wpmd_, {"log", "append", "--synthetic", "5", "--run", "before"});
    ASSERT_EQ(appended.exit_code, 0) << appended.err;
    ASSERT_EQ(wpmd_->stop(), 0);
  }
  TempDir dir_{"wpm-evolution"};
  std::unique_ptr<Wpmd> wpmd_;
};

TEST_F(Evolution, AnUnknownEventIsVerifiedDumpedAndCountedAndConsumersSkipIt) {
  append_offline(wpmd_->data_dir(), "synthetic/future", future_payload(99, "from a newer wpm"));
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  auto appended = wpm(*wpmd_, {"log", "append", "--synthetic", "2", "--run", "after"});
  ASSERT_EQ(appended.exit_code, 0) << appended.err;
  auto verify = wpm(*wpmd_, {"log", "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("8 events"), std::string::npos) << verify.out;
  auto dump = wpm(*wpmd_, {"log", "dump", "--from", "6", "--to", "6", "-o", "json"});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  auto event = nlohmann::json::parse(dump.out);
  EXPECT_EQ(event["type"], "unknown(99)");
  EXPECT_EQ(event["streamId"], "synthetic/future");
  EXPECT_EQ(event["payload"]["unknown"]["type"], 99);
  auto table = wpm(*wpmd_, {"log", "dump", "--from", "6", "--to", "6"});
  EXPECT_NE(table.out.find("unknown(99)"), std::string::npos) << table.out;
  auto stats = wpm(*wpmd_, {"log", "stats", "-o", "json"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_EQ(nlohmann::json::parse(stats.out)["unknownEvents"], 1);
  ASSERT_EQ(wpmd_->stop(), 0);
  auto offline = run({bin("wpm"), "log", "verify", "--data", wpmd_->data_dir()});
  EXPECT_EQ(offline.exit_code, 0) << offline.out << offline.err;
}

TEST_F(Evolution, AnUnknownEventOnTheRegistryStreamStopsWpmdNamingItsTypeAndSequence) {
  append_offline(wpmd_->data_dir(), "registry", future_payload(77, "a new registry event"));
  EXPECT_FALSE(wpmd_->start());
  EXPECT_EQ(wpmd_->exit_code(), 1);
  EXPECT_NE(wpmd_->log().find("event 6 (type unknown(77)"), std::string::npos) << wpmd_->log();
  EXPECT_NE(wpmd_->log().find("newer wpm"), std::string::npos) << wpmd_->log();
}

TEST_F(Evolution, AdminRebuildRebuildsDerivedDataFromTheLogWithWpmdStopped) {
  auto rebuilt = run({bin("wpm"), "admin", "rebuild", "--data", wpmd_->data_dir()});
  ASSERT_EQ(rebuilt.exit_code, 0) << rebuilt.err;
  EXPECT_NE(rebuilt.out.find("from 5 events"), std::string::npos) << rebuilt.out;
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  auto dump = wpm(*wpmd_, {"log", "dump", "--stream", "synthetic/before", "-o", "json"});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  EXPECT_EQ(std::count(dump.out.begin(), dump.out.end(), '\n'), 5) << "the stream index answers again";
  // A re-sent idempotency key still finds its first answer after the rebuild.
  auto again = wpm(*wpmd_, {"log", "append", "--synthetic", "5", "--run", "before"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("sequences 1..5"), std::string::npos) << again.out;
  auto busy = run({bin("wpm"), "admin", "rebuild", "--data", wpmd_->data_dir()});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_NE(busy.err.find("wpmd stopped"), std::string::npos) << busy.err;
  auto missing = run({bin("wpm"), "admin", "rebuild", "--data", dir_ / "nothing"});
  EXPECT_EQ(missing.exit_code, 3) << missing.err;
}

}  // namespace
}  // namespace wpm::testing
