#include "services/gateway/views.h"

#include "services/policy/model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <set>

#include "schemas/event_json.h"
#include "services/compatibility/tests.h"

namespace wpm::gateway {
namespace {

using json = nlohmann::json;
using kernel::Rejection;
using kernel::RejectionCode;

constexpr std::array<std::string_view, 9> kInventoryViews = {"group.policy-show", "system.list", "system.show", "wpar.list",  "wpar.show",
                                                             "group.list",  "group.show",  "domain.list", "settings.show"};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

json system_json(const inventory::Inventory& inv, const inventory::RegisteredSystem& s, bool whole) {
  auto status = inv.system_status(s.system_id);
  json j = {{"name", s.system_id},
            {"domain", status.domain},
            {"profileName", profile::profile_name(status.domain, s.profile)},
            {"hostname", s.hostname},
            {"address", s.address},
            {"agentPort", s.agent_port},
            {"state", status.state},
            {"stateReason", status.reason},
            {"stateSinceNs", status.since_ns},
            {"registeredAtSequence", s.registered_at_sequence},
            {"wpars", inv.wpars_on_system(s.system_id)},
            {"distribution", s.profile.distribution + " " + s.profile.distribution_version},
            {"kernel", s.profile.kernel_version},
            {"architecture", s.profile.architecture},
            {"overriddenFacts", s.profile.overridden_facts}};
  if (whole) {
    j["publicKey"] = s.public_key;
    j["profile"] = profile::profile_to_json(s.profile);
    j["hardwareClass"] = profile::hardware_class(s.profile);
  }
  return j;
}

json compat_results_json(const std::vector<CompatResult>& results) {
  json out = json::array();
  for (const auto& r : results) {
    auto t = compatibility::test_from_name(r.test);
    out.push_back({{"test", r.test},
                   {"critical", t && compatibility::is_critical(*t)},
                   {"passed", r.passed},
                   {"departure", r.departure},
                   {"arrival", r.arrival},
                   {"remedy", r.remedy}});
  }
  return out;
}

}  // namespace

json wpar_json(const inventory::WparRecord& r) {
  json j = wpar_to_json(r.wpar);
  j["state"] = inventory::wpar_state_letter(r.wpar);
  j["stateName"] = inventory::wpar_state_name(r.wpar);
  j["version"] = r.version;
  j["createdNs"] = r.created_ns;
  j["changedNs"] = r.changed_ns;
  return j;
}

namespace {
void append_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20) {
      // As nlohmann::json writes them, so both writers agree byte for byte.
      switch (c) {
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default: fmt::format_to(std::back_inserter(out), "\\u{:04x}", u);
      }
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}
}  // namespace

void append_wpar_json(std::string& out, const inventory::WparRecord& r) {
  // The members of wpar_json(), in the same (alphabetical) order.
  const auto& w = r.wpar;
  auto key = [&](std::string_view k) {
    if (out.back() != '{') out.push_back(',');
    append_string(out, k);
    out.push_back(':');
  };
  auto text = [&](std::string_view k, std::string_view v) {
    key(k);
    append_string(out, v);
  };
  auto number = [&](std::string_view k, auto v) {
    key(k);
    fmt::format_to(std::back_inserter(out), "{}", v);
  };
  auto boolean = [&](std::string_view k, bool v) {
    key(k);
    out += v ? "true" : "false";
  };
  out.push_back('{');
  text("address", w.address);
  text("capabilities", w.capabilities);
  text("cause", w.cause);
  number("changedNs", r.changed_ns);
  boolean("checkpointable", w.checkpointable);
  text("command", w.command);
  number("cpuLimitPercent", w.cpu_limit_percent);
  number("cpuShares", w.cpu_shares);
  number("createdNs", r.created_ns);
  boolean("discovered", w.discovered);
  number("epoch", w.epoch);
  text("group", w.group);
  number("memoryBytes", w.memory_bytes);
  text("name", w.name);
  text("operation", w.operation);
  boolean("privileged", w.privileged);
  number("processesMax", w.processes_max);
  text("reportedState", w.reported_state);
  text("state", inventory::wpar_state_letter(w));
  text("stateName", inventory::wpar_state_name(w));
  text("system", w.system);
  text("triggerCommand", w.trigger_command);
  text("triggerSignal", w.trigger_signal);
  text("type", w.type);
  number("version", r.version);
  out.push_back('}');
}

