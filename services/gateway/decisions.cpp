// The gateway's wait for a command's decision (docs/control-plane.md): a
// request registers its command id before it appends the request; the
// follower reads each new commit once and hands every decision to the
// requests waiting for it; the answer lists the events the decision wrote.
#include <fmt/format.h>

#include <algorithm>

#include "bus/frame.h"
#include "schemas/event_json.h"
#include "schemas/record.h"
#include "services/gateway/gateway.h"
#include "services/kernel/repository.h"

namespace wpm::gateway {

using nlohmann::json;

void Gateway::scan_decisions(uint64_t head) {
  uint64_t from = 0;
  {
    std::lock_guard lock(decisions_mutex_);
    if (waiting_.empty() || head <= scanned_) {
      // Nobody waits: a waiter that comes later reads its stream first.
      scanned_ = std::max(scanned_, head);
      return;
    }
    from = scanned_ + 1;
  }
  std::vector<Event> decided;
  uint64_t through = from - 1;
  while (through < head) {  // bounded: each page moves `through` past its records
    auto range = deps_.reads->read_range(ReadRangeRequest{through + 1, head, 0});
    if (!range || range->records.empty()) break;
    // A page holds consecutive sequences from through + 1: a record that
    // does not decode is passed over (its waiter reads its stream itself
    // every 200 ms; the projections report the damage).
    const uint64_t first = through + 1;
    for (size_t i = 0; i < range->records.size(); ++i) {
      through = first + i;
      auto view = parse_record(range->records[i]);
      if (!view) continue;
      auto peek = peek_event_header(view->event_bytes, bus::frame_limits());
      if (!peek || peek->type != EventType::kCommandDecided) continue;
      auto e = decode_event(view->event_bytes, bus::frame_limits());
      if (e && e->stream_id.starts_with("command/")) decided.push_back(std::move(*e));
    }
  }
  std::lock_guard lock(decisions_mutex_);
  scanned_ = std::max(scanned_, through);
  bool woke = false;
  for (auto& e : decided) {
    if (auto it = waiting_.find(e.stream_id.substr(8)); it != waiting_.end()) {
      it->second.decision = std::move(e);
      woke = true;
    }
  }
  if (woke) decisions_cv_.notify_all();
}

Gateway::DecisionWaiter::DecisionWaiter(Gateway& g, std::string command_id) : gateway(g), id(std::move(command_id)) {
  std::lock_guard lock(gateway.decisions_mutex_);
  ++gateway.waiting_[id].waiters;  // a request sent again while the first waits shares the entry
}

Gateway::DecisionWaiter::~DecisionWaiter() {
  std::lock_guard lock(gateway.decisions_mutex_);
  auto it = gateway.waiting_.find(id);
  if (it != gateway.waiting_.end() && --it->second.waiters == 0) gateway.waiting_.erase(it);
}

Gateway::Answer Gateway::wait_decision(const std::string& id, uint64_t requested_sequence) {
  const std::string stream = "command/" + id;
  const int64_t deadline = deps_.clock->monotonic_ns() + options_.decision_timeout.count() * 1'000'000;
  constexpr int64_t kReadEveryNs = 200'000'000;
  // A request appended by this call has no decision yet: the follower's scan
  // brings it. One sent before may have it already: its stream is read now.
  int64_t next_read = requested_sequence == 0 ? 0 : deps_.clock->monotonic_ns() + kReadEveryNs;
  std::optional<Event> decided_event;
  while (true) {  // bounded by the deadline
    {
      std::lock_guard lock(decisions_mutex_);
      if (auto it = waiting_.find(id); it != waiting_.end() && it->second.decision) decided_event = it->second.decision;
    }
    if (!decided_event && deps_.clock->monotonic_ns() >= next_read) {
      auto events = kernel::read_stream_events(*deps_.reads, stream, 1, 2);
      if (!events) return std::unexpected(Fail{"unavailable", events.error().message});
      if (!events->empty()) requested_sequence = events->front().sequence;
      if (events->size() >= 2) decided_event = std::move(events->at(1));
      next_read = deps_.clock->monotonic_ns() + kReadEveryNs;
    }
    if (decided_event && requested_sequence == 0) {
      // Handed over before this call read the stream: the request's own
      // sequence bounds the events the answer lists.
      auto events = kernel::read_stream_events(*deps_.reads, stream, 1, 1);
      if (!events) return std::unexpected(Fail{"unavailable", events.error().message});
      if (!events->empty()) requested_sequence = events->front().sequence;
    }
    if (decided_event) {
      const auto* decided = std::get_if<CommandDecided>(&decided_event->payload);
      if (decided == nullptr) return std::unexpected(Fail{"internal", "the command's stream holds no decision"});
      // Read-your-writes: the answer is given once the read models hold it.
      if (deps_.inventory != nullptr) (void)deps_.inventory->wait_applied(decided_event->sequence, options_.decision_timeout);
      if (deps_.executor != nullptr) (void)deps_.executor->wait_applied(decided_event->sequence, options_.decision_timeout);
      {
        std::unique_lock lock(state_mutex_);
        if (runner_.sequence() < decided_event->sequence) (void)runner_.catch_up();
      }
      if (!decided->accepted) return std::unexpected(Fail{decided->code, decided->message});
      // The decision's events come just before it, in its batch (every
      // decider writes a command's events and then its decision, together);
      // other writers' events may lie between them and the request, so
      // they are read backwards from the decision, a window at a time,
      // while they carry this command's id: not the whole range between.
      std::vector<json> found;
      uint64_t window_size = 4;  // most decisions write one to three events; doubled while all are this command's
      for (uint64_t hi = decided_event->sequence - 1; hi > requested_sequence;) {  // bounded: each window moves down
        const uint64_t lo = std::max(requested_sequence + 1, hi >= window_size ? hi - window_size + 1 : 1);
        std::vector<Event> window;  // [lo, hi], in as many pages as the store gives
        for (uint64_t from = lo; from <= hi;) {  // bounded: each page advances
          auto range = deps_.reads->read_range(ReadRangeRequest{from, hi, 0});
          if (!range || range->records.empty()) break;
          auto page = kernel::decode_records(range->records);
          if (!page) break;
          from += range->records.size();
          window.insert(window.end(), std::make_move_iterator(page->begin()), std::make_move_iterator(page->end()));
        }
        if (window.empty() || window.front().sequence != lo || window.back().sequence != hi) break;
        bool others = false;
        for (auto e = window.rbegin(); e != window.rend(); ++e) {
          if (e->correlation_id != id) {
            others = true;
            break;
          }
          found.push_back({{"sequence", e->sequence}, {"type", event_type_label(e->type())}, {"stream", e->stream_id}});
        }
        if (others) break;
        hi = lo - 1;
        window_size = std::min<uint64_t>(window_size * 2, 1024);
      }
      json written = json::array();
      for (auto e = found.rbegin(); e != found.rend(); ++e) written.push_back(std::move(*e));
      json result = {{"command", id}, {"accepted", true}, {"decidedBy", decided->decided_by}, {"events", written}};
      // The executor's commands start a task of the same id (docs/executor.md).
      if (decided->decided_by == "service:executor" && std::any_of(written.begin(), written.end(), [&](const json& e) {
            return e["stream"] == "task/" + id;
          })) {
        result["task"] = id;
      }
      if (!decided->message.empty()) result["warning"] = decided->message;
      return result;
    }
    int64_t left = deadline - deps_.clock->monotonic_ns();
    if (left <= 0) {
      return std::unexpected(Fail{"timeout", fmt::format("command {} is recorded but no decision came within {} s; is "
                                                         "the inventory service running? `wpm events watch` shows "
                                                         "the decision when it comes",
                                                         id, options_.decision_timeout.count() / 1000)});
    }
    // Woken when the follower reads this command's decision; at the latest
    // after 200 ms, to read the stream again (a follower that is stopping).
    std::unique_lock lock(decisions_mutex_);
    const int64_t until_read = std::max<int64_t>(next_read - deps_.clock->monotonic_ns(), 0);
    decisions_cv_.wait_for(lock, std::chrono::nanoseconds(std::min(left, until_read) + 1'000'000), [&] {
      auto it = waiting_.find(id);
      return it != waiting_.end() && it->second.decision.has_value();
    });
  }
}

}  // namespace wpm::gateway
