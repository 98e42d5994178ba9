#include "eventstore/constants.h"
#include "eventstore/store.h"

#include <gmock/gmock.h>
#include <rocksdb/db.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "eventstore/mark.h"
#include "eventstore/verify.h"
#include "schemas/codec.h"
#include "schemas/record.h"

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int64_t kNow = 1'700'000'000'000'000'000;

EventDraft synthetic(const std::string& stream, uint64_t index) {
  return EventDraft{stream, "corr", "cause", "tester", Synthetic{"run", index, "", ""}};
}

AppendRequest request(std::vector<EventDraft> events, std::string key = "",
                      std::vector<StreamExpectation> expectations = {}) {
  AppendRequest r;
  r.idempotency_key = std::move(key);
  r.expectations = std::move(expectations);
  r.events = std::move(events);
  return r;
}

AppendRequest on_stream(const std::string& stream, size_t count, std::string key = "",
                        std::vector<StreamExpectation> expectations = {}, uint64_t index = 0) {
  std::vector<EventDraft> events;
  for (size_t i = 0; i < count; ++i) events.push_back(synthetic(stream, index + i));
  return request(std::move(events), std::move(key), std::move(expectations));
}

Event decode(const std::string& record) {
  auto view = parse_record(record);
  EXPECT_TRUE(view.has_value()) << view.error().message;
  if (!view) return {};
  auto e = decode_event(view->event_bytes);
  EXPECT_TRUE(e.has_value()) << e.error().message;
  return e ? *e : Event{};
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "wpm-store-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    options_.data_dir = tmpl;
    options_.write_buffer_bytes = 4u << 20;
    options_.boot_id_for_test = "this boot";
    log_ = std::make_shared<spdlog::logger>("store-test",
                                            std::make_shared<spdlog::sinks::null_sink_mt>());
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(options_.data_dir, ec);
  }

  Result<std::unique_ptr<Store>> try_open() { return Store::open(options_, log_); }

  Store& open() {
    store_.reset();
    auto s = try_open();
    EXPECT_TRUE(s.has_value()) << s.error().message;
    if (s) store_ = std::move(*s);
    return *store_;
  }
  void close() { store_.reset(); }

  CommitOutcome commit(std::vector<AppendRequest> requests) {
    auto out = store_->commit(requests, kNow);
    // As the server does once the replies are out.
    EXPECT_TRUE(store_->apply_index().has_value());
    return out;
  }
  AppendResult commit_ok(AppendRequest r) {
    auto out = commit({std::move(r)});
    EXPECT_EQ(out.results.size(), 1u);
    EXPECT_TRUE(out.results[0].has_value()) << out.results[0].error().message;
    return out.results[0].value_or(AppendResult{});
  }

  std::vector<Event> all_events() {
    auto reply = store_->read_range(ReadRangeRequest{1, 0, 0});
    EXPECT_TRUE(reply.has_value()) << reply.error().message;
    std::vector<Event> out;
    if (reply) {
      EXPECT_TRUE(reply->end);
      for (const auto& r : reply->records) out.push_back(decode(r));
    }
    return out;
  }

  std::vector<uint64_t> stream_versions(const std::string& stream) {
    auto reply = store_->read_stream(ReadStreamRequest{stream, 1, 0});
    EXPECT_TRUE(reply.has_value()) << reply.error().message;
    std::vector<uint64_t> out;
    if (reply) {
      for (const auto& r : reply->records) {
        Event e = decode(r);
        EXPECT_EQ(e.stream_id, stream);
        out.push_back(e.stream_version);
      }
    }
    return out;
  }

  // Writes `value` into both slots of the mark, as the store would have in
  // `boot`: synced before the reply, or not.
  void store_mark(uint64_t value, const BootId& boot, bool synced) {
    auto mark = AckMark::open(options_.data_dir + "/acknowledged", boot);
    ASSERT_TRUE(mark.has_value()) << mark.error().message;
    // The mark keeps two slots and reads back the higher valid one: lowering it
    // takes a write to each slot.
    ASSERT_TRUE((*mark)->reset(value, synced).has_value());
  }
  void store_mark(uint64_t value) { store_mark(value, this_boot(), true); }
  BootId this_boot() const { return boot_id_from_text(options_.boot_id_for_test); }
  static std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good());
  }

  void expect_chain_sound_from_one(uint64_t head) {
    ChainVerifier verifier;
    std::optional<Error> problem;
    auto r = store_->scan(1, Store::ScanMode::kPage, [&](uint64_t seq, std::string_view record) {
      auto e = verifier.feed(seq, record);
      if (!e) problem = e.error();
      return e.has_value();
    });
    ASSERT_TRUE(r.has_value()) << r.error().message;
    ASSERT_FALSE(problem.has_value()) << problem->message;
    EXPECT_EQ(verifier.count(), head);
    EXPECT_EQ(verifier.next_sequence(), head + 1);
  }

  // Streams "a" and "b", versions at sequences: a1-5 at 1-5; a6 at 6, b1 at 7,
  // a7 at 8 (one request); a8-10 at 9-11; b2-3 at 12-13.
  void commit_runs_of_a_and_b() {
    commit_ok(on_stream("a", 5));
    commit_ok(request({synthetic("a", 5), synthetic("b", 0), synthetic("a", 6)}));
    commit_ok(on_stream("a", 3, "", {}, 7));
    commit_ok(on_stream("b", 2, "", {}, 1));
  }

  // Runs `change` on one column family, opened straight with RocksDB while the
  // store is closed.
  void with_family(const std::string& family,
                   const std::function<void(rocksdb::DB&, rocksdb::ColumnFamilyHandle*)>& change) {
    std::string path = options_.data_dir + "/log";
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> columns;
    for (const auto& n : names) columns.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(rocksdb::DBOptions(), path, columns, &handles, &raw);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::unique_ptr<rocksdb::DB> db(raw);
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == family) change(*db, handles[i]);
    }
    for (auto* h : handles) EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    EXPECT_TRUE(db->Close().ok());
  }
  // Its keys; with `drop`, the family is dropped afterwards (its content lost).
  std::vector<std::string> column_keys(const std::string& family, bool drop = false) {
    std::vector<std::string> keys;
    with_family(family, [&](rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf) {
      std::unique_ptr<rocksdb::Iterator> it(db.NewIterator(rocksdb::ReadOptions(), cf));
      for (it->SeekToFirst(); it->Valid(); it->Next()) keys.push_back(it->key().ToString());
      if (drop) {
        EXPECT_TRUE(db.DropColumnFamily(cf).ok());
      }
    });
    return keys;
  }
  // A stream-index key or value as the store writes them: big-endian numbers.
  static std::string big_endian(std::initializer_list<uint64_t> numbers) {
    std::string out;
    for (uint64_t n : numbers) {
      for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(n >> shift));
    }
    return out;
  }
  static std::string stream_entry_key(const std::string& stream, uint64_t version) {
    return stream + '\0' + big_endian({version});
  }

  StoreOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Store> store_;
};

