#pragma once
// The aggregate repository (STYLE.md §1): load → decide → append with the
// exact expected version → on a version conflict, load and decide again (a
// bounded number of times) → a clear error.
//
// Idempotence. The append's idempotency key is derived from the command's id
// ("cmd/<id>"), and every event it writes carries that key in its envelope.
// So a command that was already decided is recognised twice over: while
// folding the stream (its events are there), and by the store, which answers
// a re-sent key with the sequences it first wrote. Either way the repository
// returns the recorded outcome, the events of the first decision, and
// writes nothing: a retried command, or a service re-deciding after a
// restart, gets the first answer.
//
// Thread safety: one thread per Repository (it uses its EventLog's).

#include <fmt/format.h>

#include <optional>
#include <string>
#include <vector>

#include "schemas/assert.h"
#include "services/kernel/decision.h"
#include "services/kernel/event_log.h"

namespace wpm::kernel {

struct RepositoryOptions {
  // Decisions tried when other writers keep changing the stream. Default: 5.
  int attempts = 5;
  // Longest stream loaded by folding; past it an aggregate needs a snapshot.
  // Default: 1,000,000 events.
  uint64_t stream_events_max = 1'000'000;
};

// What a command came to: the events written (or written the first time
// the command was decided: `replayed`), or a rejection.
struct Outcome {
  std::vector<Event> events;
  std::optional<Rejection> rejection;
  bool replayed = false;
  uint64_t version = 0;  // the stream's version after the events
  bool accepted() const { return !rejection.has_value(); }
};

inline std::string idempotency_key_of(const CommandId& id) { return "cmd/" + id.value(); }

template <Aggregate A>
class Repository {
 public:
  explicit Repository(EventLog& log, RepositoryOptions options = {}) : log_(log), options_(options) {}

  struct Loaded {
    typename A::State state = A::initial();
    uint64_t version = 0;
    std::vector<Event> recorded;  // events of the command being handled, if it was decided before
  };

  // Folds `stream_id`; collects the events written under `key` on the way.
  Result<Loaded> load(const std::string& stream_id, const std::string& key = "") {
    auto events = read_stream_events(log_, stream_id, 1, options_.stream_events_max);
    if (!events) return std::unexpected(events.error());
    Loaded loaded;
    for (const auto& e : *events) {
      loaded.state = A::evolve(std::move(loaded.state), e);
      loaded.version = e.stream_version;
      if (!key.empty() && e.idempotency_key == key) loaded.recorded.push_back(e);
    }
    return loaded;
  }

  Result<Outcome> handle(const std::string& stream_id, const typename A::Command& command,
                         const Context& context) {
    WPM_ASSERT(!context.command_id.empty(), "a command needs an id (stream {})", stream_id);
    const std::string key = idempotency_key_of(context.command_id);
    for (int attempt = 1; attempt <= options_.attempts; ++attempt) {
      auto loaded = load(stream_id, key);
      if (!loaded) return std::unexpected(loaded.error());
      if (!loaded->recorded.empty()) {
        return Outcome{std::move(loaded->recorded), std::nullopt, true, loaded->version};
      }
      Decision decision = A::decide(loaded->state, command, context);
      if (!decision) return Outcome{{}, decision.error(), false, loaded->version};
      if (decision->empty()) return Outcome{{}, std::nullopt, false, loaded->version};
      AppendRequest append;
      append.idempotency_key = key;
      append.expectations.push_back(
          StreamExpectation{stream_id, loaded->version == 0 ? ExpectKind::kNoStream : ExpectKind::kExact,
                            loaded->version});
      for (auto& payload : *decision) {
        append.events.push_back(EventDraft{stream_id, context.correlation_id, context.command_id.value(),
                                           context.actor, std::move(payload)});
      }
      auto result = log_.append(append);
      if (!result) {
        if (result.error().code == ErrorCode::kWrongExpectedVersion) continue;  // reload, decide again
        return std::unexpected(result.error());
      }
      auto written = read_sequences(log_, result->first_sequence, result->count);
      if (!written) return std::unexpected(written.error());
      uint64_t version = written->empty() ? loaded->version : written->back().stream_version;
      return Outcome{std::move(*written), std::nullopt, result->duplicate, version};
    }
    return fail(ErrorCode::kUnavailable,
                fmt::format("stream '{}' kept changing under command {}: {} decisions were overtaken by "
                            "other writers; retry the command",
                            stream_id, context.command_id.value(), options_.attempts));
  }

 private:
  EventLog& log_;
  RepositoryOptions options_;
};

}  // namespace wpm::kernel
