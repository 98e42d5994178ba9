#include "services/inventory/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "schemas/codec.h"
#include "services/kernel/snapshot_frames.h"

namespace wpm::inventory {
namespace {

constexpr std::array<SettingSpec, 7> kSettings = {{
    {"heartbeat.timeout", "15s",
     "a system turns Offline when no heartbeat came for this long (after a wpmd restart every agent gets the "
     "whole timeout first)"},
    {"statefile.shared-root", "",
     "a directory every agent mounts at this same path (NFS, …): a relocation checkpoints into it and restores "
     "from it, with no transfer between agents; empty: the departure's agent sends the state file to the "
     "arrival's"},
    {"mark-dead.grace", "30s",
     "how long a system must have been Offline before `wpm system mark-dead` takes its WPARs off it"},
    {"compat.optional-tests", "", "optional compatibility tests applied by default, comma-separated"},
    {"metrics.interval", "10s",
     "how often every agent reports its host's and its WPARs' metrics (told to the agents on their next "
     "heartbeat)"},
    {"policy.interval", "60s", "how often the policy service evaluates every group's relocation policy"},
    {"policy.domain-concurrency", "2",
     "relocations the policy keeps running at once in one relocation domain, at most"},
}};

}  // namespace

std::span<const SettingSpec> setting_specs() { return kSettings; }

std::optional<int64_t> parse_duration_ns(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits])) != 0) ++digits;
  if (digits == 0 || digits > 12) return std::nullopt;
  int64_t n = std::stoll(std::string(text.substr(0, digits)));
  std::string_view unit = text.substr(digits);
  if (unit == "ms") return n * 1'000'000;
  if (unit == "s" || unit.empty()) return n * 1'000'000'000;
  if (unit == "m") return n * 60'000'000'000;
  if (unit == "h") return n * 3'600'000'000'000;
  return std::nullopt;
}

std::string wpar_stream(const std::string& name) { return "wpar/" + name; }
std::string group_stream(const std::string& name) { return "group/" + name; }
std::string domain_stream(const std::string& name) { return "domain/" + name; }

std::string Inventory::setting(std::string_view key) const {
  if (auto it = settings.find(std::string(key)); it != settings.end()) return it->second;
  for (const auto& s : kSettings) {
    if (s.key == key) return std::string(s.default_value);
  }
  return "";
}

SystemStatus Inventory::system_status(const std::string& system_id) const {
  if (auto it = status.find(system_id); it != status.end()) return it->second;
  return SystemStatus{"online", "registered", 0, 0};
}

size_t Inventory::wpars_in_group(const std::string& group) const {
  return static_cast<size_t>(
      std::count_if(wpars.begin(), wpars.end(), [&](const auto& w) { return w.second.wpar.group == group; }));
}

std::vector<std::string> Inventory::systems_in_domain(const std::string& domain) const {
  std::vector<std::string> out;
  for (const auto& [id, s] : registry.systems()) {
    if (system_status(id).domain == domain) out.push_back(id);
  }
  return out;
}

std::string Inventory::system_profile_name(const std::string& system_id) const {
  const auto* s = registry.by_id(system_id);
  return s == nullptr ? "" : profile::profile_name(system_status(system_id).domain, s->profile);
}

size_t Inventory::wpars_on_system(const std::string& system) const {
  return static_cast<size_t>(
      std::count_if(wpars.begin(), wpars.end(), [&](const auto& w) { return w.second.wpar.system == system; }));
}

std::string wpar_state_letter(const WparDefinition& wpar) {
  if (wpar.system.empty()) return "U";
  if (!wpar.operation.empty()) return "T";
  return wpar.reported_state.empty() ? "?" : wpar.reported_state;
}

std::string wpar_state_name(const WparDefinition& wpar) {
  static const std::map<std::string, std::string> kNames = {
      {"U", "Undeployed"}, {"D", "Defined"}, {"A", "Active"},      {"P", "Paused"},
      {"F", "Frozen"},     {"L", "Loaded"},  {"T", "Transitional"}, {"B", "Broken"}};
  auto it = kNames.find(wpar_state_letter(wpar));
  return it == kNames.end() ? "Unknown" : it->second;
}

Inventory evolve(Inventory state, const Event& e) {
  fold_into(state, Event(e));
  return state;
}

