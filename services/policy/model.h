#pragma once
// Policy-based relocation (DESIGN.md §7; seed "Policy-based relocation",
// "Metric policy settings", "Group policy settings", "Policy tuning",
// "Group averaging", "Automatic selection", glossary "Multiplier" and
// "Critical metric"): a group's policy, the formulas, and one evaluation
// of a group — pure functions of their inputs, so the live service, the
// explanation and the what-if simulation run the same code.
//
// Thread safety: plain values and free functions.

#include <array>
#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "schemas/metrics.h"

namespace wpm::policy {

// ---- settings ---------------------------------------------------------------

// seed "Metric policy settings".
struct MetricSetting {
  metrics::Metric metric = metrics::Metric::kCpu;
  double weight = 1;       // ≥ 0; at least one metric > 0
  double limit = 1;        // rate metrics: the expected maximum (fixed at 1 for utilisation metrics)
  double multiplier = 1;   // the limit × multiplier^rank of the WPAR's host hardware profile
  std::optional<double> max, min;  // % overrides of the group state
  bool critical = false;   // out of [min, max]: relocate at once
  bool operator==(const MetricSetting&) const = default;
};

enum class Automation { kRecommend, kApprove, kAutomatic };
std::string_view automation_name(Automation a);
std::optional<Automation> automation_from_name(std::string_view name);

// seed "Group policy settings", plus the damping of DESIGN.md §7.
struct GroupPolicy {
  bool enabled = false;
  Automation automation = Automation::kRecommend;
  double max = 80;          // % : above it the group is hot
  double min = 10;          // % : below it the group is cold
  int64_t period_s = 300;   // averaging period
  int trigger_count = 3;    // consecutive passes past a threshold before a move
  int64_t cooldown_s = 1800;  // a WPAR that moved stays this long
  double min_gain = 10;     // % points a move must gain (hot: source − target after)
  std::string domain = "default";  // relocation domain of the targets
  std::vector<std::string> optional_tests;  // compatibility tests beyond the critical ones
  int64_t approval_s = 3600;  // approve: how long a recommended move waits for wpm task approve
  std::vector<MetricSetting> metrics = {MetricSetting{}};  // cpu, weight 1
  bool operator==(const GroupPolicy&) const = default;
};

// What is wrong with a policy (the seed's rules), or nothing.
std::optional<std::string> validate(const GroupPolicy& policy);
nlohmann::json to_json(const GroupPolicy& policy);
// A policy from its JSON (as stored); the error says which field.
std::expected<GroupPolicy, std::string> policy_from_json(const nlohmann::json& j);
// `policy` with the changes of `wpm group policy set` (args: enabled,
// automation, max, min, period, triggerCount, cooldown, minGain, domain,
// optionalTests, approval, metrics: ["cpu:weight=1,max=90,critical", …]),
// validated. Durations like "90s", "15m", "2h".
std::expected<GroupPolicy, std::string> apply_changes(GroupPolicy policy, const nlohmann::json& args);
// One --metric argument: NAME:weight=W[,limit=L][,multiplier=M][,max=X][,min=Y][,critical].
std::expected<MetricSetting, std::string> parse_metric_setting(std::string_view text);

// ---- formulas ---------------------------------------------------------------

// seed "Policy tuning": a WPAR's effective utilisation, as fractions:
// wpar / (1 − (host − wpar)). When the host's other load leaves nothing
// (host − wpar ≥ 1) the WPAR is fully constrained: 1. Clamped to [0, 1].
double effective_utilisation(double wpar, double host);

// A metric's value as a percentage of what the WPAR can have (seed "Metric
// policy settings"): a utilisation metric as its effective utilisation; a
// rate metric divided by limit × multiplier^rank (glossary "Multiplier").
// `value` and `host` are in the metric's own unit (% for utilisation).
double normalised(const MetricSetting& setting, double value, double host, int rank);

// Weighted average of the normalised values (0 when every weight is 0);
// metrics without a value are left out.
double weighted_state(const std::vector<MetricSetting>& settings, const std::vector<std::optional<double>>& normalised);

// ---- evaluation of one group --------------------------------------------------

// A metric's values per metric number (index 0 unused).
using Values = std::array<std::optional<double>, metrics::kMetricMax + 1>;

struct SystemInput;
struct WparInput {
  std::string name;
  std::string system;      // where it runs
  Values average;          // over the averaging period
  Values latest;           // the newest sample (critical metrics)
  bool mobile = false;     // active and checkpointable: a relocation can take it
  bool busy = false;       // a task of it runs or waits
  int64_t moved_ns = 0;    // when its last relocation ended (0: never)
  // `system` in the evaluation's systems, when the caller found it already
  // (a pass over many groups); else looked up.
  const SystemInput* host = nullptr;
};

struct SystemInput {
  std::string id;
  std::string domain;
  std::string state;       // online offline unreachable
  bool analysed = true;    // compatibility analysis Complete (not Pending)
  int rank = 0;            // hardware profile rank (0 the smallest)
  Values average;          // the host's own metrics over the averaging period
};
// Systems by id: a pass looks one up for every WPAR, so they are kept in
// one array with an open-addressed index of their ids' hashes.
class SystemMap {
 public:
  void reserve(size_t n);
  // The system `id` (added empty if missing).
  SystemInput& operator[](const std::string& id);
  const SystemInput* find(std::string_view id) const;
  auto begin() const { return systems_.begin(); }
  auto end() const { return systems_.end(); }
  size_t size() const { return systems_.size(); }

