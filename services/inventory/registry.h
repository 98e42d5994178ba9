#pragma once
// The registered systems, folded from the log (DESIGN.md §2, §8): which CURVE
// keys may use the agent channel and which system each one is. Pure: evolve()
// applies one event. RegistryModel makes it a projection of the `registry`
// stream (services/kernel/projection.h): the agent channel admits and revokes
// keys only through it.
//
// Thread safety: none; the owner locks.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schemas/error.h"
#include "schemas/events.h"
#include "services/kernel/projection.h"

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
  // The state a snapshot holds: the systems and the last sequence applied.
  static Registry restore(std::vector<RegisteredSystem> systems, uint64_t applied);

  const RegisteredSystem* by_key(const std::string& public_key) const;
  const RegisteredSystem* by_id(const std::string& system_id) const;
  // The id for a new registration: the host name when it is free, otherwise
  // the host name with the start of the key's fingerprint.
  std::string choose_system_id(const std::string& hostname, const std::string& fingerprint) const;

  uint64_t applied() const { return applied_; }
  size_t size() const { return by_id_.size(); }
  const std::map<std::string, RegisteredSystem>& systems() const { return by_id_; }
  bool operator==(const Registry&) const = default;

 private:
  void apply(const SystemRegistered& r, uint64_t sequence);
  void remove(const std::string& system_id);
  void update_profile(const std::string& system_id, const profile::SystemProfile& profile);

  std::map<std::string, RegisteredSystem> by_id_;
  std::map<std::string, std::string> id_by_key_;
  uint64_t applied_ = 0;
};

// The registry as a projection of its stream. An event of a type this
// binary does not know on that stream stops it: an allow-list folded past an
// event it cannot read could admit a key that was revoked.
struct RegistryModel {
  using State = Registry;
  static constexpr std::string_view kName = "registry";
  static constexpr std::string_view kStream = "registry";
  static constexpr kernel::UnknownEvents kUnknown = kernel::UnknownEvents::kStop;
  static State initial() { return {}; }
  static State evolve(State state, const Event& event) {
    state.evolve(event);
    return state;
  }
  static std::string encode(const State& state);
  static Result<State> decode(std::string_view bytes);
};

}  // namespace wpm::inventory
