#pragma once
// The projection runner (DESIGN.md §2): a read model folded from the log with
// the same kind of evolve() as the aggregates, a checkpoint (the last
// sequence applied), and snapshots in the store's own column family, tagged
// with the sequence they reflect. At start it loads the latest snapshot and
// folds the tail; then it follows the log by reading what the commit signal
// says is new: no publication per event, so a follower never slows appends.
//
// A projection reads the whole log (by range) or one stream (by version):
//
//   struct Model {
//     using State = …;
//     static constexpr std::string_view kName = "…";     // snapshot name
//     static constexpr std::string_view kStream = "";    // "" = the whole log
//     static constexpr UnknownEvents kUnknown = …;        // see below
//     static State initial();
//     static State evolve(State, const Event&);
//     static std::string encode(const State&);           // snapshot form
//     static Result<State> decode(std::string_view);
//   };
//
// Events of a type this binary does not know (a newer writer's): a model that
// can fold without them skips them and counts them (kSkip); a model that must
// see every event of its stream (kStop) stops, naming the type and sequence.
//
// A model may also say which known types it folds (`static bool wants(EventType)`):
// the runner then reads only the envelope of the others and passes over them
// without decoding, so a follower of the whole log costs little per event it
// does not care about (synthetic load, other services' streams). A whole-log
// model skips without reading at all the ranges that the store in this
// process says hold none of its types (Store::skippable_through).
//
// Thread safety: one thread runs a ProjectionRunner; its state is read on
// that thread (or under the owner's lock).

#include <fmt/format.h>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <future>
#include <string>
#include <string_view>

#include "bus/frame.h"
#include "eventstore/store.h"
#include "schemas/codec.h"
#include "schemas/record.h"
#include "services/kernel/event_log.h"

namespace wpm::kernel {

enum class UnknownEvents { kSkip, kStop };

template <typename P>
concept ProjectionModel = requires(const typename P::State& state, const Event& event, std::string_view bytes) {
  { P::kName } -> std::convertible_to<std::string_view>;
  { P::kStream } -> std::convertible_to<std::string_view>;
  { P::kUnknown } -> std::convertible_to<UnknownEvents>;
  { P::initial() } -> std::same_as<typename P::State>;
  { P::evolve(state, event) } -> std::same_as<typename P::State>;
  { P::encode(state) } -> std::same_as<std::string>;
  { P::decode(bytes) } -> std::same_as<Result<typename P::State>>;
};

// Where snapshots live, and how a follower learns of new commits.
class SnapshotStore {
 public:
  virtual ~SnapshotStore() = default;
  virtual Result<void> put(std::string_view name, uint64_t sequence, std::string_view state) = 0;
  virtual Result<std::optional<eventstore::Store::Snapshot>> get(std::string_view name) = 0;
};
class CommitSignal {
 public:
  virtual ~CommitSignal() = default;
  // Waits until something beyond `sequence` is readable, or `timeout`;
  // returns the readable head.
  virtual uint64_t wait_beyond(uint64_t sequence, std::chrono::milliseconds timeout) = 0;
  // Waits `duration` whatever is committed meanwhile (a back-off after an
  // error, or the rest of a fold interval), on the signal's own waiting.
  void pause(std::chrono::milliseconds duration) { (void)wait_beyond(UINT64_MAX, duration); }
};

// Inside wpmd: reads, snapshots and the commit signal straight from the
// Store, on the caller's thread (never the sequencer's). Appends are not
// served here: they go through the store server.
class EmbeddedStore final : public EventLog, public SnapshotStore, public CommitSignal {
 public:
  explicit EmbeddedStore(eventstore::Store& store) : store_(store) {}
  Result<AppendResult> append(const AppendRequest&) override {
    return fail(ErrorCode::kInvalidRequest, "append through the store server, not the embedded reader");
  }
  Result<ReadReply> read_stream(const ReadStreamRequest& r) override { return store_.read_stream(r); }
  Result<ReadReply> read_range(const ReadRangeRequest& r) override { return store_.read_range(r); }
  uint64_t skippable_through(uint64_t after, eventstore::TypeMask wanted) override {
    return store_.skippable_through(after, wanted);
  }
  Result<void> put(std::string_view name, uint64_t sequence, std::string_view state) override {
    return store_.put_snapshot(name, sequence, state);
  }
  Result<std::optional<eventstore::Store::Snapshot>> get(std::string_view name) override {
    return store_.get_snapshot(name);
  }
  uint64_t wait_beyond(uint64_t sequence, std::chrono::milliseconds timeout) override {
    return store_.wait_beyond(sequence, timeout);
  }

