#include "schemas/record.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "schemas/codec.h"

namespace wpm {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Event event_at(uint64_t sequence, std::string note = "note") {
  Event e;
  e.sequence = sequence;
  e.event_id = {1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, static_cast<uint8_t>(sequence)};
  e.timestamp_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(sequence);
  e.stream_id = "synthetic/run1";
  e.stream_version = sequence;
  e.actor = "test";
  e.payload = Synthetic{"run1", sequence, std::move(note), ""};
  return e;
}

// A sound log of `n` records: records[i] holds sequence i + 1; chains[i] is its chain.
struct Log {
  std::vector<std::string> records;
  std::vector<Sha256Digest> chains;
};

Log make_log(uint64_t n) {
  Log log;
  Sha256 hasher;
  Sha256Digest previous{};
  for (uint64_t seq = 1; seq <= n; ++seq) {
    Sha256Digest chain{};
    log.records.push_back(make_record(previous, encode_event(event_at(seq)), hasher, &chain));
    log.chains.push_back(chain);
    previous = chain;
  }
  return log;
}

void put_u32(std::string& s, size_t offset, uint32_t v) { std::memcpy(s.data() + offset, &v, 4); }
uint32_t get_u32(const std::string& s, size_t offset) {
  uint32_t v;
  std::memcpy(&v, s.data() + offset, 4);
  return v;
}
// Recomputes the checksum after an edit (what a careful forger would do).
void reseal(std::string& record) {
  put_u32(record, 0, crc32c(record.data() + 4, record.size() - 4));
}

// ---- make_record / parse_record ---------------------------------------------

TEST(Record, RoundTripsChainAndEventBytes) {
  std::string event = encode_event(event_at(1));
  Sha256 hasher;
  Sha256Digest previous{};
  previous[0] = 0x42;
  Sha256Digest chain{};
  std::string record = make_record(previous, event, hasher, &chain);

  ASSERT_EQ(record.size(), kRecordHeaderBytes + event.size());
  EXPECT_EQ(get_u32(record, 4), kRecordFormat);
  EXPECT_EQ(get_u32(record, 0), crc32c(record.data() + 4, record.size() - 4));

  Sha256 expected;
  expected.update(previous.data(), previous.size());
  expected.update(event);
  EXPECT_EQ(chain, expected.final()) << "chain = SHA-256(previous chain || event bytes)";

  auto view = parse_record(record);
  ASSERT_TRUE(view.has_value()) << view.error().message;
  EXPECT_EQ(view->chain, chain);
  EXPECT_EQ(view->event_bytes, event);
}

TEST(Record, ChecksumCatchesAnyFlippedByte) {
  Log log = make_log(1);
  const std::string& good = log.records[0];
  ASSERT_TRUE(parse_record(good).has_value());
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      auto r = parse_record(bad);
      ASSERT_FALSE(r.has_value()) << "flip of byte " << i << " mask " << int{mask} << " went unseen";
      EXPECT_EQ(r.error().code, ErrorCode::kCorruption);
      EXPECT_THAT(r.error().message, HasSubstr("checksum mismatch")) << "byte " << i;
    }
  }
}

TEST(Record, RefusesTooShortRecords) {
  Log log = make_log(1);
  for (size_t size : {size_t{0}, size_t{4}, kRecordHeaderBytes, kRecordHeaderBytes + 7}) {
    auto r = parse_record(std::string_view(log.records[0]).substr(0, size));
    ASSERT_FALSE(r.has_value()) << size << " bytes accepted";
    EXPECT_EQ(r.error().code, ErrorCode::kCorruption);
    EXPECT_THAT(r.error().message, HasSubstr("too short")) << size;
  }
}

TEST(Record, RefusesUnknownFormatEvenWithValidChecksum) {
  Log log = make_log(1);
  std::string record = log.records[0];
  put_u32(record, 4, kRecordFormat + 1);
  reseal(record);
  auto r = parse_record(record);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(r.error().message, HasSubstr("unknown record format 2"));
}

