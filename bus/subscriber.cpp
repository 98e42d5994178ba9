#include "bus/subscriber.h"

#include <fmt/format.h>

#include "bus/frame.h"
#include "schemas/assert.h"
#include "schemas/codec.h"
#include "schemas/record.h"

namespace wpm::bus {

LiveAction decide_live(uint64_t next, uint64_t publication_sequence) {
  if (publication_sequence < next) return LiveAction::kSkip;
  if (publication_sequence == next) return LiveAction::kDeliver;
  return LiveAction::kFetch;
}

CatchUpSubscriber::CatchUpSubscriber(zmq::context_t& context, SubscriberOptions options,
                                     Handler handler)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      client_(context, options_.store_endpoint, options_.client),
      sub_(context, zmq::socket_type::sub),
      next_(std::max<uint64_t>(options_.from, 1)) {
  apply_defaults(sub_);
  sub_.set(zmq::sockopt::rcvhwm, options_.receive_hwm);
  apply_credentials(sub_, options_.client.credentials);
  sub_.set(zmq::sockopt::subscribe, std::string(kEventTopicPrefix));
}

Result<void> CatchUpSubscriber::connect() {
  if (connected_) return {};
  std::string endpoint = options_.publish_endpoint;
  if (endpoint.empty()) {
    auto stats = client_.stats();
    if (!stats) return std::unexpected(stats.error());
    endpoint = stats->publish_endpoint;
  }
  // Subscribe before the first read, so nothing published meanwhile is missed
  // for good: anything dropped in between is read back as a gap.
  try {
    sub_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("cannot subscribe to '{}': {}", endpoint, e.what()));
  }
  connected_ = true;
  return {};
}

Result<void> CatchUpSubscriber::deliver_record(std::string_view record) {
  auto view = parse_record(record);
  if (!view) {
    return fail(ErrorCode::kCorruption,
                fmt::format("sequence {}: {}", next_, view.error().message));
  }
  auto event = decode_event(view->event_bytes, frame_limits());
  if (!event) {
    return fail(ErrorCode::kCorruption,
                fmt::format("sequence {}: {}", next_, event.error().message));
  }
  if (event->sequence != next_) {
    return fail(ErrorCode::kCorruption,
                fmt::format("expected sequence {}, the store sent {}", next_, event->sequence));
  }
  handler_(*event);
  ++next_;
  ++stats_.delivered;
  return {};
}

Result<void> CatchUpSubscriber::catch_up(const std::function<bool()>& should_stop) {
  // Bounded: each page advances next_ or ends the loop; the log is finite.
  while (!should_stop()) {
    auto page = client_.read_range(ReadRangeRequest{next_, 0, kCatchUpPageEvents});
    if (!page) return std::unexpected(page.error());
    for (const auto& record : page->records) {
      if (auto r = deliver_record(record); !r) return r;
      ++stats_.fetched_events;
      if (should_stop()) return {};
    }
    if (page->end || page->records.empty()) return {};
  }
  return {};
}

void CatchUpSubscriber::malformed(const std::string& why) {
  ++stats_.malformed;
  // Rate limit: the first, then every 1000th.
  if (options_.log && stats_.malformed % 1000 == 1) {
    options_.log->warn("malformed_publication endpoint={} count={} reason=\"{}\"",
                       options_.publish_endpoint, stats_.malformed, why);
  }
}

Result<void> CatchUpSubscriber::run(const std::function<bool()>& should_stop) {
  if (auto r = connect(); !r) return r;
  if (auto r = catch_up(should_stop); !r) return r;
  while (!should_stop()) {
    zmq::pollitem_t items[] = {{sub_.handle(), 0, ZMQ_POLLIN, 0}};
    bus::poll(items, 1, std::chrono::milliseconds(options_.idle_check_ms));
    if (!(items[0].revents & ZMQ_POLLIN)) {
      // Quiet: the last publications may have been dropped. Ask the store.
      if (auto r = catch_up(should_stop); !r) return r;
      continue;
    }
    auto msg = recv_message(sub_, 2, zmq::recv_flags::dontwait);
    if (!msg) continue;
    if (!*msg || (*msg)->size() != 2) {
      malformed(*msg ? fmt::format("{} frames, expected 2", (*msg)->size()) : msg->error().message);
      continue;
    }
    auto publication = decode_publication(view((**msg)[1]), frame_limits());
    if (!publication) {
      malformed(publication.error().message);
      continue;
    }
    switch (decide_live(next_, publication->sequence)) {
      case LiveAction::kSkip:
        ++stats_.duplicates_skipped;
        break;
      case LiveAction::kDeliver:
        if (auto r = deliver_record(publication->record); !r) return r;
        break;
      case LiveAction::kFetch:
        ++stats_.gaps_fetched;
        // Reads up to the head, which includes this publication.
        if (auto r = catch_up(should_stop); !r) return r;
        break;
    }
  }
  return {};
}

}  // namespace wpm::bus
