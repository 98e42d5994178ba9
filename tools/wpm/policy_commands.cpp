#include "tools/wpm/policy_commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include "tools/wpm/gateway_client.h"
#include "tools/wpm/metrics_commands.h"
#include "tools/wpm/output.h"

namespace wpm::cli {
namespace {

using nlohmann::json;

std::string pct(const json& v) { return v.is_number() ? fmt::format("{:.1f}%", v.get<double>()) : "-"; }

std::string duration(int64_t s) {
  if (s % 3600 == 0 && s >= 3600) return fmt::format("{}h", s / 3600);
  if (s % 60 == 0 && s >= 60) return fmt::format("{}m", s / 60);
  return fmt::format("{}s", s);
}

}  // namespace

std::string policy_table(const json& p) {
  std::string out = fmt::format(
      "group:          {}{}\nenabled:        {}\nautomation:     {}\nthresholds:     min {} max {}\n"
      "averaging:      {}\ntrigger count:  {}\ncooldown:       {}\nminimum gain:   {} points\ndomain:         {}\n"
      "optional tests: {}\napproval:       {}\n",
      p.value("group", ""), p.value("set", true) ? "" : " (defaults: never set)", p.value("enabled", false) ? "yes" : "no",
      p.value("automation", ""), pct(p["min"]), pct(p["max"]), duration(p.value("periodS", int64_t{0})),
      p.value("triggerCount", 0), duration(p.value("cooldownS", int64_t{0})), p.value("minGain", 0.0),
      p.value("domain", ""), p["optionalTests"].empty() ? "none" : fmt::format("{}", fmt::join(p["optionalTests"].get<std::vector<std::string>>(), ",")),
      duration(p.value("approvalS", int64_t{0})));
  out += fmt::format("{:<12} {:>7} {:>7} {:>10} {:>7} {:>7} {}\n", "METRIC", "WEIGHT", "LIMIT", "MULTIPLIER", "MAX",
                     "MIN", "CRITICAL");
  for (const auto& m : p["metrics"]) {
    out += fmt::format("{:<12} {:>7} {:>7} {:>10} {:>7} {:>7} {}\n", m.value("metric", ""), m.value("weight", 0.0),
                       m.value("limit", 0.0), m.value("multiplier", 0.0), pct(m["max"]), pct(m["min"]),
                       m.value("critical", false) ? "yes" : "no");
  }
  return out;
}

std::string group_state_table(const json& s) {
  const json& p = s["policy"];
  std::string out = fmt::format("group {}: state {} (average {}) thresholds {}–{}; {}\n", s.value("group", ""),
                                pct(s["state"]), pct(s["averageState"]), pct(p["min"]), pct(p["max"]),
                                p.value("enabled", false) ? "policy " + p.value("automation", "") : "policy disabled");
  if (!s.value("override", "").empty()) out += "override: " + s.value("override", "") + "\n";
  if (!s.value("trigger", "").empty()) {
    out += fmt::format("trigger: {} for {} pass(es), {} needed\n", s.value("trigger", ""), s.value("streak", 0),
                       p.value("triggerCount", 0));
  }
  out += fmt::format("{:<24} {:<20} {:>8} {:<7} {}\n", "WPAR", "SYSTEM", "STATE", "MOBILE", "BUSY");
  for (const auto& w : s["wpars"]) {
    out += fmt::format("{:<24} {:<20} {:>8} {:<7} {}\n", w.value("name", ""), w.value("system", ""), pct(w["state"]),
                       w.value("mobile", false) ? "yes" : "no", w.value("busy", false) ? "yes" : "no");
  }
  return out;
}

void add_policy_commands(CLI::App& grp, GlobalOptions& g, int& exit_code,
                         std::function<void(const json&)> print_decision) {
  struct Options {
    std::string name, automation, period, cooldown, domain, approval, enabled;
    std::optional<double> max, min, min_gain;
    std::optional<int> trigger_count;
    std::vector<std::string> tests, metrics;
  };
  auto o = std::make_shared<Options>();
  auto* policy = grp.add_subcommand("policy", "a group's relocation policy (seed: metric and group policy settings)");
  policy->require_subcommand(1);
  auto* show = policy->add_subcommand("show", "the group's policy: thresholds, averaging, damping, metrics");
  show->add_option("GROUP", o->name, "the group (any unique prefix)")->required();
  show->callback([&g, &exit_code, o] {
    exit_code = run_command(g, "group.policy-show", {{"name", o->name}},
                            [](const json& p) { std::fputs(policy_table(p).c_str(), stdout); });
  });
  auto* set = policy->add_subcommand(
      "set", "change the group's policy (only what is given; the whole policy is validated)");
  set->add_option("GROUP", o->name, "the group (any unique prefix)")->required();
  set->add_option("--enabled", o->enabled, "evaluate this group's policy: true or false")
      ->check(CLI::IsMember({"true", "false"}));
  set->add_option("--automation", o->automation,
                  "recommend (show the move only), approve (a relocation waits for wpm task approve) or automatic")
      ->check(CLI::IsMember({"recommend", "approve", "automatic"}));
  set->add_option("--max", o->max, "maximum threshold, % (above it the group is hot)");
  set->add_option("--min", o->min, "minimum threshold, % (below it the group is cold)");
  set->add_option("--period", o->period, "averaging period: 90s, 5m, 1h");
  set->add_option("--trigger-count", o->trigger_count, "passes in a row past a threshold before a move");
  set->add_option("--cooldown", o->cooldown, "a WPAR that moved stays at least this long: 30m");
  set->add_option("--min-gain", o->min_gain, "% points a hot move must gain (source − target after)");
  set->add_option("--domain", o->domain, "the relocation domain targets are chosen from");
  set->add_option("--optional-tests", o->tests, "optional compatibility tests that also apply, comma-separated")
      ->delimiter(',');
  set->add_option("--approval", o->approval, "approve: how long a move waits for approval: 1h");
  set->add_option("--metric", o->metrics,
                  "NAME:weight=W[,limit=L][,multiplier=M][,max=X][,min=Y][,critical] (repeat; replaces the list); "
                  "NAME: cpu, memory, processes, threads, page-faults, load");
  set->callback([&g, &exit_code, o, print_decision] {
    json changes = json::object();
    if (!o->enabled.empty()) changes["enabled"] = o->enabled == "true";
    if (!o->automation.empty()) changes["automation"] = o->automation;
    if (o->max) changes["max"] = *o->max;
    if (o->min) changes["min"] = *o->min;
    if (o->min_gain) changes["minGain"] = *o->min_gain;
    if (o->trigger_count) changes["triggerCount"] = *o->trigger_count;
    for (auto [key, value] : {std::pair{"period", &o->period}, std::pair{"cooldown", &o->cooldown},
                              std::pair{"approval", &o->approval}}) {
      if (value->empty()) continue;
      if (!parse_duration_s(*value)) {
        print_error(fmt::format("--{} '{}' must be a duration such as 90s, 15m, 2h", key, *value));
        exit_code = kExitUsage;
        return;
      }
      changes[key] = *value;
    }
    if (!o->domain.empty()) changes["domain"] = o->domain;
    if (!o->tests.empty()) changes["optionalTests"] = o->tests;
    if (!o->metrics.empty()) changes["metrics"] = o->metrics;
    exit_code = run_command(g, "group.policy-set", {{"name", o->name}, {"changes", changes}}, print_decision);
  });
  auto* state = grp.add_subcommand("state", "the group's performance state now: its WPARs' states, the trigger");
  state->add_option("GROUP", o->name, "the group (any unique prefix)")->required();
  state->callback([&g, &exit_code, o] {
    exit_code = run_command(g, "group.state", {{"name", o->name}},
                            [](const json& s) { std::fputs(group_state_table(s).c_str(), stdout); });
  });
  auto* explain = grp.add_subcommand("explain", "why the policy moves a WPAR of the group now, or why nothing moves");
  explain->add_option("GROUP", o->name, "the group (any unique prefix)")->required();
  explain->callback([&g, &exit_code, o] {
    exit_code = run_command(g, "group.explain", {{"name", o->name}}, [](const json& s) {
      std::printf("%s: %s\n", s.value("reason", "").c_str(), s.value("explanation", "").c_str());
      if (s.contains("move") && s["move"].is_object()) {
        std::printf("targets, best first:\n");
        for (const auto& t : s["move"]["targets"]) {
          std::printf("  %-20s now %-7s after %-7s %s\n", t.value("system", "").c_str(), pct(t["stateBefore"]).c_str(),
                      pct(t["stateAfter"]).c_str(), t.value("fits", false) ? "" : "(over the maximum)");
        }
      }
      if (s.contains("lastRecommendation") && s["lastRecommendation"].is_object()) {
        const json& r = s["lastRecommendation"];
        std::printf("last recommended (not done: automation recommend): %s from %s to %s at %s\n",
                    r.value("wpar", "").c_str(), r.value("from", "").c_str(), r.value("to", "").c_str(),
                    format_time(r.value("atNs", int64_t{0})).c_str());
      }
    });
  });
}

void add_simulate_command(CLI::App& app, GlobalOptions& g, int& exit_code) {
  auto* policy = app.add_subcommand("policy", "what-if analysis of relocation policies");
  policy->require_subcommand(1);
  struct Options {
    std::string group, file, from = "1h", to = "0";
  };
  auto o = std::make_shared<Options>();
  auto* sim = policy->add_subcommand(
      "simulate", "run the recorded metrics of a period through a policy (the group's, or a candidate) with the "
                  "live code, and list the relocations it would have made beside those the live policy made");
  sim->add_option("--group", o->group, "the group (any unique prefix)")->required();
  sim->add_option("--policy", o->file,
                  "a candidate policy, JSON as `wpm -o json group policy show G` prints it (default: the live one)");
  sim->add_option("--from", o->from, "the period's start, this long ago: 90s, 15m, 6h (default 1h)");
  sim->add_option("--to", o->to, "the period's end, this long ago (default 0: now)");
  sim->callback([&g, &exit_code, o] {
    auto from = parse_duration_s(o->from);
    auto to = parse_duration_s(o->to);
    if (!from || !to || *to >= *from) {
      print_error(fmt::format("--from '{}' and --to '{}' must be durations such as 90s, 15m, 6h, with --from the "
                              "longer",
                              o->from, o->to));
      exit_code = kExitUsage;
      return;
    }
    json args = {{"group", o->group}, {"since", *from}, {"until", *to}};
    if (!o->file.empty()) {
      std::ifstream in(o->file);
      if (!in) {
        print_error(fmt::format("cannot read --policy {}: {}", o->file, std::strerror(errno)));
        exit_code = kExitUsage;
        return;
      }
      json candidate = json::parse(in, nullptr, false);
      if (candidate.is_discarded() || !candidate.is_object()) {
        print_error(fmt::format("--policy {} is not a JSON object (write it with `wpm -o json group policy show G`)",
                                o->file));
        exit_code = kExitUsage;
        return;
      }
      args["policy"] = candidate;
    }
    if (g.format != Format::kJson && stderr_is_terminal()) std::fprintf(stderr, "simulating…\n");
    exit_code = run_command(g, "policy.simulate", args, [](const json& s) {
      std::printf("group %s, %s to %s: %zu passes, %zu events, %.2f s, with %s\n", s.value("group", "").c_str(),
                  format_time(s.value("fromNs", int64_t{0})).c_str(), format_time(s.value("toNs", int64_t{0})).c_str(),
                  static_cast<size_t>(s.value("passes", 0)), static_cast<size_t>(s.value("events", 0)),
                  s.value("seconds", 0.0), s["candidate"].is_null() ? "the live policy" : "the candidate policy");
      for (const char* which : {"simulated", "live"}) {
        const json& moves = s[which];
        std::printf("\n%s (%zu):\n", std::string(which) == "live" ? "made by the live policy" : "would make",
                    moves.size());
        if (moves.empty()) std::printf("  none\n");
        for (const auto& m : moves) {
          std::printf("  %s  %-16s %s -> %s  (%s, %s)\n", format_time(m.value("atNs", int64_t{0})).c_str(),
                      m.value("wpar", "").c_str(), m.value("from", "").c_str(), m.value("to", "").c_str(),
                      m.value("trigger", "").c_str(), m.value("automation", "").c_str());
        }
      }
      if (s["candidate"].is_null()) {
        std::printf("\n%s\n", s.value("sameAsLive", false) ? "the same as the live decisions"
                                                             : "NOT the same as the live decisions (see docs/policy.md)");
      }
    });
  });
}

}  // namespace wpm::cli