 private:
  void rehash(size_t slots);
  std::vector<SystemInput> systems_;
  std::vector<uint64_t> slots_;  // hash's high 32 bits << 32 | index + 1; 0: empty
};

// Whether `from` → `to` is compatible for the group's tests (the critical
// ones and its optional ones). Asked only for systems of the domain.
using CompatibleFn = std::function<bool(const std::string& from, const std::string& to)>;

struct GroupInput {
  std::string group;
  GroupPolicy policy;
  std::vector<WparInput> wpars;  // the group's WPARs placed on a system
  int streak = 0;                // consecutive earlier passes with the same trigger
  std::string streak_trigger;    // hot | cold | ""
  bool in_flight = false;        // a mobility event of this group runs or waits
  int domain_relocations = 0;    // relocations running in the group's domain
  int domain_cap = 2;            // at most this many at once (setting policy.domain-concurrency)
};

struct Target {
  std::string system;
  double state_before = 0;  // its state now (%)
  double state_after = 0;   // projected with the WPAR (%)
  bool fits = false;        // state_after within the group's maximum
};

struct Move {
  std::string wpar;
  std::string from;
  std::string to;
  double source_state = 0;  // the departure's state now
  double target_after = 0;  // the arrival's projected state with it
  double gain = 0;          // source_state − target_after (hot); headroom left (cold)
  std::vector<Target> targets;  // the ranking it was chosen from, best first
};

// Why a pass does or does not move a WPAR (wpm group explain).
enum class Reason {
  kDisabled,
  kNoData,          // no WPAR of the group has samples in the period
  kWithin,          // the group state is within its thresholds
  kTriggerCount,    // past a threshold, not yet trigger_count passes in a row
  kInFlight,        // a mobility event of the group runs or waits
  kDomainCap,       // the domain has its cap of relocations running
  kNoMobileWpar,    // no WPAR can move (not checkpointable, busy, or in its cooldown)
  kNoTarget,        // no compatible, Online target in the domain
  kBelowGain,       // every move gains less than min_gain
  kOverMax,         // every target would pass the group's maximum
  kMove,            // a WPAR moves (recommended, waits for approval, or runs)
};
std::string_view reason_name(Reason r);

struct Evaluation {
  double group_state = 0;            // % after the overrides
  double average_state = 0;          // % before them
  std::vector<std::optional<double>> wpar_states;  // of GroupInput::wpars, in order (none: no samples)
  std::string override_note;         // which metric raised or lowered the group state
  std::string trigger;               // hot | cold | critical | ""
  int streak = 0;                    // including this pass
  Reason reason = Reason::kWithin;
  std::string explanation;           // in words
  std::optional<Move> move;
  nlohmann::json inputs;             // what the decision used (recorded with a move)
};

// The targets of a domain ranked by their state, as evaluate ranks them:
// shared by the groups of one pass that see the same systems and weigh
// fullness alike (a pass with many hot groups ranks the fleet once).
class TargetRankings {
 public:
  using Key = std::tuple<const SystemMap*, std::string, std::vector<std::pair<int, double>>>;
  std::vector<Target>* find(const Key& key);
  std::vector<Target>& add(Key key, std::vector<Target> ranking);

 private:
  std::map<Key, std::vector<Target>> rankings_;
};

Evaluation evaluate(const GroupInput& group, const SystemMap& systems, const CompatibleFn& compatible,
                    int64_t now_ns, TargetRankings* rankings = nullptr);

}  // namespace wpm::policy
