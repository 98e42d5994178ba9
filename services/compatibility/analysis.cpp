#include "services/compatibility/analysis.h"

#include "schemas/assert.h"
#include "schemas/hash.h"

namespace wpm::compatibility {

std::string properties_digest(const std::string& compared_properties_key) {
  return to_hex(sha256(compared_properties_key)).substr(0, 16);
}

void Analysis::add_pending(KeyId departure, KeyId arrival) {
  if (!pending_.insert({departure, arrival}).second) return;
  ++pending_per_key_[departure];
  ++pending_per_key_[arrival];
}

void Analysis::drop_pending(std::set<std::pair<KeyId, KeyId>>::iterator it) {
  for (KeyId k : {it->first, it->second}) {
    auto c = pending_per_key_.find(k);
    WPM_ASSERT(c != pending_per_key_.end() && c->second > 0, "pending count of {} out of step", k);
    if (--c->second == 0) pending_per_key_.erase(c);
  }
  pending_.erase(it);
}

Analysis::KeyId Analysis::intern(const profile::SystemProfile& profile) {
  std::string key = compared_properties_key(profile);
  if (auto it = id_of_key_.find(key); it != id_of_key_.end()) {
    ++profiles_[it->second].systems;
    return it->second;
  }
  KeyId id = next_key_++;
  id_of_key_[key] = id;
  // New properties: a pair, both ways, with every other distinct one.
  for (const auto& [other, _] : profiles_) {
    add_pending(id, other);
    add_pending(other, id);
  }
  profiles_[id] = Profile{profile, std::move(key), 1};
  return id;
}

void Analysis::release(KeyId key) {
  auto it = profiles_.find(key);
  WPM_ASSERT(it != profiles_.end() && it->second.systems > 0, "releasing unknown properties {}", key);
  if (--it->second.systems > 0) return;
  id_of_key_.erase(it->second.key);
  profiles_.erase(it);
  for (auto r = results_.begin(); r != results_.end();) {
    r = (r->first.first == key || r->first.second == key) ? results_.erase(r) : std::next(r);
  }
  for (auto p = pending_.begin(); p != pending_.end();) {
    auto next = std::next(p);
    if (p->first == key || p->second == key) drop_pending(p);
    p = next;
  }
}

void Analysis::set_system(const std::string& system_id, const profile::SystemProfile& profile) {
  KeyId key = intern(profile);
  auto [it, inserted] = key_of_.try_emplace(system_id, key);
  if (!inserted) {
    KeyId old = it->second;
    it->second = key;
    release(old);
  }
}

void Analysis::remove_system(const std::string& system_id) {
  auto it = key_of_.find(system_id);
  if (it == key_of_.end()) return;
  KeyId key = it->second;
  key_of_.erase(it);
  release(key);
}

size_t Analysis::analyse(size_t max_pairs) { return analyse_pairs(max_pairs).size(); }

std::vector<Analysis::AnalysedPair> Analysis::analyse_pairs(size_t max_pairs) {
  std::vector<AnalysedPair> out;
  while (out.size() < max_pairs && !pending_.empty()) {
    auto pair = *pending_.begin();
    drop_pending(pending_.begin());
    const auto& d = profiles_.at(pair.first);
    const auto& a = profiles_.at(pair.second);
    auto& results = results_[pair] = run_tests(d.profile, a.profile);
    out.push_back(AnalysedPair{properties_digest(d.key), properties_digest(a.key), results});
  }
  return out;
}

std::optional<AnalysisState> Analysis::state_of(const std::string& system_id) const {
  auto it = key_of_.find(system_id);
  if (it == key_of_.end()) return std::nullopt;
  return pending_per_key_.contains(it->second) ? AnalysisState::kPending : AnalysisState::kComplete;
}

std::optional<std::vector<TestResult>> Analysis::results(const std::string& departure,
                                                         const std::string& arrival) const {
  auto d = key_of_.find(departure);
  auto a = key_of_.find(arrival);
  if (d == key_of_.end() || a == key_of_.end()) return std::nullopt;
  if (d->second == a->second) {
    const auto& p = profiles_.at(d->second).profile;
    return run_tests(p, p);
  }
  auto it = results_.find({d->second, a->second});
  if (it == results_.end()) return std::nullopt;
  return it->second;
}

std::optional<CompatibilityState> Analysis::state(const std::string& a, const std::string& b,
                                                  const TestSet& tests) const {
  auto forward = results(a, b);
  auto backward = results(b, a);
  if (!forward || !backward) return std::nullopt;
  return derive_state(*forward, *backward, tests);
}

}  // namespace wpm::compatibility
