#include "services/executor/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <set>

#include "services/executor/internal.h"
#include "services/kernel/snapshot_frames.h"

namespace wpm::executor {
namespace {

using nlohmann::json;
using kernel::Rejection;
using kernel::RejectionCode;
using namespace detail;

constexpr std::array<std::string_view, 10> kKinds = {"deploy", "start", "stop",   "pause",    "resume",
                                                     "freeze", "kill",  "remove", "relocate", "modify"};

// The lifecycle operation of the agent's table a task kind is checked against.
std::optional<runtime::Operation> lifecycle_operation(const std::string& kind, const TaskOptions& o) {
  if (kind == "start") return runtime::Operation::kStart;
  if (kind == "stop") return o.force ? runtime::Operation::kForceStop : runtime::Operation::kStop;
  if (kind == "pause" || kind == "relocate") return runtime::Operation::kCheckpointPause;
  if (kind == "resume") return runtime::Operation::kResume;
  if (kind == "freeze") return runtime::Operation::kFreeze;
  if (kind == "kill") return runtime::Operation::kKill;
  if (kind == "remove") return runtime::Operation::kRemove;
  if (kind == "modify") return runtime::Operation::kChange;
  return std::nullopt;
}

}  // namespace

bool is_executor_command(std::string_view name) {
  if (name == "task.cancel" || name == "task.approve" || name == "system.evacuate" || name == "system.mark-dead") {
    return true;
  }
  if (!name.starts_with("wpar.")) return false;
  return std::find(kKinds.begin(), kKinds.end(), name.substr(5)) != kKinds.end();
}

json options_to_json(const TaskOptions& o) {
  json j = json::object();
  if (o.force) j["force"] = true;
  if (o.start) j["start"] = true;
  if (o.preserve_fs) j["preserveFs"] = true;
  if (o.keep_definition) j["keepDefinition"] = true;
  if (!o.target.empty()) j["to"] = o.target;
  if (o.ended) j["ended"] = true;
  if (!o.shared_root.empty()) j["sharedRoot"] = o.shared_root;
  if (!o.plan.empty()) j["plan"] = o.plan;
  if (!o.skipped.empty()) j["skipped"] = o.skipped;
  if (!o.changes.is_null()) j["changes"] = o.changes;
  if (o.approval_expires_ns != 0) j["approvalExpiresNs"] = o.approval_expires_ns;
  if (!o.reason.empty()) j["reason"] = o.reason;
  return j;
}

TaskOptions options_from_json(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  TaskOptions o;
  if (!j.is_object()) return o;
  o.force = j.value("force", false);
  o.start = j.value("start", false);
  o.preserve_fs = j.value("preserveFs", false);
  o.keep_definition = j.value("keepDefinition", false);
  o.ended = j.value("ended", false);
  o.shared_root = j.contains("sharedRoot") && j["sharedRoot"].is_string() ? j["sharedRoot"].get<std::string>() : "";
  o.target = j.contains("to") && j["to"].is_string() ? j["to"].get<std::string>() : std::string();
  if (j.contains("changes") && j["changes"].is_object()) o.changes = j["changes"];
  if (j.contains("reason") && j["reason"].is_string()) o.reason = j["reason"].get<std::string>();
  if (j.contains("approvalExpiresNs") && j["approvalExpiresNs"].is_number_integer()) {
    o.approval_expires_ns = j["approvalExpiresNs"].get<int64_t>();
  }
  try {
    if (j.contains("plan")) o.plan = j["plan"].get<std::vector<std::pair<std::string, std::string>>>();
    if (j.contains("skipped")) o.skipped = j["skipped"].get<std::vector<std::pair<std::string, std::string>>>();
  } catch (const std::exception&) {  // nlohmann: not pairs of strings (never written so)
  }
  return o;
}

const Operation* Task::in_flight() const {
  for (const auto& op : operations) {
    if (!op.finished) return &op;
  }
  return nullptr;
}

std::string task_stream(const std::string& id) { return "task/" + id; }
std::string placement_stream(const std::string& wpar) { return "placement/" + wpar; }

namespace {

// A task's events, folded; shared by the whole-log fold and task_from_events.
void fold_task_event(Task& t, const Event& e) {
  std::visit(
      [&](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, TaskCreated>) {
          t.kind = p.kind;
          t.wpar = p.wpar;
          t.system = p.system;
          t.user = p.user;
          t.parent = p.parent;
          t.options = options_from_json(p.args);
          t.created_ns = e.timestamp_ns;
          t.state = t.options.approval_expires_ns != 0 ? "waiting" : "running";
        } else if constexpr (std::is_same_v<T, TaskApproved>) {
          if (t.waiting()) t.state = "running";
          t.approved_by = p.user;
          t.approved_ns = e.timestamp_ns;
        } else if constexpr (std::is_same_v<T, OperationStarted>) {
          auto it = std::find_if(t.operations.begin(), t.operations.end(),
                                 [&](const Operation& o) { return o.id == p.operation_id; });
          Operation op{p.operation_id, p.system, p.wpar, p.action, p.epoch, p.attempt, e.timestamp_ns, p.deadline_ns};
          if (it == t.operations.end()) {
            t.operations.push_back(std::move(op));
          } else {
            *it = std::move(op);  // a new attempt of the same operation
          }
        } else if constexpr (std::is_same_v<T, OperationFinished>) {
          auto it = std::find_if(t.operations.begin(), t.operations.end(),
                                 [&](const Operation& o) { return o.id == p.operation_id; });
          if (it == t.operations.end()) return;
          it->finished = true;
          it->outcome = p.outcome;
          it->exit_code = p.exit_code;
          it->output = p.output;
          it->error = p.error;
          it->wpar_state = p.wpar_state;
          it->finished_ns = e.timestamp_ns;
        } else if constexpr (std::is_same_v<T, TaskFinished>) {
          t.state = p.state;
          t.error = p.error;
          t.recovery = p.recovery;
          t.wpar_state = p.wpar_state;
          t.cause = p.cause;
          t.finished_ns = e.timestamp_ns;
        }
      },
      e.payload);
  t.version = e.stream_version;
}

}  // namespace

