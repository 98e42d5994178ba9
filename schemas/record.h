#pragma once
// The stored record: what the log column family holds per sequence, what read
// replies and publications carry, byte for byte.
//
//   offset 0   crc32c   u32 LE  over bytes [4, end)
//   offset 4   format   u32 LE  kRecordFormat
//   offset 8   chain    32 B    SHA-256(previous record's chain || event bytes)
//   offset 40  event    encoded schema Event (schemas/codec.h)
//
// The first record's "previous chain" is 32 zero bytes. An edited record fails
// its chain check; a removed one leaves a gap; a record replaced together with
// its chain breaks the next record's check.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "schemas/error.h"
#include "schemas/events.h"
#include "schemas/hash.h"

namespace wpm {

inline constexpr size_t kRecordHeaderBytes = 40;  // keeps the event word-aligned
inline constexpr uint32_t kRecordFormat = 1;
// Largest encoded event a record may hold.
inline constexpr size_t kRecordEventBytesMax = 2u << 20;

struct RecordView {
  Sha256Digest chain{};
  std::string_view event_bytes;
};

// Builds a record for `event_bytes` chained to `previous`; `hasher` is scratch.
std::string make_record(const Sha256Digest& previous, std::string_view event_bytes,
                        Sha256& hasher, Sha256Digest* chain_out);
// The same in place: `record` holds kRecordHeaderBytes of room, then the event.
void seal_record(std::string& record, const Sha256Digest& previous, Sha256& hasher,
                 Sha256Digest* chain_out);

// Checks size, format and checksum; does not decode the event.
Result<RecordView> parse_record(std::string_view record);

// Verifies a log read in sequence order: checksums, decoding, gap-free
// sequences, the hash chain. Pure: feed it records, it says what is wrong.
class ChainVerifier {
 public:
  // `expected_first`: the sequence the first record must have; `previous`: the
  // chain of the record before it (zeros at the start of the log).
  explicit ChainVerifier(uint64_t expected_first = 1, Sha256Digest previous = {});

  // Returns an error naming the first bad sequence; after one, stop feeding.
  Result<Event> feed(uint64_t key_sequence, std::string_view record);
  // The same checks without decoding the whole event (only its sequence):
  // what `wpm log verify` runs, at a fraction of the cost.
  Result<void> check(uint64_t key_sequence, std::string_view record);

  uint64_t next_sequence() const { return next_; }
  uint64_t count() const { return count_; }
  const Sha256Digest& chain() const { return chain_; }

 private:
  // Checks the order, checksum and chain; returns the event's bytes and the computed chain.
  Result<std::pair<std::string_view, Sha256Digest>> link(uint64_t key_sequence, std::string_view record);
  void advance(const Sha256Digest& computed);
  uint64_t next_;
  uint64_t count_ = 0;
  Sha256Digest chain_;
  Sha256 hasher_;
};

}  // namespace wpm