 private:
  eventstore::Store& store_;
};

// A service in its own process: asks the remote store for its head (a
// stats request, served off the store's sequencer) every `interval` until it
// passes `sequence`. Polling, not a subscription: a subscriber would make the
// store build a publication for every event for the sake of a few.
class PollingSignal final : public CommitSignal {
 public:
  PollingSignal(bus::StoreClient& client, std::chrono::milliseconds interval) : client_(client), interval_(interval) {}
  uint64_t wait_beyond(uint64_t sequence, std::chrono::milliseconds timeout) override;

 private:
  bus::StoreClient& client_;
  std::chrono::milliseconds interval_;
  uint64_t head_ = 0;
};

struct ProjectionStats {
  uint64_t applied_events = 0;   // folded since start (snapshot excluded)
  uint64_t skipped_unknown = 0;  // events of unknown types skipped
  bool from_snapshot = false;
  uint64_t snapshot_sequence = 0;
};

template <ProjectionModel P>
class ProjectionRunner {
 public:
  // `snapshots` may be null (no snapshots).
  ProjectionRunner(EventLog& log, SnapshotStore* snapshots) : log_(log), snapshots_(snapshots) {}

  // Loads the latest snapshot (if any and readable), then folds the tail.
  Result<void> start() {
    if (snapshots_ != nullptr) {
      auto snap = snapshots_->get(P::kName);
      if (!snap) return std::unexpected(snap.error());
      if (*snap) {
        if (auto r = restore((*snap)->state, (*snap)->sequence); !r) return r;
      }
    }
    auto folded = catch_up();
    if (!folded) return std::unexpected(folded.error());
    return {};
  }

  // Folds whatever is readable beyond the checkpoint; returns how many events.
  // While a page is folded, the next one is read on another thread (when the
  // page says more follow): reading (RocksDB, decompression, the transfer)
  // and folding share the work on two cores.
  Result<uint64_t> catch_up() {
    if (!stopped_.empty()) return fail(ErrorCode::kCorruption, stopped_);
    uint64_t applied = 0;
    auto read_page = [this](uint64_t sequence, uint64_t version) {
      return P::kStream.empty() ? log_.read_range(ReadRangeRequest{sequence + 1, 0, 0})
                                : log_.read_stream(ReadStreamRequest{std::string(P::kStream), version + 1, 0});
    };
    if constexpr (P::kStream.empty() && requires(EventType t) { P::wants(t); }) {
      uint64_t through = log_.skippable_through(sequence_, wanted_types());
      applied += through - sequence_;
      sequence_ = through;
    }
    Result<ReadReply> reply = read_page(sequence_, version_);
    std::future<Result<ReadReply>> ahead;
    // Waits for a page read ahead, so that no read outlives this call.
    struct Join {
      std::future<Result<ReadReply>>& f;
      ~Join() {
        if (f.valid()) f.wait();
      }
    } join{ahead};
    for (int page = 0; page < kPagesPerCatchUpMax; ++page) {
      if (!reply) return std::unexpected(reply.error());
      const bool more = !reply->end && !reply->records.empty();
      if (more) {
        // Pages hold consecutive sequences (and, by stream, versions).
        uint64_t n = reply->records.size();
        ahead = std::async(std::launch::async, read_page, sequence_ + n, version_ + n);
      }
      if constexpr (requires(EventType t) { P::wants(t); }) {
        for (const auto& record : reply->records) {
          auto view = parse_record(record);
          if (!view) return std::unexpected(view.error());
          auto header = peek_event_header(view->event_bytes, bus::frame_limits());
          if (!header) return fail(ErrorCode::kCorruption, "a stored event does not decode: " + header.error().message);
          if (known_event_type(header->type) && !P::wants(header->type)) {
            sequence_ = header->sequence;  // passed over: nothing of it to fold
            version_ = header->stream_version;
            ++applied;
            continue;
          }
          auto event = decode_event(view->event_bytes, bus::frame_limits());
          if (!event) return fail(ErrorCode::kCorruption, "a stored event does not decode: " + event.error().message);
          if (auto r = apply(std::move(*event)); !r) return std::unexpected(r.error());
          ++applied;
        }
      } else {
        auto events = decode_records(reply->records);
        if (!events) return std::unexpected(events.error());
        for (auto& e : *events) {
          if (auto r = apply(std::move(e)); !r) return std::unexpected(r.error());
          ++applied;
        }
      }
      if (!more) break;
      reply = ahead.get();
    }
    stats_.applied_events += applied;
    return applied;
  }

