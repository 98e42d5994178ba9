#include "services/inventory/registry.h"

#include "services/kernel/snapshot_frames.h"

#include <cstring>

#include "schemas/codec.h"

namespace wpm::inventory {

void Registry::evolve(const Event& event) {
  if (event.sequence <= applied_) return;
  applied_ = event.sequence;
  if (const auto* r = std::get_if<SystemRegistered>(&event.payload)) {
    apply(*r, event.sequence);
  } else if (const auto* removed = std::get_if<SystemRemoved>(&event.payload)) {
    remove(removed->system_id);
  } else if (const auto* changed = std::get_if<SystemProfileChanged>(&event.payload)) {
    update_profile(changed->system_id, changed->profile);
  }
}

void Registry::update_profile(const std::string& system_id, const profile::SystemProfile& profile) {
  if (auto it = by_id_.find(system_id); it != by_id_.end()) it->second.profile = profile;
}

Registry Registry::restore(std::vector<RegisteredSystem> systems, uint64_t applied) {
  Registry r;
  for (auto& system : systems) {
    r.id_by_key_[system.public_key] = system.system_id;
    r.by_id_[system.system_id] = std::move(system);
  }
  r.applied_ = applied;
  return r;
}

// Snapshot form: the last sequence applied (8 bytes), then per system a
// length (4 bytes) and a SystemRegistered event (schemas/codec.h) whose
// sequence is the one it was registered at.
std::string RegistryModel::encode(const State& state) {
  kernel::SnapshotWriter out;
  out.word(state.applied());
  for (const auto& [id, s] : state.systems()) {
    out.event("registry", 0, 0,
              SystemRegistered{s.system_id, s.hostname, s.address, s.public_key, s.profile, s.agent_port},
              s.registered_at_sequence);
  }
  return out.take();
}

Result<Registry> RegistryModel::decode(std::string_view bytes) {
  kernel::SnapshotReader in(bytes, "registry snapshot");
  auto applied = in.word();
  if (!applied) return std::unexpected(applied.error());
  std::vector<RegisteredSystem> systems;
  while (!in.done()) {  // bounded: every round consumes at least 4 bytes
    auto e = in.event();
    if (!e) return std::unexpected(e.error());
    const auto* r = std::get_if<SystemRegistered>(&e->payload);
    if (r == nullptr) return fail(ErrorCode::kCorruption, "registry snapshot holds another event");
    systems.push_back(RegisteredSystem{r->system_id, r->hostname, r->address, r->public_key, r->agent_port,
                                       e->sequence, r->profile});
  }
  return Registry::restore(std::move(systems), *applied);
}

void Registry::apply(const SystemRegistered& r, uint64_t sequence) {
  // A key belongs to one system; a system has one key (re-registration replaces it).
  if (auto old = id_by_key_.find(r.public_key); old != id_by_key_.end() && old->second != r.system_id) {
    remove(old->second);
  }
  if (auto it = by_id_.find(r.system_id); it != by_id_.end()) id_by_key_.erase(it->second.public_key);
  by_id_[r.system_id] =
      RegisteredSystem{r.system_id, r.hostname, r.address, r.public_key, r.agent_port, sequence, r.profile};
  id_by_key_[r.public_key] = r.system_id;
}

void Registry::remove(const std::string& system_id) {
  auto it = by_id_.find(system_id);
  if (it == by_id_.end()) return;
  id_by_key_.erase(it->second.public_key);
  by_id_.erase(it);
}

const RegisteredSystem* Registry::by_key(const std::string& public_key) const {
  auto it = id_by_key_.find(public_key);
  return it == id_by_key_.end() ? nullptr : by_id(it->second);
}

const RegisteredSystem* Registry::by_id(const std::string& system_id) const {
  auto it = by_id_.find(system_id);
  return it == by_id_.end() ? nullptr : &it->second;
}

std::string Registry::choose_system_id(const std::string& hostname, const std::string& fingerprint) const {
  std::string base = hostname.empty() ? "system" : hostname;
  if (!by_id_.contains(base)) return base;
  std::string digits = fingerprint.starts_with("sha256:") ? fingerprint.substr(7) : fingerprint;
  for (size_t len = 8; len <= digits.size(); len += 4) {
    std::string id = base + "-" + digits.substr(0, len);
    if (!by_id_.contains(id)) return id;
  }
  return base + "-" + digits;
}

}  // namespace wpm::inventory
