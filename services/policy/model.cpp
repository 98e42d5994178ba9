#include "services/policy/model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <sstream>
#include <unordered_map>

namespace wpm::policy {
namespace {

using nlohmann::json;
using metrics::Metric;

// Targets a move's explanation lists, best first; and WPARs of its group.
constexpr size_t kTargetsShown = 10;
constexpr size_t kWparsShown = 50;

std::optional<int64_t> duration_s(const json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (!v.is_string()) return std::nullopt;
  return metrics::parse_duration_s(v.get<std::string>());
}

std::optional<double> number(std::string_view text) {
  std::string s(text);
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

const metrics::MetricInfo& info(Metric m) { return metrics::metric_info(m); }

json metric_json(const MetricSetting& m) {
  json j = {{"metric", info(m.metric).name},
            {"weight", m.weight},
            {"limit", m.limit},
            {"multiplier", m.multiplier},
            {"critical", m.critical}};
  j["max"] = m.max ? json(*m.max) : json(nullptr);
  j["min"] = m.min ? json(*m.min) : json(nullptr);
  return j;
}

std::string pct(double v) { return fmt::format("{:.1f}%", v); }

}  // namespace

std::string_view automation_name(Automation a) {
  switch (a) {
    case Automation::kRecommend: return "recommend";
    case Automation::kApprove: return "approve";
    case Automation::kAutomatic: return "automatic";
  }
  return "recommend";
}

std::optional<Automation> automation_from_name(std::string_view name) {
  for (auto a : {Automation::kRecommend, Automation::kApprove, Automation::kAutomatic}) {
    if (automation_name(a) == name) return a;
  }
  return std::nullopt;
}

std::string_view reason_name(Reason r) {
  switch (r) {
    case Reason::kDisabled: return "disabled";
    case Reason::kNoData: return "no-samples";
    case Reason::kWithin: return "within-thresholds";
    case Reason::kTriggerCount: return "trigger-count-not-reached";
    case Reason::kInFlight: return "mobility-event-in-flight";
    case Reason::kDomainCap: return "domain-cap";
    case Reason::kNoMobileWpar: return "no-mobile-wpar";
    case Reason::kNoTarget: return "no-compatible-target";
    case Reason::kBelowGain: return "below-minimum-gain";
    case Reason::kOverMax: return "target-over-maximum";
    case Reason::kMove: return "move";
  }
  return "unknown";
}

// ---- settings ---------------------------------------------------------------

std::optional<std::string> validate(const GroupPolicy& p) {
  if (!(p.min >= 0 && p.max <= 100 && p.min < p.max)) {
    return fmt::format("the thresholds must satisfy 0 ≤ min < max ≤ 100 (min {}, max {})", p.min, p.max);
  }
  if (p.period_s < 10 || p.period_s > 86'400) return "the averaging period must be from 10s to 24h";
  if (p.trigger_count < 1 || p.trigger_count > 1000) return "the trigger count must be from 1 to 1000";
  if (p.cooldown_s < 0 || p.cooldown_s > 7 * 86'400) return "the cooldown must be from 0s to 7d";
  if (p.min_gain < 0 || p.min_gain > 100) return "the minimum gain must be from 0 to 100 (% points)";
  if (p.approval_s < 60 || p.approval_s > 7 * 86'400) return "the approval time must be from 1m to 7d";
  if (p.domain.empty()) return "the relocation domain must be named";
  if (p.metrics.empty()) return "a policy needs at least one metric";
  bool positive = false;
  for (size_t i = 0; i < p.metrics.size(); ++i) {
    const auto& m = p.metrics[i];
    const auto& mi = info(m.metric);
    for (size_t j = 0; j < i; ++j) {
      if (p.metrics[j].metric == m.metric) return fmt::format("metric {} is set twice", mi.name);
    }
    // seed "Metric policy settings": weights ≥ 0, at least one > 0; the
    // limit of a utilisation metric cannot change from 1.
    if (!(m.weight >= 0)) return fmt::format("metric {}: the weight {} must be ≥ 0", mi.name, m.weight);
    positive = positive || m.weight > 0;
    if (mi.utilisation && m.limit != 1) {
      return fmt::format("metric {} is a utilisation metric: its limit is fixed at 1 (given {})", mi.name, m.limit);
    }
    if (!(m.limit > 0)) return fmt::format("metric {}: the limit {} must be > 0", mi.name, m.limit);
    if (!(m.multiplier > 0)) return fmt::format("metric {}: the multiplier {} must be > 0", mi.name, m.multiplier);
    if (m.max && m.min && !(*m.min < *m.max)) {
      return fmt::format("metric {}: its min {} must be below its max {}", mi.name, *m.min, *m.max);
    }
    if (m.critical && !m.max && !m.min) return fmt::format("metric {} is critical but has no max or min", mi.name);
  }
  if (!positive) return "at least one metric needs a weight above 0 (seed: all weights 0 make the state always 0)";
  return std::nullopt;
}

json to_json(const GroupPolicy& p) {
  json metrics_j = json::array();
  for (const auto& m : p.metrics) metrics_j.push_back(metric_json(m));
  return {{"enabled", p.enabled},         {"automation", automation_name(p.automation)},
          {"max", p.max},                 {"min", p.min},
          {"periodS", p.period_s},        {"triggerCount", p.trigger_count},
          {"cooldownS", p.cooldown_s},    {"minGain", p.min_gain},
          {"domain", p.domain},           {"optionalTests", p.optional_tests},
          {"approvalS", p.approval_s},    {"metrics", std::move(metrics_j)}};
}

std::expected<GroupPolicy, std::string> policy_from_json(const json& j) {
  try {
    GroupPolicy p;
    p.enabled = j.at("enabled").get<bool>();
    auto a = automation_from_name(j.at("automation").get<std::string>());
    if (!a) return std::unexpected("unknown automation " + j.at("automation").dump());
    p.automation = *a;
    p.max = j.at("max").get<double>();
    p.min = j.at("min").get<double>();
    p.period_s = j.at("periodS").get<int64_t>();
    p.trigger_count = j.at("triggerCount").get<int>();
    p.cooldown_s = j.at("cooldownS").get<int64_t>();
    p.min_gain = j.at("minGain").get<double>();
    p.domain = j.at("domain").get<std::string>();
    p.optional_tests = j.at("optionalTests").get<std::vector<std::string>>();
    p.approval_s = j.value("approvalS", int64_t{3600});
    p.metrics.clear();
    for (const auto& m : j.at("metrics")) {
      auto id = metrics::metric_by_name(m.at("metric").get<std::string>());
      if (!id) return std::unexpected("unknown metric " + m.at("metric").dump());
      MetricSetting s{*id, m.at("weight").get<double>(), m.at("limit").get<double>(), m.at("multiplier").get<double>(),
                      {}, {}, m.value("critical", false)};
      if (m.contains("max") && m["max"].is_number()) s.max = m["max"].get<double>();
      if (m.contains("min") && m["min"].is_number()) s.min = m["min"].get<double>();
      p.metrics.push_back(s);
    }
    if (auto problem = validate(p)) return std::unexpected(*problem);
    return p;
  } catch (const json::exception& e) {
    return std::unexpected(fmt::format("the stored policy is unreadable: {}", e.what()));
  }
}

std::expected<MetricSetting, std::string> parse_metric_setting(std::string_view text) {
  auto colon = text.find(':');
  std::string_view name = text.substr(0, colon);
  auto id = metrics::metric_by_name(name);
  if (!id) {
    std::vector<std::string_view> names;
    for (const auto& m : metrics::metric_infos()) names.push_back(m.name);
    return std::unexpected(fmt::format("no metric '{}'; the metrics are {}", name, fmt::join(names, ", ")));
  }
  MetricSetting s{*id, 1, 1, 1, {}, {}, false};
  if (colon == std::string_view::npos) return s;
  std::string_view rest = text.substr(colon + 1);
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (item == "critical") {
      s.critical = true;
      continue;
    }
    auto eq = item.find('=');
    auto v = eq == std::string_view::npos ? std::nullopt : number(item.substr(eq + 1));
    std::string_view key = item.substr(0, eq);
    if (!v) return std::unexpected(fmt::format("'{}' in --metric {} must be KEY=NUMBER or critical", item, text));
    if (key == "weight") s.weight = *v;
    else if (key == "limit") s.limit = *v;
    else if (key == "multiplier") s.multiplier = *v;
    else if (key == "max") s.max = *v;
    else if (key == "min") s.min = *v;
    else return std::unexpected(fmt::format("unknown key '{}' in --metric {} (weight, limit, multiplier, max, min, critical)", key, text));
  }
  return s;
}

std::expected<GroupPolicy, std::string> apply_changes(GroupPolicy p, const json& args) {
  for (const auto& [key, v] : args.items()) {
    if (key == "name") continue;
    if (key == "enabled") {
      if (!v.is_boolean()) return std::unexpected("enabled must be true or false");
      p.enabled = v.get<bool>();
    } else if (key == "automation") {
      auto a = v.is_string() ? automation_from_name(v.get<std::string>()) : std::nullopt;
      if (!a) return std::unexpected("automation must be recommend, approve or automatic");
      p.automation = *a;
    } else if (key == "max" || key == "min" || key == "minGain") {
      if (!v.is_number()) return std::unexpected(fmt::format("{} must be a number (percent)", key));
      (key == "max" ? p.max : key == "min" ? p.min : p.min_gain) = v.get<double>();
    } else if (key == "period" || key == "cooldown" || key == "approval") {
      auto s = duration_s(v);
      if (!s) return std::unexpected(fmt::format("{} must be a duration such as 90s, 15m or 2h", key));
      (key == "period" ? p.period_s : key == "cooldown" ? p.cooldown_s : p.approval_s) = *s;
    } else if (key == "triggerCount") {
      if (!v.is_number_integer()) return std::unexpected("triggerCount must be a whole number");
      p.trigger_count = v.get<int>();
    } else if (key == "domain") {
      if (!v.is_string()) return std::unexpected("domain must be a relocation domain's name");
      p.domain = v.get<std::string>();
    } else if (key == "optionalTests") {
      if (!v.is_array()) return std::unexpected("optionalTests must be a list of test names");
      p.optional_tests.clear();
      for (const auto& t : v) {
        if (!t.is_string()) return std::unexpected("optionalTests must be a list of test names");
        p.optional_tests.push_back(t.get<std::string>());
      }
    } else if (key == "metrics") {
      if (!v.is_array() || v.empty()) return std::unexpected("metrics must list at least one NAME:weight=W,…");
      p.metrics.clear();
      for (const auto& m : v) {
        if (!m.is_string()) return std::unexpected("each metric is NAME:weight=W[,limit=L]…");
        auto s = parse_metric_setting(m.get<std::string>());
        if (!s) return std::unexpected(s.error());
        p.metrics.push_back(*s);
      }
    } else {
      return std::unexpected(fmt::format("unknown policy setting '{}'", key));
    }
  }
  if (auto problem = validate(p)) return std::unexpected(*problem);
  return p;
}

// ---- formulas ---------------------------------------------------------------

double effective_utilisation(double wpar, double host) {
  // seed "Policy tuning": (WPAR utilisation) / (1 − (LPAR utilisation − WPAR utilisation)).
  double others = host - wpar;
  if (others >= 1) return 1;  // the rest of the host leaves nothing: fully constrained
  double e = wpar / (1 - std::max(0.0, others));
  return std::clamp(e, 0.0, 1.0);
}

double normalised(const MetricSetting& s, double value, double host, int rank) {
  if (info(s.metric).utilisation) return 100 * effective_utilisation(value / 100, host / 100);
  double limit = s.limit * std::pow(s.multiplier, rank);
  return 100 * value / limit;
}

namespace {
double weighted(const std::vector<MetricSetting>& settings, const std::optional<double>* values, size_t count) {
  double sum = 0, weights = 0;
  for (size_t i = 0; i < settings.size() && i < count; ++i) {
    if (!values[i]) continue;
    sum += settings[i].weight * *values[i];
    weights += settings[i].weight;
  }
  return weights > 0 ? sum / weights : 0;
}
}  // namespace

double weighted_state(const std::vector<MetricSetting>& settings, const std::vector<std::optional<double>>& values) {
  return weighted(settings, values.data(), values.size());
}

// ---- evaluation ---------------------------------------------------------------

void SystemMap::reserve(size_t n) {
  systems_.reserve(n);
  if (slots_.size() < 2 * n) rehash(std::bit_ceil(std::max<size_t>(16, 2 * n)));
}

void SystemMap::rehash(size_t slots) {
  slots_.assign(slots, 0);
  for (size_t i = 0; i < systems_.size(); ++i) {
    const uint64_t h = std::hash<std::string_view>{}(systems_[i].id);
    for (size_t s = h & (slots - 1);; s = (s + 1) & (slots - 1)) {
      if (slots_[s] == 0) {
        slots_[s] = (h >> 32 << 32) | (i + 1);
        break;
      }
    }
  }
}

const SystemInput* SystemMap::find(std::string_view id) const {
  if (slots_.empty()) return nullptr;
  const uint64_t h = std::hash<std::string_view>{}(id);
  const size_t mask = slots_.size() - 1;
  for (size_t s = h & mask;; s = (s + 1) & mask) {  // bounded: at most half the slots are used
    const uint64_t slot = slots_[s];
    if (slot == 0) return nullptr;
    if ((slot >> 32) == (h >> 32)) {
      const SystemInput& system = systems_[(slot & 0xffffffffu) - 1];
      if (system.id == id) return &system;
    }
  }
}

SystemInput& SystemMap::operator[](const std::string& id) {
  if (const SystemInput* s = find(id)) return const_cast<SystemInput&>(*s);
  systems_.push_back(SystemInput{});
  systems_.back().id = id;
  if (slots_.size() < 2 * systems_.size()) {
    rehash(std::bit_ceil(std::max<size_t>(16, 4 * systems_.size())));
  } else {
    const uint64_t h = std::hash<std::string_view>{}(id);
    for (size_t s = h & (slots_.size() - 1);; s = (s + 1) & (slots_.size() - 1)) {
      if (slots_[s] == 0) {
        slots_[s] = (h >> 32 << 32) | systems_.size();
        break;
      }
    }
  }
  return systems_.back();
}

namespace {

// How full a host is, and how much a WPAR adds to one: the utilisation
// metrics of the policy (CPU, memory) weighted as the policy weighs them;
// rate metrics say how busy a WPAR is, not how full its host is. A policy
// of rate metrics only is judged by CPU.
struct Fullness {
  std::vector<std::pair<Metric, double>> weights;
  explicit Fullness(const GroupPolicy& p) {
    for (const auto& m : p.metrics) {
      if (info(m.metric).utilisation && m.weight > 0) weights.emplace_back(m.metric, m.weight);
    }
    if (weights.empty()) weights.emplace_back(Metric::kCpu, 1);
  }
  std::optional<double> of(const Values& v) const {
    double sum = 0, w = 0;
    for (auto [m, weight] : weights) {
      if (!v[static_cast<size_t>(m)]) continue;
      sum += weight * *v[static_cast<size_t>(m)];
      w += weight;
    }
    if (w == 0) return std::nullopt;
    return sum / w;
  }
};

json values_json(const Values& v) {
  json j = json::object();
  for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) {
    if (v[m]) j[info(static_cast<Metric>(m)).name] = *v[m];
  }
  return j;
}

// The WPAR's system in `systems`, or null.
const SystemInput* system_of(const WparInput& w, const SystemMap& systems) {
  return w.host != nullptr ? w.host : systems.find(w.system);
}

struct StateOutcome {
  double average = 0;
  double state = 0;
  std::string note;
  std::vector<std::optional<double>> wpar_states;  // of GroupInput::wpars
  bool any = false;
};

// seed "Group averaging" and "Metric policy settings": the group state is
// the average of its WPARs' states; a metric above its maximum raises it to
// that metric's value (when lower), one below its minimum lowers it.
StateOutcome group_state(const GroupInput& g, const SystemMap& systems) {
  StateOutcome out;
  out.wpar_states.resize(g.wpars.size());
  std::vector<std::optional<double>> norm(g.policy.metrics.size());
  std::optional<double> raise, lower;
  std::string raise_note, lower_note;
  double sum = 0;
  int n = 0;
  for (size_t i = 0; i < g.wpars.size(); ++i) {
    const WparInput& w = g.wpars[i];
    const SystemInput* sys = system_of(w, systems);
    if (sys == nullptr) continue;
    bool any = false;
    for (size_t k = 0; k < g.policy.metrics.size(); ++k) {
      const MetricSetting& s = g.policy.metrics[k];
      auto idx = static_cast<size_t>(s.metric);
      norm[k].reset();
      if (!w.average[idx]) continue;
      double host = sys->average[idx].value_or(*w.average[idx]);
      double v = normalised(s, *w.average[idx], host, sys->rank);
      norm[k] = v;
      any = true;
      if (s.max && v > *s.max && (!raise || v > *raise)) {
        raise = v;
        raise_note = fmt::format("{} of {} is {} (above its maximum {}%)", info(s.metric).name, w.name, pct(v), *s.max);
      }
      if (s.min && v < *s.min && (!lower || v < *lower)) {
        lower = v;
        lower_note = fmt::format("{} of {} is {} (below its minimum {}%)", info(s.metric).name, w.name, pct(v), *s.min);
      }
    }
    if (!any) continue;
    double state = weighted(g.policy.metrics, norm.data(), norm.size());
    out.wpar_states[i] = state;
    sum += state;
    ++n;
  }
  out.any = n > 0;
  out.average = n > 0 ? sum / n : 0;
  out.state = out.average;
  if (raise && out.state < *raise) {
    out.state = *raise;
    out.note = "raised: " + raise_note;
  } else if (lower && out.state > *lower) {
    out.state = *lower;
    out.note = "lowered: " + lower_note;
  }
  return out;
}

// A WPAR with a critical metric out of its range, on its newest sample.
std::optional<std::pair<const WparInput*, std::string>> critical_wpar(const GroupInput& g, const SystemMap& systems) {
  if (std::none_of(g.policy.metrics.begin(), g.policy.metrics.end(), [](const auto& s) { return s.critical; })) {
    return std::nullopt;
  }
  for (const auto& w : g.wpars) {
    const SystemInput* sys = system_of(w, systems);
    if (sys == nullptr) continue;
    for (const auto& s : g.policy.metrics) {
      auto idx = static_cast<size_t>(s.metric);
      if (!s.critical || !w.latest[idx]) continue;
      double host = sys->average[idx].value_or(*w.latest[idx]);
      double v = normalised(s, *w.latest[idx], host, sys->rank);
      if ((s.max && v > *s.max) || (s.min && v < *s.min)) {
        return std::pair{&w, fmt::format("critical metric {} of {} is {}, outside [{}, {}]", info(s.metric).name,
                                         w.name, pct(v), s.min ? pct(*s.min) : "-", s.max ? pct(*s.max) : "-")};
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::vector<Target>* TargetRankings::find(const Key& key) {
  auto it = rankings_.find(key);
  return it == rankings_.end() ? nullptr : &it->second;
}

std::vector<Target>& TargetRankings::add(Key key, std::vector<Target> ranking) {
  return rankings_.insert_or_assign(std::move(key), std::move(ranking)).first->second;
}

Evaluation evaluate(const GroupInput& g, const SystemMap& systems, const CompatibleFn& compatible, int64_t now_ns,
                    TargetRankings* rankings) {
  Evaluation e;
  const GroupPolicy& p = g.policy;
  auto finish = [&](Reason r, std::string why) {
    e.reason = r;
    e.explanation = std::move(why);
    return e;
  };
  auto states = group_state(g, systems);
  e.wpar_states = std::move(states.wpar_states);
  e.average_state = states.average;
  e.group_state = states.state;
  e.override_note = states.note;
  // The states are shown (wpm group state) whether or not the policy acts.
  if (!p.enabled) return finish(Reason::kDisabled, "the group's policy is not enabled (wpm group policy set G --enabled true)");
  auto critical = critical_wpar(g, systems);
  if (!states.any && !critical) {
    return finish(Reason::kNoData, fmt::format("no WPAR of the group has metric samples in the last {} s", p.period_s));
  }
  // The trigger, and how many passes in a row have seen it.
  e.trigger = critical ? "critical" : e.group_state > p.max ? "hot" : e.group_state < p.min ? "cold" : "";
  e.streak = e.trigger.empty() ? 0 : (e.trigger == g.streak_trigger ? g.streak + 1 : 1);
  std::string state_text = fmt::format("group state {} (thresholds {}–{}){}", pct(e.group_state), pct(p.min),
                                       pct(p.max), e.override_note.empty() ? "" : "; " + e.override_note);
  if (e.trigger.empty()) return finish(Reason::kWithin, state_text + ": within its thresholds");
  if (!critical && e.streak < p.trigger_count) {
    return finish(Reason::kTriggerCount, fmt::format("{}: {} for {} pass(es) in a row, {} needed (trigger count)",
                                                     state_text, e.trigger, e.streak, p.trigger_count));
  }
  std::string trigger_text = critical ? critical->second : fmt::format("{}: {}", state_text, e.trigger);
  // seed: one mobility event at a time per group, re-analysed after each.
  if (g.in_flight) return finish(Reason::kInFlight, trigger_text + "; a mobility event of this group runs or waits");
  if (g.domain_relocations >= g.domain_cap) {
    return finish(Reason::kDomainCap, fmt::format("{}; domain {} has {} relocation(s) running, its cap is {}",
                                                  trigger_text, p.domain, g.domain_relocations, g.domain_cap));
  }

  Fullness fullness(p);
  auto host_state = [&](const std::string& id) -> std::optional<double> {
    const SystemInput* s = systems.find(id);
    return s == nullptr ? std::nullopt : fullness.of(s->average);
  };
  // Targets: Online, analysed, in the domain, ranked by their state now,
  // then hardware profile (larger first), then name: a WPAR adds the same
  // to each, so this is also their ranking by projected state. Ranked once
  // (when a WPAR may move); each departure walks the ranking for the
  // targets compatible in that direction that it needs.
  const std::vector<Target>* ranked_targets = nullptr;
  std::vector<Target> own_ranking;
  auto rank_targets = [&] {
    TargetRankings::Key key{&systems, p.domain, {}};
    for (auto [m, w] : fullness.weights) std::get<2>(key).emplace_back(static_cast<int>(m), w);
    if (rankings != nullptr) {
      if ((ranked_targets = rankings->find(key)) != nullptr) return;
    }
    std::vector<std::pair<Target, int>> with_rank;
    for (const SystemInput& s : systems) {
      if (s.domain != p.domain || s.state != "online" || !s.analysed) continue;
      if (auto before = fullness.of(s.average)) with_rank.push_back({Target{s.id, *before, *before, false}, s.rank});
    }
    std::sort(with_rank.begin(), with_rank.end(), [](const auto& a, const auto& b) {
      if (a.first.state_before != b.first.state_before) return a.first.state_before < b.first.state_before;
      if (a.second != b.second) return a.second > b.second;
      return a.first.system < b.first.system;
    });
    std::vector<Target> ranking;
    ranking.reserve(with_rank.size());
    for (auto& [t, rank] : with_rank) ranking.push_back(std::move(t));
    if (rankings != nullptr) {
      ranked_targets = &rankings->add(std::move(key), std::move(ranking));
    } else {
      own_ranking = std::move(ranking);
      ranked_targets = &own_ranking;
    }
  };
  std::unordered_map<std::string, std::vector<int8_t>> compatibility_from;  // departure → per ranked target
  struct Choice {
    std::vector<Target> shown;    // the first compatible targets, best first
    std::optional<Target> chosen;  // hot: the best; cold: the busiest that fits with min_gain to spare
  };
  auto targets_for = [&](const WparInput& w, bool cold) {
    Choice c;
    auto adds = fullness.of(w.average);
    if (!adds) return c;
    if (ranked_targets == nullptr) rank_targets();
    auto projected = [&](Target t) {
      t.state_after = t.state_before + *adds;
      t.fits = t.state_after <= p.max;
      return t;
    };
    // Whether each target of the ranking is compatible from this departure,
    // asked once per departure (its WPARs walk the same ranking).
    auto& known = compatibility_from[w.system];
    if (known.empty()) known.assign(ranked_targets->size(), -1);
    auto usable = [&](size_t i) {
      const Target& t = (*ranked_targets)[i];
      if (known[i] < 0) known[i] = t.system != w.system && compatible(w.system, t.system) ? 1 : 0;
      return known[i] == 1;
    };
    for (size_t i = 0; i < ranked_targets->size() && c.shown.size() < kTargetsShown; ++i) {
      if (usable(i)) c.shown.push_back(projected((*ranked_targets)[i]));
    }
    if (c.shown.empty()) return c;
    if (!cold) {
      c.chosen = c.shown.front();
      return c;
    }
    for (size_t i = ranked_targets->size(); i-- > 0;) {
      const Target& t = (*ranked_targets)[i];
      if (t.state_before + *adds + p.min_gain <= p.max && usable(i)) {
        c.chosen = projected(t);
        break;
      }
    }
    return c;
  };
  auto movable = [&](const WparInput& w) {
    return w.mobile && !w.busy && (w.moved_ns == 0 || now_ns - w.moved_ns >= p.cooldown_s * 1'000'000'000);
  };

  std::vector<const WparInput*> candidates;
  if (critical) {
    candidates.push_back(critical->first);
  } else {
    for (const auto& w : g.wpars) candidates.push_back(&w);
  }
  int not_movable = 0, without_target = 0, below_gain = 0, over_max = 0;
  std::optional<Move> best;
  // A cold group consolidates: from the least-loaded system hosting one of
  // its WPARs, onto the busiest target that stays below the maximum.
  std::string coldest;
  if (e.trigger == "cold") {
    double lowest = 1e300;
    for (const auto* w : candidates) {
      auto s = host_state(w->system);
      if (movable(*w) && s && *s < lowest) lowest = *s, coldest = w->system;
    }
  }
  for (const auto* w : candidates) {
    if (!movable(*w)) {
      ++not_movable;
      continue;
    }
    if (e.trigger == "cold" && w->system != coldest) continue;
    auto source = host_state(w->system);
    const bool cold = e.trigger == "cold";
    auto choice = targets_for(*w, cold);
    if (choice.shown.empty() || !source) {
      ++without_target;
      continue;
    }
    if (!choice.chosen || (!cold && !choice.chosen->fits)) {  // cold: none fits with the margin
      ++over_max;
      continue;
    }
    const Target& chosen = *choice.chosen;
    double gain = cold ? p.max - chosen.state_after : *source - chosen.state_after;
    if (e.trigger == "hot" && gain < p.min_gain) {
      ++below_gain;
      continue;
    }
    Move m{w->name, w->system, chosen.system, *source, chosen.state_after, gain, std::move(choice.shown)};
    if (!best || m.gain > best->gain || (m.gain == best->gain && m.wpar < best->wpar)) best = std::move(m);
  }
  if (!best) {
    if (not_movable == static_cast<int>(candidates.size())) {
      return finish(Reason::kNoMobileWpar,
                    trigger_text + "; no WPAR can move (not checkpointable and active, a task running, or within its "
                                   "cooldown of " + std::to_string(p.cooldown_s) + " s)");
    }
    if (below_gain > 0 && over_max == 0) {
      return finish(Reason::kBelowGain, fmt::format("{}; no move gains the minimum of {} points", trigger_text, p.min_gain));
    }
    if (over_max > 0) {
      return finish(Reason::kOverMax, fmt::format("{}; every target would pass the group's maximum of {}", trigger_text,
                                                  pct(p.max)));
    }
    return finish(Reason::kNoTarget, fmt::format("{}; no Online, analysed, compatible target in domain {}",
                                                 trigger_text, p.domain));
  }
  e.move = best;
  json ranking = json::array();
  for (const auto& t : best->targets) {
    ranking.push_back({{"system", t.system}, {"stateBefore", t.state_before}, {"stateAfter", t.state_after},
                       {"fits", t.fits}});
  }
  // The moved WPAR and the first others (an event stays small whatever the group's size).
  json wpars = json::array();
  for (size_t i = 0; i < g.wpars.size(); ++i) {
    const WparInput& w = g.wpars[i];
    if (wpars.size() >= kWparsShown && w.name != best->wpar) continue;
    json wj = {{"name", w.name}, {"system", w.system}, {"average", values_json(w.average)}};
    if (e.wpar_states[i]) wj["state"] = *e.wpar_states[i];
    wpars.push_back(std::move(wj));
  }
  e.inputs = {{"trigger", e.trigger},          {"groupState", e.group_state},   {"averageState", e.average_state},
              {"override", e.override_note},  {"max", p.max},                  {"min", p.min},
              {"periodS", p.period_s},         {"streak", e.streak},            {"triggerCount", p.trigger_count},
              {"wpars", std::move(wpars)},     {"targets", std::move(ranking)}, {"sourceState", best->source_state},
              {"targetAfter", best->target_after}, {"gain", best->gain}};
  return finish(Reason::kMove, fmt::format("{}; move {} from {} ({}) to {} ({} after the move)", trigger_text,
                                           best->wpar, best->from, pct(best->source_state), best->to,
                                           pct(best->target_after)));
}

}  // namespace wpm::policy
