#pragma once
// Helpers shared by the executor's pure model files (model.cpp,
// relocation.cpp, evacuation.cpp, fencing.cpp, checks.cpp, modify.cpp); not part of the
// executor's interface.

#include <expected>
#include <optional>
#include <string>

#include "agents/runtime/lifecycle.h"
#include "services/executor/model.h"

namespace wpm::executor::detail {

std::unexpected<kernel::Rejection> reject(kernel::RejectionCode code, std::string message);
// The user a command came from ("user:alice" → "alice"; a service keeps its prefix).
std::string user_of(const kernel::Context& context);
// A WPAR state letter (D A P F L T B) as the agent's lifecycle state.
std::optional<runtime::WparState> state_of_letter(const std::string& letter);
// The checks of a WPAR against a system it would arrive on (deploy,
// relocation): the seed's two network troubleshooting cases and the
// capability set. The refusal, or a warning ("" none).
std::expected<std::string, kernel::Rejection> check_arrival(const inventory::Inventory& inv, const WparDefinition& w,
                                                            const std::string& system);
// Whether an operation did what its task needs.
bool achieved(const Operation& op);
// One line on how an operation failed.
std::string describe_failure(const Operation& op);

// decide() of each command kind that lives beside its own rules.
Decision decide_relocate(const Executor& state, const inventory::Inventory& inv, const std::string& name,
                         const WparAction& a, TaskCreated created, const std::string& id);
Decision decide_evacuate(const Executor& state, const inventory::Inventory& inv, const Evacuate& evacuate,
                         const kernel::Context& context);
Decision decide_modify(const inventory::Inventory& inv, const std::string& name, const WparAction& a,
                       TaskCreated created, const std::string& id);
Decision decide_mark_dead(const Executor& state, const inventory::Inventory& inv, const MarkDead& dead,
                          const kernel::Context& context);

}  // namespace wpm::executor::detail