Executor evolve(Executor state, const Event& event) {
  fold_into(state, Event(event));
  return state;
}

void fold_into(Executor& state, Event&& e) {
  if (e.sequence != 0 && e.sequence <= state.applied) return;
  std::visit(
      [&](auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, CommandRequested>) {
          if (is_executor_command(p.command) && e.stream_id.starts_with("command/")) {
            std::string id = e.stream_id.substr(8);
            state.pending[id] = PendingCommand{id, std::move(p), e.sequence, e.timestamp_ns};
          }
        } else if constexpr (std::is_same_v<T, CommandDecided>) {
          if (e.stream_id.starts_with("command/")) state.pending.erase(e.stream_id.substr(8));
        } else if constexpr (std::is_same_v<T, WparPlaced>) {
          state.placements[p.wpar] = Placement{p.system, p.epoch, e.stream_version};
          state.stale.erase({p.wpar, p.system});  // placed there again: that copy is the WPAR
        } else if constexpr (std::is_same_v<T, SystemRemoved>) {
          std::erase_if(state.stale, [&](const auto& s) { return s.first.second == p.system_id; });
          // Its WPARs stay there unmanaged (--keep-wpars): placed nowhere.
          for (auto& [wpar, placement] : state.placements) {
            if (placement.system == p.system_id) placement.system.clear();
          }
        } else if constexpr (std::is_same_v<T, AgentReportRefused>) {
          if (!p.subject.starts_with("wpar/")) return;
          std::string wpar = p.subject.substr(5);
          auto placed = state.placements.find(wpar);
          // Only a WPAR this manager placed: it is now elsewhere, or nowhere.
          if (placed == state.placements.end() || placed->second.system == p.system_id) return;
          state.stale[{wpar, p.system_id}] = Executor::StaleCopy{e.sequence, 0};
        } else if constexpr (std::is_same_v<T, CompatibilityAnalyzed>) {
          state.compat[{p.departure_properties, p.arrival_properties}] = std::move(p.results);
        } else if constexpr (std::is_same_v<T, TaskCreated> || std::is_same_v<T, OperationStarted> ||
                             std::is_same_v<T, OperationFinished> || std::is_same_v<T, TaskFinished> ||
                             std::is_same_v<T, TaskApproved>) {
          if (!e.stream_id.starts_with("task/")) return;
          std::string id = e.stream_id.substr(5);
          auto it = state.tasks.find(id);
          if constexpr (std::is_same_v<T, TaskCreated>) {
            it = state.tasks.try_emplace(id).first;
            it->second.id = id;
          }
          if (it == state.tasks.end()) return;  // a task finished long ago, no longer kept
          Task& t = it->second;
          bool was_running = !t.finished();
          fold_task_event(t, e);
          if constexpr (std::is_same_v<T, OperationFinished>) {
            // A copy its agent reported where the WPAR is no longer placed
            // (a relocation's frozen departure, reported between its
            // placement and its removal) is gone once removed there.
            for (const auto& o : t.operations) {
              if (o.id == p.operation_id && o.action == "remove" && p.outcome == "ok") {
                state.stale.erase({t.wpar, o.system});
              }
            }
            // Kept short in memory (task.show reads the whole from the task's stream).
            for (auto& o : t.operations) {
              if (o.output.size() > kOutputKeptBytes) o.output.erase(0, o.output.size() - kOutputKeptBytes);
              if (o.error.size() > kOutputKeptBytes) o.error.erase(0, o.error.size() - kOutputKeptBytes);
            }
          }
          if constexpr (std::is_same_v<T, TaskCreated>) {
            if (!t.finished()) state.running.insert(id);
            // The lock of a WPAR is its running task's; a task made already
            // ended (an evacuation's child that could not start) takes none.
            if (!t.wpar.empty()) state.busy.try_emplace(t.wpar, id);
            if (t.kind == "fence") state.stale.erase({t.wpar, t.system});
          }
          if constexpr (std::is_same_v<T, TaskFinished>) {
            // A fence that failed is tried again (a new task, after a pause):
            // the copy may still run there.
            if (t.kind == "fence" && p.state == "failed" && e.sequence != 0) {
              state.stale[{t.wpar, t.system}] = Executor::StaleCopy{e.sequence, e.timestamp_ns + kFenceRetryDelayNs};
            }
          }
          if (was_running && t.finished()) {
            state.running.erase(id);
            if (auto b = state.busy.find(t.wpar); b != state.busy.end() && b->second == id) state.busy.erase(b);
            state.finished_order.push_back(id);
            while (state.finished_order.size() > kFinishedTasksKept) {  // bounded: one per turn
              state.tasks.erase(state.finished_order.front());
              state.finished_order.pop_front();
            }
          }
        }
      },
      e.payload);
  if (e.sequence != 0) state.applied = e.sequence;
}