namespace {

std::unexpected<Rejection> invalid(std::string message) {
  return std::unexpected(Rejection{RejectionCode::kInvalid, std::move(message)});
}

// The state filter of wpar.list as a lower-case letter: "A" or "active" both name Active.
std::expected<std::string, Rejection> state_letter(const std::string& given) {
  std::string state = lower(given);
  if (state.size() > 1) {
    for (const auto& letter : {"U", "D", "A", "P", "F", "L", "T", "B"}) {
      WparDefinition probe;
      probe.system = letter == std::string("U") ? "" : "x";
      probe.reported_state = letter;
      if (lower(inventory::wpar_state_name(probe)) == state) return lower(letter);
    }
    return invalid(fmt::format("no WPAR state '{}': use a letter (U D A P F L T B) or its name (Undeployed, Active, …)",
                               given));
  }
  return state;
}

ViewResult wpar_list(const inventory::Inventory& inv, const json& args) {
  auto state = state_letter(args.value("state", ""));
  if (!state) return std::unexpected(state.error());
  std::string system = args.value("system", "");
  std::string group = args.value("group", "");
  if (!system.empty()) {
    auto id = inventory::resolve_prefix(inv.registry.systems(), system, "system");
    if (!id) return std::unexpected(id.error());
    system = *id;
  }
  if (!group.empty()) {
    auto g = inventory::resolve_prefix(inv.groups, group, "WPAR group");
    if (!g) return std::unexpected(g.error());
    group = *g;
  }
  // Made as text directly: 100,000 WPARs are tens of megabytes of JSON.
  std::string out = "[";
  for (const auto& [n, w] : inv.wpars) {
    if (!state->empty() && lower(inventory::wpar_state_letter(w.wpar)) != *state) continue;
    if (!system.empty() && w.wpar.system != system) continue;
    if (!group.empty() && w.wpar.group != group) continue;
    if (out.size() > 1) out.push_back(',');
    append_wpar_json(out, w);
  }
  out.push_back(']');
  return View::text(std::move(out));
}

json group_json(const inventory::Inventory& inv, const inventory::GroupRecord& g) {
  json wpars = json::array();
  for (const auto& [n, w] : inv.wpars) {
    if (w.wpar.group == g.name) wpars.push_back(n);
  }
  return json{{"name", g.name}, {"description", g.description}, {"wpars", wpars.size()}, {"wparNames", wpars}};
}

// Every domain with its systems and the system profiles they form.
json domain_list(const inventory::Inventory& inv) {
  std::map<std::string, std::vector<std::string>> systems;
  std::map<std::string, std::map<std::string, std::vector<std::string>>> profiles;
  for (const auto& [id, s] : inv.registry.systems()) {
    std::string domain = inv.system_status(id).domain;
    systems[domain].push_back(id);
    profiles[domain][profile::profile_name(domain, s.profile)].push_back(id);
  }
  json out = json::array();
  for (const auto& [name, d] : inv.domains) {
    json ps = json::array();
    for (const auto& [p, members] : profiles[name]) ps.push_back({{"name", p}, {"systems", members}});
    out.push_back({{"name", name},
                   {"description", d.description},
                   {"systems", systems[name].size()},
                   {"systemNames", systems[name]},
                   {"profiles", ps}});
  }
  return out;
}

}  // namespace

bool is_inventory_view(std::string_view command) {
  return std::find(kInventoryViews.begin(), kInventoryViews.end(), command) != kInventoryViews.end();
}

ViewResult inventory_view(const inventory::Inventory& inv, std::string_view command, const json& args) {
  const std::string name = args.value("name", "");
  if (command == "system.list") {
    json out = json::array();
    for (const auto& [id, s] : inv.registry.systems()) out.push_back(system_json(inv, s, false));
    return out;
  }
  if (command == "system.show") {
    auto id = inventory::resolve_prefix(inv.registry.systems(), name, "system");
    if (!id) return std::unexpected(id.error());
    json j = system_json(inv, inv.registry.systems().at(*id), true);
    json wpars = json::array();
    for (const auto& [n, w] : inv.wpars) {
      if (w.wpar.system == *id) wpars.push_back(n);
    }
    j["wparNames"] = wpars;
    return j;
  }
  if (command == "wpar.list") return wpar_list(inv, args);
  if (command == "wpar.show") {
    auto n = inventory::resolve_prefix(inv.wpars, name, "WPAR");
    if (!n) return std::unexpected(n.error());
    return wpar_json(inv.wpars.at(*n));
  }
  if (command == "group.list") {
    json out = json::array();
    for (const auto& [n, g] : inv.groups) out.push_back(group_json(inv, g));
    return out;
  }
  if (command == "group.show") {
    auto n = inventory::resolve_prefix(inv.groups, name, "WPAR group");
    if (!n) return std::unexpected(n.error());
    return group_json(inv, inv.groups.at(*n));
  }
  if (command == "domain.list") return domain_list(inv);
  if (command == "group.policy-show") {
    auto n = inventory::resolve_prefix(inv.groups, name, "WPAR group");
    if (!n) return std::unexpected(n.error());
    const auto& g = inv.groups.at(*n);
    policy::GroupPolicy p;
    if (!g.policy.empty()) {
      auto stored = policy::policy_from_json(json::parse(g.policy, nullptr, false));
      if (!stored) return invalid(fmt::format("group {}'s stored policy is unreadable: {}", *n, stored.error()));
      p = *stored;
    }
    json j = policy::to_json(p);
    j["group"] = *n;
    j["set"] = !g.policy.empty();
    return j;
  }
  if (command == "settings.show") {
    json out = json::array();
    for (const auto& spec : inventory::setting_specs()) {
      out.push_back({{"key", spec.key},
                     {"value", inv.setting(spec.key)},
                     {"default", spec.default_value},
                     {"description", spec.description}});
    }
    return out;
  }
  return invalid(fmt::format("no query '{}'", command));
}

