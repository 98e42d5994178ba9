#include "eventstore/verify.h"

#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "eventstore/handoff.h"

namespace wpm::eventstore {

namespace {

// Records copied out together, about a megabyte at a time, so the hand-off
// costs little per record.
struct Batch {
  std::string bytes;
  std::vector<std::pair<uint64_t, std::pair<size_t, size_t>>> records;  // sequence, (offset, size)
};
constexpr size_t kBatchBytes = 1 << 20;

// Reads the stored records `first..last` into `out` on a thread of its own.
class Scanner {
 public:
  Scanner(const Store& store, uint64_t first, uint64_t last)
      : first_(first),
        thread_([this, &store, first, last] {
          Batch batch;
          read_ = store.scan(first, Store::ScanMode::kBulk, [&](uint64_t seq, std::string_view rec) {
            if (seq > last) return false;
            batch.records.push_back({seq, {batch.bytes.size(), rec.size()}});
            batch.bytes.append(rec);
            if (batch.bytes.size() < kBatchBytes) return true;
            bool taken = out_.push(std::move(batch));
            batch = Batch{};
            return taken;
          });
          if (!batch.records.empty()) out_.push(std::move(batch));
          out_.finish();
        }) {}
  ~Scanner() { stop(); }
  Handoff<Batch>& out() { return out_; }
  uint64_t first() const { return first_; }
  // Stops reading (if it still reads) and says how reading ended.
  const Result<void>& stop() {
    if (thread_.joinable()) {
      out_.close();
      thread_.join();
    }
    return read_;
  }

 private:
  uint64_t first_;
  Handoff<Batch> out_{4};
  Result<void> read_;
  std::thread thread_;  // last: starts once the members it uses exist
};

}  // namespace

Result<void> verify_log(const Store& store, ChainVerifier& verifier, uint64_t to, uint64_t max_events,
                        const std::function<void(const ChainVerifier&)>& progress) {
  uint64_t from = verifier.next_sequence();
  if (from > to) return {};
  uint64_t last = to;
  if (max_events > 0 && max_events - 1 < to - from) last = from + max_events - 1;
  // Reading (RocksDB, zstd) costs more than checking (checksums, SHA-256): a
  // bounded range is read in two halves on two threads while this one checks
  // them in order.
  std::vector<std::unique_ptr<Scanner>> scanners;
  constexpr uint64_t kSplitEventsMin = 4096;
  if (last != UINT64_MAX && last - from >= kSplitEventsMin) {
    uint64_t middle = from + (last - from) / 2;
    scanners.push_back(std::make_unique<Scanner>(store, from, middle));
    scanners.push_back(std::make_unique<Scanner>(store, middle + 1, last));
  } else {
    scanners.push_back(std::make_unique<Scanner>(store, from, last));
  }
  for (auto& scanner : scanners) {
    // The first half ended early (the log has a hole there, or ends): a
    // record of this half shows the hole as a jump; a read fault of this
    // half must not hide it.
    const uint64_t expected = verifier.next_sequence();
    const bool short_before = expected != scanner->first();
    while (auto batch = scanner->out().pop()) {
      for (const auto& [seq, at] : batch->records) {
        auto checked = verifier.check(seq, std::string_view(batch->bytes).substr(at.first, at.second));
        if (!checked) return checked;  // the scanners stop as they are destroyed
      }
      if (progress) progress(verifier);
    }
    // A read fault past the last sound record is the first fault.
    if (const auto& read = scanner->stop(); !read) {
      if (short_before && verifier.next_sequence() == expected) {
        return fail(ErrorCode::kCorruption, fmt::format("sequence {}: missing; {}", expected, read.error().message));
      }
      return read;
    }
  }
  return {};
}

VerifyReply verify_request(const Store& store, const VerifyRequest& request, uint64_t max_events_cap) {
  VerifyReply reply;
  reply.head = store.head();
  uint64_t from = std::max<uint64_t>(request.from, 1);
  uint64_t to = request.to == 0 ? reply.head : std::min(request.to, reply.head);
  uint64_t max_events = request.max_events == 0 ? max_events_cap
                                                : std::min<uint64_t>(request.max_events, max_events_cap);
  ChainVerifier verifier(from, request.previous_chain);
  auto r = verify_log(store, verifier, to, max_events);
  reply.checked = verifier.count();
  reply.next = verifier.next_sequence();
  reply.chain = verifier.chain();
  if (!r) {
    reply.problem = r.error().message;
  } else if (reply.next <= to && (max_events == 0 || reply.checked < max_events)) {
    // The log ended (or skipped) before the acknowledged head.
    reply.problem = fmt::format("sequence {}: missing (the store acknowledged up to {})", reply.next, to);
  }
  reply.end = !reply.problem.empty() || reply.next > to;
  return reply;
}

}  // namespace wpm::eventstore
