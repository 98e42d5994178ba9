// Power cuts and failed syncs beneath the store (DESIGN.md §9), on a
// simulated disk (tests/support/fault_fs.h) under the early-sync wrapper and
// the acknowledged-sequence mark. Under append load, with projection
// snapshots written as wpmd's projections do, the power goes at a random
// moment; what a disk could keep is left (unsynced bytes dropped or
// garbled, unsynced new files and renames undone) and the store opens again
// "after a reboot" (a new boot id). Every acknowledged event must be there,
// byte for byte, with the chain sound, and a snapshot never ahead of the log
// nor damaged. A sync that fails aborts the process before the batch is
// acknowledged, and the next open keeps every acknowledged event.
//
// WPM_POWER_CUT_ROUNDS sets the rounds (default 24; `make soak` runs 500).

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "eventstore/store.h"
#include "eventstore/verify.h"
#include "schemas/hash.h"
#include "tests/support/fault_fs.h"

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;
using testing::FaultFileSystem;

constexpr int64_t kNow = 1'700'000'000'000'000'000;
constexpr char kSnapshot[] = "power-cut-test";

uint64_t digest(std::string_view record) {
  auto d = sha256(record);
  uint64_t v;
  std::memcpy(&v, d.data(), sizeof v);
  return v;
}

AppendRequest batch(std::mt19937_64& random, uint64_t round, uint64_t n) {
  AppendRequest r;
  size_t events = 1 + random() % (random() % 4 == 0 ? 400 : 40);  // some batches past the early-sync threshold
  std::string stream = fmt::format("power/{}", random() % 16);
  for (size_t i = 0; i < events; ++i) {
    r.events.push_back(EventDraft{stream, "corr", "cause", "tester",
                                  Synthetic{"power-cut", n * 1000 + i, std::string(random() % 200, 'x'), ""}});
  }
  if (random() % 3 == 0) r.idempotency_key = fmt::format("round-{}-batch-{}", round, n);
  return r;
}