ViewResult compat_view(const std::map<std::string, profile::SystemProfile>& profiles, const GatewayState& state,
                       std::string_view command, const json& args) {
  compatibility::TestSet tests;
  if (args.contains("tests")) {
    for (const auto& t : args["tests"]) {
      auto test = t.is_string() ? compatibility::test_from_name(t.get<std::string>()) : std::nullopt;
      if (!test) return invalid(fmt::format("no compatibility test {}", t.dump()));
      tests.add(*test);
    }
  }
  auto digest = [&](const std::string& id) {
    return compatibility::properties_digest(compatibility::compared_properties_key(profiles.at(id)));
  };
  const auto& compat = state.compat;
  auto pair_state = [&](const std::string& a, const std::string& b) -> json {
    auto da = digest(a), db = digest(b);
    if (da == db) {
      return json{{"state", compatibility::state_name(compatibility::CompatibilityState::kFullyCompatible)},
                  {"analysis", "complete"},
                  {"sameProperties", true}};
    }
    auto ab = compat.find({da, db});
    auto ba = compat.find({db, da});
    if (ab == compat.end() || ba == compat.end()) return json{{"state", "pending"}, {"analysis", "pending"}};
    auto derived = compatibility::derive_state(compatibility::to_test_results(ab->second),
                                               compatibility::to_test_results(ba->second), tests);
    return json{{"state", compatibility::state_name(derived)},
                {"analysis", "complete"},
                {"departureToArrival", compat_results_json(ab->second)},
                {"arrivalToDeparture", compat_results_json(ba->second)}};
  };
  if (command == "compat.show") {
    auto a = inventory::resolve_prefix(profiles, args.value("a", ""), "system");
    if (!a) return std::unexpected(a.error());
    auto b = inventory::resolve_prefix(profiles, args.value("b", ""), "system");
    if (!b) return std::unexpected(b.error());
    json j = pair_state(*a, *b);
    j["a"] = *a;
    j["b"] = *b;
    return j;
  }
  size_t limit = args.value("limit", size_t{50});
  std::vector<std::string> ids;
  for (const auto& [id, p] : profiles) {
    if (ids.size() >= limit) break;
    ids.push_back(id);
  }
  json rows = json::array();
  for (const auto& a : ids) {
    json row = {{"system", a}, {"states", json::object()}};
    for (const auto& b : ids) {
      if (a != b) row["states"][b] = pair_state(a, b)["state"];
    }
    rows.push_back(row);
  }
  return json{{"systems", ids}, {"rows", rows}, {"truncated", profiles.size() > ids.size()}};
}

json metrics_json(const eventstore::History& history, std::string_view kind, const std::string& name,
                  eventstore::Resolution resolution, const std::vector<eventstore::series::Metric>& metrics,
                  int64_t from_s, int64_t to_s) {
  namespace series = eventstore::series;
  auto value_of = [](series::Metric m, int64_t v) -> json {
    return v == series::kMissing ? json(nullptr) : json(series::from_fixed(m, v));
  };
  std::vector<series::Metric> wanted = metrics;
  if (wanted.empty()) {
    for (const auto& info : series::metric_infos()) wanted.push_back(info.id);
  }
  const bool raw = resolution == eventstore::Resolution::kRaw;
  json out_series = json::array();
  for (auto m : wanted) {
    const auto& info = series::metric_info(m);
    json s = {{"metric", info.name}, {"unit", info.unit}};
    if (raw) {
      const auto* c = history.column(static_cast<uint8_t>(m));
      if (c == nullptr) continue;
      json values = json::array();
      for (auto v : c->values) values.push_back(value_of(m, v));
      s["values"] = std::move(values);
    } else {
      bool any = false;
      for (auto [key, kind_tag] : {std::pair{"min", series::Aggregate::kMin}, std::pair{"mean", series::Aggregate::kMean},
                                   std::pair{"max", series::Aggregate::kMax}}) {
        const auto* c = history.column(series::aggregate_tag(m, kind_tag));
        if (c == nullptr) continue;
        any = true;
        json values = json::array();
        for (auto v : c->values) values.push_back(value_of(m, v));
        s[key] = std::move(values);
      }
      if (!any) continue;
    }
    out_series.push_back(std::move(s));
  }
  json placements = json::array();
  for (size_t i = 0; i < history.systems.size(); ++i) {
    if (i == 0 || history.systems[i] != history.systems[i - 1]) {
      placements.push_back({{"from", history.times_s[i]}, {"system", history.systems[i]}});
    }
  }
  return json{{"kind", kind},
              {"name", name},
              {"resolution", raw ? "raw" : "5m"},
              {"from", from_s},
              {"to", to_s},
              {"points", history.times_s.size()},
              {"times", history.times_s},
              {"series", std::move(out_series)},
              {"placements", std::move(placements)}};
}

}  // namespace wpm::gateway