// ---- commit: sequences and versions ----------------------------------------------

// verify_log reads a long range in two halves on two threads and checks them
// in order; the first fault is named wherever it is, and a part ends where asked.
TEST_F(StoreTest, VerifyLogChecksALongRangeInOrderAndNamesTheFirstFault) {
  open();
  for (int i = 0; i < 20; ++i) commit_ok(on_stream("synthetic/v", 500, "", {}, i * 500));
  ASSERT_EQ(store_->head(), 10'000u);
  ChainVerifier whole;
  ASSERT_TRUE(verify_log(*store_, whole, store_->head(), 0));
  EXPECT_EQ(whole.count(), 10'000u);
  ChainVerifier unbounded;  // every stored record, one reader
  ASSERT_TRUE(verify_log(*store_, unbounded, UINT64_MAX, 0));
  EXPECT_EQ(unbounded.chain(), whole.chain());

  // Parts chained one to the next give the same chain.
  ChainVerifier parts;
  for (int i = 0; i < 3 && parts.next_sequence() <= 10'000; ++i) {
    ASSERT_TRUE(verify_log(*store_, parts, 10'000, 4'500));
  }
  EXPECT_EQ(parts.count(), 10'000u);
  EXPECT_EQ(parts.chain(), whole.chain());

  // A damaged record in the second half.
  auto page = store_->read_range(ReadRangeRequest{7'777, 7'777, 1});
  ASSERT_TRUE(page && page->records.size() == 1);
  std::string damaged = page->records[0];
  damaged[kRecordHeaderBytes + 20] ^= 0x01;
  ASSERT_TRUE(store_->overwrite_record_for_test(7'777, damaged));
  ChainVerifier broken;
  auto r = verify_log(*store_, broken, 10'000, 0);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr("sequence 7777:"));
  EXPECT_EQ(broken.count(), 7'776u);

  // The store's answer to a request stops at its cap and says where to go on.
  auto reply = verify_request(*store_, VerifyRequest{1, 0, {}, 0}, 5'000);
  EXPECT_EQ(reply.problem, "");
  EXPECT_EQ(reply.checked, 5'000u);
  EXPECT_EQ(reply.next, 5'001u);
  EXPECT_FALSE(reply.end);
  auto rest = verify_request(*store_, VerifyRequest{reply.next, 0, reply.chain, 0}, 5'000);
  EXPECT_TRUE(rest.end);
  EXPECT_THAT(rest.problem, HasSubstr("sequence 7777:"));
}

// Followers that fold only some types skip, without reading, the ranges the
// store's summary of recent commits says hold none of them; never past the
// readable head, and never over a range the summary does not cover.
TEST_F(StoreTest, SkippableThroughFollowsTheTypesOfRecentCommits) {
  open();
  const TypeMask synthetic_bit = type_bit(EventType::kSynthetic);
  const TypeMask setting_bit = type_bit(EventType::kSettingChanged);
  commit_ok(on_stream("synthetic/a", 10));                                                     // 1..10
  commit_ok(request({EventDraft{"settings", "", "", "", SettingChanged{"k", "v", ""}}}));      // 11
  commit_ok(on_stream("synthetic/a", 5, "", {}, 10));                                          // 12..16
  EXPECT_EQ(store_->skippable_through(0, setting_bit), 10u);
  EXPECT_EQ(store_->skippable_through(10, setting_bit), 10u) << "the wanted type is next";
  EXPECT_EQ(store_->skippable_through(11, setting_bit), 16u);
  EXPECT_EQ(store_->skippable_through(3, setting_bit), 10u) << "from inside a run";
  EXPECT_EQ(store_->skippable_through(0, synthetic_bit), 0u);
  EXPECT_EQ(store_->skippable_through(0, type_bit(EventType::kDomainDefined)), 16u);
  EXPECT_EQ(store_->skippable_through(16, type_bit(EventType::kDomainDefined)), 16u) << "nothing new";

  // Committed but not yet readable (the stream index not yet written): not skipped.
  std::vector<AppendRequest> four{on_stream("synthetic/a", 4, "", {}, 15)};
  auto out = store_->commit(four, kNow);  // 17..20
  ASSERT_TRUE(out.results[0].has_value());
  EXPECT_EQ(store_->skippable_through(11, setting_bit), 16u);
  ASSERT_TRUE(store_->apply_index());
  EXPECT_EQ(store_->skippable_through(11, setting_bit), 20u);

  // After a restart the summary starts at the head: older ranges are read.
  open();
  EXPECT_EQ(store_->skippable_through(11, setting_bit), 11u);
  commit_ok(on_stream("synthetic/a", 2, "", {}, 19));  // 21..22
  EXPECT_EQ(store_->skippable_through(11, setting_bit), 11u) << "12..20 are not in the summary";
  EXPECT_EQ(store_->skippable_through(20, setting_bit), 22u);
}

TEST_F(StoreTest, NewStoreIsEmpty) {
  Store& store = open();
  EXPECT_EQ(store.head(), 0u);
  EXPECT_FALSE(store.read_only());
  EXPECT_EQ(store.log_bytes(), 0u);
  auto reply = store.read_range(ReadRangeRequest{1, 0, 0});
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_TRUE(reply->records.empty());
  EXPECT_TRUE(reply->end);
  EXPECT_EQ(reply->head, 0u);
}

TEST_F(StoreTest, TheDataDirectoryCarriesItsFormatAndANewerOneIsRefused) {
  open();
  close();
  std::string path = options_.data_dir + "/format";
  {
    std::ifstream in(path);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(content, "wpm-data 1\n");
  }
  std::ofstream(path, std::ios::trunc) << "wpm-data 2\n";
  auto newer = try_open();
  ASSERT_FALSE(newer.has_value());
  EXPECT_NE(newer.error().message.find("format 2"), std::string::npos) << newer.error().message;
  EXPECT_NE(newer.error().message.find("upgrade"), std::string::npos) << newer.error().message;
  options_.read_only = true;
  EXPECT_FALSE(try_open().has_value()) << "offline tools refuse it too";
  options_.read_only = false;
  std::ofstream(path, std::ios::trunc) << "garbage\n";
  auto garbage = try_open();
  ASSERT_FALSE(garbage.has_value());
  EXPECT_EQ(garbage.error().code, ErrorCode::kCorruption);
  // A directory from before the file existed is format 1, and gets the file.
  fs::remove(path);
  open();
  EXPECT_TRUE(fs::exists(path));
}

TEST_F(StoreTest, CommitAssignsGapFreeSequencesAndStreamVersionsFromOne) {
  Store& store = open();
  auto first = commit({on_stream("s1", 3)});
  ASSERT_EQ(first.results.size(), 1u);
  ASSERT_TRUE(first.results[0].has_value()) << first.results[0].error().message;
  EXPECT_EQ(*first.results[0], (AppendResult{1, 3, false}));
  ASSERT_EQ(first.committed.size(), 3u);
  EXPECT_EQ(first.batch_events, 3u);
  EXPECT_EQ(store.head(), 3u);

  auto second = commit_ok(request({synthetic("s2", 0), synthetic("s1", 3), synthetic("s2", 1)}));
  EXPECT_EQ(second, (AppendResult{4, 3, false}));
  EXPECT_EQ(store.head(), 6u);

  std::vector<Event> events = all_events();
  ASSERT_EQ(events.size(), 6u);
  std::vector<std::pair<std::string, uint64_t>> expected = {
      {"s1", 1}, {"s1", 2}, {"s1", 3}, {"s2", 1}, {"s1", 4}, {"s2", 2}};
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence, i + 1);
    EXPECT_EQ(events[i].stream_id, expected[i].first) << "sequence " << i + 1;
    EXPECT_EQ(events[i].stream_version, expected[i].second) << "sequence " << i + 1;
    EXPECT_EQ(events[i].timestamp_ns, kNow);
    EXPECT_EQ(events[i].actor, "tester");
  }
  // Event ids are unique.
  EXPECT_NE(events[0].event_id, events[1].event_id);
  expect_chain_sound_from_one(6);
}

TEST_F(StoreTest, CommittedRecordsAreWhatIsStored) {
  open();
  auto out = commit({on_stream("s1", 2), on_stream("s2", 1)});
  ASSERT_EQ(out.committed.size(), 3u);
  auto reply = store_->read_range(ReadRangeRequest{1, 0, 0});
  ASSERT_TRUE(reply.has_value());
  ASSERT_EQ(reply->records.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out.committed[i].sequence, i + 1);
    EXPECT_EQ(out.committed[i].type, EventType::kSynthetic);
    EXPECT_EQ(out.committed[i].record, reply->records[i]);
  }
}

TEST_F(StoreTest, GroupCommitOfSeveralRequestsAssignsConsecutiveRanges) {
  Store& store = open();
  auto out = commit({on_stream("a", 2), on_stream("b", 1), on_stream("a", 3)});
  ASSERT_EQ(out.results.size(), 3u);
  for (const auto& r : out.results) ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(*out.results[0], (AppendResult{1, 2, false}));
  EXPECT_EQ(*out.results[1], (AppendResult{3, 1, false}));
  EXPECT_EQ(*out.results[2], (AppendResult{4, 3, false}));
  EXPECT_EQ(out.batch_events, 6u);
  ASSERT_EQ(out.committed.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(out.committed[i].sequence, i + 1);
  EXPECT_EQ(store.head(), 6u);
  EXPECT_EQ(stream_versions("a"), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(stream_versions("b"), (std::vector<uint64_t>{1}));
}

// ---- expected versions ------------------------------------------------------------

TEST_F(StoreTest, ConflictingExpectedVersionWritesNothing) {
  Store& store = open();
  commit_ok(on_stream("s1", 2));
  ASSERT_EQ(store.head(), 2u);

  auto out = commit({
      on_stream("s2", 1),                                                // ok: seq 3
      on_stream("s1", 1, "", {{"s1", ExpectKind::kExact, 1}}),            // s1 is at 2
      on_stream("s1", 1, "", {{"s1", ExpectKind::kNoStream, 0}}),         // s1 exists
      on_stream("s3", 1, "", {{"s3", ExpectKind::kStreamExists, 0}}),     // s3 does not
      on_stream("s1", 1, "", {{"s1", ExpectKind::kExact, 2}}),            // ok: seq 4
  });
  ASSERT_EQ(out.results.size(), 5u);
  ASSERT_TRUE(out.results[0].has_value()) << out.results[0].error().message;
  EXPECT_EQ(*out.results[0], (AppendResult{3, 1, false}));

  ASSERT_FALSE(out.results[1].has_value());
  EXPECT_EQ(out.results[1].error().code, ErrorCode::kWrongExpectedVersion);
  EXPECT_EQ(out.results[1].error().stream_id, "s1");
  EXPECT_EQ(out.results[1].error().expected_version, 1u);
  EXPECT_EQ(out.results[1].error().actual_version, 2u);

  ASSERT_FALSE(out.results[2].has_value());
  EXPECT_EQ(out.results[2].error().code, ErrorCode::kWrongExpectedVersion);
  EXPECT_EQ(out.results[2].error().actual_version, 2u);

  ASSERT_FALSE(out.results[3].has_value());
  EXPECT_EQ(out.results[3].error().code, ErrorCode::kWrongExpectedVersion);
  EXPECT_EQ(out.results[3].error().stream_id, "s3");
  EXPECT_EQ(out.results[3].error().actual_version, 0u);

  ASSERT_TRUE(out.results[4].has_value()) << out.results[4].error().message;
  EXPECT_EQ(*out.results[4], (AppendResult{4, 1, false}));

  EXPECT_EQ(out.committed.size(), 2u);
  EXPECT_EQ(store.head(), 4u);
  EXPECT_EQ(stream_versions("s1"), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(stream_versions("s2"), (std::vector<uint64_t>{1}));
  EXPECT_TRUE(stream_versions("s3").empty());
  EXPECT_EQ(all_events().size(), 4u);
  expect_chain_sound_from_one(4);
}

TEST_F(StoreTest, BatchOfOnlyConflictsLeavesHeadUnchanged) {
  Store& store = open();
  commit_ok(on_stream("s1", 2));
  auto out = commit({on_stream("s1", 1, "", {{"s1", ExpectKind::kExact, 5}})});
  ASSERT_FALSE(out.results[0].has_value());
  EXPECT_TRUE(out.committed.empty());
  EXPECT_EQ(out.batch_events, 0u);
  EXPECT_EQ(store.head(), 2u);
  EXPECT_EQ(stream_versions("s1"), (std::vector<uint64_t>{1, 2}));
}

TEST_F(StoreTest, MatchingExpectationsSucceed) {
  open();
  EXPECT_EQ(commit_ok(on_stream("s1", 1, "", {{"s1", ExpectKind::kNoStream, 0}})),
            (AppendResult{1, 1, false}));
  EXPECT_EQ(commit_ok(on_stream("s1", 1, "", {{"s1", ExpectKind::kStreamExists, 0}})),
            (AppendResult{2, 1, false}));
  EXPECT_EQ(commit_ok(on_stream("s1", 1, "", {{"s1", ExpectKind::kExact, 2}})),
            (AppendResult{3, 1, false}));
  EXPECT_EQ(commit_ok(on_stream("s1", 1, "", {{"s1", ExpectKind::kAny, 99}})),
            (AppendResult{4, 1, false}));
}

TEST_F(StoreTest, ExpectationSeesEarlierRequestsOfTheSameCommit) {
  Store& store = open();
  auto out = commit({
      on_stream("s1", 2, "", {{"s1", ExpectKind::kNoStream, 0}}),
      on_stream("s1", 1, "", {{"s1", ExpectKind::kNoStream, 0}}),  // s1 now at 2
      on_stream("s1", 1, "", {{"s1", ExpectKind::kExact, 2}}),
  });
  ASSERT_TRUE(out.results[0].has_value());
  ASSERT_FALSE(out.results[1].has_value());
  EXPECT_EQ(out.results[1].error().code, ErrorCode::kWrongExpectedVersion);
  EXPECT_EQ(out.results[1].error().actual_version, 2u);
  ASSERT_TRUE(out.results[2].has_value()) << out.results[2].error().message;
  EXPECT_EQ(*out.results[2], (AppendResult{3, 1, false}));
  EXPECT_EQ(store.head(), 3u);
  EXPECT_EQ(stream_versions("s1"), (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(StoreTest, StreamVersionsContinueAfterReopen) {
  open();
  commit_ok(on_stream("s1", 2));
  open();
  auto out = commit({on_stream("s1", 1, "", {{"s1", ExpectKind::kExact, 2}})});
  ASSERT_TRUE(out.results[0].has_value()) << out.results[0].error().message;
  EXPECT_EQ(stream_versions("s1"), (std::vector<uint64_t>{1, 2, 3}));
}

// ---- idempotency --------------------------------------------------------------------

TEST_F(StoreTest, IdempotentResendReturnsOriginalSequencesAndWritesNothing) {
  Store& store = open();
  commit_ok(on_stream("other", 1));
  AppendRequest req = on_stream("s1", 2, "key-1");
  EXPECT_EQ(commit_ok(req), (AppendResult{2, 2, false}));
  ASSERT_EQ(store.head(), 3u);
  uint64_t bytes = store.log_bytes();

  auto again = commit({req});
  ASSERT_TRUE(again.results[0].has_value()) << again.results[0].error().message;
  EXPECT_EQ(*again.results[0], (AppendResult{2, 2, true}));
  EXPECT_TRUE(again.committed.empty());
  EXPECT_EQ(store.head(), 3u);
  EXPECT_EQ(store.log_bytes(), bytes);
  EXPECT_EQ(stream_versions("s1"), (std::vector<uint64_t>{1, 2}));
}

TEST_F(StoreTest, IdempotentResendIsRecognisedAfterReopen) {
  open();
  AppendRequest req = on_stream("s1", 3, "key-1");
  EXPECT_EQ(commit_ok(req), (AppendResult{1, 3, false}));
  close();
  Store& store = open();
  auto again = commit({req});
  ASSERT_TRUE(again.results[0].has_value()) << again.results[0].error().message;
  EXPECT_EQ(*again.results[0], (AppendResult{1, 3, true}));
  EXPECT_TRUE(again.committed.empty());
  EXPECT_EQ(store.head(), 3u);
  EXPECT_EQ(all_events().size(), 3u);
}

TEST_F(StoreTest, SameKeyWithDifferentBatchIsRefused) {
  Store& store = open();
  commit_ok(on_stream("s1", 2, "key-1"));
  auto out = commit({on_stream("s1", 2, "key-1", {}, /*index=*/100)});
  ASSERT_FALSE(out.results[0].has_value());
  EXPECT_EQ(out.results[0].error().code, ErrorCode::kIdempotencyKeyReused);
  EXPECT_THAT(out.results[0].error().message, HasSubstr("key-1"));
  EXPECT_TRUE(out.committed.empty());
  EXPECT_EQ(store.head(), 2u);
}

TEST_F(StoreTest, SameKeyTwiceInOneCommitWritesOnce) {
  Store& store = open();
  AppendRequest req = on_stream("s1", 2, "key-1");
  auto out = commit({req, req});
  ASSERT_EQ(out.results.size(), 2u);
  ASSERT_TRUE(out.results[0].has_value()) << out.results[0].error().message;
  ASSERT_TRUE(out.results[1].has_value()) << out.results[1].error().message;
  EXPECT_EQ(*out.results[0], (AppendResult{1, 2, false}));
  EXPECT_EQ(*out.results[1], (AppendResult{1, 2, true}));
  EXPECT_EQ(out.committed.size(), 2u);
  EXPECT_EQ(store.head(), 2u);
  EXPECT_EQ(stream_versions("s1"), (std::vector<uint64_t>{1, 2}));
}

TEST_F(StoreTest, SameKeyWithDifferentBatchInOneCommitIsRefused) {
  Store& store = open();
  auto out = commit({on_stream("s1", 2, "key-1"), on_stream("s1", 1, "key-1", {}, 50)});
  ASSERT_TRUE(out.results[0].has_value());
  ASSERT_FALSE(out.results[1].has_value());
  EXPECT_EQ(out.results[1].error().code, ErrorCode::kIdempotencyKeyReused);
  EXPECT_EQ(store.head(), 2u);
}

TEST_F(StoreTest, RefusedRequestDoesNotConsumeItsKey) {
  open();
  auto out = commit({on_stream("s1", 1, "key-1", {{"s1", ExpectKind::kStreamExists, 0}})});
  ASSERT_FALSE(out.results[0].has_value());
  EXPECT_EQ(commit_ok(on_stream("s1", 1, "key-1", {}, 7)), (AppendResult{1, 1, false}));
}

// ---- validation ---------------------------------------------------------------------

TEST_F(StoreTest, InvalidRequestsAreRefusedAndOthersInTheCommitSucceed) {
  Store& store = open();
  AppendRequest no_events = request({});
  AppendRequest empty_stream = request({synthetic("", 0)});
  AppendRequest nul_stream = request({synthetic(std::string("a\0b", 3), 0)});
  AppendRequest long_stream = request({synthetic(std::string(257, 's'), 0)});
  AppendRequest bad_expectation = on_stream("s1", 1, "", {{"", ExpectKind::kAny, 0}});
  AppendRequest long_key = on_stream("s1", 1, std::string(257, 'k'));
  auto out = commit({no_events, empty_stream, on_stream("ok", 1), nul_stream, long_stream,
                     bad_expectation, long_key});
  ASSERT_EQ(out.results.size(), 7u);
  for (size_t i : {0u, 1u, 3u, 4u, 5u, 6u}) {
    ASSERT_FALSE(out.results[i].has_value()) << "request " << i << " accepted";
    EXPECT_EQ(out.results[i].error().code, ErrorCode::kInvalidRequest) << "request " << i;
  }
  EXPECT_THAT(out.results[0].error().message, HasSubstr("no events"));
  EXPECT_THAT(out.results[1].error().message, HasSubstr("stream id"));
  EXPECT_THAT(out.results[3].error().message, HasSubstr("stream id"));
  ASSERT_TRUE(out.results[2].has_value()) << out.results[2].error().message;
  EXPECT_EQ(*out.results[2], (AppendResult{1, 1, false}));
  EXPECT_EQ(store.head(), 1u);
  EXPECT_EQ(all_events().size(), 1u);
}

TEST_F(StoreTest, LongestValidStreamIdIsAccepted) {
  open();
  EXPECT_EQ(commit_ok(request({synthetic(std::string(256, 's'), 0)})), (AppendResult{1, 1, false}));
}

TEST_F(StoreTest, EventOverTheSizeLimitIsRefusedAndOneAtTheLimitIsReadable) {
  open();
  auto big = [](size_t blob) {
    return request({EventDraft{"s", "", "", "", Synthetic{"", 0, "", std::string(blob, 'b')}}});
  };
  auto out = commit({big(kEventBytesMax)});
  ASSERT_FALSE(out.results[0].has_value());
  EXPECT_EQ(out.results[0].error().code, ErrorCode::kInvalidRequest);
  EXPECT_NE(out.results[0].error().message.find("exceeds the limit"), std::string::npos);
  EXPECT_EQ(store_->head(), 0u);
  // The largest accepted event stays readable by every verifier.
  commit_ok(big(kEventBytesMax - 1));
  expect_chain_sound_from_one(1);
}

// ---- reads ------------------------------------------------------------------------------

TEST_F(StoreTest, ReadRangePagesWithNextAndEnd) {
  Store& store = open();
  commit_ok(on_stream("s1", 10));
  ASSERT_EQ(store.head(), 10u);

  std::vector<uint64_t> seen;
  uint64_t from = 1;
  int pages = 0;
  while (true) {
    auto reply = store.read_range(ReadRangeRequest{from, 0, 4});
    ASSERT_TRUE(reply.has_value()) << reply.error().message;
    EXPECT_EQ(reply->head, 10u);
    EXPECT_LE(reply->records.size(), 4u);
    for (const auto& r : reply->records) seen.push_back(decode(r).sequence);
    EXPECT_EQ(reply->next, from + reply->records.size());
    ++pages;
    ASSERT_LE(pages, 3);
    if (reply->end) break;
    from = reply->next;
  }
  EXPECT_EQ(pages, 3);
  std::vector<uint64_t> expected = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(seen, expected);
}

TEST_F(StoreTest, ReadRangeStopsAtTo) {
  Store& store = open();
  commit_ok(on_stream("s1", 10));
  auto reply = store.read_range(ReadRangeRequest{3, 5, 0});
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  ASSERT_EQ(reply->records.size(), 3u);
  EXPECT_EQ(decode(reply->records.front()).sequence, 3u);
  EXPECT_EQ(decode(reply->records.back()).sequence, 5u);
  EXPECT_EQ(reply->next, 6u);
  EXPECT_TRUE(reply->end);

  // `to` past the head is clipped to the head.
  auto past = store.read_range(ReadRangeRequest{9, 100, 0});
  ASSERT_TRUE(past.has_value());
  EXPECT_EQ(past->records.size(), 2u);
  EXPECT_TRUE(past->end);
  EXPECT_EQ(past->next, 11u);

  // A page boundary before `to`.
  auto paged = store.read_range(ReadRangeRequest{2, 8, 3});
  ASSERT_TRUE(paged.has_value());
  EXPECT_EQ(paged->records.size(), 3u);
  EXPECT_EQ(paged->next, 5u);
  EXPECT_FALSE(paged->end);
}

TEST_F(StoreTest, ReadRangeBeyondTheHeadIsEmptyAndEnded) {
  Store& store = open();
  commit_ok(on_stream("s1", 3));
  auto reply = store.read_range(ReadRangeRequest{4, 0, 0});
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_TRUE(reply->records.empty());
  EXPECT_TRUE(reply->end);
  EXPECT_EQ(reply->next, 4u);
  EXPECT_EQ(reply->head, 3u);

  auto from_zero = store.read_range(ReadRangeRequest{0, 0, 0});
  ASSERT_TRUE(from_zero.has_value());
  EXPECT_EQ(from_zero->records.size(), 3u) << "from 0 reads from 1";
}

TEST_F(StoreTest, ReadRangePageIsCappedByTheConfiguredMaximum) {
  options_.read_page_events_max = 3;
  Store& store = open();
  commit_ok(on_stream("s1", 10));
  auto reply = store.read_range(ReadRangeRequest{1, 0, 100});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->records.size(), 3u);
  EXPECT_FALSE(reply->end);
  auto unlimited = store.read_range(ReadRangeRequest{1, 0, 0});
  ASSERT_TRUE(unlimited.has_value());
  EXPECT_EQ(unlimited->records.size(), 3u);
}

TEST_F(StoreTest, ReadStreamReturnsOnlyThatStreamInVersionOrder) {
  Store& store = open();
  commit_ok(request({synthetic("a", 0), synthetic("b", 0), synthetic("a", 1)}));
  commit_ok(request({synthetic("ab", 0), synthetic("b", 1), synthetic("a", 2)}));
  commit_ok(on_stream("a\x01", 1));  // shares the prefix "a"

  auto reply = store.read_stream(ReadStreamRequest{"a", 1, 0});
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  ASSERT_EQ(reply->records.size(), 3u);
  std::vector<uint64_t> sequences;
  for (size_t i = 0; i < 3; ++i) {
    Event e = decode(reply->records[i]);
    EXPECT_EQ(e.stream_id, "a");
    EXPECT_EQ(e.stream_version, i + 1);
    sequences.push_back(e.sequence);
  }
  EXPECT_EQ(sequences, (std::vector<uint64_t>{1, 3, 6}));
  EXPECT_TRUE(reply->end);
  EXPECT_EQ(reply->next, 4u);
  EXPECT_EQ(reply->head, 7u);

  EXPECT_EQ(stream_versions("b"), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(stream_versions("ab"), (std::vector<uint64_t>{1}));
  EXPECT_TRUE(stream_versions("c").empty());
}

TEST_F(StoreTest, ReadStreamPagesFromAVersion) {
  Store& store = open();
  commit_ok(on_stream("a", 5));
  auto page = store.read_stream(ReadStreamRequest{"a", 2, 2});
  ASSERT_TRUE(page.has_value()) << page.error().message;
  ASSERT_EQ(page->records.size(), 2u);
  EXPECT_EQ(decode(page->records[0]).stream_version, 2u);
  EXPECT_EQ(decode(page->records[1]).stream_version, 3u);
  EXPECT_EQ(page->next, 4u);
  EXPECT_FALSE(page->end);

  auto rest = store.read_stream(ReadStreamRequest{"a", page->next, 2});
  ASSERT_TRUE(rest.has_value());
  ASSERT_EQ(rest->records.size(), 2u);
  EXPECT_EQ(decode(rest->records[1]).stream_version, 5u);
  EXPECT_TRUE(rest->end);
}

// The stream index holds one entry per run of a stream's events in a request:
// reads start inside a run and go on across runs and other streams' events.
TEST_F(StoreTest, ReadStreamStartsInsideARunAndGoesOnAcrossRuns) {
  Store& store = open();
  commit_runs_of_a_and_b();

  auto page = store.read_stream(ReadStreamRequest{"a", 3, 5});
  ASSERT_TRUE(page.has_value()) << page.error().message;
  std::vector<std::pair<uint64_t, uint64_t>> got;  // (version, sequence)
  for (const auto& r : page->records) {
    Event e = decode(r);
    EXPECT_EQ(e.stream_id, "a");
    got.emplace_back(e.stream_version, e.sequence);
  }
  EXPECT_EQ(got,
            (std::vector<std::pair<uint64_t, uint64_t>>{{3, 3}, {4, 4}, {5, 5}, {6, 6}, {7, 8}}));
  EXPECT_EQ(page->next, 8u);
  EXPECT_FALSE(page->end);

  auto rest = store.read_stream(ReadStreamRequest{"a", page->next, 0});
  ASSERT_TRUE(rest.has_value()) << rest.error().message;
  ASSERT_EQ(rest->records.size(), 3u);
  EXPECT_EQ(decode(rest->records[0]).sequence, 9u);
  EXPECT_EQ(decode(rest->records[2]).stream_version, 10u);
  EXPECT_EQ(rest->next, 11u);
  EXPECT_TRUE(rest->end);

  auto beyond = store.read_stream(ReadStreamRequest{"a", 11, 0});
  ASSERT_TRUE(beyond.has_value());
  EXPECT_TRUE(beyond->records.empty());
  EXPECT_TRUE(beyond->end);
  EXPECT_EQ(stream_versions("b"), (std::vector<uint64_t>{1, 2, 3}));

  // The current version comes from the last run: 10, not its first version 8.
  auto stale = commit({on_stream("a", 1, "", {{"a", ExpectKind::kExact, 9}})});
  EXPECT_FALSE(stale.results[0].has_value());
  open();  // no cached versions: read from the index
  auto out = commit({on_stream("a", 1, "", {{"a", ExpectKind::kExact, 10}}, 10)});
  ASSERT_TRUE(out.results[0].has_value()) << out.results[0].error().message;
  close();
  // a1-5, a6, b1, a7, a8-10, b2-3, a11, and the derived-data mark.
  EXPECT_EQ(column_keys("streams").size(), 8u);
}

// After the stream index is lost, it is rebuilt from the records at open, with
// consecutive events of a stream merged into one entry across requests.
TEST_F(StoreTest, LostStreamIndexIsRebuiltInRunsThatServeTheSameReads) {
  open();
  commit_runs_of_a_and_b();
  auto before = store_->read_stream(ReadStreamRequest{"a", 2, 0});
  ASSERT_TRUE(before.has_value());
  close();
  ASSERT_EQ(column_keys("streams", true).size(), 7u);

  Store& store = open();
  auto after = store.read_stream(ReadStreamRequest{"a", 2, 0});
  ASSERT_TRUE(after.has_value()) << after.error().message;
  EXPECT_EQ(after->records, before->records);
  EXPECT_EQ(after->next, 11u);
  EXPECT_EQ(stream_versions("b"), (std::vector<uint64_t>{1, 2, 3}));
  auto out = commit({on_stream("b", 1, "", {{"b", ExpectKind::kExact, 3}}, 3)});
  ASSERT_TRUE(out.results[0].has_value()) << out.results[0].error().message;
  close();
  // a1-6 (sequences 1-6), b1, a7-10 (8-11), b2-3, b4 (its own request), the mark.
  EXPECT_EQ(column_keys("streams").size(), 6u);
}

// A damaged index is an error naming the stream, never a stream read with
// versions missing or a version handed out twice.
TEST_F(StoreTest, DamagedStreamIndexIsReportedNotSkipped) {
  open();
  commit_runs_of_a_and_b();
  close();
  // a6 (at sequence 6) gone: a hole between a1-5 and a7.
  with_family("streams", [&](rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf) {
    ASSERT_TRUE(db.Delete(rocksdb::WriteOptions(), cf, stream_entry_key("a", 6)).ok());
  });
  Store& store = open();
  auto whole = store.read_stream(ReadStreamRequest{"a", 1, 0});
  ASSERT_FALSE(whole.has_value());
  EXPECT_EQ(whole.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(whole.error().message, HasSubstr("no entry for versions 6..6 of stream \"a\""));
  auto after_hole = store.read_stream(ReadStreamRequest{"a", 7, 0});
  ASSERT_TRUE(after_hole.has_value()) << after_hole.error().message;
  EXPECT_EQ(after_hole->records.size(), 4u);
  close();

  // The last run of "a" (a8-10) claims 2^64 - 1 events: its last version would wrap.
  with_family("streams", [&](rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf) {
    ASSERT_TRUE(db.Put(rocksdb::WriteOptions(), cf, stream_entry_key("a", 8),
                       big_endian({9, UINT64_MAX}))
                    .ok());
    ASSERT_TRUE(db.Put(rocksdb::WriteOptions(), cf, stream_entry_key("b", 2), "short").ok());
  });
  open();
  auto out = commit({on_stream("a", 1, "", {{"a", ExpectKind::kAny, 0}})});
  ASSERT_FALSE(out.results[0].has_value()) << "a version was handed out over a damaged index";
  EXPECT_EQ(out.results[0].error().code, ErrorCode::kCorruption);
  EXPECT_THAT(out.results[0].error().message, HasSubstr("version 8 of stream \"a\" is damaged"));
  auto b = store_->read_stream(ReadStreamRequest{"b", 1, 0});
  ASSERT_FALSE(b.has_value());
  EXPECT_THAT(b.error().message, HasSubstr("a value of 5 bytes"));
}

// ---- stats ------------------------------------------------------------------------------

TEST_F(StoreTest, StatsCountPerTypeAndLogBytesAndSurviveReopen) {
  Store& store = open();
  uint64_t bytes = 0;
  auto out = commit({
      on_stream("s1", 3),
      request({EventDraft{"sys/1", "", "", "", SystemRegistered{"1", "h1", "10.0.0.1", "pk"}},
               EventDraft{"sys/2", "", "", "", SystemRegistered{"2", "h2", "10.0.0.2", "pk"}}}),
      request({EventDraft{"sys/1", "", "", "", SystemRemoved{"1", "gone"}}}),
  });
  for (const auto& c : out.committed) bytes += c.record.size();
  ASSERT_EQ(out.committed.size(), 6u);

  std::vector<TypeCount> expected = {{EventType::kSynthetic, 3},
                                     {EventType::kSystemRegistered, 2},
                                     {EventType::kSystemRemoved, 1}};
  StatsReply st = store.stats();
  EXPECT_EQ(st.head, 6u);
  EXPECT_EQ(st.event_count, 6u);
  EXPECT_EQ(st.log_bytes, bytes);
  EXPECT_EQ(store.log_bytes(), bytes);
  EXPECT_EQ(st.per_type, expected);
  EXPECT_FALSE(st.read_only);
  EXPECT_EQ(st.data_dir, options_.data_dir);
  EXPECT_GT(st.disk_bytes, 0u);

  close();
  Store& reopened = open();
  StatsReply again = reopened.stats();
  EXPECT_EQ(again.head, 6u);
  EXPECT_EQ(again.log_bytes, bytes);
  EXPECT_EQ(again.per_type, expected);
}

TEST_F(StoreTest, StatsIgnoreRefusedRequests) {
  Store& store = open();
  commit_ok(on_stream("s1", 2));
  uint64_t bytes = store.log_bytes();
  commit({on_stream("s1", 1, "", {{"s1", ExpectKind::kNoStream, 0}})});
  EXPECT_EQ(store.log_bytes(), bytes);
  EXPECT_EQ(store.stats().per_type, (std::vector<TypeCount>{{EventType::kSynthetic, 2}}));
}

// ---- open, lock, recovery -------------------------------------------------------------

TEST_F(StoreTest, SecondOpenOfTheSameDirectoryIsUnavailable) {
  open();
  auto second = try_open();
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code, ErrorCode::kUnavailable);
  EXPECT_THAT(second.error().message, HasSubstr("in use"));
  EXPECT_THAT(second.error().message, HasSubstr(std::to_string(::getpid())));
  // The first store is unaffected.
  EXPECT_EQ(commit_ok(on_stream("s1", 1)), (AppendResult{1, 1, false}));
  close();
  EXPECT_TRUE(try_open().has_value()) << "the lock is released on close";
}

TEST_F(StoreTest, ReopenContinuesSequenceAndChain) {
  open();
  commit_ok(on_stream("s1", 3));
  commit_ok(on_stream("s2", 2));
  close();
  Store& store = open();
  EXPECT_EQ(store.head(), 5u);
  EXPECT_EQ(store.acknowledged_at_open(), 5u);
  EXPECT_EQ(commit_ok(on_stream("s1", 2)), (AppendResult{6, 2, false}));
  close();
  open();
  EXPECT_EQ(store_->head(), 7u);
  expect_chain_sound_from_one(7);
}

// Records above the mark whose derived data exists were acknowledged: the
// mark file is stale (another backup). Discarding them would shorten the log.
// (Records above the mark without derived data, a crash between the WAL sync
// and the mark write, are discarded: tests/integration, kill points.)
TEST_F(StoreTest, MarkFileOlderThanTheLogRefusesToOpen) {
  open();
  commit_ok(on_stream("s1", 2, "key-1"));
  commit_ok(on_stream("s1", 3, "key-2", {}, 10));
  ASSERT_EQ(store_->head(), 5u);
  close();
  store_mark(2);
  auto s = try_open();
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code, ErrorCode::kCorruption);
  EXPECT_NE(s.error().message.find("says 2 but sequence 5 was acknowledged"), std::string::npos)
      << s.error().message;
  store_mark(5);
  Store& store = open();
  EXPECT_EQ(store.head(), 5u) << "nothing was deleted";
  expect_chain_sound_from_one(5);
}

// After a reboot, a mark written without a sync may trail what was
// acknowledged: the records above it are kept, and the mark catches up.
TEST_F(StoreTest, RecordsAboveAnUnsyncedMarkOfAnEarlierBootAreKept) {
  open();
  commit_ok(on_stream("s1", 2, "key-1"));
  commit_ok(on_stream("s1", 3, "key-2", {}, 10));
  close();
  store_mark(2, boot_id_from_text("an earlier boot"), false);
  Store& store = open();
  EXPECT_EQ(store.head(), 5u) << "nothing was deleted";
  EXPECT_EQ(store.acknowledged_at_open(), 5u);
  expect_chain_sound_from_one(5);
  auto again = store.commit(std::vector<AppendRequest>{on_stream("s1", 3, "key-2", {}, 10)}, kNow);
  ASSERT_TRUE(again.results[0].has_value());
  EXPECT_TRUE(again.results[0]->duplicate) << "the kept records are served as acknowledged";
  // Read while the store is open: the open synced the adopted head, unflagged
  // (writes after it are not synced before their reply).
  auto mark = AckMark::read(options_.data_dir + "/acknowledged", boot_id_from_text("a later boot"));
  ASSERT_TRUE(mark.has_value());
  EXPECT_EQ(*mark, (std::optional<MarkReading>(MarkReading{5, false})));
}

// A power cut that loses the unsynced mark writes (and the final one of a
// clean stop) after an open: the mark on disk is the one the open wrote, and it
// must read as a lower bound, or the acknowledged records above it would be
// discarded.
TEST_F(StoreTest, LostUnsyncedMarkAfterAnOpenKeepsTheAcknowledgedRecords) {
  open();
  commit_ok(on_stream("s1", 2, "key-1"));
  close();
  open();
  std::string mark_path = options_.data_dir + "/acknowledged";
  std::string after_open = read_file(mark_path);
  commit_ok(on_stream("s1", 3, "key-2", {}, 10));
  close();
  write_file(mark_path, after_open);
  options_.boot_id_for_test = "the next boot";
  Store& store = open();
  EXPECT_EQ(store.head(), 5u) << "acknowledged records were discarded";
  expect_chain_sound_from_one(5);
}

// The same mark in this boot is exact: derived data beyond it means the file
// is stale, as for a synced mark.
TEST_F(StoreTest, UnsyncedMarkOfThisBootIsExact) {
  open();
  commit_ok(on_stream("s1", 5, "key-1"));
  close();
  store_mark(2, this_boot(), false);
  auto s = try_open();
  ASSERT_FALSE(s.has_value());
  EXPECT_THAT(s.error().message, HasSubstr("says 2 but sequence 5 was acknowledged"));
}

TEST_F(StoreTest, LogBelowAnUnsyncedMarkOfAnEarlierBootIsRefused) {
  open();
  commit_ok(on_stream("s1", 3));
  close();
  store_mark(7, boot_id_from_text("an earlier boot"), false);
  auto s = try_open();
  ASSERT_FALSE(s.has_value());
  EXPECT_THAT(s.error().message, HasSubstr("first missing: 4"));
}

TEST_F(StoreTest, MarkIsSyncedWithinTheIntervalOrBeforeTheReplyWhenZero) {
  Store& store = open();
  EXPECT_EQ(store.mark_sync_due_in(), std::chrono::milliseconds::max());
  commit_ok(on_stream("s1", 1));
  EXPECT_LE(store.mark_sync_due_in(), std::chrono::milliseconds(options_.mark_sync_interval_ms));
  store.sync_mark(true);
  EXPECT_EQ(store.mark_sync_due_in(), std::chrono::milliseconds::max());
  close();
  options_.mark_sync_interval_ms = 0;
  Store& strict = open();
  commit_ok(on_stream("s1", 1));
  EXPECT_EQ(strict.mark_sync_due_in(), std::chrono::milliseconds::max());
  // Read while the store is open (closing writes a flagged head in any mode).
  auto mark = AckMark::read(options_.data_dir + "/acknowledged", boot_id_from_text("a later boot"));
  ASSERT_TRUE(mark.has_value());
  EXPECT_EQ(*mark, (std::optional<MarkReading>(MarkReading{2, true})))
      << "synced before the reply: exact in any boot";
}

TEST_F(StoreTest, UnreadableBootIdSyncsTheMarkBeforeEveryReply) {
  options_.boot_id_for_test = "unreadable";
  Store& store = open();
  commit_ok(on_stream("s1", 1));
  EXPECT_EQ(store.mark_sync_due_in(), std::chrono::milliseconds::max());
}

TEST_F(StoreTest, RefusedOpenLeavesTheMarkFileAlone) {
  open();
  commit_ok(on_stream("s1", 3));
  close();
  store_mark(7);
  std::string before = read_file(options_.data_dir + "/acknowledged");
  ASSERT_FALSE(try_open().has_value());
  EXPECT_EQ(read_file(options_.data_dir + "/acknowledged"), before);
}

TEST_F(StoreTest, MarkAboveTheLogFailsOpenNamingTheFirstMissingSequence) {
  open();
  commit_ok(on_stream("s1", 3));
  close();
  store_mark(7);
  auto s = try_open();
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(s.error().message, HasSubstr("first missing: 4"));
}

TEST_F(StoreTest, MissingMarkWithNonEmptyLogFailsOpen) {
  open();
  commit_ok(on_stream("s1", 3));
  close();
  ASSERT_TRUE(fs::remove(options_.data_dir + "/acknowledged"));
  auto s = try_open();
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(s.error().message, HasSubstr("acknowledged"));
}

TEST_F(StoreTest, MissingMarkWithEmptyLogIsRecreated) {
  open();
  close();
  ASSERT_TRUE(fs::remove(options_.data_dir + "/acknowledged"));
  Store& store = open();
  EXPECT_EQ(store.head(), 0u);
  EXPECT_EQ(commit_ok(on_stream("s1", 1)), (AppendResult{1, 1, false}));
  close();
  auto mark = AckMark::read(options_.data_dir + "/acknowledged", this_boot());
  ASSERT_TRUE(mark.has_value());
  EXPECT_EQ(*mark, (std::optional<MarkReading>(MarkReading{1, true})));
}

TEST_F(StoreTest, EditedRecordInTheTailFailsOpen) {
  open();
  commit_ok(on_stream("s1", 5));
  auto record = store_->read_range(ReadRangeRequest{3, 3, 0});
  ASSERT_TRUE(record.has_value());
  ASSERT_EQ(record->records.size(), 1u);
  // Same event, different content, checksum recomputed, old chain kept.
  Event e = decode(record->records[0]);
  e.actor = "mallory";
  std::string forged = record->records[0].substr(0, kRecordHeaderBytes) + encode_event(e);
  uint32_t crc = crc32c(forged.data() + 4, forged.size() - 4);
  std::memcpy(forged.data(), &crc, 4);
  ASSERT_TRUE(store_->overwrite_record_for_test(3, forged).has_value());
  close();
  auto s = try_open();
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(s.error().message, HasSubstr("sequence 3"));
}

}  // namespace
}  // namespace wpm::eventstore