// ---- ChainVerifier -------------------------------------------------------------

TEST(ChainVerifier, SoundChainPasses) {
  constexpr uint64_t kCount = 20;
  Log log = make_log(kCount);
  ChainVerifier verifier;
  for (uint64_t seq = 1; seq <= kCount; ++seq) {
    auto e = verifier.feed(seq, log.records[seq - 1]);
    ASSERT_TRUE(e.has_value()) << "sequence " << seq << ": " << e.error().message;
    EXPECT_EQ(e->sequence, seq);
    EXPECT_EQ(*e, event_at(seq));
  }
  EXPECT_EQ(verifier.count(), kCount);
  EXPECT_EQ(verifier.next_sequence(), kCount + 1);
  EXPECT_EQ(verifier.chain(), log.chains.back());
}

TEST(ChainVerifier, ResumesFromTheMiddleGivenThePreviousChain) {
  Log log = make_log(10);
  ChainVerifier verifier(6, log.chains[4]);
  for (uint64_t seq = 6; seq <= 10; ++seq) {
    auto e = verifier.feed(seq, log.records[seq - 1]);
    ASSERT_TRUE(e.has_value()) << e.error().message;
  }
  EXPECT_EQ(verifier.count(), 5u);

  ChainVerifier wrong_previous(6, Sha256Digest{});
  auto e = wrong_previous.feed(6, log.records[5]);
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(e.error().message, StartsWith("sequence 6:"));
}

TEST(ChainVerifier, EditedEventWithRecomputedChecksumFailsAtThatSequence) {
  Log log = make_log(10);
  // Replace event 5 by an edited one, keep its old chain, fix the checksum.
  std::string edited = encode_event(event_at(5, "forged"));
  std::string record = log.records[4].substr(0, kRecordHeaderBytes) + edited;
  reseal(record);
  ASSERT_TRUE(parse_record(record).has_value()) << "the forgery passes the checksum";
  log.records[4] = record;

  ChainVerifier verifier;
  for (uint64_t seq = 1; seq <= 4; ++seq) ASSERT_TRUE(verifier.feed(seq, log.records[seq - 1]));
  auto e = verifier.feed(5, log.records[4]);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(e.error().message, StartsWith("sequence 5:"));
  EXPECT_THAT(e.error().message, HasSubstr("hash chain broken"));
  EXPECT_EQ(verifier.count(), 4u);
}

TEST(ChainVerifier, RecordReplacedTogetherWithItsChainBreaksAtTheNextSequence) {
  Log log = make_log(10);
  Sha256 hasher;
  log.records[4] = make_record(log.chains[3], encode_event(event_at(5, "forged")), hasher, nullptr);

  ChainVerifier verifier;
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    auto e = verifier.feed(seq, log.records[seq - 1]);
    ASSERT_TRUE(e.has_value()) << "sequence " << seq << ": " << e.error().message;
  }
  auto e = verifier.feed(6, log.records[5]);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(e.error().message, StartsWith("sequence 6:"));
  EXPECT_THAT(e.error().message, HasSubstr("hash chain broken"));
}

TEST(ChainVerifier, RemovedRecordIsReportedMissingAtItsSequence) {
  Log log = make_log(10);
  ChainVerifier verifier;
  for (uint64_t seq = 1; seq <= 6; ++seq) ASSERT_TRUE(verifier.feed(seq, log.records[seq - 1]));
  // Sequence 7 was removed: the next key is 8.
  auto e = verifier.feed(8, log.records[7]);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(e.error().message, StartsWith("sequence 7:"));
  EXPECT_THAT(e.error().message, HasSubstr("missing"));
}

TEST(ChainVerifier, RemovedFirstRecordIsReportedMissing) {
  Log log = make_log(3);
  ChainVerifier verifier;
  auto e = verifier.feed(2, log.records[1]);
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(e.error().message, StartsWith("sequence 1:"));
  EXPECT_THAT(e.error().message, HasSubstr("missing"));
}

