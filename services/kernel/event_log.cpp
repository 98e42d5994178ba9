#include "services/kernel/event_log.h"

#include <thread>

#include "services/kernel/projection.h"

#include <fmt/format.h>

#include "bus/frame.h"
#include "schemas/codec.h"
#include "schemas/record.h"

namespace wpm::kernel {

Result<AppendResult> LocalLog::append(const AppendRequest& request) {
  AppendRequest stamped = request;
  for (auto& draft : stamped.events) {
    auto actor = access_.authorize(identity_, draft);
    if (!actor) return std::unexpected(actor.error());
    draft.actor = std::move(*actor);
  }
  auto outcome = store_.commit(std::span<const AppendRequest>(&stamped, 1), clock_.wall_ns());
  if (auto r = store_.apply_index(); !r) return std::unexpected(r.error());
  store_.sync_mark(true);
  return outcome.results.front();
}

Result<AppendResult> EmbeddedLog::append(const AppendRequest& request) {
  auto result = client_.append(request);
  if (!result || result->count == 0) return result;
  // The store replies before it writes the stream index (off the
  // acknowledgement's path); wait for its commit signal.
  uint64_t last = result->first_sequence + result->count - 1;
  if (store_.wait_beyond(last - 1, std::chrono::seconds(5)) < last) {
    return fail(ErrorCode::kTimeout, fmt::format("sequence {} was acknowledged but is not readable after 5 s",
                                                 last));
  }
  return result;
}

uint64_t PollingSignal::wait_beyond(uint64_t sequence, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // Bounded by the deadline; the sleep is this transport's wait, not a service's.
  while (true) {
    if (auto st = client_.stats(); st) head_ = st->head;
    if (head_ > sequence || std::chrono::steady_clock::now() + interval_ > deadline) return head_;
    std::this_thread::sleep_for(interval_);
  }
}

Result<std::vector<Event>> decode_records(const std::vector<std::string>& records) {
  std::vector<Event> out;
  out.reserve(records.size());
  for (const auto& record : records) {
    auto view = parse_record(record);
    if (!view) return std::unexpected(view.error());
    auto event = decode_event(view->event_bytes, bus::frame_limits());
    if (!event) return fail(ErrorCode::kCorruption, "a stored event does not decode: " + event.error().message);
    out.push_back(std::move(*event));
  }
  return out;
}

Result<std::vector<Event>> read_stream_events(EventLog& log, const std::string& stream_id,
                                              uint64_t from_version, uint64_t max_events) {
  std::vector<Event> out;
  uint64_t next = std::max<uint64_t>(from_version, 1);
  while (out.size() < max_events) {  // bounded: each page advances or ends
    auto page = log.read_stream(ReadStreamRequest{stream_id, next, 0});
    if (!page) return std::unexpected(page.error());
    auto events = decode_records(page->records);
    if (!events) return std::unexpected(events.error());
    for (auto& e : *events) out.push_back(std::move(e));
    if (page->end || page->records.empty()) return out;
    next = page->next;
  }
  return fail(ErrorCode::kInvalidRequest,
              fmt::format("stream '{}' holds more than {} events; load it from a snapshot", stream_id,
                          max_events));
}

Result<std::vector<Event>> read_sequences(EventLog& log, uint64_t first, uint32_t count) {
  std::vector<Event> out;
  uint64_t next = first;
  uint64_t last = first + count - 1;
  for (int page_no = 0; next <= last && page_no < 1'000'000; ++page_no) {
    auto page = log.read_range(ReadRangeRequest{next, last, 0});
    if (!page) return std::unexpected(page.error());
    auto events = decode_records(page->records);
    if (!events) return std::unexpected(events.error());
    for (auto& e : *events) out.push_back(std::move(e));
    if (page->records.empty()) break;
    next = page->next;
  }
  if (out.size() != count) {
    return fail(ErrorCode::kCorruption,
                fmt::format("sequences {}..{}: read {} of {} events", first, last, out.size(), count));
  }
  return out;
}

}  // namespace wpm::kernel