Task with_event(Task task, Payload payload, int64_t timestamp_ns) {
  Event e;
  e.timestamp_ns = timestamp_ns;
  e.stream_id = task_stream(task.id);
  e.stream_version = task.version + 1;
  e.payload = std::move(payload);
  fold_task_event(task, e);
  return task;
}

std::optional<Task> task_from_events(const std::string& id, const std::vector<Event>& events) {
  if (events.empty() || !std::holds_alternative<TaskCreated>(events.front().payload)) return std::nullopt;
  Task t;
  t.id = id;
  for (const auto& e : events) fold_task_event(t, e);
  return t;
}

uint64_t stream_version(const Executor& state, const std::string& stream) {
  if (stream.starts_with("task/")) {
    auto it = state.tasks.find(stream.substr(5));
    return it == state.tasks.end() ? 0 : it->second.version;
  }
  if (stream.starts_with("placement/")) {
    auto it = state.placements.find(stream.substr(10));
    return it == state.placements.end() ? 0 : it->second.version;
  }
  return 0;
}

std::expected<Command, Rejection> parse_command(std::string_view name, const json& args) {
  auto text = [&](const char* key) -> std::string {
    return args.contains(key) && args[key].is_string() ? args[key].get<std::string>() : std::string();
  };
  auto flag = [&](const char* key) { return args.contains(key) && args[key].is_boolean() && args[key].get<bool>(); };
  std::set<std::string> allowed = {"name"};
  // --approval DURATION of a relocation or an evacuation: how long it waits for task.approve.
  auto approval = [&]() -> std::expected<int64_t, Rejection> {
    if (!args.contains("approval")) return 0;
    auto ns = args["approval"].is_string() ? inventory::parse_duration_ns(args["approval"].get<std::string>())
                                           : std::nullopt;
    if (!ns || *ns < kApprovalMinNs || *ns > kApprovalMaxNs) {
      return reject(RejectionCode::kInvalid,
                    "approval must be how long the task waits for it, from 1m to 7d (e.g. \"30m\", \"4h\")");
    }
    return *ns;
  };
  if (name == "system.evacuate" || name == "system.mark-dead") {
    for (const auto& [key, value] : args.items()) {
      if (key != "name" && !(key == "approval" && name == "system.evacuate")) {
        return reject(RejectionCode::kInvalid, fmt::format("unknown argument '{}'", key));
      }
    }
    if (text("name").empty()) return reject(RejectionCode::kInvalid, fmt::format("{} needs the system's name", name));
    if (name == "system.mark-dead") return MarkDead{text("name")};
    auto wait = approval();
    if (!wait) return std::unexpected(wait.error());
    return Evacuate{text("name"), *wait};
  }
  if (name == "task.cancel" || name == "task.approve") {
    for (const auto& [key, value] : args.items()) {
      if (key != "task") return reject(RejectionCode::kInvalid, fmt::format("unknown argument '{}'", key));
    }
    if (text("task").empty()) return reject(RejectionCode::kInvalid, fmt::format("{} needs the task's id", name));
    if (name == "task.approve") return ApproveTask{text("task")};
    return CancelTask{text("task")};
  }
  std::string kind(name.substr(5));
  if (kind == "modify") {
    // The inventory's own reading of a definition's fields (unknown ones refused).
    if (auto fields = inventory::parse_command(name, args); !fields) return std::unexpected(fields.error());
    WparAction a{kind, text("name"), "", {}};
    if (a.wpar.empty()) return reject(RejectionCode::kInvalid, "wpar.modify needs the WPAR's name");
    a.options.changes = args;
    a.options.changes.erase("name");
    return a;
  }
  if (kind == "deploy") allowed.insert({"system", "start"});
  if (kind == "stop") allowed.insert("force");
  if (kind == "remove") allowed.insert({"preserveFs", "keepDefinition"});
  if (kind == "relocate") allowed.insert({"to", "force", "approval", "reason"});
  for (const auto& [key, value] : args.items()) {
    if (!allowed.contains(key)) return reject(RejectionCode::kInvalid, fmt::format("unknown argument '{}'", key));
    if (key == "reason" && !value.is_string()) return reject(RejectionCode::kInvalid, "'reason' must be text");
    if (key != "name" && key != "system" && key != "to" && key != "approval" && key != "reason" && !value.is_boolean()) {
      return reject(RejectionCode::kInvalid, fmt::format("'{}' must be true or false", key));
    }
  }
  WparAction a{kind, text("name"), text("system"), {}};
  a.options.force = flag("force");
  a.options.start = flag("start");
  a.options.preserve_fs = flag("preserveFs");
  a.options.keep_definition = flag("keepDefinition");
  if (a.wpar.empty()) return reject(RejectionCode::kInvalid, fmt::format("wpar.{} needs the WPAR's name", kind));
  if (kind == "deploy" && a.system.empty()) {
    return reject(RejectionCode::kInvalid, "wpar.deploy needs the system to deploy on (--system H)");
  }
  if (kind == "relocate") {
    a.system = text("to");
    a.options.reason = text("reason");
    if (a.system.empty()) return reject(RejectionCode::kInvalid, "wpar.relocate needs the system to move to (--to H)");
    auto wait = approval();
    if (!wait) return std::unexpected(wait.error());
    a.approval_ns = *wait;
  }
  return a;
}

