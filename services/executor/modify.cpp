// wpar.modify (the seed's chwpar through the agent; DESIGN.md §5
// "Privileges"): an undeployed WPAR's definition changes at once; a deployed
// one's capability set and limits change on its system first, by a task of
// one "modify" operation, and the definition follows when it succeeds.
#include <fmt/format.h>

#include "services/executor/internal.h"

namespace wpm::executor {

std::expected<inventory::ModifyWpar, kernel::Rejection> modify_change(const TaskOptions& options,
                                                                      const std::string& name) {
  nlohmann::json args = options.changes.is_object() ? options.changes : nlohmann::json::object();
  args["name"] = name;
  auto command = inventory::parse_command("wpar.modify", args);
  if (!command) return std::unexpected(command.error());
  if (!std::holds_alternative<inventory::ModifyWpar>(*command)) {
    return std::unexpected(kernel::Rejection{kernel::RejectionCode::kInvalid, "not a change of a WPAR"});
  }
  return std::get<inventory::ModifyWpar>(std::move(*command));
}

}  // namespace wpm::executor

namespace wpm::executor::detail {

using kernel::RejectionCode;

Decision decide_modify(const inventory::Inventory& inv, const std::string& name, const WparAction& a,
                       TaskCreated created, const std::string& id) {
  auto change = modify_change(a.options, name);
  if (!change) return std::unexpected(change.error());
  auto changed = inventory::modified_definition(inv, *change);
  if (!changed) return std::unexpected(changed.error());
  const auto& record = inv.wpars.at(name);
  const WparDefinition& w = record.wpar;
  if (*changed == w) {
    return Decided{{{task_stream(id), created}, {task_stream(id), TaskFinished{"succeeded", "", ""}}},
                   fmt::format("nothing to change: WPAR {} is already so", name)};
  }
  // Undeployed, or only the group (the manager's own): nothing to run on a
  // system; the definition changes with the task, at the version decided on.
  if (w.system.empty() || !inventory::changes_on_system(w, *changed)) {
    return Decided{{{task_stream(id), created},
                    {inventory::wpar_stream(name), WparDefined{*changed, false}, record.version},
                    {task_stream(id), TaskFinished{"succeeded", "", ""}}},
                   ""};
  }
  if (w.discovered) {
    // Made by hand there: the manager knows neither its capability set nor
    // its limits, and a change sends the whole set (it would reset the rest).
    return reject(RejectionCode::kConflict,
                  fmt::format("WPAR {} was discovered on {} (made there, not deployed by wpm): the manager does not "
                              "know its capabilities and limits; change them there (wpm-agent chwpar {}), or deploy "
                              "a definition of it with wpm",
                              name, w.system, name));
  }
  auto letter = inventory::wpar_state_letter(w);
  auto wpar_state = state_of_letter(letter);
  if (!wpar_state) {
    return reject(RejectionCode::kConflict,
                  fmt::format("the state of WPAR {} on {} is not known yet; wait for its agent's report (wpm system "
                              "discover asks at once)",
                              name, w.system));
  }
  runtime::WparStatus status{*wpar_state,
                             w.type == "application" ? runtime::WparType::kApplication : runtime::WparType::kSystem,
                             w.checkpointable};
  if (auto allowed = runtime::decide(status, runtime::Operation::kChange); !allowed) {
    return reject(RejectionCode::kConflict, fmt::format("WPAR {}: {}", name, allowed.error().message));
  }
  // Its capability set within the bounding set of the system it is on.
  auto checked = check_arrival(inv, *changed, w.system);
  if (!checked) return std::unexpected(checked.error());
  std::string warning;
  if (changed->capabilities != w.capabilities && *wpar_state != runtime::WparState::kDefined) {
    warning = fmt::format("WPAR {} runs: its new capability set applies to processes started from now on (the "
                          "running ones keep theirs until it starts again)",
                          name);
  }
  return Decided{{{task_stream(id), std::move(created)}}, warning};
}

}  // namespace wpm::executor::detail