  // Writes a snapshot of the state at the checkpoint.
  Result<void> snapshot() {
    if (snapshots_ == nullptr) return fail(ErrorCode::kInvalidRequest, "this runner keeps no snapshots");
    std::string bytes = u64_bytes(version_) + P::encode(state_);
    return snapshots_->put(P::kName, sequence_, bytes);
  }

  const typename P::State& state() const { return state_; }
  uint64_t sequence() const { return sequence_; }  // the checkpoint: last sequence applied
  uint64_t version() const { return version_; }    // one-stream models: last version applied
  const ProjectionStats& stats() const { return stats_; }

 private:
  static constexpr int kPagesPerCatchUpMax = 1'000'000;  // 4 billion events per call

  // The types the model folds, and every unknown type (skipped or stopped at
  // only once read).
  static eventstore::TypeMask wanted_types() {
    static const eventstore::TypeMask mask = [] {
      eventstore::TypeMask m = eventstore::type_bit(static_cast<EventType>(0));
      for (uint16_t t = 1; t <= kEventTypeMax; ++t) {
        if (P::wants(static_cast<EventType>(t))) m |= eventstore::type_bit(static_cast<EventType>(t));
      }
      return m;
    }();
    return mask;
  }

  static std::string u64_bytes(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

  Result<void> restore(std::string_view bytes, uint64_t sequence) {
    if (bytes.size() < 8) return fail(ErrorCode::kCorruption, fmt::format("snapshot '{}' is truncated", P::kName));
    uint64_t version = 0;
    std::memcpy(&version, bytes.data(), 8);
    auto state = P::decode(bytes.substr(8));
    if (!state) {
      // A snapshot this binary cannot read is derived data: fold from the start.
      return {};
    }
    state_ = std::move(*state);
    sequence_ = sequence;
    version_ = version;
    stats_.from_snapshot = true;
    stats_.snapshot_sequence = sequence;
    return {};
  }

  // Folds one event this runner decoded (a model with fold_into takes its values).
  Result<void> apply(Event&& e) {
    if (!known_event_type(e.type())) {
      if (P::kUnknown == UnknownEvents::kStop) {
        stopped_ = fmt::format("projection {} cannot fold event {} (type {}, stream '{}'): it was written by a "
                               "newer wpm; upgrade this one",
                               P::kName, e.sequence, event_type_label(e.type()), e.stream_id);
        return fail(ErrorCode::kCorruption, stopped_);
      }
      ++stats_.skipped_unknown;
    } else if constexpr (requires(typename P::State& s, Event&& event) { P::fold_into(s, std::move(event)); }) {
      sequence_ = e.sequence;
      version_ = e.stream_version;
      P::fold_into(state_, std::move(e));  // in place: the same as evolve, without moving the state
      return {};
    } else {
      state_ = P::evolve(std::move(state_), e);
    }
    sequence_ = e.sequence;
    version_ = e.stream_version;
    return {};
  }

  EventLog& log_;
  SnapshotStore* snapshots_;
  typename P::State state_ = P::initial();
  uint64_t sequence_ = 0;
  uint64_t version_ = 0;
  ProjectionStats stats_;
  std::string stopped_;
};

}  // namespace wpm::kernel
