#include "services/inventory/rejections.h"

#include <utility>

namespace wpm::inventory {
namespace {
const std::string kOverflowAddress = "*";
}  // namespace

std::optional<RegistrationRejected> RejectionLimiter::refuse(const std::string& address_in,
                                                             const std::string& reason,
                                                             const std::string& hostname,
                                                             const std::string& public_key, int64_t now_ns) {
  const bool overflow = !entries_.contains(address_in) && entries_.size() >= options_.addresses_max;
  const std::string& address = overflow ? kOverflowAddress : address_in;
  auto [it, fresh] = entries_.try_emplace(address);
  Entry& e = it->second;
  if (fresh || now_ns - e.window_start_ns >= options_.window_ns) {
    // A new window: whatever was pending is flushed by due(); record this one now.
    std::optional<RegistrationRejected> older;
    if (!fresh && e.pending.attempts > 0) older = e.pending;
    e = Entry{now_ns, 1, {}};
    RegistrationRejected now{address, reason, 1, now_ns, now_ns, hostname, public_key};
    if (older) {
      // Fold the unrecorded older refusals into this record.
      now.attempts += older->attempts;
      now.first_ns = older->first_ns;
    }
    return now;
  }
  ++e.in_window;
  RegistrationRejected& p = e.pending;
  if (p.attempts == 0) p = RegistrationRejected{address, reason, 0, now_ns, now_ns, hostname, public_key};
  ++p.attempts;
  p.last_ns = now_ns;
  p.reason = reason;
  p.hostname = hostname;
  p.public_key = public_key;
  return std::nullopt;
}

std::vector<RegistrationRejected> RejectionLimiter::due(int64_t now_ns) {
  std::vector<RegistrationRejected> out;
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    if (now_ns - e.window_start_ns < options_.window_ns) {
      ++it;
      continue;
    }
    if (e.pending.attempts > 0) {
      out.push_back(e.pending);
      // A persistent guesser keeps its window going: one record per window.
      e = Entry{now_ns, 0, {}};
      ++it;
    } else {
      it = entries_.erase(it);
    }
  }
  return out;
}

bool LogLimiter::allow(int64_t now_ns) {
  std::lock_guard lock(mutex_);
  if (now_ns - window_start_ns_ >= window_ns_) {
    window_start_ns_ = now_ns;
    in_window_ = 0;
  }
  if (in_window_ < per_window_) {
    ++in_window_;
    return true;
  }
  ++suppressed_;
  return false;
}

uint64_t LogLimiter::take_suppressed() {
  std::lock_guard lock(mutex_);
  return std::exchange(suppressed_, 0);
}

bool RejectionLimiter::blocked(const std::string& address, int64_t now_ns) const {
  auto it = entries_.find(address);
  if (it == entries_.end() && entries_.size() >= options_.addresses_max) it = entries_.find(kOverflowAddress);
  if (it == entries_.end()) return false;
  return now_ns - it->second.window_start_ns < options_.window_ns && it->second.in_window >= options_.block_after;
}

}  // namespace wpm::inventory