namespace {

// The WPAR an event may place, move or remove ("" none; a system's
// removal touches all of its WPARs and is indexed on its own).
std::string touched_wpar(const Inventory& state, const Event& e) {
  if (const auto* d = std::get_if<WparDefined>(&e.payload)) return d->wpar.name;
  if (const auto* r = std::get_if<WparRemoved>(&e.payload)) return r->name;
  if (const auto* p = std::get_if<WparPlaced>(&e.payload)) return p->wpar;
  if (std::holds_alternative<TaskFinished>(e.payload) && e.stream_id.starts_with("task/")) {
    auto t = state.tasks.find(e.stream_id.substr(5));
    return t == state.tasks.end() ? "" : t->second.wpar;
  }
  return "";
}

std::string system_of(const Inventory& state, const std::string& wpar) {
  auto it = state.wpars.find(wpar);
  return it == state.wpars.end() ? "" : it->second.wpar.system;
}

// A WPAR's stream is a removed one from now on (its last version, and when).
void mark_removed(Inventory& state, const std::string& name, uint64_t version, int64_t at_ns) {
  state.removed[wpar_stream(name)] = version;
  state.removed_ns[wpar_stream(name)] = at_ns;
}

void fold_event(Inventory& state, Event&& e) {
  std::visit(
      [&](auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, SystemRegistered> || std::is_same_v<T, SystemRemoved> ||
                      std::is_same_v<T, SystemProfileChanged>) {
          if (e.stream_id != "registry") return;
          state.registry.evolve(e);
          state.registry_version = e.stream_version;
          // A system's state stream outlives a removal (its version goes on
          // when the system registers again), its state starts over.
          if constexpr (std::is_same_v<T, SystemRegistered>) {
            if (auto it = state.status.find(p.system_id); it != state.status.end()) {
              it->second = SystemStatus{"online", "registered", e.timestamp_ns, it->second.version};
            }
          }
          // The WPARs left on a removed system (system remove --keep-wpars)
          // are no longer managed there: a definition made here is
          // Undeployed, one discovered there goes.
          if constexpr (std::is_same_v<T, SystemRemoved>) {
            state.wpars_on.erase(p.system_id);  // none of its WPARs is on it any more
            for (auto it = state.wpars.begin(); it != state.wpars.end();) {
              WparDefinition& w = it->second.wpar;
              if (w.system != p.system_id) {
                ++it;
              } else if (w.discovered) {
                mark_removed(state, it->first, it->second.version, e.timestamp_ns);
                it = state.wpars.erase(it);
              } else {
                w.system.clear();
                w.reported_state.clear();
                w.operation.clear();
                w.cause.clear();
                ++it;
              }
            }
          }
        } else if constexpr (std::is_same_v<T, SystemStateChanged>) {
          auto& s = state.status[p.system_id];
          s = SystemStatus{p.state, p.reason, e.timestamp_ns, e.stream_version, std::move(s.domain)};
        } else if constexpr (std::is_same_v<T, SystemDomainSet>) {
          auto [it, made] = state.status.try_emplace(p.system_id, SystemStatus{"online", "registered", 0, 0});
          it->second.domain = p.domain;
          it->second.version = e.stream_version;
        } else if constexpr (std::is_same_v<T, DomainDefined>) {
          state.removed.erase(domain_stream(p.name));
          state.domains[p.name] = DomainRecord{p.name, p.description, e.stream_version};
        } else if constexpr (std::is_same_v<T, DomainRemoved>) {
          state.domains.erase(p.name);
          state.removed[domain_stream(p.name)] = e.stream_version;
        } else if constexpr (std::is_same_v<T, WparDefined>) {
          // A change of a WPAR that is gone (removed while the change was
          // decided) does not bring it back; only a creation makes one.
          if (!p.created && !state.wpars.contains(p.wpar.name)) return;
          auto [it, made] = state.wpars.try_emplace(p.wpar.name);
          // A name made again: its stream is no longer a removed one.
          if (made && !state.removed.empty()) {
            state.removed.erase(wpar_stream(p.wpar.name));
            state.removed_ns.erase(wpar_stream(p.wpar.name));
          }
          auto& r = it->second;
          if (r.created_ns == 0) r.created_ns = e.timestamp_ns;
          // Where a WPAR the executor placed is, and what runs on it, are the
          // executor's (placement/…, task/…): a definition written meanwhile
          // (a modify, a report) keeps them as the executor last left them.
          if (!made && r.wpar.epoch != 0) {
            p.wpar.system = r.wpar.system;
            p.wpar.epoch = r.wpar.epoch;
            p.wpar.operation = r.wpar.operation;
            p.wpar.discovered = r.wpar.discovered;
          }
          r.wpar = std::move(p.wpar);  // the event is this fold's own
          r.changed_ns = e.timestamp_ns;
          r.version = e.stream_version;
        } else if constexpr (std::is_same_v<T, WparRemoved>) {
          state.wpars.erase(p.name);
          mark_removed(state, p.name, e.stream_version, e.timestamp_ns);
        } else if constexpr (std::is_same_v<T, GroupDefined>) {
          state.removed.erase(group_stream(p.name));
          auto& g = state.groups[p.name];
          // A change of its description keeps its policy; a group made anew has none.
          g = GroupRecord{p.name, p.description, e.stream_version, p.created ? "" : g.policy};
        } else if constexpr (std::is_same_v<T, GroupPolicySet>) {
          if (auto g = state.groups.find(p.group); g != state.groups.end()) {
            g->second.policy = p.policy;
            g->second.version = e.stream_version;
          }
        } else if constexpr (std::is_same_v<T, GroupDeleted>) {
          state.groups.erase(p.name);
          state.removed[group_stream(p.name)] = e.stream_version;
        } else if constexpr (std::is_same_v<T, SettingChanged>) {
          state.settings[p.key] = p.value;
          state.settings_version = e.stream_version;
        } else if constexpr (std::is_same_v<T, CommandRequested>) {
          if (is_inventory_command(p.command) && e.stream_id.starts_with("command/")) {
            std::string id = e.stream_id.substr(8);
            state.pending[id] = PendingCommand{id, p, e.sequence, e.timestamp_ns};
          }
        } else if constexpr (std::is_same_v<T, CommandDecided>) {
          if (e.stream_id.starts_with("command/")) state.pending.erase(e.stream_id.substr(8));
        } else if constexpr (std::is_same_v<T, WparPlaced>) {
          // The executor placed it (or took it off its system): the epoch fences older commands.
          auto it = state.wpars.find(p.wpar);
          if (it == state.wpars.end()) return;
          it->second.executor_ns = std::max(it->second.executor_ns, e.timestamp_ns);
          auto& w = it->second.wpar;
          w.system = p.system;
          w.epoch = p.epoch;
          // A real placement (epoch ≥ 1) makes it the manager's; a snapshot's
          // record of the executor's last word (epoch 0) changes nothing.
          if (p.epoch != 0) w.discovered = false;
          if (p.system.empty()) {
            w.reported_state.clear();
            w.operation.clear();
            w.cause.clear();
          }
        } else if constexpr (std::is_same_v<T, TaskCreated>) {
          if (!e.stream_id.starts_with("task/") || p.wpar.empty()) return;
          auto args = nlohmann::json::parse(p.args, nullptr, false);
          bool keep = args.is_object() && args.value("keepDefinition", false);
          // One waiting for approval has not started: reports of its WPAR still count.
          bool waiting = args.is_object() && args.value("approvalExpiresNs", int64_t{0}) != 0;
          state.tasks[e.stream_id.substr(5)] = TaskRef{p.kind, p.wpar, keep, p.system, waiting};
        } else if constexpr (std::is_same_v<T, TaskApproved>) {
          if (auto task = state.tasks.find(e.stream_id.substr(std::min<size_t>(5, e.stream_id.size())));
              task != state.tasks.end()) {
            task->second.waiting = false;
          }
        } else if constexpr (std::is_same_v<T, OperationStarted>) {
          if (auto task = state.tasks.find(e.stream_id.substr(std::min<size_t>(5, e.stream_id.size())));
              task != state.tasks.end()) {
            task->second.system = p.system;
          }
          if (auto it = state.wpars.find(p.wpar); it != state.wpars.end() && it->second.wpar.system == p.system) {
            it->second.wpar.operation = p.action;
            it->second.executor_ns = std::max(it->second.executor_ns, e.timestamp_ns);
          }
        } else if constexpr (std::is_same_v<T, OperationFinished>) {
          auto task = state.tasks.find(e.stream_id.substr(std::min<size_t>(5, e.stream_id.size())));
          if (task == state.tasks.end()) return;
          auto it = state.wpars.find(task->second.wpar);
          if (it == state.wpars.end()) return;
          it->second.executor_ns = std::max(it->second.executor_ns, e.timestamp_ns);
          auto& w = it->second.wpar;
          w.operation.clear();
          // What an agent says of its own copy: the WPAR's state only where it is placed.
          if (!task->second.system.empty() && task->second.system != w.system) return;
          if (!p.wpar_state.empty()) w.reported_state = p.wpar_state;
          w.cause = p.wpar_state == "B" ? p.error : "";
        } else if constexpr (std::is_same_v<T, TaskFinished>) {
          auto task = state.tasks.find(e.stream_id.substr(std::min<size_t>(5, e.stream_id.size())));
          if (task == state.tasks.end()) return;
          const TaskRef t = task->second;
          state.tasks.erase(task);
          auto it = state.wpars.find(t.wpar);
          if (it == state.wpars.end()) return;
          it->second.wpar.operation.clear();
          // The task's own word on the WPAR's state (a relocation's end).
          if (!p.wpar_state.empty()) {
            it->second.wpar.reported_state = p.wpar_state;
            it->second.wpar.cause = p.wpar_state == "B" ? p.cause : "";
            it->second.executor_ns = std::max(it->second.executor_ns, e.timestamp_ns);
          }
          // A removal that succeeded takes the definition too, unless kept.
          if (t.kind == "remove" && p.state == "succeeded" && !t.keep_definition && it->second.wpar.system.empty()) {
            mark_removed(state, t.wpar, it->second.version, e.timestamp_ns);
            state.wpars.erase(it);
          }
        }
      },
      e.payload);
  if (e.sequence != 0) state.applied = e.sequence;
}

}  // namespace

