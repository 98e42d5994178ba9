#pragma once
// The event log as services see it: append, read a stream, read a range.
// Two implementations: ClientLog, through a bus::StoreClient to a store
// (in wpmd over inproc, or a remote store over CURVE), and LocalLog, directly
// on an eventstore::Store in this thread (offline tools, tests and the
// deterministic simulation: the same store code, no sockets).
//
// Thread safety: one thread at a time per EventLog (a projection's runner
// hands it to a helper thread for one read ahead and waits for it before
// using it again).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bus/client.h"
#include "eventstore/access.h"
#include "eventstore/store.h"
#include "schemas/error.h"
#include "schemas/protocol.h"
#include "services/kernel/clock.h"

namespace wpm::kernel {

class EventLog {
 public:
  virtual ~EventLog() = default;
  virtual Result<AppendResult> append(const AppendRequest& request) = 0;
  virtual Result<ReadReply> read_stream(const ReadStreamRequest& request) = 0;
  virtual Result<ReadReply> read_range(const ReadRangeRequest& request) = 0;
  // The highest sequence S >= `after` with no event of a `wanted` type in
  // (after, S], when the log can tell without reading the records (a store in
  // this process keeps the types of its recent commits); else `after`.
  virtual uint64_t skippable_through(uint64_t after, eventstore::TypeMask /*wanted*/) { return after; }
};

class ClientLog final : public EventLog {
 public:
  explicit ClientLog(bus::StoreClient& client) : client_(client) {}
  Result<AppendResult> append(const AppendRequest& r) override { return client_.append(r); }
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return client_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override { return client_.read_range(r); }

 private:
  bus::StoreClient& client_;
};

// Commits each append at once as `identity`, stamped and checked by
// `access` as the store server does.
class LocalLog final : public EventLog {
 public:
  LocalLog(eventstore::Store& store, const Clock& clock, const eventstore::AppendAccess& access,
           std::string identity)
      : store_(store), clock_(clock), access_(access), identity_(std::move(identity)) {}
  Result<AppendResult> append(const AppendRequest& request) override;
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return store_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override { return store_.read_range(r); }
  uint64_t skippable_through(uint64_t after, eventstore::TypeMask wanted) override {
    return store_.skippable_through(after, wanted);
  }

 private:
  eventstore::Store& store_;
  const Clock& clock_;
  const eventstore::AppendAccess& access_;
  std::string identity_;
};

// A service inside wpmd: appends through the store server (inproc, as its
// own identity), reads straight from the Store on the caller's thread. An
// append returns once its events are readable by stream too, so the
// service reads its own writes.
class EmbeddedLog final : public EventLog {
 public:
  EmbeddedLog(bus::StoreClient& client, eventstore::Store& store) : client_(client), store_(store) {}
  Result<AppendResult> append(const AppendRequest& request) override;
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return store_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override { return store_.read_range(r); }
  uint64_t skippable_through(uint64_t after, eventstore::TypeMask wanted) override {
    return store_.skippable_through(after, wanted);
  }

 private:
  bus::StoreClient& client_;
  eventstore::Store& store_;
};

// Decodes stored records (checksum checked) into events.
Result<std::vector<Event>> decode_records(const std::vector<std::string>& records);

// Every event of `stream_id` from `from_version` on, in version order.
// Bounded: at most `max_events` (the caller's bound on a stream's length).
Result<std::vector<Event>> read_stream_events(EventLog& log, const std::string& stream_id,
                                              uint64_t from_version, uint64_t max_events);

// The events at sequences [first, first + count).
Result<std::vector<Event>> read_sequences(EventLog& log, uint64_t first, uint32_t count);

}  // namespace wpm::kernel
