#include "services/compatibility/service.h"

#include <fmt/format.h>

#include <algorithm>

namespace wpm::compatibility {
namespace {

CompatibilityAnalyzed to_event(const Analysis::AnalysedPair& pair) {
  CompatibilityAnalyzed e{pair.departure_properties, pair.arrival_properties, {}};
  e.results.reserve(pair.results.size());
  for (const auto& r : pair.results) {
    e.results.push_back(CompatResult{std::string(test_name(r.test)), r.passed, r.departure, r.arrival, r.remedy});
  }
  return e;
}

}  // namespace

CompatibilityService::CompatibilityService(kernel::EventLog& log, kernel::CommitSignal& signal,
                                           std::shared_ptr<spdlog::logger> log_to, ServiceOptions options)
    : log_(log), signal_(signal), logger_(std::move(log_to)), options_(options), registry_(log, nullptr) {}

Result<void> CompatibilityService::start() {
  if (auto r = registry_.start(); !r) return r;
  return follow_registry();
}

Result<void> CompatibilityService::follow_registry() {
  auto folded = registry_.catch_up();
  if (!folded) return std::unexpected(folded.error());
  // The profiles change only with the registry: 10,000 keys are not made
  // again on every commit of the log.
  if (*folded == 0 && registry_followed_) return {};
  registry_followed_ = true;
  const auto& systems = registry_.state().systems();
  std::lock_guard lock(mutex_);
  for (auto it = properties_of_.begin(); it != properties_of_.end();) {
    if (!systems.contains(it->first)) {
      analysis_.remove_system(it->first);
      it = properties_of_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [id, system] : systems) {
    std::string key = compared_properties_key(system.profile);
    auto [it, inserted] = properties_of_.try_emplace(id, key);
    if (!inserted && it->second == key) continue;
    it->second = key;
    analysis_.set_system(id, system.profile);
  }
  return {};
}

Result<void> CompatibilityService::record(const Analysis::AnalysedPair& pair) {
  std::string stream = fmt::format("compat/{}/{}", pair.departure_properties, pair.arrival_properties);
  AppendRequest append;
  append.idempotency_key = stream;
  append.expectations.push_back(StreamExpectation{stream, ExpectKind::kNoStream, 0});
  append.events.push_back(EventDraft{stream, stream, "", "", to_event(pair)});
  auto r = log_.append(append);
  std::lock_guard lock(mutex_);
  if (r) {
    ++(r->duplicate ? stats_.already_recorded : stats_.recorded);
    return {};
  }
  // The pair was analysed before (another run, or before a restart): its
  // result is a function of the two properties, so it is the same one.
  if (r.error().code == ErrorCode::kWrongExpectedVersion) {
    ++stats_.already_recorded;
    return {};
  }
  return std::unexpected(r.error());
}

Result<size_t> CompatibilityService::step() {
  if (auto r = follow_registry(); !r) return std::unexpected(r.error());
  size_t analysed = 0;
  if (unrecorded_.empty()) {
    std::lock_guard lock(mutex_);
    unrecorded_ = analysis_.analyse_pairs(options_.pairs_per_step);
    analysed = unrecorded_.size();
  }
  // A pair whose result could not be recorded (the store unreachable) stays
  // here and is recorded first next time: nothing analysed is lost.
  size_t done = 0;
  for (; done < unrecorded_.size(); ++done) {
    if (auto r = record(unrecorded_[done]); !r) {
      unrecorded_.erase(unrecorded_.begin(), unrecorded_.begin() + static_cast<std::ptrdiff_t>(done));
      return std::unexpected(r.error());
    }
  }
  unrecorded_.clear();
  return std::max(analysed, done);
}

void CompatibilityService::run(const std::atomic<bool>& stop) {
  std::string last_error;
  while (!stop.load()) {
    auto done = step();
    std::string error = done ? "" : done.error().message;
    if (!error.empty() && error != last_error) logger_->error("compatibility_step_failed error=\"{}\"", error);
    last_error = error;
    if (!done) {
      // Back off a whole idle wait before trying again, whatever commits come.
      signal_.pause(options_.idle_wait);
      continue;
    }
    if (*done > 0) {
      logger_->debug("compatibility_analysed pairs={} pending={}", *done, pending_pairs());
      continue;  // more may be pending: no wait
    }
    seen_ = signal_.wait_beyond(seen_, options_.idle_wait);
  }
}

ServiceStats CompatibilityService::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

std::optional<AnalysisState> CompatibilityService::state_of(const std::string& system_id) const {
  std::lock_guard lock(mutex_);
  return analysis_.state_of(system_id);
}

size_t CompatibilityService::pending_pairs() const {
  std::lock_guard lock(mutex_);
  return analysis_.pending_pairs();
}

}  // namespace wpm::compatibility