// Folds the event and keeps `wpars_on` (each system's WPARs) in step with it.
void fold_into(Inventory& state, Event&& e) {
  if (e.sequence != 0 && e.sequence <= state.applied) return;
  const std::string touched = touched_wpar(state, e);
  const std::string was_on = touched.empty() ? "" : system_of(state, touched);
  fold_event(state, std::move(e));
  if (const std::string is_on = touched.empty() ? "" : system_of(state, touched); is_on != was_on) {
    if (!was_on.empty()) {
      auto on = state.wpars_on.find(was_on);
      if (on != state.wpars_on.end() && on->second.erase(touched) != 0 && on->second.empty()) state.wpars_on.erase(on);
    }
    if (!is_on.empty()) state.wpars_on[is_on].insert(touched);
  }
}

uint64_t stream_version(const Inventory& state, const std::string& stream) {
  if (stream == "registry") return state.registry_version;
  if (stream == "settings") return state.settings_version;
  auto removed = [&]() -> uint64_t {
    auto it = state.removed.find(stream);
    return it == state.removed.end() ? 0 : it->second;
  };
  if (stream.starts_with("wpar/")) {
    auto it = state.wpars.find(stream.substr(5));
    return it == state.wpars.end() ? removed() : it->second.version;
  }
  if (stream.starts_with("group/")) {
    auto it = state.groups.find(stream.substr(6));
    return it == state.groups.end() ? removed() : it->second.version;
  }
  if (stream.starts_with("domain/")) {
    auto it = state.domains.find(stream.substr(7));
    return it == state.domains.end() ? removed() : it->second.version;
  }
  if (stream.starts_with("system/")) {
    auto it = state.status.find(stream.substr(7));
    return it == state.status.end() ? 0 : it->second.version;
  }
  return 0;
}