Decision decide(const Executor& state, const inventory::Inventory& inv, const Command& command,
                const kernel::Context& context) {
  const std::string id = context.command_id.value();
  if (const auto* cancel = std::get_if<CancelTask>(&command)) {
    auto found = inventory::resolve_prefix(state.tasks, cancel->task, "task");
    if (!found) return std::unexpected(found.error());
    const Task& t = state.tasks.at(*found);
    if (t.finished()) {
      return reject(RejectionCode::kConflict, fmt::format("task {} already ended ({})", t.id, t.state));
    }
    // An operation on its agent cannot be called back: its outcome decides
    // what the WPAR is, so the task waits for it.
    if (const auto* op = t.in_flight()) {
      return reject(RejectionCode::kConflict,
                    fmt::format("operation {} ({} on {}) is running and cannot be called back; wait for it (wpm task "
                                "wait {}): a task is cancelled between its operations",
                                op->id, op->action, op->system, t.id));
    }
    if (t.kind == "relocate" && !t.operations.empty()) {
      return reject(RejectionCode::kConflict,
                    fmt::format("relocation {} of WPAR {} has started: it is not cancelled halfway; it ends on one "
                                "system by itself (moved, or back on {} when a step fails)",
                                t.id, t.wpar, t.system));
    }
    std::string user = user_of(context);
    std::vector<Change> changes;
    std::string recovery = "no further operation starts";
    const bool made = std::any_of(t.operations.begin(), t.operations.end(), [](const Operation& o) {
      return o.outcome == "ok" || !o.wpar_state.empty();
    });
    if (t.kind == "deploy" && !made) {
      // Nothing of it was made: its placement is withdrawn.
      auto p = state.placements.find(t.wpar);
      uint64_t epoch = p == state.placements.end() ? 0 : p->second.epoch;
      changes.push_back({placement_stream(t.wpar), WparPlaced{t.wpar, "", epoch + 1, t.system}});
      recovery = fmt::format("nothing of WPAR {} was made on {}; its placement there was withdrawn", t.wpar, t.system);
    }
    changes.push_back({task_stream(t.id), TaskFinished{"cancelled", fmt::format("cancelled by {}", user), recovery}});
    return Decided{std::move(changes), ""};
  }
  if (const auto* approve = std::get_if<ApproveTask>(&command)) {
    auto found = inventory::resolve_prefix(state.tasks, approve->task, "task");
    if (!found) return std::unexpected(found.error());
    const Task& t = state.tasks.at(*found);
    if (!t.waiting()) {
      return reject(RejectionCode::kConflict,
                    t.approved_by.empty()
                        ? fmt::format("task {} does not wait for approval ({})", t.id, t.state)
                        : fmt::format("task {} was approved already by {} ({})", t.id, t.approved_by, t.state));
    }
    if (context.now_ns >= t.options.approval_expires_ns) {
      return reject(RejectionCode::kConflict,
                    fmt::format("task {}'s approval expired; ask for it again", t.id));
    }
    return Decided{{{task_stream(t.id), TaskApproved{user_of(context)}}}, ""};
  }
  if (const auto* dead = std::get_if<MarkDead>(&command)) return decide_mark_dead(state, inv, *dead, context);
  if (const auto* evacuate = std::get_if<Evacuate>(&command)) return decide_evacuate(state, inv, *evacuate, context);
  const auto& a = std::get<WparAction>(command);
  auto name = inventory::resolve_prefix(inv.wpars, a.wpar, "WPAR");
  if (!name) return std::unexpected(name.error());
  const WparDefinition& w = inv.wpars.at(*name).wpar;
  if (auto b = state.busy.find(*name); b != state.busy.end()) {
    const auto& running = state.tasks.at(b->second);
    return reject(RejectionCode::kConflict,
                  fmt::format("WPAR {} has a task running ({} {}); wait for it (wpm task wait {}) or cancel it "
                              "(wpm task cancel {})",
                              *name, running.kind, running.id, running.id, running.id));
  }
  std::string user = user_of(context);
  WparAction act = a;  // with the approval's end, when it waits for one
  if (a.approval_ns != 0) act.options.approval_expires_ns = context.now_ns + a.approval_ns;
  TaskCreated created{a.kind, *name, w.system, options_to_json(act.options).dump(), "", user};
  const auto placement = state.placements.find(*name);
  const uint64_t epoch = placement == state.placements.end() ? 0 : placement->second.epoch;
  if (a.kind == "deploy") {
    if (!w.system.empty()) {
      return reject(RejectionCode::kConflict, fmt::format("WPAR {} is already deployed on {}; remove it there first "
                                                          "(wpm wpar remove {} --keep-definition)",
                                                          *name, w.system, *name));
    }
    auto system = inventory::resolve_prefix(inv.registry.systems(), a.system, "system");
    if (!system) return std::unexpected(system.error());
    if (a.options.start && w.type == "application") {
      return reject(RejectionCode::kInvalid, "an application WPAR starts when it is deployed: drop --start");
    }
    auto checked = check_arrival(inv, w, *system);
    if (!checked) return std::unexpected(checked.error());
    created.system = *system;
    return Decided{{{placement_stream(*name), WparPlaced{*name, *system, epoch + 1, ""}},
                    {task_stream(id), created}},
                   *checked};
  }
  if (a.kind == "relocate") return decide_relocate(state, inv, *name, act, std::move(created), id);
  if (a.kind == "modify") return decide_modify(inv, *name, a, std::move(created), id);
  if (a.kind == "remove" && w.system.empty()) {
    if (a.options.keep_definition) {
      return reject(RejectionCode::kConflict,
                    fmt::format("WPAR {} is not deployed: with --keep-definition there is nothing to remove", *name));
    }
    // Only the definition goes, by the inventory's own rule for it; the
    // inventory drops it when it folds the finished task.
    if (auto allowed = inventory::decide(inv, inventory::RemoveWpar{*name}, context); !allowed) {
      return std::unexpected(allowed.error());
    }
    return Decided{{{task_stream(id), created}, {task_stream(id), TaskFinished{"succeeded", "", ""}}}, ""};
  }
  if (w.system.empty()) {
    return reject(RejectionCode::kConflict,
                  fmt::format("WPAR {} is not deployed (Undeployed): deploy it first (wpm wpar deploy {} --system H)",
                              *name, *name));
  }
  auto letter = inventory::wpar_state_letter(w);
  auto wpar_state = state_of_letter(letter);
  if (!wpar_state && a.kind == "remove") {
    // Its state there is unknown (a deploy without an answer): removing it is
    // how it is settled; an agent without it answers that it has nothing.
    return Decided{{{task_stream(id), created}}, ""};
  }
  if (!wpar_state) {
    return reject(RejectionCode::kConflict,
                  fmt::format("the state of WPAR {} on {} is not known yet; wait for its agent's report (wpm system "
                              "discover asks at once)",
                              *name, w.system));
  }
  auto op = lifecycle_operation(a.kind, a.options);
  runtime::WparStatus status{*wpar_state, w.type == "application" ? runtime::WparType::kApplication
                                                                  : runtime::WparType::kSystem,
                             w.checkpointable};
  if (auto allowed = runtime::decide(status, *op); !allowed) {
    return reject(RejectionCode::kConflict, fmt::format("WPAR {}: {}", *name, allowed.error().message));
  }
  return Decided{{{task_stream(id), created}}, ""};
}
std::vector<Spawn> ended_application_tasks(const Executor& state, const inventory::Inventory& inv) {
  std::vector<Spawn> out;
  for (const auto& [name, r] : inv.wpars) {
    const WparDefinition& w = r.wpar;
    if (w.type != "application" || w.discovered || w.system.empty()) continue;
    if (inventory::wpar_state_letter(w) != "D" || state.busy.contains(name)) continue;
    auto placed = state.placements.find(name);
    if (placed == state.placements.end() || placed->second.system != w.system) continue;
    if (system_problem(inv, w.system)) continue;  // its agent cannot take the removal now
    Spawn s;
    s.child = fmt::format("ended-{}-{}", name, placed->second.epoch);
    if (state.tasks.contains(s.child)) continue;
    TaskOptions o;
    o.keep_definition = true;
    o.ended = true;
    s.created = TaskCreated{"remove", name, w.system, options_to_json(o).dump(), "", "service:executor"};
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> plan(const Task& task, const inventory::Inventory& inv) {
  if (task.kind == "deploy") return {"deploy"};
  if (task.kind == "fence") return {"remove"};  // the stale copy, forced
  if (task.kind == "stop") return {task.options.force ? "forceStop" : "stop"};
  if (task.kind == "remove") {
    // An undeployed WPAR's removal has no operation (decided and finished at once).
    (void)inv;
    return {"remove"};
  }
  return {task.kind};
}

int64_t action_timeout_ns(std::string_view action) {
  constexpr int64_t s = 1'000'000'000;
  if (action == "deploy") return 120 * s;   // a system WPAR's file systems are made
  if (action == "pause" || action == "freeze") return 90 * s;  // the workload has 30 s, then the state file
  if (action == "resume" || action == "kill") return 30 * s;
  if (action == "receive") return 600 * s;  // a state file over the network (a stall ends it after 15 s)
  if (action == "restore") return 120 * s;  // a system WPAR's file systems are put back
  return 60 * s;  // start, stop (its own timeout, then forced), remove
}

bool run_again_code(int exit_code) { return exit_code == 3 || exit_code == 5 || exit_code == 6 || exit_code == 17; }

bool run_again(const Operation& op) {
  // The agent was busy with another operation on the WPAR: it ran nothing.
  if (op.outcome == "refused" && op.exit_code == 17) return true;
  // chkptwpar's (and restartwpar's) "run the command again"; elsewhere 17
  // means a state that will not change by itself (killwpar, resumewpar).
  bool checkpoints = op.action == "pause" || op.action == "freeze" || op.action == "restore";
  return op.outcome == "failed" && checkpoints && run_again_code(op.exit_code);
}

bool held_for_reconciliation(const inventory::Inventory& inv, const std::string& system, bool reconciled,
                             uint16_t agent_port) {
  if (reconciled || system_problem(inv, system)) return false;
  // An agent that never said where it listens cannot be probed: its
  // operation fails at once, saying so, rather than wait for nothing.
  const auto* s = inv.registry.by_id(system);
  return s != nullptr && (s->agent_port != 0 || agent_port != 0);
}

std::optional<std::string> system_problem(const inventory::Inventory& inv, const std::string& system) {
  if (inv.registry.by_id(system) == nullptr) return fmt::format("system {} is no longer registered", system);
  auto status = inv.system_status(system);
  if (status.state == "online") return std::nullopt;
  return fmt::format("system {} is {} ({}): its agent cannot take commands now", system,
                     status.state == "offline" ? "Offline" : "Unreachable", status.reason);
}

Step next_step(const Executor& state, const Task& task, const inventory::Inventory& inv, int64_t now_ns) {
  if (task.finished()) return Idle{};
  if (task.waiting()) {
    if (now_ns < task.options.approval_expires_ns) return Idle{};
    return Finish{TaskFinished{"cancelled", "nobody approved it in time (wpm task approve)",
                               "nothing was done: it expired before it started"},
                  std::nullopt};
  }
  if (task.kind == "evacuate") return evacuation_step(state, task);
  if (const auto* op = task.in_flight()) {
    if (now_ns > op->deadline_ns) {
      return TimedOut{OperationFinished{op->id, op->attempt, "timeout", -1, "",
                                        fmt::format("no result from {}'s agent within {} s; the operation's effect "
                                                    "is unknown: the WPAR's state is as its agent next reports it",
                                                    op->system, action_timeout_ns(op->action) / 1'000'000'000),
                                        ""}};
    }
    return Await{*op};
  }
  const auto steps = plan(task, inv);
  size_t done = static_cast<size_t>(std::count_if(task.operations.begin(), task.operations.end(), achieved));
  const auto placement = state.placements.find(task.wpar);
  const uint64_t epoch = placement == state.placements.end() ? 0 : placement->second.epoch;
  if (!task.operations.empty() && !achieved(task.operations.back())) {
    const Operation& last = task.operations.back();
    if (run_again(last) && last.attempt < kAttemptsMax) {
      if (now_ns < last.finished_ns + kRetryDelayNs) return Idle{};
      return Start{OperationStarted{last.id, last.system, last.wpar, last.action, last.epoch, last.attempt + 1,
                                    now_ns + action_timeout_ns(last.action)}};
    }
  }
  if (task.kind == "relocate") return relocation_step(state, task, now_ns);
  if (!task.operations.empty() && !achieved(task.operations.back())) {
    const Operation& last = task.operations.back();
    Finish f{TaskFinished{"failed", describe_failure(last), ""}, std::nullopt};
    if (task.options.ended) {
      // Its command had ended: nothing of it runs there, so it is
      // Undeployed anyway; what is left there is a stale copy, fenced.
      f.placed = WparPlaced{task.wpar, "", epoch + 1, task.system};
      f.event.recovery = fmt::format("application WPAR {} is Undeployed (its command had ended); what is left of it "
                                     "on {} is removed there by a fence task",
                                     task.wpar, task.system);
      return f;
    }
    if (task.kind == "deploy" && last.wpar_state.empty() &&
        (last.outcome == "failed" || last.outcome == "refused" || last.outcome == "unsent")) {
      // The agent said it made nothing, or never got it: the placement is withdrawn.
      f.placed = WparPlaced{task.wpar, "", epoch + 1, task.system};
      f.event.recovery = fmt::format("nothing of WPAR {} was left on {}; its placement there was withdrawn and it "
                                     "is Undeployed again",
                                     task.wpar, task.system);
    } else if (task.kind == "deploy" && last.wpar_state.empty()) {
      // No answer: the agent may have made it. It stays placed there (so it
      // is never placed twice) until its agent's report settles it.
      f.event.recovery = fmt::format("the outcome on {} is unknown: WPAR {} stays placed there; its state shows "
                                     "once its agent reports (wpm system discover), or remove it there (wpm wpar "
                                     "remove {} --keep-definition)",
                                     task.system, task.wpar, task.wpar);
    } else if (last.wpar_state == "B") {
      f.event.recovery = fmt::format("none possible here: WPAR {} is Broken on {} ({}); stop it with --force or "
                                     "remove it",
                                     task.wpar, task.system, last.error);
    } else {
      f.event.recovery = last.wpar_state.empty()
                             ? "none: the WPAR's state is as its agent next reports it"
                             : fmt::format("none needed: WPAR {} is as it was ({})", task.wpar, last.wpar_state);
      if (task.kind == "modify") {
        f.event.recovery = last.outcome == "timeout" || last.outcome == "unreachable"
                               ? fmt::format("none: whether {} took the change is unknown; the definition here is "
                                             "unchanged, so the same wpm wpar modify sends it again (it sets the "
                                             "whole set: running it twice is safe)",
                                             task.system)
                               : f.event.recovery + "; its definition here is unchanged";
      }
    }
    return f;
  }
  if (done >= steps.size()) {
    Finish f{TaskFinished{"succeeded", "", ""}, std::nullopt};
    if (task.kind == "remove") f.placed = WparPlaced{task.wpar, "", epoch + 1, task.system};
    if (task.kind == "modify") {
      // Its system has the change: the definition here follows, on the
      // definition as it is now (a group deleted meanwhile is not taken).
      auto record = inv.wpars.find(task.wpar);
      auto change = modify_change(task.options, task.wpar);
      if (record != inv.wpars.end() && change) {
        WparDefinition w = inventory::with_fields(record->second.wpar, change->fields);
        if (!inv.groups.contains(w.group)) w.group = record->second.wpar.group;
        // What its agent said of it in that answer: this end may be decided
        // on the answer before the inventory folded it (one append).
        if (const Operation& last = task.operations.back(); last.finished && !last.wpar_state.empty()) {
          w.reported_state = last.wpar_state;
          w.cause = last.wpar_state == "B" ? last.error : "";
        }
        f.defined = WparDefined{std::move(w), false};
        f.defined_version = record->second.version;
      }
    }
    return f;
  }
  const std::string& action = steps[done];
  return Start{OperationStarted{fmt::format("{}.{}", task.id, done + 1), task.system, task.wpar, action, epoch, 1,
                                now_ns + action_timeout_ns(action)}};
}
json task_to_json(const Task& t, bool with_output) {
  json ops = json::array();
  for (const auto& o : t.operations) {
    json j = {{"id", o.id},           {"action", o.action},     {"system", o.system},       {"wpar", o.wpar},
              {"epoch", o.epoch},     {"attempt", o.attempt},   {"startedNs", o.started_ns}, {"deadlineNs", o.deadline_ns},
              {"finished", o.finished}, {"outcome", o.outcome}, {"exitCode", o.exit_code},   {"error", o.error},
              {"wparState", o.wpar_state}, {"finishedNs", o.finished_ns}};
    if (with_output) j["output"] = o.output;
    ops.push_back(std::move(j));
  }
  return {{"id", t.id},
          {"kind", t.kind},
          {"wpar", t.wpar},
          {"system", t.system},
          {"user", t.user},
          {"parent", t.parent},
          {"options", options_to_json(t.options)},
          {"state", t.state},
          {"error", t.error},
          {"recovery", t.recovery},
          {"wparState", t.wpar_state},
          {"cause", t.cause},
          {"createdNs", t.created_ns},
          {"finishedNs", t.finished_ns},
          {"approvedBy", t.approved_by},
          {"approvedNs", t.approved_ns},
          {"operations", std::move(ops)}};
}

bool ExecutorModel::wants(EventType type) {
  switch (type) {
    case EventType::kCommandRequested:
    case EventType::kCommandDecided:
    case EventType::kTaskCreated:
    case EventType::kOperationStarted:
    case EventType::kOperationFinished:
    case EventType::kTaskFinished:
    case EventType::kTaskApproved:
    case EventType::kWparPlaced:
    case EventType::kCompatibilityAnalyzed:
    case EventType::kAgentReportRefused:
    case EventType::kSystemRemoved: return true;
    default: return false;
  }
}

// Snapshot form: the applied sequence, then the events that rebuild the
// state: placements, each kept task's events (finished ones oldest first, so
// the kept set is the same), and the pending commands.
std::string ExecutorModel::encode(const State& state) {
  kernel::SnapshotWriter out;
  out.word(state.applied);
  for (const auto& [wpar, p] : state.placements) {
    out.event(placement_stream(wpar), p.version, 0, WparPlaced{wpar, p.system, p.epoch, ""});
  }
  for (const auto& [pair, results] : state.compat) {
    out.event("compat/" + pair.first + "/" + pair.second, 1, 0, CompatibilityAnalyzed{pair.first, pair.second, results});
  }
  auto write_task = [&](const Task& t) {
    const std::string stream = task_stream(t.id);
    out.event(stream, t.version, t.created_ns,
              TaskCreated{t.kind, t.wpar, t.system, options_to_json(t.options).dump(), t.parent, t.user});
    if (!t.approved_by.empty()) out.event(stream, t.version, t.approved_ns, TaskApproved{t.approved_by});
    for (const auto& o : t.operations) {
      out.event(stream, t.version, o.started_ns,
                OperationStarted{o.id, o.system, o.wpar, o.action, o.epoch, o.attempt, o.deadline_ns});
      if (o.finished) {
        out.event(stream, t.version, o.finished_ns,
                  OperationFinished{o.id, o.attempt, o.outcome, o.exit_code, o.output, o.error, o.wpar_state});
      }
    }
    if (t.finished()) {
      out.event(stream, t.version, t.finished_ns, TaskFinished{t.state, t.error, t.recovery, t.wpar_state, t.cause});
    }
  };
  for (const auto& id : state.finished_order) {
    if (auto it = state.tasks.find(id); it != state.tasks.end()) write_task(it->second);
  }
  for (const auto& [id, t] : state.tasks) {
    if (!t.finished()) write_task(t);
  }
  for (const auto& [id, p] : state.pending) out.event("command/" + id, 1, p.requested_ns, p.request, p.sequence);
  for (const auto& [key, s] : state.stale) {
    out.event("agent-report-refusals", 1, s.not_before_ns, AgentReportRefused{key.second, "wpar/" + key.first, ""},
              s.sequence);
  }
  return out.take();
}

Result<Executor> ExecutorModel::decode(std::string_view bytes) {
  kernel::SnapshotReader in(bytes, "executor snapshot");
  auto applied = in.word();
  if (!applied) return std::unexpected(applied.error());
  Executor state;
  while (!in.done()) {  // bounded: every round consumes at least 4 bytes
    auto e = in.event();
    if (!e) return std::unexpected(e.error());
    if (auto* p = std::get_if<CommandRequested>(&e->payload)) {
      std::string id = e->stream_id.substr(8);
      state.pending[id] = PendingCommand{id, *p, e->sequence, e->timestamp_ns};
      continue;
    }
    if (auto* p = std::get_if<AgentReportRefused>(&e->payload)) {
      state.stale[{p->subject.substr(5), p->system_id}] = Executor::StaleCopy{e->sequence, e->timestamp_ns};
      continue;
    }
    e->sequence = 0;  // not a log position: folded regardless
    fold_into(state, std::move(*e));
  }
  state.applied = *applied;
  return state;
}

}  // namespace wpm::executor
