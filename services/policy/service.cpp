#include "services/policy/service.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <unordered_map>

#include "services/compatibility/tests.h"

namespace wpm::policy {
namespace {

using nlohmann::json;


Values to_values(const std::optional<WindowSummary>& s, bool latest) {
  if (!s) return {};
  return latest ? s->latest : s->average;
}

// Hardware profile rank (glossary "Multiplier"): systems ordered by CPU
// capacity (cores × MHz), then memory; equal hardware, equal rank. In the
// registry's order.
std::vector<int> hardware_ranks(const inventory::Inventory& inv) {
  std::vector<std::tuple<double, uint64_t, size_t>> by_class;
  by_class.reserve(inv.registry.systems().size());
  for (const auto& [id, s] : inv.registry.systems()) {
    by_class.emplace_back(s.profile.cpu_cores * s.profile.cpu_mhz, s.profile.memory_bytes, by_class.size());
  }
  std::sort(by_class.begin(), by_class.end());
  std::vector<int> out(by_class.size());
  int rank = -1;
  for (size_t i = 0; i < by_class.size(); ++i) {
    auto [cpu, memory, index] = by_class[i];
    if (i == 0 || cpu != std::get<0>(by_class[i - 1]) || memory != std::get<1>(by_class[i - 1])) ++rank;
    out[index] = rank;
  }
  return out;
}

}  // namespace

json evaluation_json(const GroupInput& input, const Evaluation& e) {
  json wpars = json::array();
  for (const auto& w : input.wpars) {
    json j = {{"name", w.name}, {"system", w.system}, {"mobile", w.mobile}, {"busy", w.busy}};
    const size_t i = static_cast<size_t>(&w - input.wpars.data());
    j["state"] = i < e.wpar_states.size() && e.wpar_states[i] ? json(*e.wpar_states[i]) : json(nullptr);
    if (w.moved_ns != 0) j["movedNs"] = w.moved_ns;
    wpars.push_back(std::move(j));
  }
  json move = nullptr;
  if (e.move) {
    json targets = json::array();
    for (const auto& t : e.move->targets) {
      targets.push_back({{"system", t.system}, {"stateBefore", t.state_before}, {"stateAfter", t.state_after},
                         {"fits", t.fits}});
    }
    move = {{"wpar", e.move->wpar},          {"from", e.move->from},
            {"to", e.move->to},              {"sourceState", e.move->source_state},
            {"targetAfter", e.move->target_after}, {"gain", e.move->gain},
            {"targets", std::move(targets)}};
  }
  return {{"group", input.group},
          {"policy", to_json(input.policy)},
          {"state", e.group_state},
          {"averageState", e.average_state},
          {"override", e.override_note},
          {"trigger", e.trigger},
          {"streak", e.streak},
          {"inFlight", input.in_flight},
          {"domainRelocations", input.domain_relocations},
          {"domainCap", input.domain_cap},
          {"reason", reason_name(e.reason)},
          {"explanation", e.explanation},
          {"wpars", std::move(wpars)},
          {"move", std::move(move)}};
}

PolicyService::PolicyService(kernel::EventLog& log, const inventory::InventoryView& inventory,
                             const executor::ExecutorView& executor, const kernel::Clock& clock,
                             std::shared_ptr<SampleWindows> windows, std::shared_ptr<spdlog::logger> logger)
    : log_(log), inventory_(inventory), executor_(executor), clock_(clock), windows_(std::move(windows)),
      logger_(std::move(logger)) {}

std::expected<GroupPolicy, std::string> PolicyCache::parse(const std::string& text) {
  std::lock_guard lock(mutex_);
  if (auto it = parsed_.find(text); it != parsed_.end()) return it->second;
  auto parsed = policy_from_json(json::parse(text, nullptr, false));
  if (!parsed) return parsed;
  if (parsed_.size() >= kMaxEntries) parsed_.clear();
  parsed_.emplace(text, *parsed);
  return parsed;
}

std::vector<Evaluated> evaluate_pass(const inventory::Inventory& inv, const executor::Executor& x,
                                     SampleSource& samples, const std::map<std::string, GroupMemo>& memos,
                                     int64_t at_ns, const std::string* only,
                                     const std::map<std::string, GroupPolicy>& overrides, spdlog::logger& logger,
                                     int64_t* keep_s, PolicyCache& policies) {
  std::vector<Evaluated> out;
  const int64_t at_s = at_ns / 1'000'000'000;
  int domain_cap = std::max(1, std::atoi(inv.setting("policy.domain-concurrency").c_str()));
  // The groups to evaluate, in name order, with their policies.
  std::vector<GroupInput> groups;
  std::unordered_map<std::string_view, size_t> group_index;
  for (const auto& [name, g] : inv.groups) {
    if (only != nullptr && name != *only) continue;
    GroupPolicy p;
    if (auto o = overrides.find(name); o != overrides.end()) {
      p = o->second;  // the simulation's candidate
    } else if (!g.policy.empty()) {
      auto parsed = policies.parse(g.policy);
      if (!parsed) {
        logger.warn("policy_unreadable group={} error=\"{}\"", name, parsed.error());
        continue;
      }
      p = *parsed;
    }
    if (!p.enabled && only == nullptr) continue;
    group_index.emplace(name, groups.size());
    groups.push_back(GroupInput{name, std::move(p), {}, 0, "", false, 0, 2});
  }
  if (groups.empty()) return out;
  int64_t longest = 60;
  for (const auto& g : groups) longest = std::max(longest, g.policy.period_s);
  if (keep_s != nullptr) *keep_s = longest + 120;
  // What moved when, what runs now.
  std::unordered_map<std::string, int64_t> moved;
  std::unordered_map<std::string, std::string> relocating;  // WPAR → its running relocation's target
  for (const auto& [id, t] : x.tasks) {
    if (t.kind != "relocate") continue;
    if (t.state == "succeeded") moved[t.wpar] = std::max(moved[t.wpar], t.finished_ns);
    if (!t.finished()) relocating[t.wpar] = t.options.target;
  }
  const auto ranks = hardware_ranks(inv);
  std::map<std::string, int> domain_running;
  for (const auto& [wpar, target] : relocating) ++domain_running[inv.system_status(target).domain];
  // Moves asked for that are not tasks yet count too.
  for (const auto& [group, memo] : memos) {
    if (memo.pending_until_ns <= at_ns) continue;
    if (auto i = group_index.find(group); i != group_index.end()) ++domain_running[groups[i->second].policy.domain];
  }
  // Systems, per averaging period (most groups share one).
  std::map<int64_t, SystemMap> systems_by_period;
  auto systems_for = [&](int64_t period) -> const SystemMap& {
    auto [it, fresh] = systems_by_period.try_emplace(period);
    if (!fresh) return it->second;
    it->second.reserve(inv.registry.systems().size());
    size_t index = 0;
    for (const auto& [id, s] : inv.registry.systems()) {
      auto st = inv.system_status(id);
      it->second[id] = SystemInput{id, st.domain, st.state, true, ranks[index++],
                                   to_values(samples.host(id, at_s - period, at_s), false)};
    }
    return it->second;
  };
  // Compatibility in a direction, for a set of optional tests: by the
  // systems' properties digests, each computed once.
  std::unordered_map<std::string, std::string> digests;
  auto digest = [&](const std::string& id) -> const std::string& {
    auto [it, fresh] = digests.try_emplace(id);
    if (fresh) {
      if (const auto* s = inv.registry.by_id(id)) {
        it->second = compatibility::properties_digest(compatibility::compared_properties_key(s->profile));
      }
    }
    return it->second;
  };
  // The WPARs of each group placed on a system, with their samples, in the
  // inventory's (name) order.
  std::vector<std::pair<size_t, const inventory::WparRecord*>> placed;
  placed.reserve(inv.wpars.size());
  std::vector<size_t> counts(groups.size());
  const std::string* last_group = nullptr;  // WPARs named after their group come one after another
  size_t last_index = SIZE_MAX;
  for (const auto& [name, w] : inv.wpars) {
    if (w.wpar.system.empty()) continue;
    if (last_group == nullptr || *last_group != w.wpar.group) {
      auto i = group_index.find(w.wpar.group);
      last_group = &w.wpar.group;
      last_index = i == group_index.end() ? SIZE_MAX : i->second;
    }
    if (last_index == SIZE_MAX) continue;
    placed.emplace_back(last_index, &w);
    ++counts[last_index];
  }
  for (size_t i = 0; i < groups.size(); ++i) groups[i].wpars.reserve(counts[i]);
  for (const auto& [index, record] : placed) {
    const auto& w = record->wpar;
    GroupInput& g = groups[index];
    const SystemMap& systems = systems_for(g.policy.period_s);
    // Only what its own system reported (a stale copy elsewhere says nothing of it).
    auto summary = samples.wpar(w.name, w.system, at_s - g.policy.period_s, at_s);
    WparInput in{w.name, w.system, to_values(summary, false), to_values(summary, true),
                 w.checkpointable && w.reported_state == "A", !x.busy.empty() && x.busy.contains(w.name), 0};
    in.host = systems.find(w.system);
    if (!moved.empty()) {
      if (auto m = moved.find(w.name); m != moved.end()) in.moved_ns = m->second;
    }
    if (!relocating.empty() && relocating.contains(w.name)) g.in_flight = true;
    g.wpars.push_back(std::move(in));
  }
  out.reserve(groups.size());
  TargetRankings rankings;
  for (auto& g : groups) {
    const GroupPolicy& p = g.policy;
    g.domain_cap = domain_cap;
    g.domain_relocations = domain_running[p.domain];
    if (auto memo = memos.find(g.group); memo != memos.end()) {
      g.streak = memo->second.streak;
      g.streak_trigger = memo->second.trigger;
      g.in_flight = g.in_flight || memo->second.pending_until_ns > at_ns;
    }
    const auto& tests = p.optional_tests;
    CompatibleFn compatible = [&](const std::string& from, const std::string& to) {
      const std::string& a = digest(from);
      const std::string& b = digest(to);
      if (a.empty() || b.empty()) return false;
      if (a == b) return true;
      auto it = x.compat.find({a, b});
      if (it == x.compat.end()) return false;  // Pending
      for (const auto& r : it->second) {
        auto test = compatibility::test_from_name(r.test);
        bool counts = test && (compatibility::is_critical(*test) ||
                               std::find(tests.begin(), tests.end(), r.test) != tests.end());
        if (!r.passed && counts) return false;
      }
      return true;
    };
    Evaluation e = evaluate(g, systems_for(p.period_s), compatible, at_ns, &rankings);
    for (auto& w : g.wpars) w.host = nullptr;  // the systems it points into end with this pass
    out.push_back(Evaluated{std::move(g), std::move(e)});
  }
  return out;
}

std::vector<Evaluated> PolicyService::evaluate_groups(int64_t at_ns, const std::string* only,
                                                      int64_t* interval_ns) const {
  std::vector<Evaluated> out;
  int64_t keep_s = 0;
  std::map<std::string, GroupMemo> memos;
  {
    std::lock_guard lock(mutex_);
    memos = memos_;
  }
  executor_.read([&](const executor::Executor& x) {
    inventory_.read([&](const inventory::Inventory& inv) {
      if (interval_ns != nullptr) {
        *interval_ns = inventory::parse_duration_ns(inv.setting("policy.interval")).value_or(60'000'000'000);
      }
      SampleWindows::Reader samples(*windows_, only == nullptr);
      out = evaluate_pass(inv, x, samples, memos, at_ns, only, {}, *logger_, &keep_s, policies_);
    });
  });
  // After the reader let go of the windows; only a whole pass knows the longest period in use.
  if (keep_s > 0 && only == nullptr) windows_->keep(keep_s, at_ns / 1'000'000'000);
  return out;
}

int64_t next_pass_ns(int64_t last_ns, int64_t interval_ns) { return (last_ns / interval_ns + 1) * interval_ns; }

PassOutcome conclude_pass(std::vector<Evaluated>& evaluated, std::map<std::string, GroupMemo>& memos, int64_t at_ns,
                          int64_t interval_ns, const std::function<bool(const Evaluated&)>& record,
                          std::map<std::string, uint64_t>& reasons) {
  PassOutcome outcome;
  outcome.at_ns = at_ns;
  outcome.groups = evaluated.size();
  std::map<std::string, int> asked_in_domain;  // moves this pass asked for, per domain
  for (auto& ev : evaluated) {
    outcome.wpars += ev.input.wpars.size();
    auto& e = ev.evaluation;
    auto& memo = memos[ev.input.group];
    bool acted = false;
    const bool records = ev.input.policy.automation != Automation::kRecommend;
    if (e.reason == Reason::kMove && records &&
        ev.input.domain_relocations + asked_in_domain[ev.input.policy.domain] >= ev.input.domain_cap) {
      // The domain's cap counts what this pass asked for already.
      e.reason = Reason::kDomainCap;
      e.move.reset();
    }
    if (e.reason == Reason::kMove && e.move) {
      if (!records) {
        ++outcome.recommended;
        acted = true;
        memo.recommendation = {{"atNs", at_ns}, {"wpar", e.move->wpar}, {"from", e.move->from},
                               {"to", e.move->to}, {"explanation", e.explanation}};
      } else if (record(ev)) {
        ++outcome.moves;
        ++asked_in_domain[ev.input.policy.domain];
        acted = true;
        // In flight until the executor holds its task (two intervals at most).
        memo.pending_until_ns = at_ns + 2 * interval_ns;
      }
    }
    memo.figures = GroupMemo::Figures{e.group_state, ev.input.policy.max, ev.input.policy.min};
    memo.evaluated_ns = at_ns;
    // Re-analysed after each mobility event: the streak starts again.
    memo.trigger = acted ? "" : e.trigger;
    memo.streak = acted ? 0 : e.streak;
    ++reasons[std::string(reason_name(e.reason))];
  }
  return outcome;
}

PassOutcome PolicyService::pass(int64_t at_ns) {
  auto t0 = std::chrono::steady_clock::now();
  int64_t interval = 60'000'000'000;
  auto evaluated = evaluate_groups(at_ns, nullptr, &interval);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::map<std::string, GroupMemo> memos;
  {
    std::lock_guard lock(mutex_);
    interval_ns_ = interval;
    memos = memos_;
  }
  std::map<std::string, uint64_t> reasons;
  auto record = [&](const Evaluated& ev) {
    int64_t watermark = 0;
    for (const auto& w : ev.input.wpars) {
      if (auto s = windows_->wpar(w.name, w.system, at_ns / 1'000'000'000 - ev.input.policy.period_s,
                                  at_ns / 1'000'000'000)) {
        watermark = std::max(watermark, s->newest_s);
      }
    }
    auto r = record_move(ev, at_ns, watermark);
    if (!r) {
      logger_->warn("policy_move_not_recorded group={} wpar={} error=\"{}\"", ev.input.group,
                    ev.evaluation.move->wpar, r.error().message);
    }
    return r.has_value();
  };
  PassOutcome outcome = conclude_pass(evaluated, memos, at_ns, interval, record, reasons);
  outcome.ms = ms;
  std::lock_guard lock(mutex_);
  memos_ = std::move(memos);
  for (const auto& [reason, n] : reasons) stats_.reasons[reason] += n;
  ++stats_.passes;
  stats_.moves += outcome.moves;
  stats_.recommended += outcome.recommended;
  stats_.last = outcome;
  return outcome;
}

Result<void> PolicyService::record_move(const Evaluated& ev, int64_t at_ns, int64_t watermark_s) {
  const auto& e = ev.evaluation;
  const auto& p = ev.input.policy;
  std::string id = fmt::format("policy-{}-{}", ev.input.group, at_ns / 1'000'000'000);
  json args = {{"name", e.move->wpar}, {"to", e.move->to}, {"reason", e.explanation}};
  if (p.automation == Automation::kApprove) args["approval"] = fmt::format("{}s", p.approval_s);
  AppendRequest r;
  r.idempotency_key = "policy/" + id;  // the same pass again (a restart) records nothing twice
  r.expectations.push_back(StreamExpectation{"command/" + id, ExpectKind::kNoStream, 0});
  r.events.push_back(EventDraft{"command/" + id, id, "", "",
                                CommandRequested{"wpar.relocate", args.dump(), "service:policy", {}, ""}});
  r.events.push_back(EventDraft{"policy/" + ev.input.group, id, "", "",
                                MobilityDecided{ev.input.group, e.move->wpar, e.move->from, e.move->to, e.trigger,
                                                std::string(automation_name(p.automation)), id, e.explanation,
                                                e.inputs.dump(), watermark_s}});
  auto appended = log_.append(r);
  if (!appended && appended.error().code != ErrorCode::kWrongExpectedVersion) return std::unexpected(appended.error());
  logger_->info("policy_move group={} wpar={} from={} to={} trigger={} automation={} command={}", ev.input.group,
                e.move->wpar, e.move->from, e.move->to, e.trigger, automation_name(p.automation), id);
  return {};
}

Result<json> PolicyService::explain(const std::string& group) const {
  bool known = false;
  inventory_.read([&](const inventory::Inventory& inv) { known = inv.groups.contains(group); });
  if (!known) return fail(ErrorCode::kNotFound, fmt::format("no WPAR group '{}' (wpm group list)", group));
  int64_t now = clock_.wall_ns();
  auto evaluated = evaluate_groups(now, &group, nullptr);
  if (evaluated.empty()) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("group {}'s stored policy is unreadable; set it again", group));
  }
  json j = evaluation_json(evaluated[0].input, evaluated[0].evaluation);
  j["atNs"] = now;
  std::lock_guard lock(mutex_);
  if (auto m = memos_.find(group); m != memos_.end()) {
    j["lastRecommendation"] = m->second.recommendation;
    j["pendingUntilNs"] = m->second.pending_until_ns;
  }
  return j;
}

std::map<std::string, PolicyService::GroupFigures> PolicyService::group_figures() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, GroupFigures> out;
  for (const auto& [name, m] : memos_) {
    if (m.evaluated_ns != 0 && m.evaluated_ns == stats_.last.at_ns) out[name] = m.figures;
  }
  return out;
}

PolicyStats PolicyService::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void PolicyService::run(std::atomic<bool>& stop) {
  int64_t interval = 60'000'000'000;
  auto read_interval = [&] {
    inventory_.read([&](const inventory::Inventory& inv) {
      interval = inventory::parse_duration_ns(inv.setting("policy.interval")).value_or(interval);
    });
  };
  read_interval();
  int64_t last = clock_.wall_ns() / interval * interval;  // the grid time before the first pass
  int64_t at = next_pass_ns(last, interval);
  while (!stop.load()) {
    for (int waits = 1; !stop.load() && clock_.wall_ns() < at + kPassSlackNs; ++waits) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      // A changed interval applies at once: the next time on its grid after the last pass.
      if (waits % 10 == 0) {
        int64_t before = interval;
        read_interval();
        if (interval != before) {
          at = std::max(next_pass_ns(last, interval), (clock_.wall_ns() - kPassSlackNs) / interval * interval);
        }
      }
    }
    if (stop.load()) return;
    last = at;
    auto outcome = pass(at);
    if (outcome.groups > 0) {
      logger_->debug("policy_pass groups={} wpars={} moves={} recommended={} ms={:.1f}", outcome.groups,
                     outcome.wpars, outcome.moves, outcome.recommended, outcome.ms);
    }
    read_interval();
    // Every grid time, each run once its slack has passed (the simulation
    // runs the same ones); after a stall, the newest one due, not every one missed.
    at = std::max(next_pass_ns(last, interval), (clock_.wall_ns() - kPassSlackNs) / interval * interval);
  }
}

}  // namespace wpm::policy
