#pragma once
// Compatibility analysis of a fleet (DESIGN.md §6): the tests run once per
// ordered pair of distinct compared properties, not per pair of hosts, so
// 10,000 systems of 50 distinct profiles cost 50 × 49 runs. Results are kept
// per test, because the optional tests are chosen per WPAR group; a pair's
// state is derived for a given set of tests. A system is Pending until every
// pair between its properties and the others' has been analysed.
//
// Pure (no I/O, no clock): the compatibility service feeds it profiles from
// the log and runs analyse() in the background in bounded steps.
// Thread safety: none; the owner locks.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "services/compatibility/tests.h"

namespace wpm::compatibility {

enum class AnalysisState : uint8_t { kPending, kComplete };

class Analysis {
 public:
  // Adds a system, or changes its profile (its pairs are analysed again if
  // its compared properties changed).
  void set_system(const std::string& system_id, const profile::SystemProfile& profile);
  void remove_system(const std::string& system_id);

  // Runs the tests of at most `max_pairs` pending pairs; returns how many ran.
  size_t analyse(size_t max_pairs);
  // The same, returning what each pair came to (for the service to record).
  struct AnalysedPair {
    std::string departure_properties;  // properties_digest() of each side
    std::string arrival_properties;
    std::vector<TestResult> results;
  };
  std::vector<AnalysedPair> analyse_pairs(size_t max_pairs);
  size_t pending_pairs() const { return pending_.size(); }

  // Pending until every pair with the other systems' properties is analysed.
  std::optional<AnalysisState> state_of(const std::string& system_id) const;

  // The results departure → arrival, when analysed. Systems with equal
  // compared properties pass every test.
  std::optional<std::vector<TestResult>> results(const std::string& departure, const std::string& arrival) const;
  // The pair's state under `tests`; empty while either direction is pending
  // or a system is unknown.
  std::optional<CompatibilityState> state(const std::string& a, const std::string& b, const TestSet& tests) const;

  size_t systems() const { return key_of_.size(); }
  size_t distinct_properties() const { return profiles_.size(); }

 private:
  using KeyId = uint32_t;
  KeyId intern(const profile::SystemProfile& profile);
  void release(KeyId key);

  std::map<std::string, KeyId> key_of_;         // system → its properties
  std::map<std::string, KeyId> id_of_key_;       // properties key → id
  struct Profile {
    profile::SystemProfile profile;
    std::string key;
    size_t systems = 0;
  };
  std::map<KeyId, Profile> profiles_;
  KeyId next_key_ = 1;
  std::map<std::pair<KeyId, KeyId>, std::vector<TestResult>> results_;  // departure → arrival
  std::set<std::pair<KeyId, KeyId>> pending_;
  std::map<KeyId, size_t> pending_per_key_;  // pending pairs touching each key, either way
  void add_pending(KeyId departure, KeyId arrival);
  void drop_pending(std::set<std::pair<KeyId, KeyId>>::iterator it);
};

}  // namespace wpm::compatibility
