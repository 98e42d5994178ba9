// Evacuation: every mobile WPAR of a system relocated, one child task after
// another (docs/relocation.md).
#include <fmt/format.h>

#include <algorithm>

#include "services/executor/internal.h"

namespace wpm::executor {

using nlohmann::json;
using kernel::Rejection;
using kernel::RejectionCode;
using namespace detail;

namespace detail {

Decision decide_evacuate(const Executor& state, const inventory::Inventory& inv, const Evacuate& evacuate,
                         const kernel::Context& context) {
  const std::string id = context.command_id.value();
  auto system = inventory::resolve_prefix(inv.registry.systems(), evacuate.system, "system");
  if (!system) return std::unexpected(system.error());
  for (const auto& [tid, t] : state.tasks) {
    if (t.kind == "evacuate" && t.system == *system && !t.finished()) {
      return reject(RejectionCode::kConflict, fmt::format("system {} is being evacuated already (task {}): wait "
                                                          "for it (wpm task wait {})",
                                                          *system, tid, tid));
    }
  }
  auto plan = plan_evacuation(state, inv, *system, {});
  if (plan.moves.empty()) {
    std::vector<std::string> why;
    for (const auto& [w, reason] : plan.skipped) why.push_back(fmt::format("{} ({})", w, reason));
    return reject(RejectionCode::kConflict,
                  why.empty() ? fmt::format("system {} has no deployed WPARs: nothing to evacuate", *system)
                              : fmt::format("nothing on {} can move: {}", *system, fmt::join(why, "; ")));
  }
  TaskOptions o;
  o.plan = plan.moves;
  o.skipped = plan.skipped;
  o.shared_root = inv.setting("statefile.shared-root");
  if (evacuate.approval_ns != 0) o.approval_expires_ns = context.now_ns + evacuate.approval_ns;
  std::string user = user_of(context);
  std::string warning;
  if (!plan.skipped.empty()) {
    std::vector<std::string> why;
    for (const auto& [w, reason] : plan.skipped) why.push_back(fmt::format("{} ({})", w, reason));
    warning = fmt::format("{} WPAR(s) cannot move and stay on {}: {}", plan.skipped.size(), *system,
                          fmt::join(why, "; "));
  }
  return Decided{{{task_stream(id), TaskCreated{"evacuate", "", *system, options_to_json(o).dump(), "", user}}},
                 warning};
}

}  // namespace detail

EvacuationPlan plan_evacuation(const Executor& state, const inventory::Inventory& inv, const std::string& system,
                               const std::map<std::string, double>& loads) {
  EvacuationPlan plan;
  std::map<std::string, size_t> planned;
  for (const auto& [name, r] : inv.wpars) {  // by name: the same plan for the same state
    const WparDefinition& w = r.wpar;
    if (w.system != system) continue;
    const std::string letter = inventory::wpar_state_letter(w);
    if (auto b = state.busy.find(name); b != state.busy.end()) {
      plan.skipped.emplace_back(name, fmt::format("task {} is running on it", b->second));
      continue;
    }
    if (!w.checkpointable) {
      plan.skipped.emplace_back(name, "not checkpoint enabled: it cannot be moved while it runs");
      continue;
    }
    if (letter != "A") {
      auto s = state_of_letter(letter);
      plan.skipped.emplace_back(name, fmt::format("{}: only an Active WPAR is relocated",
                                                  s ? std::string(runtime::state_name(*s)) : "state unknown"));
      continue;
    }
    auto ranked = rank_candidates(state, inv, name, loads, planned);
    if (ranked.empty() || !ranked.front().eligible) {
      std::string why = ranked.empty() ? "no other system" : ranked.front().system + ": " + ranked.front().reason;
      plan.skipped.emplace_back(name, fmt::format("no compatible target ({})", why));
      continue;
    }
    ++planned[ranked.front().system];
    plan.moves.emplace_back(name, ranked.front().system);
  }
  return plan;
}

std::vector<const Task*> children_of(const Executor& state, const std::string& task) {
  std::vector<const Task*> out;
  for (const auto& [id, t] : state.tasks) {
    if (t.parent == task) out.push_back(&t);
  }
  std::sort(out.begin(), out.end(), [](const Task* a, const Task* b) {
    return a->created_ns != b->created_ns ? a->created_ns < b->created_ns : a->id < b->id;
  });
  return out;
}

Step evacuation_step(const Executor& state, const Task& t) {
  auto children = children_of(state, t.id);
  for (const auto* c : children) {
    if (!c->finished()) return Idle{};  // one after another
  }
  const auto& plan = t.options.plan;
  if (children.size() < plan.size()) {
    const auto& [wpar, target] = plan[children.size()];
    Spawn s;
    s.child = fmt::format("{}-{}", t.id, children.size() + 1);
    TaskOptions o;
    o.target = target;
    o.shared_root = t.options.shared_root;
    s.created = TaskCreated{"relocate", wpar, t.system, options_to_json(o).dump(), t.id, t.user};
    if (auto b = state.busy.find(wpar); b != state.busy.end()) {
      s.ended = TaskFinished{"failed", fmt::format("WPAR {} has a task running ({}); not moved", wpar, b->second),
                             fmt::format("none: it stays on {}", t.system)};
    }
    return s;
  }
  std::vector<std::string> stayed;
  for (const auto& [w, why] : t.options.skipped) stayed.push_back(fmt::format("{} ({})", w, why));
  for (const auto* c : children) {
    if (c->state != "succeeded") stayed.push_back(fmt::format("{} (relocation {} {}: {})", c->wpar, c->id, c->state,
                                                              c->error));
  }
  if (stayed.empty()) return Finish{TaskFinished{"succeeded", "", ""}, std::nullopt};
  return Finish{TaskFinished{"failed",
                             fmt::format("{} of {} WPAR(s) of {} could not move: {}", stayed.size(),
                                         plan.size() + t.options.skipped.size(), t.system, fmt::join(stayed, "; ")),
                             fmt::format("{} moved; the others stay on {}", plan.size() - (stayed.size() - t.options.skipped.size()),
                                         t.system)},
                std::nullopt};
}

}  // namespace wpm::executor