class PowerCut : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* given = std::getenv("WPM_POWER_CUT_DIR")) {
      options_.data_dir = given;  // a death test's child: its parent's directory
      child_ = true;
    } else {
      std::string tmpl = (fs::temp_directory_path() / "wpm-power-cut-XXXXXX").string();
      ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
      options_.data_dir = tmpl;
    }
    options_.write_buffer_bytes = 1u << 20;  // flushes (SST files, MANIFEST edits) within a round
    log_ = std::make_shared<spdlog::logger>("power-cut", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text_));
  }
  void TearDown() override {
    std::error_code ec;
    if (!child_) fs::remove_all(options_.data_dir, ec);
  }
  void fail_a_sync(size_t events);
  // `batches` acknowledged (remembered in acked_), the mark synced, then the
  // power goes before anything is flushed: the events are in the WAL alone.
  // Returns the WAL file (empty on a failure, reported).
  fs::path acknowledged_in_the_wal_alone(uint64_t batches, uint64_t seed) {
    options_.boot_id_for_test = "one boot";
    options_.write_buffer_bytes = 64u << 20;
    auto disk = std::make_shared<FaultFileSystem>();
    options_.file_system_for_test = disk;
    {
      auto store = Store::open(options_, log_);
      if (!store) {
        ADD_FAILURE() << store.error().message;
        return {};
      }
      std::mt19937_64 random(seed);
      for (uint64_t n = 0; n < batches; ++n) {
        auto out = (*store)->commit(std::vector<AppendRequest>{batch(random, 0, n)}, kNow);
        if (!out.results[0]) {
          ADD_FAILURE() << out.results[0].error().message;
          return {};
        }
        for (const auto& c : out.committed) acked_[c.sequence] = digest(c.record);
      }
      (*store)->sync_mark(true);
      disk->cut_power();  // the close's flush goes nowhere
    }
    options_.file_system_for_test.reset();
    fs::path wal;
    for (const auto& e : fs::directory_iterator(fs::path(options_.data_dir) / "log")) {
      if (e.path().extension() == ".log" && fs::file_size(e.path()) > 0) wal = e.path();
    }
    return wal;
  }

  // Opens "after the reboot" of `round` and checks everything acknowledged so far.
  std::unique_ptr<Store> reopen_and_check(const std::string& boot, const std::shared_ptr<FaultFileSystem>& disk) {
    StoreOptions o = options_;
    o.boot_id_for_test = boot;
    o.file_system_for_test = disk;
    auto opened = Store::open(o, log_);
    EXPECT_TRUE(opened.has_value()) << "after " << boot << ": " << opened.error().message;
    if (!opened) return nullptr;
    auto& store = **opened;
    const uint64_t last_acked = acked_.empty() ? 0 : acked_.rbegin()->first;
    EXPECT_GE(store.head(), last_acked) << "after " << boot << ": the log lost acknowledged events";
    EXPECT_GE(store.acknowledged_at_open(), last_acked);
    // Byte for byte, every acknowledged record (the log may hold more: a batch
    // synced whose reply never left, or records kept above a mark that
    // trailed the last replies).
    auto it = acked_.begin();
    for (uint64_t from = 1; it != acked_.end() && from <= last_acked;) {
      auto page = store.read_range(ReadRangeRequest{from, last_acked, 0});
      if (!page || page->records.empty()) {
        ADD_FAILURE() << "after " << boot << ": cannot read from sequence " << from;
        break;
      }
      for (const auto& record : page->records) {
        if (it != acked_.end() && it->first == from) {
          EXPECT_EQ(digest(record), it->second) << "after " << boot << ": sequence " << from << " changed";
          ++it;
        }
        ++from;
      }
    }
    ChainVerifier verifier;
    auto sound = verify_log(store, verifier, store.head(), 0);
    EXPECT_TRUE(sound.has_value()) << "after " << boot << ": " << sound.error().message;
    EXPECT_EQ(verifier.count(), store.head());
    auto snapshot = store.get_snapshot(kSnapshot);
    EXPECT_TRUE(snapshot.has_value()) << snapshot.error().message;
    if (snapshot && *snapshot) {
      EXPECT_LE((*snapshot)->sequence, store.head()) << "a snapshot ahead of the log";
      EXPECT_EQ((*snapshot)->state, fmt::format("state at {}", (*snapshot)->sequence)) << "a damaged snapshot";
    }
    return std::move(*opened);
  }

  // How often the store's log said `event` so far.
  size_t logged(const std::string& event) const {
    std::string text = log_text_.str();
    size_t n = 0;
    for (size_t at = text.find(event); at != std::string::npos; at = text.find(event, at + 1)) ++n;
    return n;
  }

  StoreOptions options_;
  std::ostringstream log_text_;
  bool child_ = false;
  std::shared_ptr<spdlog::logger> log_;
  std::map<uint64_t, uint64_t> acked_;  // the digest of each acknowledged record, by sequence
};

