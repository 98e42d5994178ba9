// Fencing: mark-dead, and the fence tasks that remove stale copies
// (docs/relocation.md).
#include <fmt/format.h>

#include <set>

#include "services/executor/internal.h"

namespace wpm::executor {

using nlohmann::json;
using kernel::Rejection;
using kernel::RejectionCode;
using namespace detail;

namespace detail {

Decision decide_mark_dead(const Executor& state, const inventory::Inventory& inv, const MarkDead& dead,
                          const kernel::Context& context) {
  const std::string id = context.command_id.value();
  auto system = inventory::resolve_prefix(inv.registry.systems(), dead.system, "system");
  if (!system) return std::unexpected(system.error());
  auto status = inv.system_status(*system);
  if (status.state != "offline") {
    return reject(RejectionCode::kConflict,
                  fmt::format("system {} is {}, not Offline: only a system whose agent stopped answering can be "
                              "marked dead (stop it first, or wait for heartbeat.timeout)",
                              *system, status.state));
  }
  const int64_t grace = inventory::parse_duration_ns(inv.setting("mark-dead.grace")).value_or(30'000'000'000);
  if (context.now_ns - status.since_ns < grace) {
    return reject(RejectionCode::kConflict,
                  fmt::format("system {} has been Offline for {} s; it may be marked dead after {} s (a short "
                              "outage must not put its WPARs on two systems): try again later",
                              *system, (context.now_ns - status.since_ns) / 1'000'000'000,
                              grace / 1'000'000'000));
  }
  for (const auto& [tid, t] : state.tasks) {
    if (t.kind == "evacuate" && t.system == *system && !t.finished()) {
      return reject(RejectionCode::kConflict, fmt::format("system {} is being evacuated (task {}): cancel it first "
                                                          "(wpm task cancel {})",
                                                          *system, tid, tid));
    }
  }
  std::vector<Change> changes;
  std::vector<std::string> taken;
  for (const auto& [name, r] : inv.wpars) {
    if (r.wpar.system != *system) continue;
    if (auto b = state.busy.find(name); b != state.busy.end()) {
      return reject(RejectionCode::kConflict, fmt::format("WPAR {} on {} has a task running ({}); wait for it to "
                                                          "end (wpm task wait {}) or cancel it",
                                                          name, *system, b->second, b->second));
    }
    auto p = state.placements.find(name);
    uint64_t epoch = p == state.placements.end() ? 0 : p->second.epoch;
    changes.push_back({placement_stream(name), WparPlaced{name, "", epoch + 1, *system}});
    taken.push_back(name);
  }
  std::string user = user_of(context);
  changes.push_back({task_stream(id), TaskCreated{"mark-dead", "", *system, "{}", "", user}});
  changes.push_back(
      {task_stream(id),
       TaskFinished{"succeeded", "",
                    taken.empty() ? fmt::format("system {} held no WPARs", *system)
                                  : fmt::format("WPARs taken off {} (Undeployed; deploy them elsewhere): {}; a copy "
                                                "{} still runs when it comes back is stopped there",
                                                *system, fmt::join(taken, ", "), *system)}});
  return Decided{std::move(changes), ""};
}

}  // namespace detail

std::vector<Spawn> fence_tasks(const Executor& state, const inventory::Inventory& inv, int64_t now_ns) {
  std::vector<Spawn> out;
  std::set<std::string> claimed;  // one task per WPAR
  for (const auto& [key, stale] : state.stale) {
    const auto& [wpar, system] = key;
    const uint64_t sequence = stale.sequence;
    if (now_ns < stale.not_before_ns || !claimed.insert(wpar).second) continue;
    if (state.busy.contains(wpar)) continue;  // after the task that runs on it
    if (system_problem(inv, system)) continue;  // its agent reports, but heartbeats have not resumed yet
    auto placed = state.placements.find(wpar);
    if (placed != state.placements.end() && placed->second.system == system) continue;  // it is placed there again
    Spawn s;
    s.child = fmt::format("fence-{}", sequence);
    s.created = TaskCreated{"fence", wpar, system, "{}", "", "service:executor"};
    out.push_back(std::move(s));
  }
  return out;
}

Adoptions adopted_placements(const Executor& state,
                             const std::map<std::string, std::vector<inventory::ReportedWpar>>& reports) {
  struct Best {
    uint64_t epoch = 0;
    std::vector<std::pair<std::string, bool>> copies;  // (system, active) at that epoch
  };
  std::map<std::string, Best> best;
  for (const auto& [system, reported] : reports) {
    std::set<std::string> seen;
    for (const auto& r : reported) {
      if (r.epoch == 0 || !seen.insert(r.name).second || state.busy.contains(r.name)) continue;
      auto placed = state.placements.find(r.name);
      if (r.epoch <= (placed == state.placements.end() ? 0 : placed->second.epoch)) continue;
      auto& b = best[r.name];
      if (r.epoch > b.epoch) b = Best{r.epoch, {}};
      if (r.epoch == b.epoch) b.copies.emplace_back(system, r.state == "A");
    }
  }
  Adoptions out;
  for (const auto& [wpar, b] : best) {
    const std::pair<std::string, bool>* chosen = nullptr;
    if (b.copies.size() == 1) {
      chosen = &b.copies[0];
    } else if (std::count_if(b.copies.begin(), b.copies.end(), [](const auto& c) { return c.second; }) == 1) {
      chosen = &*std::find_if(b.copies.begin(), b.copies.end(), [](const auto& c) { return c.second; });
    }
    if (chosen == nullptr) {
      out.ambiguous.push_back(wpar);
      continue;
    }
    out.adopted.push_back(WparPlaced{wpar, chosen->first, b.epoch, ""});
  }
  return out;
}

}  // namespace wpm::executor