TEST(ChainVerifier, KeyBehindTheExpectedSequenceIsOutOfOrder) {
  Log log = make_log(5);
  ChainVerifier verifier;
  for (uint64_t seq = 1; seq <= 3; ++seq) ASSERT_TRUE(verifier.feed(seq, log.records[seq - 1]));
  auto e = verifier.feed(2, log.records[1]);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(e.error().message, StartsWith("sequence 2:"));
  EXPECT_THAT(e.error().message, HasSubstr("out of order (expected 4)"));
}

TEST(ChainVerifier, RecordsSwappedBetweenKeysBreakTheChain) {
  Log log = make_log(5);
  ChainVerifier verifier;
  ASSERT_TRUE(verifier.feed(1, log.records[0]));
  ASSERT_TRUE(verifier.feed(2, log.records[1]));
  auto e = verifier.feed(3, log.records[3]);  // record 4 stored under key 3
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(e.error().message, StartsWith("sequence 3:"));
}

TEST(ChainVerifier, EventSequenceDifferentFromItsKeyFails) {
  // A well-chained record whose event says sequence 5, stored under key 1.
  Sha256 hasher;
  std::string record = make_record(Sha256Digest{}, encode_event(event_at(5)), hasher, nullptr);
  ChainVerifier verifier;
  auto e = verifier.feed(1, record);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(e.error().message, StartsWith("sequence 1:"));
  EXPECT_THAT(e.error().message, HasSubstr("stored under key 1 but says sequence 5"));
  EXPECT_EQ(verifier.count(), 0u);
  EXPECT_EQ(verifier.next_sequence(), 1u);
}

TEST(ChainVerifier, CorruptRecordFailsWithItsChecksumError) {
  Log log = make_log(3);
  std::string bad = log.records[1];
  bad[kRecordHeaderBytes + 3] = static_cast<char>(bad[kRecordHeaderBytes + 3] ^ 0x10);
  ChainVerifier verifier;
  ASSERT_TRUE(verifier.feed(1, log.records[0]));
  auto e = verifier.feed(2, bad);
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(e.error().message, StartsWith("sequence 2:"));
  EXPECT_THAT(e.error().message, HasSubstr("checksum mismatch"));
}

TEST(ChainVerifier, UndecodableEventWithValidChainFails) {
  Sha256 hasher;
  std::string garbage(64, '\x7f');
  std::string record = make_record(Sha256Digest{}, garbage, hasher, nullptr);
  ChainVerifier verifier;
  auto e = verifier.feed(1, record);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::kCorruption);
  EXPECT_THAT(e.error().message, StartsWith("sequence 1:"));
}

}  // namespace
}  // namespace wpm

namespace wpm {
namespace {

// check() (what `wpm log verify` runs) accepts and refuses exactly as feed().
TEST(ChainVerifierCheck, AgreesWithFeedOnSoundAndBrokenLogs) {
  Log log = make_log(10);
  ChainVerifier full, fast;
  for (uint64_t seq = 1; seq <= 10; ++seq) {
    ASSERT_TRUE(full.feed(seq, log.records[seq - 1]));
    ASSERT_TRUE(fast.check(seq, log.records[seq - 1]));
  }
  EXPECT_EQ(fast.chain(), full.chain());
  EXPECT_EQ(fast.count(), 10u);
  // An edited event with a recomputed checksum: the chain breaks at 5.
  std::string edited = encode_event(event_at(5, "forged"));
  std::string record = log.records[4].substr(0, kRecordHeaderBytes) + edited;
  reseal(record);
  ChainVerifier broken;
  for (uint64_t seq = 1; seq <= 4; ++seq) ASSERT_TRUE(broken.check(seq, log.records[seq - 1]));
  auto e = broken.check(5, record);
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(e.error().message, HasSubstr("hash chain broken"));
  // A record stored under another key than its sequence.
  ChainVerifier misplaced;
  EXPECT_FALSE(misplaced.check(2, log.records[0]).has_value());
}

}  // namespace
}  // namespace wpm