bool InventoryModel::wants(EventType type) {
  switch (type) {
    case EventType::kSystemRegistered:
    case EventType::kSystemRemoved:
    case EventType::kSystemProfileChanged:
    case EventType::kSystemStateChanged:
    case EventType::kWparDefined:
    case EventType::kWparRemoved:
    case EventType::kGroupDefined:
    case EventType::kGroupDeleted:
    case EventType::kGroupPolicySet:
    case EventType::kSettingChanged:
    case EventType::kDomainDefined:
    case EventType::kDomainRemoved:
    case EventType::kSystemDomainSet:
    case EventType::kCommandRequested:
    case EventType::kCommandDecided:
    case EventType::kWparPlaced:
    case EventType::kTaskCreated:
    case EventType::kOperationStarted:
    case EventType::kOperationFinished:
    case EventType::kTaskFinished:
    case EventType::kTaskApproved: return true;
    default: return false;
  }
}

// Snapshot form: the registry's own snapshot, then the events that rebuild
// the rest (each with the stream version and time it stands for), each
// framed by a 4-byte length.
std::string InventoryModel::encode(const State& state) {
  kernel::SnapshotWriter out;
  out.word(state.applied);
  out.word(state.registry_version);
  out.word(state.settings_version);
  out.piece(RegistryModel::encode(state.registry));
  for (const auto& [id, s] : state.status) {
    if (s.domain != kDefaultDomain) out.event("system/" + id, s.version, 0, SystemDomainSet{id, s.domain, ""});
    out.event("system/" + id, s.version, s.since_ns, SystemStateChanged{id, s.state, s.reason});
  }
  for (const auto& [name, d] : state.domains) {
    out.event(domain_stream(name), d.version, 0, DomainDefined{name, d.description});
  }
  for (const auto& [name, g] : state.groups) {
    out.event(group_stream(name), g.version, 0, GroupDefined{name, g.description});
    if (!g.policy.empty()) out.event(group_stream(name), g.version, 0, GroupPolicySet{name, g.policy});
  }
  for (const auto& [key, value] : state.settings) {
    out.event("settings", state.settings_version, 0, SettingChanged{key, value, ""});
  }
  for (const auto& [name, w] : state.wpars) {
    out.event(wpar_stream(name), w.version, w.created_ns, WparDefined{w.wpar, true});
    out.event(wpar_stream(name), w.version, w.changed_ns, WparDefined{w.wpar, false});
    // The executor's last word on it, as a placement of the same system and epoch at that time.
    if (w.executor_ns != 0) {
      out.event("placement/" + name, 0, w.executor_ns, WparPlaced{name, w.wpar.system, w.wpar.epoch, ""});
    }
  }
  for (const auto& [id, p] : state.pending) out.event("command/" + id, 1, p.requested_ns, p.request, p.sequence);
  for (const auto& [id, t] : state.tasks) {
    nlohmann::json args = nlohmann::json::object();
    if (t.keep_definition) args["keepDefinition"] = true;
    if (t.waiting) args["approvalExpiresNs"] = 1;  // only "it waits" matters here
    out.event("task/" + id, 1, 0, TaskCreated{t.kind, t.wpar, t.system, args.dump(), "", ""});
  }
  for (const auto& [stream, version] : state.removed) {
    if (stream.starts_with("wpar/")) {
      auto at = state.removed_ns.find(stream);
      out.event(stream, version, at == state.removed_ns.end() ? 0 : at->second, WparRemoved{stream.substr(5), ""});
    }
    if (stream.starts_with("group/")) out.event(stream, version, 0, GroupDeleted{stream.substr(6)});
    if (stream.starts_with("domain/")) out.event(stream, version, 0, DomainRemoved{stream.substr(7)});
  }
  return out.take();
}

