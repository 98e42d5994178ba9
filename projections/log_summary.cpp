#include "projections/log_summary.h"

namespace wpm::projections {

LogSummary initial() { return LogSummary{}; }

LogSummary evolve(LogSummary s, const Event& e) {
  if (e.sequence <= s.last_sequence) return s;  // already applied
  s.last_sequence = e.sequence;
  s.streams[e.stream_id] = StreamRow{e.stream_version, e.sequence};
  // Slot 0 counts events of types this binary does not know (skipped otherwise).
  ++s.per_type[known_event_type(e.type()) ? static_cast<size_t>(e.type()) : 0];
  if (const auto* reg = std::get_if<SystemRegistered>(&e.payload)) {
    s.systems[reg->system_id] = SystemRow{reg->hostname, reg->address, reg->public_key, e.sequence};
  } else if (const auto* rem = std::get_if<SystemRemoved>(&e.payload)) {
    s.systems.erase(rem->system_id);
  }
  return s;
}

}  // namespace wpm::projections
