#pragma once
// What the gateway's queries answer (`wpm system|wpar|group|domain|settings|
// compat …` reads): pure functions from the folded state to the JSON the
// CLI and the console show. No I/O, no locks: the gateway calls them under
// the state's read lock. JSON is the whole object (`-o json`).
//
// Thread safety: plain functions over values.

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "eventstore/samples.h"
#include "schemas/profile.h"
#include "services/gateway/model.h"
#include "services/inventory/model.h"
#include "services/kernel/decision.h"

namespace wpm::gateway {

// A query's result: a JSON value, or (for large lists) its text made directly.
struct View {
  View(nlohmann::json v = nlohmann::json{}) : value(std::move(v)) {}  // NOLINT: implicit on purpose
  static View text(std::string t) {
    View r;
    r.raw = std::move(t);
    return r;
  }
  nlohmann::json value;
  std::string raw;    // when set, the result's JSON text
  std::string after;  // sent after the reply's JSON (lines that start with a newline)
};
using ViewResult = std::expected<View, kernel::Rejection>;

// Whether `command` is an inventory read inventory_view() answers.
bool is_inventory_view(std::string_view command);
// system.list|show, wpar.list|show, group.list|show, domain.list, settings.show.
ViewResult inventory_view(const inventory::Inventory& inventory, std::string_view command, const nlohmann::json& args);

// compat.show (args a, b, tests) and compat.matrix (args limit, tests):
// systems' profiles from the inventory, results from the gateway's fold.
ViewResult compat_view(const std::map<std::string, profile::SystemProfile>& profiles, const GatewayState& state,
                       std::string_view command, const nlohmann::json& args);

// system.metrics and wpar.metrics: a history as the CLI shows it. `metrics`
// names the metrics wanted (empty: every one present). Raw: per metric its
// times and values; aggregates: times and min, mean, max. Missing values
// are null. `placements` (a WPAR's) list where it was from when.
nlohmann::json metrics_json(const eventstore::History& history, std::string_view kind, const std::string& name,
                            eventstore::Resolution resolution, const std::vector<eventstore::series::Metric>& metrics,
                            int64_t from_s, int64_t to_s);

// A WPAR as queries show it: its definition, state letter and name,
// version and times. append_wpar_json writes the same object as text.
nlohmann::json wpar_json(const inventory::WparRecord& record);
void append_wpar_json(std::string& out, const inventory::WparRecord& record);

}  // namespace wpm::gateway
