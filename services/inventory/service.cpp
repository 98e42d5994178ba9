#include "services/inventory/service.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "services/kernel/repository.h"

namespace wpm::inventory {

void Liveness::seen(const std::string& system_id, int64_t now_ns) {
  std::lock_guard lock(mutex_);
  auto& last = last_[system_id];
  last = std::max(last, now_ns);
}

std::optional<int64_t> Liveness::last_seen(const std::string& system_id) const {
  std::lock_guard lock(mutex_);
  auto it = last_.find(system_id);
  if (it == last_.end()) return std::nullopt;
  return it->second;
}

void Liveness::set_agent_port(const std::string& system_id, uint16_t port) {
  std::lock_guard lock(mutex_);
  ports_[system_id] = port;
}

uint16_t Liveness::agent_port(const std::string& system_id) const {
  std::lock_guard lock(mutex_);
  auto it = ports_.find(system_id);
  return it == ports_.end() ? 0 : it->second;
}

void Liveness::set_load(const std::string& system_id, double load_per_cpu) {
  std::lock_guard lock(mutex_);
  loads_[system_id] = load_per_cpu;
}

void Liveness::set_metrics_scope(const std::string& system_id, const std::string& scope) {
  std::lock_guard lock(mutex_);
  auto& s = scopes_[system_id];
  if (s != scope) s = scope;
}

std::string Liveness::metrics_scope(const std::string& system_id) const {
  std::lock_guard lock(mutex_);
  auto it = scopes_.find(system_id);
  return it == scopes_.end() ? "" : it->second;
}

void Liveness::set_metrics_port(const std::string& system_id, uint16_t port) {
  std::lock_guard lock(mutex_);
  if (port == 0) {
    metrics_ports_.erase(system_id);
  } else {
    metrics_ports_[system_id] = port;
  }
}

std::map<std::string, uint16_t> Liveness::metrics_ports() const {
  std::lock_guard lock(mutex_);
  return metrics_ports_;
}

std::optional<double> Liveness::load(const std::string& system_id) const {
  std::lock_guard lock(mutex_);
  auto it = loads_.find(system_id);
  if (it == loads_.end()) return std::nullopt;
  return it->second;
}

std::map<std::string, double> Liveness::loads() const {
  std::lock_guard lock(mutex_);
  return loads_;
}

void Liveness::set_probe(const std::string& system_id, Probe probe) {
  std::lock_guard lock(mutex_);
  if (!probe.ok) {
    auto& connected = connected_[system_id];
    connected = std::max(connected, probe.at_ns);
  }
  probes_[system_id] = std::move(probe);
}

void Liveness::reconnected(const std::string& system_id, int64_t now_ns) {
  {
    std::lock_guard lock(mutex_);
    auto& connected = connected_[system_id];
    connected = std::max(connected, now_ns);
  }
  std::lock_guard lock(hook_mutex_);
  if (hook_) hook_(system_id);
}

void Liveness::on_reconnected(std::function<void(const std::string&)> hook) {
  std::lock_guard lock(hook_mutex_);
  hook_ = std::move(hook);
}

void Liveness::reconciled(const std::string& system_id, int64_t probe_at_ns) {
  std::lock_guard lock(mutex_);
  auto [it, made] = reconciled_.try_emplace(system_id, probe_at_ns);
  if (!made) it->second = std::max(it->second, probe_at_ns);
}

bool Liveness::reconciled_since_connected(const std::string& system_id) const {
  std::lock_guard lock(mutex_);
  auto done = reconciled_.find(system_id);
  if (done == reconciled_.end()) return false;  // not since this manager started
  auto connected = connected_.find(system_id);
  return connected == connected_.end() || done->second > connected->second;
}

void Liveness::clear_probe(const std::string& system_id) {
  std::lock_guard lock(mutex_);
  probes_.erase(system_id);
}

std::optional<Liveness::Probe> Liveness::probe(const std::string& system_id) const {
  std::lock_guard lock(mutex_);
  auto it = probes_.find(system_id);
  if (it == probes_.end()) return std::nullopt;
  return it->second;
}

InventoryService::InventoryService(kernel::EventLog& log, kernel::SnapshotStore* snapshots,
                                   kernel::CommitSignal& signal, const kernel::Clock& clock, Liveness* liveness,
                                   std::shared_ptr<spdlog::logger> logger, InventoryServiceOptions options)
    : log_(log),
      snapshots_(snapshots),
      signal_(signal),
      clock_(clock),
      liveness_(liveness),
      logger_(std::move(logger)),
      options_(options),
      runner_(log, snapshots) {}

Result<void> InventoryService::start() {
  started_ns_ = clock_.monotonic_ns();
  {
    std::unique_lock lock(state_mutex_);
    if (auto r = runner_.start(); !r) return r;
  }
  snapshot_at_ = runner_.sequence();
  {
    std::lock_guard lock(applied_mutex_);
    applied_ = runner_.sequence();
  }
  applied_cv_.notify_all();
  return fold();
}

Result<void> InventoryService::fold() {
  {
    std::unique_lock lock(state_mutex_);
    auto r = runner_.catch_up();
    if (!r) return std::unexpected(r.error());
  }
  {
    std::lock_guard lock(applied_mutex_);
    applied_ = runner_.sequence();
  }
  applied_cv_.notify_all();
  if (snapshots_ != nullptr && runner_.sequence() - snapshot_at_ >= options_.snapshot_every) {
    if (auto r = snapshot(); !r) logger_->warn("inventory_snapshot_failed error=\"{}\"", r.error().message);
  }
  return {};
}

Result<void> InventoryService::snapshot() {
  Result<void> r;
  {
    std::shared_lock lock(state_mutex_);
    r = runner_.snapshot();
  }
  if (r) snapshot_at_ = runner_.sequence();
  return r;
}

Result<bool> InventoryService::decide_one(const PendingCommand& pending, std::string& profile_of) {
  const std::string command_stream = "command/" + pending.id;
  kernel::Context context{clock_.wall_ns(), "user:" + pending.request.user, kernel::CommandId(pending.id),
                          pending.id};
  AppendRequest append;
  append.idempotency_key = kernel::idempotency_key_of(context.command_id);
  append.expectations.push_back(StreamExpectation{command_stream, ExpectKind::kExact, 1});
  CommandDecided decided{true, "", "", "service:inventory"};
  {
    std::shared_lock lock(state_mutex_);
    const Inventory& state = runner_.state();
    auto args = nlohmann::json::parse(pending.request.args, nullptr, false);
    std::expected<Command, kernel::Rejection> command =
        args.is_discarded() ? std::unexpected(kernel::Rejection{kernel::RejectionCode::kInvalid,
                                                                "the arguments are not JSON"})
                            : parse_command(pending.request.command, args);
    Changes changes = command ? decide(state, *command, context) : std::unexpected(command.error());
    if (const auto* update = command ? std::get_if<UpdateProfile>(&*command) : nullptr; update && changes) {
      profile_of = resolve_prefix(state.registry.systems(), update->name, "system").value_or("");
      if (!on_update_profile_) {
        changes = std::unexpected(kernel::Rejection{
            kernel::RejectionCode::kConflict,
            "this manager cannot reach agents' ports (its prober is off: see wpmd's log for why); the agent sends "
            "a changed profile by itself within a minute"});
        profile_of.clear();
      }
    }
    if (!changes) {
      decided = CommandDecided{false, kernel::rejection_code_name(changes.error().code), changes.error().message,
                               "service:inventory"};
    } else {
      std::set<std::string> expected;
      for (auto& change : *changes) {
        if (expected.insert(change.stream).second) {
          uint64_t v = stream_version(state, change.stream);
          append.expectations.push_back(
              StreamExpectation{change.stream, v == 0 ? ExpectKind::kNoStream : ExpectKind::kExact, v});
        }
        append.events.push_back(EventDraft{change.stream, pending.id, pending.id, "", std::move(change.payload)});
      }
    }
  }
  append.events.push_back(EventDraft{command_stream, pending.id, pending.id, "", decided});
  auto r = log_.append(append);
  if (!r) {
    if (r.error().code == ErrorCode::kWrongExpectedVersion) {
      std::lock_guard lock(stats_mutex_);
      ++stats_.conflicts;
      return false;
    }
    return std::unexpected(r.error());
  }
  {
    std::lock_guard lock(stats_mutex_);
    ++(decided.accepted ? stats_.accepted : stats_.refused);
  }
  logger_->info("command_decided id={} command={} user={} accepted={} code={} events={}", pending.id,
                pending.request.command, pending.request.user, decided.accepted, decided.code,
                append.events.size() - 1);
  return true;
}

Result<size_t> InventoryService::check_liveness() {
  if (liveness_ == nullptr) return 0;
  int64_t now = clock_.monotonic_ns();
  // Every system is judged: at most ten times a second, not on every commit.
  if (now < next_liveness_check_ns_) return 0;
  next_liveness_check_ns_ = now + kLivenessCheckIntervalNs;
  std::vector<std::pair<std::string, SystemStateChanged>> changes;
  std::map<std::string, uint64_t> versions;
  {
    std::shared_lock lock(state_mutex_);
    const Inventory& state = runner_.state();
    int64_t timeout = parse_duration_ns(state.setting("heartbeat.timeout")).value_or(15'000'000'000);
    for (const auto& [id, system] : state.registry.systems()) {
      SystemStatus status = state.system_status(id);
      auto last = liveness_->last_seen(id);
      // Heard from within the timeout, counting from this service's start.
      bool fresh = now - std::max(last.value_or(0), started_ns_) <= timeout;
      // Heard from since this service started, and recently.
      bool back = last && *last > started_ns_ && now - *last <= timeout;
      auto changed = changed_at_.find(id);
      int64_t since = changed == changed_at_.end() ? started_ns_ : changed->second;
      auto probe = liveness_->probe(id);
      // Unreachable is "its heartbeats arrive but its port does not answer":
      // a system not heard from since this service started is not judged by
      // its port (it turns Offline at the timeout if it stays silent).
      bool heard = last && *last > started_ns_;
      bool probe_failed = heard && probe && !probe->ok && probe->at_ns > since;
      bool probe_ok = probe && probe->ok && probe->at_ns > since;
      std::optional<SystemStateChanged> next;
      if (status.state == "online") {
        if (!fresh) {
          next = SystemStateChanged{id, "offline", fmt::format("no heartbeat for {} s", timeout / 1'000'000'000)};
        } else if (probe_failed) {
          next = SystemStateChanged{id, "unreachable", probe->reason};
        }
      } else if (status.state == "unreachable") {
        if (!back && !fresh) {
          next = SystemStateChanged{id, "offline", fmt::format("no heartbeat for {} s", timeout / 1'000'000'000)};
        } else if (probe_ok) {
          next = SystemStateChanged{id, "online", "the agent port answers again"};
        }
      } else if (back) {
        next = SystemStateChanged{id, "online", "heartbeat received"};
        // Back after a break: what it runs is compared with what the
        // manager believes before it gets a command (recorded before the
        // executor can see it Online).
        liveness_->reconnected(id, now);
      }
      if (next) changes.push_back({id, std::move(*next)});
      versions[id] = status.version;
    }
  }
  size_t written = 0;
  for (auto& [id, change] : changes) {
    std::string stream = "system/" + id;
    uint64_t v = versions[id];
    AppendRequest append;
    append.idempotency_key = fmt::format("state/{}/{}", id, v + 1);
    append.expectations.push_back(StreamExpectation{stream, v == 0 ? ExpectKind::kNoStream : ExpectKind::kExact, v});
    logger_->info("system_state_changed system={} state={} reason=\"{}\"", id, change.state, change.reason);
    append.events.push_back(EventDraft{stream, "", "", "", std::move(change)});
    auto r = log_.append(append);
    if (!r && r.error().code != ErrorCode::kWrongExpectedVersion) return std::unexpected(r.error());
    if (r) {
      ++written;
      changed_at_[id] = now;
    }
  }
  {
    std::lock_guard lock(stats_mutex_);
    stats_.state_changes += written;
  }
  return written;
}

Result<size_t> InventoryService::reconcile_reports() {
  if (liveness_ == nullptr) return 0;
  std::vector<std::pair<std::string, uint64_t>> done;
  std::vector<AppendRequest> appends;
  std::vector<std::string> append_systems;                    // whose report each append records
  std::map<std::string, std::set<std::string>> refused_after;  // refusals as recorded once the appends succeed
  {
    std::shared_lock lock(state_mutex_);
    const Inventory& state = runner_.state();
    for (const auto& [id, system] : state.registry.systems()) {
      auto probe = liveness_->probe(id);
      if (!probe || !probe->ok || probe->round <= reconciled_[id]) continue;
      auto changes = reconcile(state, id, probe->wpars, probe->wall_ns);
      AppendRequest append;
      std::set<std::string> expected;
      std::set<std::string> refused_now;
      const std::set<std::string>& refused_before = refusals_[id];
      for (auto& c : changes) {
        if (const auto* refused = std::get_if<AgentReportRefused>(&c.payload)) {
          // Recorded once while it lasts, not at every probe; again when it
          // comes back after it was gone (a copy the executor fenced).
          std::string key = refused->subject + "\n" + refused->reason;
          refused_now.insert(key);
          if (refused_before.contains(key)) continue;
          logger_->warn("agent_report_refused system={} subject={} reason=\"{}\"", id, refused->subject,
                        refused->reason);
        } else if (expected.insert(c.stream).second) {
          uint64_t v = stream_version(state, c.stream);
          append.expectations.push_back(
              StreamExpectation{c.stream, v == 0 ? ExpectKind::kNoStream : ExpectKind::kExact, v});
        }
        append.events.push_back(EventDraft{c.stream, "", "", "", std::move(c.payload)});
      }
      refused_after[id] = std::move(refused_now);
      if (!append.events.empty()) {
        appends.push_back(std::move(append));
        append_systems.push_back(id);
      }
      done.push_back({id, probe->round});
    }
  }
  size_t written = 0;
  std::set<std::string> failed;
  for (size_t i = 0; i < appends.size(); ++i) {
    auto r = log_.append(appends[i]);
    if (!r && r.error().code != ErrorCode::kWrongExpectedVersion) return std::unexpected(r.error());
    if (r) written += appends[i].events.size();
    if (!r) failed.insert(append_systems[i]);
  }
  // A refusal counts as recorded only once its append went through.
  for (auto& [id, refused] : refused_after) {
    if (!failed.contains(id)) refusals_[id] = std::move(refused);
  }
  // A conflicting append is decided again from the same report at the next
  // step; a report folded in full lets the executor send that agent commands.
  for (const auto& [id, round] : done) {
    if (failed.contains(id)) continue;
    reconciled_[id] = round;
    auto probe = liveness_->probe(id);
    if (!probe || probe->round != round) continue;
    const bool before = liveness_->reconciled_since_connected(id);
    liveness_->reconciled(id, probe->at_ns);
    if (!before && liveness_->reconciled_since_connected(id)) {
      logger_->info("agent_reconciled system={} wpars={}", id, probe->wpars.size());
    }
  }
  return written;
}

Result<size_t> InventoryService::step() {
  if (auto r = fold(); !r) return std::unexpected(r.error());
  std::vector<PendingCommand> pending;
  {
    std::shared_lock lock(state_mutex_);
    for (const auto& [id, p] : runner_.state().pending) pending.push_back(p);
  }
  std::sort(pending.begin(), pending.end(), [](const auto& a, const auto& b) { return a.sequence < b.sequence; });
  if (pending.size() > options_.commands_per_step) pending.resize(options_.commands_per_step);
  size_t written = 0;
  for (const auto& p : pending) {
    std::string profile_of;
    auto done = decide_one(p, profile_of);
    if (!done) return std::unexpected(done.error());
    if (*done) {
      attempts_.erase(p.id);
      ++written;
      if (p.request.command == "system.discover" && on_discover_) on_discover_();
      if (!profile_of.empty() && on_update_profile_) on_update_profile_(profile_of);
    } else if (++attempts_[p.id] >= options_.attempts) {
      logger_->warn("command_overtaken id={} command={} attempts={}", p.id, p.request.command, attempts_[p.id]);
      attempts_.erase(p.id);
    }
    // Fold what this decision (or the one that overtook it) wrote before
    // the next command is decided on the state.
    if (auto r = fold(); !r) return std::unexpected(r.error());
  }
  auto changed = check_liveness();
  if (!changed) return std::unexpected(changed.error());
  if (*changed > 0) {
    if (auto r = fold(); !r) return std::unexpected(r.error());
  }
  auto reconciled = reconcile_reports();
  if (!reconciled) return std::unexpected(reconciled.error());
  if (*reconciled > 0) {
    if (auto r = fold(); !r) return std::unexpected(r.error());
  }
  return written + *changed + *reconciled;
}

void InventoryService::run(const std::atomic<bool>& stop) {
  std::string last_error;
  while (!stop.load()) {
    auto done = step();
    std::string error = done ? "" : done.error().message;
    if (!error.empty() && error != last_error) logger_->error("inventory_step_failed error=\"{}\"", error);
    last_error = error;
    if (!done) {
      signal_.pause(options_.idle_wait);
      continue;
    }
    if (*done > 0) continue;
    int64_t stepped = clock_.monotonic_ns();
    seen_ = signal_.wait_beyond(std::max(seen_, runner_.sequence()), options_.idle_wait);
    // Under a stream of commits, fold at most every fold_interval: each fold
    // then takes many batches at once instead of waking with every one of
    // them (which would take the store's cores from its sequencer).
    int64_t left = options_.fold_interval.count() * 1'000'000 - (clock_.monotonic_ns() - stepped);
    if (left > 0 && !stop.load()) signal_.pause(std::chrono::milliseconds(left / 1'000'000 + 1));
  }
  if (snapshots_ != nullptr && runner_.sequence() > snapshot_at_) {
    if (auto r = snapshot(); !r) logger_->warn("inventory_snapshot_failed error=\"{}\"", r.error().message);
  }
}

void InventoryService::read(const std::function<void(const Inventory&)>& reader) const {
  std::shared_lock lock(state_mutex_);
  reader(runner_.state());
}

bool InventoryService::wait_applied(uint64_t sequence, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(applied_mutex_);
  return applied_cv_.wait_for(lock, timeout, [&] { return applied_ >= sequence; });
}

InventoryStats InventoryService::stats() const {
  std::lock_guard lock(stats_mutex_);
  return stats_;
}

}  // namespace wpm::inventory
