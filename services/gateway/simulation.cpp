// policy.simulate: the what-if simulation of wpm policy simulate
// (services/policy/simulate.h), served by the gateway on the log and the
// metric history it reads.
//
// args: group (a name or unique prefix), policy (a candidate policy's JSON,
// as group.policy-show prints it; absent: the live policy), since and until
// (seconds before now; default 3600 and 0). The period must lie within the
// raw retention of the metric history.

#include <fmt/format.h>

#include "services/gateway/gateway.h"
#include "services/policy/simulate.h"

namespace wpm::gateway {

using nlohmann::json;

namespace {

json moves_json(const std::vector<policy::SimulatedMove>& moves) {
  json out = json::array();
  for (const auto& m : moves) {
    out.push_back({{"atNs", m.at_ns},
                   {"wpar", m.wpar},
                   {"from", m.from},
                   {"to", m.to},
                   {"trigger", m.trigger},
                   {"automation", m.automation},
                   {"explanation", m.explanation}});
  }
  return out;
}

}  // namespace

Gateway::Answer Gateway::simulate_query(const json& args) {
  if (deps_.samples == nullptr || deps_.reads == nullptr) {
    return std::unexpected(Fail{"unavailable", "this wpmd keeps no metric history (it runs without the store)"});
  }
  auto resolved = resolve_group(args.value("group", ""));
  if (!resolved) return std::unexpected(resolved.error());
  const std::string group = *resolved;
  policy::SimulationOptions o;
  o.group = group;
  if (args.contains("policy") && !args["policy"].is_null()) {
    const json& given = args["policy"].is_object() && args["policy"].contains("policy") ? args["policy"]["policy"]
                                                                                       : args["policy"];
    auto candidate = policy::policy_from_json(given);
    if (!candidate) return std::unexpected(Fail{"invalid", "the candidate policy: " + candidate.error()});
    if (auto why = policy::validate(*candidate)) return std::unexpected(Fail{"invalid", "the candidate policy: " + *why});
    o.candidate = *candidate;
  }
  auto since = seconds_arg(args, "since", 3600);
  auto until = seconds_arg(args, "until", 0);
  if (!since || !until || *until >= *since) {
    return std::unexpected(Fail{"invalid", "--from must be before --to (both times before now)"});
  }
  const int64_t retention = deps_.samples->options().raw_retention_s;
  if (*since > retention) {
    return std::unexpected(Fail{"invalid", fmt::format("the period starts {} s ago, beyond the raw metric history "
                                                       "({} s, [metrics] raw_retention_s): simulate a shorter one",
                                                       *since, retention)});
  }
  if (simulating_.exchange(true)) {
    return std::unexpected(Fail{"unavailable", "another simulation is running on this manager; retry when it ends"});
  }
  struct Done {
    std::atomic<bool>& flag;
    ~Done() { flag = false; }
  } done{simulating_};
  const int64_t now = deps_.clock->wall_ns();
  o.from_ns = now - *since * 1'000'000'000;
  o.to_ns = now - *until * 1'000'000'000;
  auto read = [&](bool wpar, const std::string& name, const std::string& system, int64_t from_s, int64_t to_s) {
    return deps_.samples->read(wpar, name, from_s, to_s, eventstore::Resolution::kRaw, &system);
  };
  auto r = policy::simulate(*deps_.reads, read, o, *logger_);
  if (!r) {
    return std::unexpected(Fail{r.error().code == ErrorCode::kNotFound      ? "not_found"
                                : r.error().code == ErrorCode::kInvalidRequest ? "invalid"
                                                                               : "unavailable",
                                r.error().message});
  }
  auto key = [](const policy::SimulatedMove& m) { return std::tie(m.at_ns, m.wpar, m.from, m.to); };
  bool same = r->simulated.size() == r->live.size() &&
              std::equal(r->simulated.begin(), r->simulated.end(), r->live.begin(),
                         [&](const auto& a, const auto& b) { return key(a) == key(b); });
  json out = {{"group", group},
                    {"fromNs", o.from_ns},
                    {"toNs", o.to_ns},
                    {"candidate", o.candidate ? policy::to_json(*o.candidate) : json(nullptr)},
                    {"passes", r->passes},
                    {"events", r->events},
                    {"seconds", r->seconds},
                    {"simulated", moves_json(r->simulated)},
                    {"live", moves_json(r->live)},
                    {"sameAsLive", same}};
  return Reply(std::move(out));
}

}  // namespace wpm::gateway
