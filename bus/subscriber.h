#pragma once
// The catch-up subscriber (DESIGN.md §2): subscribes to the store's
// publications, reads whatever it missed from the store's read endpoint (a gap
// in the sequence, a start behind the head, or publications dropped at the
// tail), and delivers every event exactly once, in sequence order, to its
// handler. Publications are lossy (a slow subscriber's high-water mark drops
// them); reads are not, so delivery is complete.
//
// Thread safety: one thread runs a subscriber; the handler runs on it.

#include <spdlog/logger.h>

#include <cstdint>
#include <memory>
#include <functional>
#include <string>
#include <zmq.hpp>

#include "bus/client.h"
#include "bus/constants.h"
#include "schemas/error.h"
#include "schemas/events.h"

namespace wpm::bus {

// Pure decision for a live publication, given the next sequence to deliver.
enum class LiveAction {
  kSkip,     // already delivered (seq < next)
  kDeliver,  // the one expected (seq == next)
  kFetch,    // a gap: read [next, seq) from the store first (seq > next)
};
LiveAction decide_live(uint64_t next, uint64_t publication_sequence);

struct SubscriberOptions {
  std::string store_endpoint;    // the store's request endpoint (9515)
  // The store's publication endpoint (9516); empty: ask the store (stats).
  std::string publish_endpoint;
  // First sequence to deliver. Default: 1 (the whole log).
  uint64_t from = 1;
  // Receive high-water mark of the SUB socket, in messages. Default: 10000.
  int receive_hwm = 10'000;
  // How long without a publication before asking the store. Default: 500 ms.
  int idle_check_ms = kIdleCheckMsDefault;
  ClientOptions client;
  // Where malformed publications are reported (rate-limited); may be null.
  std::shared_ptr<spdlog::logger> log;
};

struct SubscriberStats {
  uint64_t delivered = 0;
  uint64_t duplicates_skipped = 0;
  uint64_t gaps_fetched = 0;   // catch-up reads triggered by a gap
  uint64_t fetched_events = 0; // events delivered from reads, not publications
  uint64_t malformed = 0;      // publications dropped as malformed
};

class CatchUpSubscriber {
 public:
  using Handler = std::function<void(const Event&)>;

  CatchUpSubscriber(zmq::context_t& context, SubscriberOptions options, Handler handler);

  // Delivers until `should_stop()` is true (checked after every delivery and
  // at least every idle_check_ms) or an error (store unreachable, a record
  // that fails its checksum). Resumable: run() again continues from next().
  Result<void> run(const std::function<bool()>& should_stop);

  uint64_t next() const { return next_; }
  const SubscriberStats& stats() const { return stats_; }

 private:
  Result<void> connect();
  Result<void> catch_up(const std::function<bool()>& should_stop);
  Result<void> deliver_record(std::string_view record);
  void malformed(const std::string& why);

  SubscriberOptions options_;
  Handler handler_;
  StoreClient client_;
  zmq::socket_t sub_;
  uint64_t next_;
  bool connected_ = false;
  SubscriberStats stats_;
};

}  // namespace wpm::bus
