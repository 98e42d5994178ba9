#pragma once
// An event log in memory, read in pages (the simulation's unit test and
// benchmark): events are made into real records, chained as the store
// chains them. Test code only.

#include <algorithm>
#include <string>
#include <vector>

#include "schemas/codec.h"
#include "schemas/hash.h"
#include "schemas/record.h"
#include "services/kernel/event_log.h"

namespace wpm::policy::testing {

class MemoryLog final : public kernel::EventLog {
 public:
  void add(int64_t ts, std::string stream, uint64_t version, Payload payload) {
    Event e;
    e.sequence = records_.size() + 1;
    e.timestamp_ns = ts;
    e.stream_id = std::move(stream);
    e.stream_version = version;
    e.payload = std::move(payload);
    records_.push_back(make_record(chain_, encode_event(e), hasher_, &chain_));
  }
  Result<AppendResult> append(const AppendRequest&) override { return fail(ErrorCode::kReadOnly, "read only"); }
  Result<ReadReply> read_stream(const ReadStreamRequest&) override { return ReadReply{}; }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override {
    ReadReply out;
    uint64_t from = std::max<uint64_t>(r.from, 1);
    for (uint64_t s = from; s <= records_.size() && out.records.size() < r.max_events; ++s) {
      out.records.push_back(records_[s - 1]);
    }
    out.head = records_.size();
    out.next = from + out.records.size();
    out.end = out.next > records_.size();
    return out;
  }
  size_t size() const { return records_.size(); }

 private:
  std::vector<std::string> records_;
  Sha256Digest chain_{};
  Sha256 hasher_;
};

}  // namespace wpm::policy::testing