TEST_F(PowerCut, EveryAcknowledgedEventSurvivesACutAndTheChainVerifies) {
  const char* env = std::getenv("WPM_POWER_CUT_ROUNDS");
  const int rounds = env != nullptr ? std::atoi(env) : 24;
  uint64_t cuts_with_loss = 0, syncs = 0, kept = 0;
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE(fmt::format("round {} (seed {})", round, round));
    if (round > 0 && round % 16 == 0) {
      // Every 16 cuts the log starts anew, so that each round's check stays short.
      ASSERT_NE(reopen_and_check(fmt::format("boot {} (last of its log)", round), std::make_shared<FaultFileSystem>()),
                nullptr);
      fs::remove_all(options_.data_dir);
      fs::create_directories(options_.data_dir);
      kept += acked_.size();
      acked_.clear();
    }
    std::mt19937_64 random(static_cast<uint64_t>(round));
    auto disk = std::make_shared<FaultFileSystem>();
    // Both mark policies and both sync paths.
    options_.mark_sync_interval_ms = round % 3 == 0 ? 0 : 5;
    options_.wal_early_sync_bytes = round % 4 == 1 ? 0 : 32u << 10;
    auto store = reopen_and_check(fmt::format("boot {}", round), disk);
    ASSERT_NE(store, nullptr);
    // The load, on the sequencer's thread as wpmd runs it; the power goes from another.
    std::atomic<bool> stop{false};
    std::vector<std::pair<uint64_t, uint64_t>> new_acks;
    std::thread writer([&] {
      std::mt19937_64 r(random());
      for (uint64_t n = 0; !stop.load(); ++n) {  // bounded by the cut below
        std::vector<AppendRequest> requests = {batch(r, static_cast<uint64_t>(round), n)};
        auto out = store->commit(requests, kNow);
        // A reply after the cut never left the machine: only those before count.
        if (disk->power_cut()) break;
        if (out.results[0] && !out.results[0]->duplicate) {
          for (const auto& c : out.committed) new_acks.emplace_back(c.sequence, digest(c.record));
        }
        (void)store->apply_index();
        store->sync_mark();
        if (n % 8 == 0) {
          uint64_t at = store->head();
          (void)store->put_snapshot(kSnapshot, at, fmt::format("state at {}", at));
        }
      }
    });
    // Most rounds cut right after a write reached the disk unsynced (the
    // WAL's, a table file's, the mark's); some at a moment in time.
    if (round % 4 != 3) {
      disk->cut_power_at_write(1 + random() % 400);
      for (int i = 0; i < 400 && !disk->power_cut(); ++i) {  // bounded: 2 s
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + random() % 80));
    }
    disk->cut_power();
    stop = true;
    writer.join();
    for (auto [sequence, d] : new_acks) acked_[sequence] = d;
    syncs += disk->syncs();
    store.reset();  // closing writes into the void
    const FaultFileSystem::Loss losses[] = {FaultFileSystem::Loss::kDrop, FaultFileSystem::Loss::kTornTail,
                                            FaultFileSystem::Loss::kGarble};
    auto changed = disk->apply_loss(losses[round % 3], static_cast<uint64_t>(round));
    if (!changed.empty()) ++cuts_with_loss;
    if (::testing::Test::HasFailure()) break;
  }
  // The last cut, checked.
  auto store = reopen_and_check("the last boot", std::make_shared<FaultFileSystem>());
  ASSERT_NE(store, nullptr);
  kept += acked_.size();
  const size_t damaged_tails = logged("recovery_dropped_damaged_wal_tail");
  std::printf("%d power cuts, %llu of them lost unsynced data, %zu left a damaged WAL tail behind everything "
              "acknowledged; %llu events acknowledged and kept; %llu syncs\n",
              rounds, static_cast<unsigned long long>(cuts_with_loss), damaged_tails,
              static_cast<unsigned long long>(kept), static_cast<unsigned long long>(syncs));
  EXPECT_GT(kept, 0u);

  EXPECT_GE(cuts_with_loss, static_cast<uint64_t>(rounds) / 2) << "the cuts must find unsynced data to lose";
}