Result<Inventory> InventoryModel::decode(std::string_view bytes) {
  kernel::SnapshotReader in(bytes, "inventory snapshot");
  auto applied = in.word();
  auto registry_version = applied ? in.word() : applied;
  auto settings_version = registry_version ? in.word() : registry_version;
  if (!settings_version) return std::unexpected(settings_version.error());
  Inventory state;
  state.groups.clear();   // the snapshot lists every group, `default` included
  state.domains.clear();  // and every domain
  auto registry = in.piece();
  if (!registry) return std::unexpected(registry.error());
  auto decoded = RegistryModel::decode(*registry);
  if (!decoded) return std::unexpected(decoded.error());
  state.registry = std::move(*decoded);
  while (!in.done()) {  // bounded: every round consumes at least 4 bytes
    auto e = in.event();
    if (!e) return std::unexpected(e.error());
    if (auto* p = std::get_if<CommandRequested>(&e->payload)) {
      std::string id = e->stream_id.substr(8);
      state.pending[id] = PendingCommand{id, *p, e->sequence, e->timestamp_ns};
      continue;
    }
    e->sequence = 0;  // not a log position: folded regardless
    fold_into(state, std::move(*e));
  }
  // A snapshot from before domains existed lists none: `default` always exists.
  state.domains.try_emplace(std::string(kDefaultDomain), Inventory{}.domains.at(std::string(kDefaultDomain)));
  state.applied = *applied;
  state.registry_version = *registry_version;
  state.settings_version = *settings_version;
  return state;
}

}  // namespace wpm::inventory
