#pragma once
// The registered systems, folded from the log (DESIGN.md §2, §8): which CURVE
// keys may use the agent channel and which system each one is. Pure: evolve()
// applies one event; the agent channel rebuilds it from the log at start and
// keeps it current by following the log.
//
// Thread safety: none; the owner locks.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "schemas/events.h"

namespace wpm::inventory {

struct RegisteredSystem {
  std::string system_id;
  std::string hostname;
  std::string address;
  std::string public_key;  // Z85
  uint16_t agent_port = 0;
  uint64_t registered_at_sequence = 0;
  profile::SystemProfile profile;  // as registered, or as last changed
  bool operator==(const RegisteredSystem&) const = default;
};

class Registry {
 public:
  // Applies one event; events at or below applied() are ignored (idempotent).
  void evolve(const Event& event);
  // Applies a registration this process has just had acknowledged, before its
  // publication arrives (the publication then changes nothing).
  void admit(const SystemRegistered& registered, uint64_t sequence);

  // Applies a profile change this process has just had acknowledged.
  void update_profile(const std::string& system_id, const profile::SystemProfile& profile);
  // Drops a system this process has just had removed.
  void revoke(const std::string& system_id) { remove(system_id); }

  const RegisteredSystem* by_key(const std::string& public_key) const;
  const RegisteredSystem* by_id(const std::string& system_id) const;
  // The id for a new registration: the host name when it is free, otherwise
  // the host name with the start of the key's fingerprint.
  std::string choose_system_id(const std::string& hostname, const std::string& fingerprint) const;

  uint64_t applied() const { return applied_; }
  size_t size() const { return by_id_.size(); }
  const std::map<std::string, RegisteredSystem>& systems() const { return by_id_; }

 private:
  void apply(const SystemRegistered& r, uint64_t sequence);
  void remove(const std::string& system_id);

  std::map<std::string, RegisteredSystem> by_id_;
  std::map<std::string, std::string> id_by_key_;
  uint64_t applied_ = 0;
};

}  // namespace wpm::inventory