// Damage where acknowledged events lie (the disk lost data it had confirmed
// as synced): the store refuses to open and names what is missing, never a
// shorter log.
TEST_F(PowerCut, DamageBeforeTheMarkRefusesToOpenNamingTheFirstMissingSequence) {
  options_.mark_sync_interval_ms = 0;  // an exact mark
  fs::path wal = acknowledged_in_the_wal_alone(200, 7);
  ASSERT_FALSE(wal.empty());
  {
    std::fstream f(wal, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(wal) / 2));
    std::string junk(64, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto refused = Store::open(options_, log_);
  ASSERT_FALSE(refused.has_value()) << "opened with acknowledged events behind the damage";
  EXPECT_EQ(refused.error().code, ErrorCode::kCorruption);
  EXPECT_NE(refused.error().message.find("acknowledged events are missing"), std::string::npos)
      << refused.error().message << "\n" << log_text_.str();
  EXPECT_NE(refused.error().message.find(" are lost though sequence "), std::string::npos) << refused.error().message;
}

// A power cut that left several blocks of garbage after the last
// acknowledged record (more than the one torn record RocksDB's tail mode
// tolerates): the store opens without them, every acknowledged event kept,
// and says so in its log.
TEST_F(PowerCut, AGarbledWalTailAfterEveryAcknowledgedEventIsDroppedAndTheStoreOpens) {
  fs::path wal = acknowledged_in_the_wal_alone(100, 11);
  ASSERT_FALSE(wal.empty());
  {
    std::ofstream f(wal, std::ios::app | std::ios::binary);
    std::mt19937_64 random(12);
    std::string junk(3 * 32768, '\0');
    for (char& c : junk) c = static_cast<char>(random());
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto store = reopen_and_check("the next boot", std::make_shared<FaultFileSystem>());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(logged("recovery_dropped_damaged_wal_tail"), 1u) << log_text_.str();
}

// A WAL sync that fails: the store aborts before it acknowledges the batch,
// and the next open keeps every event it acknowledged. The child is the
// test binary run again (so it holds no thread of this one); it finds the
// data directory through WPM_POWER_CUT_DIR.
void PowerCut::fail_a_sync(size_t events) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string acks = options_.data_dir + "/acks";
  auto run = [&] {
    auto disk = std::make_shared<FaultFileSystem>();
    StoreOptions o = options_;
    o.boot_id_for_test = "failing disk";
    o.file_system_for_test = disk;
    auto store = Store::open(o, log_);
    if (!store) std::_Exit(3);
    std::ofstream out(acks, std::ios::app);
    for (int n = 0;; ++n) {  // bounded: the sync after the 20th batch fails and aborts
      if (n == 20) disk->fail_wal_syncs();
      AppendRequest r;
      for (size_t i = 0; i < events; ++i) {
        r.events.push_back(EventDraft{"sync/s", "corr", "cause", "tester", Synthetic{"sync", i, "payload", ""}});
      }
      auto outcome = (*store)->commit(std::vector<AppendRequest>{r}, kNow);
      if (!outcome.results[0]) std::_Exit(4);
      out << outcome.results[0]->first_sequence + outcome.results[0]->count - 1 << std::endl;
      if (n >= 20) std::_Exit(5);  // acknowledged after the failure: never
    }
  };
  ::setenv("WPM_POWER_CUT_DIR", options_.data_dir.c_str(), 1);
  EXPECT_EXIT(run(), ::testing::KilledBySignal(SIGABRT), "");
  ::unsetenv("WPM_POWER_CUT_DIR");
  std::ifstream in(acks);
  uint64_t last = 0, v = 0;
  int replies = 0;
  while (in >> v) last = v, ++replies;
  EXPECT_EQ(replies, 20) << "the 21st batch, whose sync failed, was never acknowledged";
  StoreOptions o = options_;
  o.boot_id_for_test = "failing disk";
  auto reopened = Store::open(o, log_);
  ASSERT_TRUE(reopened.has_value()) << reopened.error().message;
  EXPECT_GE((*reopened)->head(), last) << "an acknowledged batch was lost";
  EXPECT_EQ(last, 20 * events);
  ChainVerifier verifier;
  EXPECT_TRUE(verify_log(**reopened, verifier, (*reopened)->head(), 0).has_value());
}

TEST_F(PowerCut, AFailedWalSyncAbortsBeforeTheBatchIsAcknowledgedAndNothingAcknowledgedIsLost) { fail_a_sync(3); }

// A batch past wal_early_sync_bytes: its sync runs on the helper thread.
TEST_F(PowerCut, AFailedEarlyWalSyncAbortsBeforeTheBatchIsAcknowledgedAndNothingAcknowledgedIsLost) {
  fail_a_sync(600);
}

}  // namespace
}  // namespace wpm::eventstore
