#include "services/executor/model.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <set>

#include "agents/runtime/lifecycle.h"
#include "services/compatibility/tests.h"
#include "services/kernel/snapshot_frames.h"

namespace wpm::executor {
namespace {

using nlohmann::json;
using kernel::Rejection;
using kernel::RejectionCode;

constexpr std::array<std::string_view, 9> kKinds = {"deploy", "start", "stop",   "pause",   "resume",
                                                    "freeze", "kill",  "remove", "relocate"};

std::unexpected<Rejection> reject(RejectionCode code, std::string message) {
  return std::unexpected(Rejection{code, std::move(message)});
}

// The lifecycle operation of the agent's table a task kind is checked against.
std::optional<runtime::Operation> lifecycle_operation(const std::string& kind, const TaskOptions& o) {
  if (kind == "start") return runtime::Operation::kStart;
  if (kind == "stop") return o.force ? runtime::Operation::kForceStop : runtime::Operation::kStop;
  if (kind == "pause" || kind == "relocate") return runtime::Operation::kCheckpointPause;
  if (kind == "resume") return runtime::Operation::kResume;
  if (kind == "freeze") return runtime::Operation::kFreeze;
  if (kind == "kill") return runtime::Operation::kKill;
  if (kind == "remove") return runtime::Operation::kRemove;
  return std::nullopt;
}

std::optional<runtime::WparState> state_of_letter(const std::string& letter) {
  static const std::map<std::string, runtime::WparState> kStates = {
      {"D", runtime::WparState::kDefined}, {"A", runtime::WparState::kActive},
      {"P", runtime::WparState::kPaused},  {"F", runtime::WparState::kFrozen},
      {"L", runtime::WparState::kLoaded},  {"T", runtime::WparState::kTransitional},
      {"B", runtime::WparState::kBroken}};
  auto it = kStates.find(letter);
  if (it == kStates.end()) return std::nullopt;
  return it->second;
}

// An IPv4 address and prefix length from "a.b.c.d" or "a.b.c.d/len".
std::optional<std::pair<uint32_t, int>> parse_ipv4(const std::string& text) {
  std::string address = text.substr(0, text.find('/'));
  int length = 32;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    try {
      length = std::stoi(text.substr(slash + 1));
    } catch (const std::exception&) {  // std::stoi: not a number
      return std::nullopt;
    }
    if (length < 0 || length > 32) return std::nullopt;
  }
  in_addr a{};
  if (::inet_pton(AF_INET, address.c_str(), &a) != 1) return std::nullopt;
  return std::pair{ntohl(a.s_addr), length};
}

bool same_subnet(uint32_t a, uint32_t b, int length) {
  uint32_t mask = length == 0 ? 0 : ~uint32_t{0} << (32 - length);
  return (a & mask) == (b & mask);
}

// Deploy's checks of the WPAR against the target system (the seed's two
// network troubleshooting cases, and the capability set): the refusal, or a
// warning (the same address deployed on another system).
std::expected<std::string, Rejection> check_arrival(const inventory::Inventory& inv, const WparDefinition& w,
                                                    const std::string& system) {
  const auto* s = inv.registry.by_id(system);
  if (s == nullptr) return reject(RejectionCode::kNotFound, fmt::format("no system named '{}'", system));
  std::string warning;
  if (!w.address.empty()) {
    auto address = parse_ipv4(w.address);
    if (!address) {
      return reject(RejectionCode::kInvalid, fmt::format("WPAR {}'s address {} is not an IPv4 address", w.name,
                                                         w.address));
    }
    bool inside = false;
    for (const auto& nic : s->profile.network_interfaces) {
      for (const auto& a : nic.addresses) {
        auto host = parse_ipv4(a);
        if (!host) continue;
        if (host->first == address->first) {
          return reject(RejectionCode::kConflict,
                        fmt::format("WPAR {}'s address {} is the address of {}'s interface {}; give the WPAR an "
                                    "address of its own (wpm wpar modify {} --address A)",
                                    w.name, w.address, system, nic.name, w.name));
        }
        if (same_subnet(host->first, address->first, host->second)) inside = true;
      }
    }
    if (!inside) {
      std::vector<std::string> subnets;
      for (const auto& nic : s->profile.network_interfaces) {
        for (const auto& a : nic.addresses) subnets.push_back(fmt::format("{} {}", nic.name, a));
      }
      return reject(RejectionCode::kConflict,
                    fmt::format("WPAR {}'s address {} is outside every subnet of {} ({}); choose an address in "
                                "one of them, or another system",
                                w.name, w.address, system, subnets.empty() ? "it reports none" : fmt::format("{}", fmt::join(subnets, ", "))));
    }
    for (const auto& [name, other] : inv.wpars) {
      if (name == w.name || other.wpar.system.empty()) continue;
      auto theirs = parse_ipv4(other.wpar.address);
      if (!theirs || theirs->first != address->first) continue;
      if (other.wpar.system == system) {
        return reject(RejectionCode::kConflict,
                      fmt::format("address {} is already used on {} by WPAR {}; give WPAR {} another address",
                                  w.address, system, name, w.name));
      }
      warning = fmt::format("address {} is also deployed on {} (WPAR {}); both hosts will answer for it if they "
                            "share a network",
                            w.address, other.wpar.system, name);
    }
  }
  // Every capability the WPAR names must be in the host's bounding set.
  if (!w.capabilities.empty() && w.capabilities != "none" && w.capabilities != "all" &&
      !s->profile.capabilities.empty()) {
    std::set<std::string> host(s->profile.capabilities.begin(), s->profile.capabilities.end());
    std::vector<std::string> missing;
    size_t start = 0;
    while (start <= w.capabilities.size()) {  // bounded: each turn moves past a comma
      size_t comma = w.capabilities.find(',', start);
      std::string item = w.capabilities.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!item.empty() && item.front() != '-') {
        if (item.front() == '+') item.erase(0, 1);
        std::string name = item;
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
        if (!name.starts_with("cap_")) name = "cap_" + name;
        if (!host.contains(name)) missing.push_back(name);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (!missing.empty()) {
      return reject(RejectionCode::kConflict,
                    fmt::format("WPAR {} needs capabilities that {}'s bounding set lacks: {}; remove them from its "
                                "definition or choose another system",
                                w.name, system, fmt::join(missing, ", ")));
    }
  }
  return warning;
}

// Whether an operation did what its task needs: it succeeded, or it was a
// removal from a system that no longer has the WPAR (the seed's 16, nothing
// left there), which is what a removal wants.
bool achieved(const Operation& op) {
  if (op.outcome == "ok") return true;
  return op.action == "remove" && op.finished && op.exit_code == 16 && op.wpar_state.empty();
}

std::string describe_failure(const Operation& op) {
  std::string why = op.error.empty() ? op.outcome : op.error;
  if (op.outcome == "failed" || op.outcome == "refused") {
    return fmt::format("operation {} ({} of {} on {}) failed with exit code {}: {}", op.id, op.action, op.wpar,
                       op.system, op.exit_code, why);
  }
  return fmt::format("operation {} ({} of {} on {}) {}: {}", op.id, op.action, op.wpar, op.system,
                     op.outcome == "timeout"  ? "timed out"
                     : op.outcome == "unsent" ? "was not sent"
                                              : "could not reach its agent",
                     why);
}

}  // namespace

bool is_executor_command(std::string_view name) {
  if (name == "task.cancel" || name == "system.evacuate" || name == "system.mark-dead") return true;
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
  if (!o.plan.empty()) j["plan"] = o.plan;
  if (!o.skipped.empty()) j["skipped"] = o.skipped;
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
  o.target = j.contains("to") && j["to"].is_string() ? j["to"].get<std::string>() : std::string();
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
                             std::is_same_v<T, OperationFinished> || std::is_same_v<T, TaskFinished>) {
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
            // Kept short in memory (task.show reads the whole from the task's stream).
            for (auto& o : t.operations) {
              if (o.output.size() > kOutputKeptBytes) o.output.erase(0, o.output.size() - kOutputKeptBytes);
              if (o.error.size() > kOutputKeptBytes) o.error.erase(0, o.error.size() - kOutputKeptBytes);
            }
          }
          if constexpr (std::is_same_v<T, TaskCreated>) {
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
  if (name == "system.evacuate" || name == "system.mark-dead") {
    for (const auto& [key, value] : args.items()) {
      if (key != "name") return reject(RejectionCode::kInvalid, fmt::format("unknown argument '{}'", key));
    }
    if (text("name").empty()) return reject(RejectionCode::kInvalid, fmt::format("{} needs the system's name", name));
    if (name == "system.mark-dead") return MarkDead{text("name")};
    return Evacuate{text("name")};
  }
  if (name == "task.cancel") {
    for (const auto& [key, value] : args.items()) {
      if (key != "task") return reject(RejectionCode::kInvalid, fmt::format("unknown argument '{}'", key));
    }
    if (text("task").empty()) return reject(RejectionCode::kInvalid, "task.cancel needs the task's id");
    return CancelTask{text("task")};
  }
  std::string kind(name.substr(5));
  if (kind == "deploy") allowed.insert({"system", "start"});
  if (kind == "stop") allowed.insert("force");
  if (kind == "remove") allowed.insert({"preserveFs", "keepDefinition"});
  if (kind == "relocate") allowed.insert({"to", "force"});
  for (const auto& [key, value] : args.items()) {
    if (!allowed.contains(key)) return reject(RejectionCode::kInvalid, fmt::format("unknown argument '{}'", key));
    if (key != "name" && key != "system" && key != "to" && !value.is_boolean()) {
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
    if (a.system.empty()) return reject(RejectionCode::kInvalid, "wpar.relocate needs the system to move to (--to H)");
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
    std::string user = context.actor.starts_with("user:") ? context.actor.substr(5) : context.actor;
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
  if (const auto* dead = std::get_if<MarkDead>(&command)) {
    auto system = inventory::resolve_prefix(inv.registry.systems(), dead->system, "system");
    if (!system) return std::unexpected(system.error());
    auto status = inv.system_status(*system);
    if (status.state != "offline") {
      return reject(RejectionCode::kConflict,
                    fmt::format("system {} is {}, not Offline: only a system whose agent stopped answering can be "
                                "marked dead (stop it first, or wait for heartbeat.timeout)",
                                *system, status.state));
    }
    const int64_t grace = inventory::parse_duration_ns(inv.setting("mark-dead.grace")).value_or(30'000'000'000);
    if (context.now_ns - status.since_ns < grace) {
      return reject(RejectionCode::kConflict,
                    fmt::format("system {} has been Offline for {} s; it may be marked dead after {} s (a short "
                                "outage must not put its WPARs on two systems): try again later",
                                *system, (context.now_ns - status.since_ns) / 1'000'000'000,
                                grace / 1'000'000'000));
    }
    for (const auto& [tid, t] : state.tasks) {
      if (t.kind == "evacuate" && t.system == *system && !t.finished()) {
        return reject(RejectionCode::kConflict, fmt::format("system {} is being evacuated (task {}): cancel it first "
                                                            "(wpm task cancel {})",
                                                            *system, tid, tid));
      }
    }
    std::vector<Change> changes;
    std::vector<std::string> taken;
    for (const auto& [name, r] : inv.wpars) {
      if (r.wpar.system != *system) continue;
      if (auto b = state.busy.find(name); b != state.busy.end()) {
        return reject(RejectionCode::kConflict, fmt::format("WPAR {} on {} has a task running ({}); wait for it to "
                                                            "end (wpm task wait {}) or cancel it",
                                                            name, *system, b->second, b->second));
      }
      auto p = state.placements.find(name);
      uint64_t epoch = p == state.placements.end() ? 0 : p->second.epoch;
      changes.push_back({placement_stream(name), WparPlaced{name, "", epoch + 1, *system}});
      taken.push_back(name);
    }
    std::string user = context.actor.starts_with("user:") ? context.actor.substr(5) : context.actor;
    changes.push_back({task_stream(id), TaskCreated{"mark-dead", "", *system, "{}", "", user}});
    changes.push_back(
        {task_stream(id),
         TaskFinished{"succeeded", "",
                      taken.empty() ? fmt::format("system {} held no WPARs", *system)
                                    : fmt::format("WPARs taken off {} (Undeployed; deploy them elsewhere): {}; a copy "
                                                  "{} still runs when it comes back is stopped there",
                                                  *system, fmt::join(taken, ", "), *system)}});
    return Decided{std::move(changes), ""};
  }
  if (const auto* evacuate = std::get_if<Evacuate>(&command)) {
    auto system = inventory::resolve_prefix(inv.registry.systems(), evacuate->system, "system");
    if (!system) return std::unexpected(system.error());
    for (const auto& [tid, t] : state.tasks) {
      if (t.kind == "evacuate" && t.system == *system && !t.finished()) {
        return reject(RejectionCode::kConflict, fmt::format("system {} is being evacuated already (task {}): wait "
                                                            "for it (wpm task wait {})",
                                                            *system, tid, tid));
      }
    }
    auto plan = plan_evacuation(state, inv, *system, {});
    if (plan.moves.empty()) {
      std::vector<std::string> why;
      for (const auto& [w, reason] : plan.skipped) why.push_back(fmt::format("{} ({})", w, reason));
      return reject(RejectionCode::kConflict,
                    why.empty() ? fmt::format("system {} has no deployed WPARs: nothing to evacuate", *system)
                                : fmt::format("nothing on {} can move: {}", *system, fmt::join(why, "; ")));
    }
    TaskOptions o;
    o.plan = plan.moves;
    o.skipped = plan.skipped;
    std::string user = context.actor.starts_with("user:") ? context.actor.substr(5) : context.actor;
    std::string warning;
    if (!plan.skipped.empty()) {
      std::vector<std::string> why;
      for (const auto& [w, reason] : plan.skipped) why.push_back(fmt::format("{} ({})", w, reason));
      warning = fmt::format("{} WPAR(s) cannot move and stay on {}: {}", plan.skipped.size(), *system,
                            fmt::join(why, "; "));
    }
    return Decided{{{task_stream(id), TaskCreated{"evacuate", "", *system, options_to_json(o).dump(), "", user}}},
                   warning};
  }
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
  std::string user = context.actor.starts_with("user:") ? context.actor.substr(5) : context.actor;
  TaskCreated created{a.kind, *name, w.system, options_to_json(a.options).dump(), "", user};
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
  if (a.kind == "relocate") {
    if (w.system.empty()) {
      return reject(RejectionCode::kConflict, fmt::format("WPAR {} is not deployed (Undeployed): there is nothing to "
                                                          "move; deploy it (wpm wpar deploy {} --system H)",
                                                          *name, *name));
    }
    auto target = inventory::resolve_prefix(inv.registry.systems(), a.system, "system");
    if (!target) return std::unexpected(target.error());
    if (*target == w.system) {
      return reject(RejectionCode::kConflict, fmt::format("WPAR {} is already on {}", *name, *target));
    }
    auto letter = inventory::wpar_state_letter(w);
    auto wpar_state = state_of_letter(letter);
    if (!wpar_state) {
      return reject(RejectionCode::kConflict, fmt::format("the state of WPAR {} on {} is not known yet; wait for its "
                                                          "agent's report",
                                                          *name, w.system));
    }
    runtime::WparStatus status{*wpar_state, w.type == "application" ? runtime::WparType::kApplication
                                                                    : runtime::WparType::kSystem,
                               w.checkpointable};
    if (*wpar_state != runtime::WparState::kActive) {
      return reject(RejectionCode::kConflict,
                    fmt::format("WPAR {} is {} ({}): only an Active WPAR is relocated", *name,
                                runtime::state_name(*wpar_state), letter));
    }
    if (auto allowed = runtime::decide(status, runtime::Operation::kCheckpointPause); !allowed) {
      return reject(RejectionCode::kConflict,
                    fmt::format("WPAR {} cannot be relocated: {}", *name, allowed.error().message));
    }
    for (const auto& s : {w.system, *target}) {
      if (auto problem = system_problem(inv, s)) return reject(RejectionCode::kConflict, *problem);
    }
    auto compat = direction_compat(state, inv, w.system, *target);
    std::string warning;
    if (compat.state == "pending") {
      return reject(RejectionCode::kConflict,
                    fmt::format("compatibility of {} → {} is not analysed yet (Pending); a Pending system is "
                                "never a target, even with --force: wait for the analysis (wpm compat show {} {})",
                                w.system, *target, w.system, *target));
    }
    if (compat.state != "compatible") {
      std::vector<std::string> failed;
      for (const auto& f : compat.failed) {
        failed.push_back(fmt::format("{} ({} here, {} there)", f.test, f.departure, f.arrival));
      }
      if (!a.options.force) {
        return reject(RejectionCode::kConflict,
                      fmt::format("{} is not compatible as a target of {}: failed {}; choose a compatible system "
                                  "(wpm wpar candidates {}) or add --force",
                                  *target, w.system, fmt::join(failed, ", "), *name));
      }
      warning = fmt::format("{} failed compatibility tests from {} ({}); relocating anyway (--force)", *target,
                            w.system, fmt::join(failed, ", "));
    }
    auto checked = check_arrival(inv, w, *target);
    if (!checked) return std::unexpected(checked.error());
    if (!checked->empty()) warning = warning.empty() ? *checked : warning + "; " + *checked;
    TaskOptions o = a.options;
    o.target = *target;
    created.args = options_to_json(o).dump();
    return Decided{{{task_stream(id), created}}, warning};
  }
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

std::optional<std::string> system_problem(const inventory::Inventory& inv, const std::string& system) {
  if (inv.registry.by_id(system) == nullptr) return fmt::format("system {} is no longer registered", system);
  auto status = inv.system_status(system);
  if (status.state == "online") return std::nullopt;
  return fmt::format("system {} is {} ({}): its agent cannot take commands now", system,
                     status.state == "offline" ? "Offline" : "Unreachable", status.reason);
}

Step next_step(const Executor& state, const Task& task, const inventory::Inventory& inv, int64_t now_ns) {
  if (task.finished()) return Idle{};
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
    }
    return f;
  }
  if (done >= steps.size()) {
    Finish f{TaskFinished{"succeeded", "", ""}, std::nullopt};
    if (task.kind == "remove") f.placed = WparPlaced{task.wpar, "", epoch + 1, task.system};
    return f;
  }
  const std::string& action = steps[done];
  return Start{OperationStarted{fmt::format("{}.{}", task.id, done + 1), task.system, task.wpar, action, epoch, 1,
                                now_ns + action_timeout_ns(action)}};
}

// ---- relocation -------------------------------------------------------------

std::string relocation_state_id(const Task& task) { return task.id + ".1"; }

namespace {

const Operation* saga_operation(const Task& t, int step) {
  const std::string id = fmt::format("{}.{}", t.id, step);
  for (const auto& o : t.operations) {
    if (o.id == id) return &o;
  }
  return nullptr;
}

// The agent answered that it did not do it (or it never left the manager).
bool definite_failure(const Operation& o) {
  return o.outcome == "failed" || o.outcome == "refused" || o.outcome == "unsent";
}

// A resume did what the recovery needs: the WPAR runs (also when it already did: 17 with A).
bool resumed(const Operation& o) { return o.outcome == "ok" || (o.exit_code == 17 && o.wpar_state == "A"); }

std::string state_word(const std::string& letter) {
  if (auto s = state_of_letter(letter)) return std::string(runtime::state_name(*s));
  return letter.empty() ? "state unknown" : letter;
}

}  // namespace

Step relocation_step(const Executor& state, const Task& t, int64_t now_ns) {
  const std::string& departure = t.system;
  const std::string& arrival = t.options.target;
  const auto pl = state.placements.find(t.wpar);
  const uint64_t epoch = pl == state.placements.end() ? 0 : pl->second.epoch;
  const std::string placed = pl == state.placements.end() ? "" : pl->second.system;
  auto start = [&](int step, const std::string& system, const std::string& action) -> Step {
    return Start{OperationStarted{fmt::format("{}.{}", t.id, step), system, t.wpar, action, epoch, 1,
                                  now_ns + action_timeout_ns(action)}};
  };
  auto finish = [&](std::string end, std::string error, std::string recovery, std::string letter = "",
                    std::string cause = "") -> Step {
    return Finish{TaskFinished{std::move(end), std::move(error), std::move(recovery), std::move(letter),
                               std::move(cause)},
                  std::nullopt};
  };
  const Operation* pause = saga_operation(t, 1);
  const Operation* receive = saga_operation(t, 2);
  const Operation* restore = saga_operation(t, 3);
  const Operation* depart = saga_operation(t, 4);
  const Operation* clean = saga_operation(t, 5);
  const Operation* resume = saga_operation(t, 6);

  if (pause == nullptr) {
    // Checked again when it starts (an evacuation's plan is older than this).
    if (placed != departure) {
      return finish("failed",
                    fmt::format("WPAR {} is no longer placed on {} ({}): not moved", t.wpar, departure,
                                placed.empty() ? "Undeployed" : "now on " + placed),
                    "none needed: nothing was done");
    }
    return start(1, departure, "pause");
  }
  if (!achieved(*pause) && definite_failure(*pause)) {
    return finish("failed", describe_failure(*pause),
                  fmt::format("none needed: WPAR {} stays on {} ({}); nothing was sent to {}", t.wpar, departure,
                              state_word(pause->wpar_state), arrival));
  }
  const Operation* failed = nullptr;  // the arrival step that failed
  if (receive != nullptr && receive->finished && !achieved(*receive)) failed = receive;
  if (restore != nullptr && restore->finished && !achieved(*restore)) failed = restore;
  if (failed != nullptr || !achieved(*pause)) {
    // Recovery: back on the departure, nothing left on the arrival.
    const Operation& why = failed != nullptr ? *failed : *pause;
    if (failed != nullptr) {
      if (placed != departure) return Place{WparPlaced{t.wpar, departure, epoch + 1, placed}};
      if (clean == nullptr) return start(5, arrival, "remove");
      // A restore that may have started leaves a copy that may run: the
      // departure's stays frozen until that one is known to be gone.
      const bool may_run = restore != nullptr && !(definite_failure(*restore) && restore->wpar_state != "A");
      if (!achieved(*clean) && may_run) {
        return finish("failed", describe_failure(why),
                      fmt::format("WPAR {} could not be removed from {} ({}), where its restore may have started: it "
                                  "stays paused on {} so that it never runs twice; once the copy on {} is gone "
                                  "(wpm-agent rmwpar -F {} there), resume it (wpm wpar resume {})",
                                  t.wpar, arrival, clean->error.empty() ? clean->outcome : clean->error, departure,
                                  arrival, t.wpar, t.wpar),
                      "P");
      }
    }
    if (resume == nullptr) return start(6, departure, "resume");
    const std::string left = failed == nullptr ? fmt::format("; nothing was sent to {}", arrival)
                             : clean != nullptr && achieved(*clean)
                                 ? fmt::format("; nothing of it is left on {}", arrival)
                                 : fmt::format("; its remains on {} could not be removed ({}), remove them there "
                                               "(wpm-agent rmwpar -F {})",
                                               arrival, clean == nullptr ? "" : clean->error, t.wpar);
    if (resumed(*resume)) {
      return finish("failed", describe_failure(why),
                    fmt::format("WPAR {} is Active on {} again{}", t.wpar, departure, left), "A");
    }
    std::string cause =
        definite_failure(*resume)
            ? fmt::format("the relocation to {} failed and WPAR {} could not be resumed on {}: {}", arrival, t.wpar,
                          departure, resume->error)
            : fmt::format("the relocation to {} failed and {} did not answer the resume ({}): WPAR {} is frozen or "
                          "gone there",
                          arrival, departure, resume->error, t.wpar);
    return finish("failed", describe_failure(why),
                  fmt::format("WPAR {} is Broken on {}{}: once {} answers, stop it with --force and start it again",
                              t.wpar, departure, left, departure),
                  "B", cause);
  }
  // Forward: the departure's copy is frozen; the placement moves.
  if (placed != arrival) return Place{WparPlaced{t.wpar, arrival, epoch + 1, departure}};
  if (receive == nullptr) return start(2, arrival, "receive");
  if (restore == nullptr) return start(3, arrival, "restore");
  if (depart == nullptr) return start(4, departure, "remove");
  if (achieved(*depart)) return finish("succeeded", "", "", restore->wpar_state);
  return finish("succeeded", "",
                fmt::format("WPAR {} runs on {}; its frozen copy on {} could not be removed ({}): it is fenced (epoch "
                            "{}, older commands are refused); remove it there (wpm-agent rmwpar -F {})",
                            t.wpar, arrival, departure, depart->error.empty() ? depart->outcome : depart->error,
                            epoch, t.wpar),
                restore->wpar_state);
}

DirectionCompat direction_compat(const Executor& state, const inventory::Inventory& inv, const std::string& departure,
                                 const std::string& arrival) {
  const auto* d = inv.registry.by_id(departure);
  const auto* a = inv.registry.by_id(arrival);
  if (d == nullptr || a == nullptr) return {"pending", {}};
  auto dd = compatibility::properties_digest(compatibility::compared_properties_key(d->profile));
  auto da = compatibility::properties_digest(compatibility::compared_properties_key(a->profile));
  if (dd == da) return {"compatible", {}};
  auto it = state.compat.find({dd, da});
  if (it == state.compat.end()) return {"pending", {}};
  DirectionCompat out{"compatible", {}};
  for (const auto& r : it->second) {
    auto test = compatibility::test_from_name(r.test);
    if (!r.passed && test && compatibility::is_critical(*test)) out.failed.push_back(r);
  }
  if (!out.failed.empty()) out.state = "incompatible";
  return out;
}

std::vector<Candidate> rank_candidates(const Executor& state, const inventory::Inventory& inv, const std::string& wpar,
                                       const std::map<std::string, double>& loads,
                                       const std::map<std::string, size_t>& planned) {
  std::vector<Candidate> out;
  auto w = inv.wpars.find(wpar);
  if (w == inv.wpars.end()) return out;
  const WparDefinition& def = w->second.wpar;
  std::map<std::string, size_t> placed;
  for (const auto& [name, r] : inv.wpars) {
    if (!r.wpar.system.empty()) ++placed[r.wpar.system];
  }
  for (const auto& [id, s] : inv.registry.systems()) {
    if (id == def.system) continue;
    Candidate c;
    c.system = id;
    c.hostname = s.hostname;
    auto compat = direction_compat(state, inv, def.system, id);
    c.compatibility = compat.state;
    c.failed = std::move(compat.failed);
    c.state = inv.system_status(id).state;
    if (auto l = loads.find(id); l != loads.end()) c.load = l->second;
    if (auto p = placed.find(id); p != placed.end()) c.wpars = p->second;
    if (auto p = planned.find(id); p != planned.end()) c.wpars += p->second;
    if (c.compatibility == "pending") {
      c.reason = "compatibility not analysed yet (Pending)";
    } else if (c.compatibility != "compatible") {
      std::vector<std::string> names;
      for (const auto& f : c.failed) names.push_back(f.test);
      c.reason = fmt::format("failed {}", fmt::join(names, ", "));
    } else if (auto problem = system_problem(inv, id)) {
      c.reason = *problem;
    } else if (auto arrival = check_arrival(inv, def, id); !arrival) {
      c.reason = arrival.error().message;
    } else {
      c.eligible = true;
    }
    out.push_back(std::move(c));
  }
  auto compat_rank = [](const std::string& s) { return s == "compatible" ? 0 : s == "incompatible" ? 1 : 2; };
  std::sort(out.begin(), out.end(), [&](const Candidate& a, const Candidate& b) {
    auto key = [&](const Candidate& c) {
      return std::tuple(!c.eligible, compat_rank(c.compatibility), c.load.value_or(1e300), c.wpars);
    };
    if (key(a) != key(b)) return key(a) < key(b);
    return a.system < b.system;
  });
  return out;
}

json candidate_to_json(const Candidate& c) {
  json failed = json::array();
  for (const auto& f : c.failed) {
    failed.push_back({{"test", f.test}, {"departure", f.departure}, {"arrival", f.arrival}, {"remedy", f.remedy}});
  }
  return {{"system", c.system},
          {"hostname", c.hostname},
          {"compatibility", c.compatibility},
          {"failedTests", std::move(failed)},
          {"state", c.state},
          {"load", c.load ? json(*c.load) : json(nullptr)},
          {"wpars", c.wpars},
          {"eligible", c.eligible},
          {"reason", c.reason}};
}

// ---- evacuation --------------------------------------------------------------

EvacuationPlan plan_evacuation(const Executor& state, const inventory::Inventory& inv, const std::string& system,
                               const std::map<std::string, double>& loads) {
  EvacuationPlan plan;
  std::map<std::string, size_t> planned;
  for (const auto& [name, r] : inv.wpars) {  // by name: the same plan for the same state
    const WparDefinition& w = r.wpar;
    if (w.system != system) continue;
    const std::string letter = inventory::wpar_state_letter(w);
    if (auto b = state.busy.find(name); b != state.busy.end()) {
      plan.skipped.emplace_back(name, fmt::format("task {} is running on it", b->second));
      continue;
    }
    if (!w.checkpointable) {
      plan.skipped.emplace_back(name, "not checkpoint enabled: it cannot be moved while it runs");
      continue;
    }
    if (letter != "A") {
      auto s = state_of_letter(letter);
      plan.skipped.emplace_back(name, fmt::format("{}: only an Active WPAR is relocated",
                                                  s ? std::string(runtime::state_name(*s)) : "state unknown"));
      continue;
    }
    auto ranked = rank_candidates(state, inv, name, loads, planned);
    if (ranked.empty() || !ranked.front().eligible) {
      std::string why = ranked.empty() ? "no other system" : ranked.front().system + ": " + ranked.front().reason;
      plan.skipped.emplace_back(name, fmt::format("no compatible target ({})", why));
      continue;
    }
    ++planned[ranked.front().system];
    plan.moves.emplace_back(name, ranked.front().system);
  }
  return plan;
}

std::vector<const Task*> children_of(const Executor& state, const std::string& task) {
  std::vector<const Task*> out;
  for (const auto& [id, t] : state.tasks) {
    if (t.parent == task) out.push_back(&t);
  }
  std::sort(out.begin(), out.end(), [](const Task* a, const Task* b) {
    return a->created_ns != b->created_ns ? a->created_ns < b->created_ns : a->id < b->id;
  });
  return out;
}

Step evacuation_step(const Executor& state, const Task& t) {
  auto children = children_of(state, t.id);
  for (const auto* c : children) {
    if (!c->finished()) return Idle{};  // one after another
  }
  const auto& plan = t.options.plan;
  if (children.size() < plan.size()) {
    const auto& [wpar, target] = plan[children.size()];
    Spawn s;
    s.child = fmt::format("{}-{}", t.id, children.size() + 1);
    TaskOptions o;
    o.target = target;
    s.created = TaskCreated{"relocate", wpar, t.system, options_to_json(o).dump(), t.id, t.user};
    if (auto b = state.busy.find(wpar); b != state.busy.end()) {
      s.ended = TaskFinished{"failed", fmt::format("WPAR {} has a task running ({}); not moved", wpar, b->second),
                             fmt::format("none: it stays on {}", t.system)};
    }
    return s;
  }
  std::vector<std::string> stayed;
  for (const auto& [w, why] : t.options.skipped) stayed.push_back(fmt::format("{} ({})", w, why));
  for (const auto* c : children) {
    if (c->state != "succeeded") stayed.push_back(fmt::format("{} (relocation {} {}: {})", c->wpar, c->id, c->state,
                                                              c->error));
  }
  if (stayed.empty()) return Finish{TaskFinished{"succeeded", "", ""}, std::nullopt};
  return Finish{TaskFinished{"failed",
                             fmt::format("{} of {} WPAR(s) of {} could not move: {}", stayed.size(),
                                         plan.size() + t.options.skipped.size(), t.system, fmt::join(stayed, "; ")),
                             fmt::format("{} moved; the others stay on {}", plan.size() - (stayed.size() - t.options.skipped.size()),
                                         t.system)},
                std::nullopt};
}

// ---- fencing -------------------------------------------------------------------

std::vector<Spawn> fence_tasks(const Executor& state, const inventory::Inventory& inv, int64_t now_ns) {
  std::vector<Spawn> out;
  std::set<std::string> claimed;  // one task per WPAR
  for (const auto& [key, stale] : state.stale) {
    const auto& [wpar, system] = key;
    const uint64_t sequence = stale.sequence;
    if (now_ns < stale.not_before_ns || !claimed.insert(wpar).second) continue;
    if (state.busy.contains(wpar)) continue;  // after the task that runs on it
    if (system_problem(inv, system)) continue;  // its agent reports, but heartbeats have not resumed yet
    auto placed = state.placements.find(wpar);
    if (placed != state.placements.end() && placed->second.system == system) continue;  // it is placed there again
    Spawn s;
    s.child = fmt::format("fence-{}", sequence);
    s.created = TaskCreated{"fence", wpar, system, "{}", "", "service:executor"};
    out.push_back(std::move(s));
  }
  return out;
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
