#pragma once
// Refused registrations, aggregated and rate-limited (DESIGN.md §8): the
// first refusal from an address is recorded at once; later ones within the
// window are counted and recorded as one event when the window closes, so a
// password-guessing client adds at most one event per window to the log. An
// address with too many refusals in its window is answered "rate limited"
// without its password even being checked. Pure: the caller passes the time.
//
// Thread safety: none; one thread owns it.

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "schemas/events.h"

namespace wpm::inventory {

struct RejectionOptions {
  // Aggregation window per address. Default: 60 s.
  int64_t window_ns = 60'000'000'000;
  // Refusals in a window after which the address is rate-limited. Default: 10.
  uint32_t block_after = 10;
  // Addresses tracked at once; beyond it refusals aggregate under "*".
  // Default: 10000.
  size_t addresses_max = 10'000;
};

// At most `per_window` log lines per window, counting the ones held back, so
// that a flood of refusals cannot flood the log. Thread-safe.
class LogLimiter {
 public:
  explicit LogLimiter(uint32_t per_window = 20, int64_t window_ns = 60'000'000'000)
      : per_window_(per_window), window_ns_(window_ns) {}
  bool allow(int64_t now_ns);
  uint64_t take_suppressed();

 private:
  std::mutex mutex_;
  uint32_t per_window_;
  int64_t window_ns_;
  int64_t window_start_ns_ = 0;
  uint32_t in_window_ = 0;
  uint64_t suppressed_ = 0;
};

class RejectionLimiter {
 public:
  explicit RejectionLimiter(RejectionOptions options = {}) : options_(options) {}

  // Counts one refusal; returns the event to record now, if any.
  std::optional<RegistrationRejected> refuse(const std::string& address, const std::string& reason,
                                             const std::string& hostname, const std::string& public_key,
                                             int64_t now_ns);
  // Aggregates whose window has closed with refusals not yet recorded.
  std::vector<RegistrationRejected> due(int64_t now_ns);
  // Whether `address` has used up its refusals in the current window.
  bool blocked(const std::string& address, int64_t now_ns) const;
  size_t tracked() const { return entries_.size(); }

 private:
  struct Entry {
    int64_t window_start_ns = 0;
    uint32_t in_window = 0;  // refusals in the current window
    RegistrationRejected pending;  // not yet recorded (attempts > 0)
  };
  RejectionOptions options_;
  std::map<std::string, Entry> entries_;
};

}  // namespace wpm::inventory
