// The relocation saga, compatibility by direction and the ranking of
// candidates (docs/relocation.md).
#include <fmt/format.h>

#include <algorithm>
#include <tuple>

#include "services/compatibility/tests.h"
#include "services/executor/internal.h"

namespace wpm::executor {

using nlohmann::json;
using kernel::Rejection;
using kernel::RejectionCode;
using namespace detail;

namespace detail {

Decision decide_relocate(const Executor& state, const inventory::Inventory& inv, const std::string& name,
                         const WparAction& a, TaskCreated created, const std::string& id) {
  const WparDefinition& w = inv.wpars.at(name).wpar;
  if (w.system.empty()) {
    return reject(RejectionCode::kConflict, fmt::format("WPAR {} is not deployed (Undeployed): there is nothing to "
                                                        "move; deploy it (wpm wpar deploy {} --system H)",
                                                        name, name));
  }
  auto target = inventory::resolve_prefix(inv.registry.systems(), a.system, "system");
  if (!target) return std::unexpected(target.error());
  if (*target == w.system) {
    return reject(RejectionCode::kConflict, fmt::format("WPAR {} is already on {}", name, *target));
  }
  auto letter = inventory::wpar_state_letter(w);
  auto wpar_state = state_of_letter(letter);
  if (!wpar_state) {
    return reject(RejectionCode::kConflict, fmt::format("the state of WPAR {} on {} is not known yet; wait for its "
                                                        "agent's report",
                                                        name, w.system));
  }
  runtime::WparStatus status{*wpar_state, w.type == "application" ? runtime::WparType::kApplication
                                                                  : runtime::WparType::kSystem,
                             w.checkpointable};
  if (*wpar_state != runtime::WparState::kActive) {
    return reject(RejectionCode::kConflict,
                  fmt::format("WPAR {} is {} ({}): only an Active WPAR is relocated", name,
                              runtime::state_name(*wpar_state), letter));
  }
  if (auto allowed = runtime::decide(status, runtime::Operation::kCheckpointPause); !allowed) {
    return reject(RejectionCode::kConflict,
                  fmt::format("WPAR {} cannot be relocated: {}", name, allowed.error().message));
  }
  for (const auto& s : {w.system, *target}) {
    if (auto problem = system_problem(inv, s)) return reject(RejectionCode::kConflict, *problem);
  }
  auto compat = direction_compat(state, inv, w.system, *target);
  std::string warning;
  if (compat.state == "pending") {
    return reject(RejectionCode::kConflict,
                  fmt::format("compatibility of {} → {} is not analysed yet (Pending); a Pending system is "
                              "never a target, even with --force: wait for the analysis (wpm compat show {} {})",
                              w.system, *target, w.system, *target));
  }
  if (compat.state != "compatible") {
    std::vector<std::string> failed;
    for (const auto& f : compat.failed) {
      failed.push_back(fmt::format("{} ({} here, {} there)", f.test, f.departure, f.arrival));
    }
    if (!a.options.force) {
      return reject(RejectionCode::kConflict,
                    fmt::format("{} is not compatible as a target of {}: failed {}; choose a compatible system "
                                "(wpm wpar candidates {}) or add --force",
                                *target, w.system, fmt::join(failed, ", "), name));
    }
    warning = fmt::format("{} failed compatibility tests from {} ({}); relocating anyway (--force)", *target,
                          w.system, fmt::join(failed, ", "));
  }
  auto checked = check_arrival(inv, w, *target);
  if (!checked) return std::unexpected(checked.error());
  if (!checked->empty()) warning = warning.empty() ? *checked : warning + "; " + *checked;
  TaskOptions o = a.options;
  o.target = *target;
  o.shared_root = inv.setting("statefile.shared-root");
  created.args = options_to_json(o).dump();
  return Decided{{{task_stream(id), created}}, warning};
}

}  // namespace detail

std::string relocation_state_id(const Task& task) { return task.id + ".1"; }

namespace {

const Operation* saga_operation(const Task& t, int step) {
  const std::string id = fmt::format("{}.{}", t.id, step);
  for (const auto& o : t.operations) {
    if (o.id == id) return &o;
  }
  return nullptr;
}

// The agent answered that it did not do it (or it never left the manager).
bool definite_failure(const Operation& o) {
  return o.outcome == "failed" || o.outcome == "refused" || o.outcome == "unsent";
}

// A resume did what the recovery needs: the WPAR runs (also when it already did: 17 with A).
bool resumed(const Operation& o) { return o.outcome == "ok" || (o.exit_code == 17 && o.wpar_state == "A"); }

std::string state_word(const std::string& letter) {
  if (auto s = state_of_letter(letter)) return std::string(runtime::state_name(*s));
  return letter.empty() ? "state unknown" : letter;
}

}  // namespace

Step relocation_step(const Executor& state, const Task& t, int64_t now_ns) {
  const std::string& departure = t.system;
  const std::string& arrival = t.options.target;
  const auto pl = state.placements.find(t.wpar);
  const uint64_t epoch = pl == state.placements.end() ? 0 : pl->second.epoch;
  const std::string placed = pl == state.placements.end() ? "" : pl->second.system;
  auto start = [&](int step, const std::string& system, const std::string& action) -> Step {
    return Start{OperationStarted{fmt::format("{}.{}", t.id, step), system, t.wpar, action, epoch, 1,
                                  now_ns + action_timeout_ns(action)}};
  };
  auto finish = [&](std::string end, std::string error, std::string recovery, std::string letter = "",
                    std::string cause = "") -> Step {
    return Finish{TaskFinished{std::move(end), std::move(error), std::move(recovery), std::move(letter),
                               std::move(cause)},
                  std::nullopt};
  };
  const Operation* pause = saga_operation(t, 1);
  const Operation* receive = saga_operation(t, 2);
  const Operation* restore = saga_operation(t, 3);
  const Operation* depart = saga_operation(t, 4);
  const Operation* clean = saga_operation(t, 5);
  const Operation* resume = saga_operation(t, 6);

  if (pause == nullptr) {
    // Checked again when it starts (an evacuation's plan is older than this).
    if (placed != departure) {
      return finish("failed",
                    fmt::format("WPAR {} is no longer placed on {} ({}): not moved", t.wpar, departure,
                                placed.empty() ? "Undeployed" : "now on " + placed),
                    "none needed: nothing was done");
    }
    return start(1, departure, "pause");
  }
  if (!achieved(*pause) && definite_failure(*pause)) {
    return finish("failed", describe_failure(*pause),
                  fmt::format("none needed: WPAR {} stays on {} ({}); nothing was sent to {}", t.wpar, departure,
                              state_word(pause->wpar_state), arrival));
  }
  const Operation* failed = nullptr;  // the arrival step that failed
  if (receive != nullptr && receive->finished && !achieved(*receive)) failed = receive;
  if (restore != nullptr && restore->finished && !achieved(*restore)) failed = restore;
  if (failed != nullptr || !achieved(*pause)) {
    // Recovery: back on the departure, nothing left on the arrival.
    const Operation& why = failed != nullptr ? *failed : *pause;
    if (failed != nullptr) {
      if (placed != departure) return Place{WparPlaced{t.wpar, departure, epoch + 1, placed}};
      if (clean == nullptr) return start(5, arrival, "remove");
      // A restore that may have started leaves a copy that may run: the
      // departure's stays frozen until that one is known to be gone.
      const bool may_run = restore != nullptr && !(definite_failure(*restore) && restore->wpar_state != "A");
      if (!achieved(*clean) && may_run) {
        return finish("failed", describe_failure(why),
                      fmt::format("WPAR {} could not be removed from {} ({}), where its restore may have started: it "
                                  "stays paused on {} so that it never runs twice; once the copy on {} is gone "
                                  "(wpm-agent rmwpar -F {} there), resume it (wpm wpar resume {})",
                                  t.wpar, arrival, clean->error.empty() ? clean->outcome : clean->error, departure,
                                  arrival, t.wpar, t.wpar),
                      "P");
      }
    }
    if (resume == nullptr) return start(6, departure, "resume");
    const std::string left = failed == nullptr ? fmt::format("; nothing was sent to {}", arrival)
                             : clean != nullptr && achieved(*clean)
                                 ? fmt::format("; nothing of it is left on {}", arrival)
                                 : fmt::format("; its remains on {} could not be removed ({}), remove them there "
                                               "(wpm-agent rmwpar -F {})",
                                               arrival, clean == nullptr ? "" : clean->error, t.wpar);
    if (resumed(*resume)) {
      return finish("failed", describe_failure(why),
                    fmt::format("WPAR {} is Active on {} again{}", t.wpar, departure, left), "A");
    }
    std::string cause =
        definite_failure(*resume)
            ? fmt::format("the relocation to {} failed and WPAR {} could not be resumed on {}: {}", arrival, t.wpar,
                          departure, resume->error)
            : fmt::format("the relocation to {} failed and {} did not answer the resume ({}): WPAR {} is frozen or "
                          "gone there",
                          arrival, departure, resume->error, t.wpar);
    return finish("failed", describe_failure(why),
                  fmt::format("WPAR {} is Broken on {}{}: once {} answers, stop it with --force and start it again",
                              t.wpar, departure, left, departure),
                  "B", cause);
  }
  // Forward: the departure's copy is frozen; the placement moves.
  if (placed != arrival) return Place{WparPlaced{t.wpar, arrival, epoch + 1, departure}};
  // With a shared state root the arrival reads the state file where the
  // departure wrote it: there is nothing to receive.
  if (receive == nullptr && t.options.shared_root.empty()) return start(2, arrival, "receive");
  if (restore == nullptr) return start(3, arrival, "restore");
  if (depart == nullptr) return start(4, departure, "remove");
  if (achieved(*depart)) return finish("succeeded", "", "", restore->wpar_state);
  return finish("succeeded", "",
                fmt::format("WPAR {} runs on {}; its frozen copy on {} could not be removed ({}): it is fenced (epoch "
                            "{}, older commands are refused); remove it there (wpm-agent rmwpar -F {})",
                            t.wpar, arrival, departure, depart->error.empty() ? depart->outcome : depart->error,
                            epoch, t.wpar),
                restore->wpar_state);
}

DirectionCompat direction_compat(const Executor& state, const inventory::Inventory& inv, const std::string& departure,
                                 const std::string& arrival, const std::vector<std::string>& optional_tests) {
  const auto* d = inv.registry.by_id(departure);
  const auto* a = inv.registry.by_id(arrival);
  if (d == nullptr || a == nullptr) return {"pending", {}};
  auto dd = compatibility::properties_digest(compatibility::compared_properties_key(d->profile));
  auto da = compatibility::properties_digest(compatibility::compared_properties_key(a->profile));
  if (dd == da) return {"compatible", {}};
  auto it = state.compat.find({dd, da});
  if (it == state.compat.end()) return {"pending", {}};
  DirectionCompat out{"compatible", {}};
  for (const auto& r : it->second) {
    auto test = compatibility::test_from_name(r.test);
    bool counts = test && (compatibility::is_critical(*test) ||
                           std::find(optional_tests.begin(), optional_tests.end(), r.test) != optional_tests.end());
    if (!r.passed && counts) out.failed.push_back(r);
  }
  if (!out.failed.empty()) out.state = "incompatible";
  return out;
}

std::vector<Candidate> rank_candidates(const Executor& state, const inventory::Inventory& inv, const std::string& wpar,
                                       const std::map<std::string, double>& loads,
                                       const std::map<std::string, size_t>& planned) {
  std::vector<Candidate> out;
  auto w = inv.wpars.find(wpar);
  if (w == inv.wpars.end()) return out;
  const WparDefinition& def = w->second.wpar;
  std::map<std::string, size_t> placed;
  for (const auto& [name, r] : inv.wpars) {
    if (!r.wpar.system.empty()) ++placed[r.wpar.system];
  }
  for (const auto& [id, s] : inv.registry.systems()) {
    if (id == def.system) continue;
    Candidate c;
    c.system = id;
    c.hostname = s.hostname;
    auto compat = direction_compat(state, inv, def.system, id);
    c.compatibility = compat.state;
    c.failed = std::move(compat.failed);
    c.state = inv.system_status(id).state;
    if (auto l = loads.find(id); l != loads.end()) c.load = l->second;
    if (auto p = placed.find(id); p != placed.end()) c.wpars = p->second;
    if (auto p = planned.find(id); p != planned.end()) c.wpars += p->second;
    if (c.compatibility == "pending") {
      c.reason = "compatibility not analysed yet (Pending)";
    } else if (c.compatibility != "compatible") {
      std::vector<std::string> names;
      for (const auto& f : c.failed) names.push_back(f.test);
      c.reason = fmt::format("failed {}", fmt::join(names, ", "));
    } else if (auto problem = system_problem(inv, id)) {
      c.reason = *problem;
    } else if (auto arrival = check_arrival(inv, def, id); !arrival) {
      c.reason = arrival.error().message;
    } else {
      c.eligible = true;
    }
    out.push_back(std::move(c));
  }
  auto compat_rank = [](const std::string& s) { return s == "compatible" ? 0 : s == "incompatible" ? 1 : 2; };
  std::sort(out.begin(), out.end(), [&](const Candidate& a, const Candidate& b) {
    auto key = [&](const Candidate& c) {
      return std::tuple(!c.eligible, compat_rank(c.compatibility), c.load.value_or(1e300), c.wpars);
    };
    if (key(a) != key(b)) return key(a) < key(b);
    return a.system < b.system;
  });
  return out;
}

json candidate_to_json(const Candidate& c) {
  json failed = json::array();
  for (const auto& f : c.failed) {
    failed.push_back({{"test", f.test}, {"departure", f.departure}, {"arrival", f.arrival}, {"remedy", f.remedy}});
  }
  return {{"system", c.system},
          {"hostname", c.hostname},
          {"compatibility", c.compatibility},
          {"failedTests", std::move(failed)},
          {"state", c.state},
          {"load", c.load ? json(*c.load) : json(nullptr)},
          {"wpars", c.wpars},
          {"eligible", c.eligible},
          {"reason", c.reason}};
}

}  // namespace wpm::executor
