#include "services/executor/service.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "schemas/assert.h"
#include "schemas/event_json.h"
#include "services/kernel/repository.h"

namespace wpm::executor {
namespace {

namespace ap = agentproto;

// Events for many streams in one append, each stream expected at the
// version this service folded (the executor alone writes task/… and
// placement/…, so a conflict means another instance: fold and go again).
struct Batch {
  AppendRequest append;
  std::set<std::string> expected;
  size_t events() const { return append.events.size(); }
  void add(const Executor& state, const std::string& stream, const std::string& correlation, Payload payload,
           std::optional<uint64_t> version = std::nullopt) {
    if (expected.insert(stream).second) {
      uint64_t v = version ? *version : stream_version(state, stream);
      append.expectations.push_back(
          StreamExpectation{stream, v == 0 ? ExpectKind::kNoStream : ExpectKind::kExact, v});
    }
    append.events.push_back(EventDraft{stream, correlation, correlation, "", std::move(payload)});
  }
};

// Events per append when driving tasks (well below the store's 10,000).
constexpr size_t kBatchEventsMax = 2'000;
// Agents' answers recorded per round (each with at most a few events of
// its task's next step); the rest wait for the next round.
constexpr size_t kResultsPerRoundMax = 1'000;

// An agent's answer (or why there is none) as the event that records it.
OperationFinished operation_finished(const DispatchResult& r) {
  OperationFinished f{r.operation_id, r.attempt, "", 0, "", "", ""};
  if (r.result) {
    const auto& a = *r.result;
    f.exit_code = a.exit_code;
    f.outcome = a.refused ? "refused" : a.exit_code == 0 ? "ok" : "failed";
    f.output = a.output;
    f.error = a.error;
    f.wpar_state = a.wpar_state;
  } else {
    f.outcome = !r.sent ? "unsent" : r.refused_by_protocol ? "refused" : "unreachable";
    f.exit_code = -1;
    f.error = r.problem;
  }
  return f;
}

}  // namespace

ExecutorService::ExecutorService(kernel::EventLog& log, kernel::SnapshotStore* snapshots, kernel::CommitSignal& signal,
                                 const kernel::Clock& clock, const inventory::InventoryView& inventory,
                                 Dispatcher* dispatcher, const inventory::Liveness* liveness,
                                 std::shared_ptr<spdlog::logger> logger, ExecutorServiceOptions options)
    : log_(log),
      snapshots_(snapshots),
      signal_(signal),
      clock_(clock),
      inventory_(inventory),
      dispatcher_(dispatcher),
      liveness_(liveness),
      logger_(std::move(logger)),
      options_(options),
      runner_(log, snapshots) {}

Result<void> ExecutorService::start() {
  {
    std::unique_lock lock(state_mutex_);
    if (auto r = runner_.start(); !r) return r;
  }
  snapshot_at_ = runner_.sequence();
  return fold();
}

Result<void> ExecutorService::fold() {
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
    if (auto r = snapshot(); !r) logger_->warn("executor_snapshot_failed error=\"{}\"", r.error().message);
  }
  return {};
}

Result<void> ExecutorService::snapshot() {
  Result<void> r;
  {
    std::shared_lock lock(state_mutex_);
    r = runner_.snapshot();
  }
  if (r) snapshot_at_ = runner_.sequence();
  return r;
}

// The pending commands, decided together: each one's task, the placement it
// makes and its CommandDecided, all in one append. A command is closed by
// its CommandDecided expected at version 1 of command/<id>, so a command
// decided before (after a restart, by another instance) fails the append
// instead of being decided twice; then each is decided alone, with its
// idempotency key, and the one decided before is answered by the store as
// such. Two commands on one WPAR never share a batch (the second waits for
// the next round, decided on the state the first made).
Result<size_t> ExecutorService::decide_commands() {
  std::vector<PendingCommand> pending;
  {
    std::shared_lock lock(state_mutex_);
    for (const auto& [id, p] : runner_.state().pending) pending.push_back(p);
  }
  if (pending.empty()) return 0;
  // Decided on an inventory that has folded at least what this service has.
  (void)inventory_.wait_applied(runner_.sequence(), std::chrono::seconds(2));
  std::sort(pending.begin(), pending.end(), [](const auto& a, const auto& b) { return a.sequence < b.sequence; });
  if (pending.size() > options_.commands_per_step) pending.resize(options_.commands_per_step);

  struct Decided1 {
    const PendingCommand* command;
    Batch batch;  // its own events, for deciding it alone
    CommandDecided decided;
  };
  std::vector<Decided1> decisions;
  {
    std::shared_lock lock(state_mutex_);
    const Executor& state = runner_.state();
    std::set<std::string> touched;  // WPARs (and tasks) a decision of this round changes
    inventory_.read([&](const inventory::Inventory& inv) {
      for (const auto& p : pending) {
        kernel::Context context{clock_.wall_ns(), "user:" + p.request.user, kernel::CommandId(p.id), p.id};
        auto args = nlohmann::json::parse(p.request.args, nullptr, false);
        std::expected<Command, kernel::Rejection> command =
            args.is_object() ? parse_command(p.request.command, args)
                             : std::unexpected(kernel::Rejection{kernel::RejectionCode::kInvalid,
                                                                 "the arguments are not a JSON object"});
        // What it names, by the same prefix rules decide() uses.
        std::string subject;
        if (command) {
          if (const auto* a = std::get_if<WparAction>(&*command)) {
            subject = "wpar:" + inventory::resolve_prefix(inv.wpars, a->wpar, "WPAR").value_or(a->wpar);
          } else if (const auto* c = std::get_if<CancelTask>(&*command)) {
            subject = "task:" + inventory::resolve_prefix(state.tasks, c->task, "task").value_or(c->task);
          } else if (const auto* ap = std::get_if<ApproveTask>(&*command)) {
            subject = "task:" + inventory::resolve_prefix(state.tasks, ap->task, "task").value_or(ap->task);
          } else {
            const std::string& system = std::holds_alternative<Evacuate>(*command) ? std::get<Evacuate>(*command).system
                                                                                   : std::get<MarkDead>(*command).system;
            subject = "system:" + inventory::resolve_prefix(inv.registry.systems(), system, "system").value_or(system);
          }
        }
        if (!subject.empty() && !touched.insert(subject).second) continue;  // next round
        Decision decision = command ? decide(state, inv, *command, context) : std::unexpected(command.error());
        Decided1 d{&p, {}, CommandDecided{true, "", "", "service:executor"}};
        d.batch.append.idempotency_key = kernel::idempotency_key_of(context.command_id);
        d.batch.append.expectations.push_back(StreamExpectation{"command/" + p.id, ExpectKind::kExact, 1});
        if (!decision) {
          d.decided = CommandDecided{false, kernel::rejection_code_name(decision.error().code),
                                     decision.error().message, "service:executor"};
        } else {
          d.decided.message = decision->warning;
          for (auto& c : decision->changes) d.batch.add(state, c.stream, p.id, std::move(c.payload), c.version);
        }
        d.batch.append.events.push_back(EventDraft{"command/" + p.id, p.id, p.id, "", d.decided});
        decisions.push_back(std::move(d));
      }
    });
  }
  auto count = [&](const Decided1& d) {
    std::lock_guard lock(stats_mutex_);
    ++(d.decided.accepted ? stats_.accepted : stats_.refused);
    logger_->debug("command_decided id={} command={} user={} accepted={} code={}", d.command->id,
                   d.command->request.command, d.command->request.user, d.decided.accepted, d.decided.code);
  };
  // All of them in one append.
  AppendRequest all;
  for (const auto& d : decisions) {
    all.expectations.insert(all.expectations.end(), d.batch.append.expectations.begin(),
                            d.batch.append.expectations.end());
    all.events.insert(all.events.end(), d.batch.append.events.begin(), d.batch.append.events.end());
  }
  if (decisions.size() > 1) {
    auto r = log_.append(all);
    if (r) {
      for (const auto& d : decisions) count(d);
      if (auto f = fold(); !f) return std::unexpected(f.error());
      return decisions.size();
    }
    if (r.error().code != ErrorCode::kWrongExpectedVersion) return std::unexpected(r.error());
  }
  // One by one: a command decided before, or a stream changed under one of them.
  size_t written = 0;
  for (const auto& d : decisions) {
    auto r = log_.append(d.batch.append);
    if (!r && r.error().code == ErrorCode::kWrongExpectedVersion) {
      std::lock_guard lock(stats_mutex_);
      ++stats_.conflicts;
      if (++attempts_[d.command->id] >= options_.attempts) {
        logger_->warn("command_overtaken id={} command={} attempts={}", d.command->id, d.command->request.command,
                      attempts_[d.command->id]);
        attempts_.erase(d.command->id);
      }
      // The others of this round were decided on a state this one's stream no longer matches.
      break;
    }
    if (!r && r.error().code != ErrorCode::kIdempotencyKeyReused) return std::unexpected(r.error());
    attempts_.erase(d.command->id);
    ++written;
    if (r) count(d);
  }
  if (auto f = fold(); !f) return std::unexpected(f.error());
  return written;
}

void ExecutorService::dispatch(const Task& task, const Operation& op, const inventory::Inventory& inv, bool again) {
  auto refuse = [&](std::string why) {
    local_results_.push_back(DispatchResult{task.id, op.id, op.attempt, std::nullopt, std::move(why), false, again});
  };
  if (inv.registry.by_id(op.system) == nullptr) return refuse(fmt::format("system {} is no longer registered", op.system));
  if (auto problem = system_problem(inv, op.system); problem && !again) return refuse(*problem);
  if (dispatcher_ == nullptr) {
    return refuse("this manager cannot reach agents' ports (it has no manager key: see wpmd's log)");
  }
  auto target_of = [&](const std::string& system) -> std::optional<AgentTarget> {
    const auto* s = inv.registry.by_id(system);
    if (s == nullptr) return std::nullopt;
    AgentTarget t{system, s->address, s->agent_port, s->public_key};
    if (liveness_ != nullptr) {
      if (uint16_t said = liveness_->agent_port(system); said != 0) t.port = said;
    }
    return t;
  };
  AgentTarget target = *target_of(op.system);
  if (target.port == 0) return refuse(fmt::format("the agent of {} has not said which port it listens on", op.system));
  ap::Operation command{op.id, op.attempt, op.wpar, op.epoch, op.action, "", task.options.preserve_fs,
                        task.options.start, op.deadline_ns};
  if (task.kind == "fence") command.force = true;  // whatever the stale copy is doing
  if (task.kind == "relocate") {
    // The other agent of the state file's transfer (docs/relocation.md).
    const std::string& peer_system = op.system == task.system ? task.options.target : task.system;
    auto peer = target_of(peer_system);
    if (!peer) return refuse(fmt::format("system {} is no longer registered", peer_system));
    if (op.action == "pause") command.peer_key = peer->public_key;
    if (op.action == "receive") {
      if (peer->port == 0) return refuse(fmt::format("the agent of {} has not said which port it listens on", peer_system));
      command.peer_endpoint = endpoint_of(*peer);
      command.peer_key = peer->public_key;
    }
    if (op.action == "receive" || op.action == "restore") command.state_id = relocation_state_id(task);
    // Written and read there; never removed by the saga (an application
    // may still read its restore directory there when the departure's copy
    // is removed): the WPAR's next checkpoint replaces it.
    if (op.action == "pause" || op.action == "restore") command.state_root = task.options.shared_root;
    if (op.action == "remove") command.force = true;  // a frozen copy, or whatever a failed restore left
  }
  if (op.action == "deploy" || op.action == "modify") {
    auto it = inv.wpars.find(op.wpar);
    if (it == inv.wpars.end()) return refuse(fmt::format("WPAR {}'s definition is gone", op.wpar));
    WparDefinition w = it->second.wpar;
    if (op.action == "modify") {
      // The definition as the change makes it (it is recorded here once it succeeded there).
      auto change = modify_change(task.options, op.wpar);
      if (!change) return refuse(fmt::format("the task's change cannot be read: {}", change.error().message));
      w = inventory::with_fields(std::move(w), change->fields);
    }
    command.definition = wpar_to_json(w).dump();
  }
  dispatcher_->send(task.id, target, std::move(command), again);
}

void ExecutorService::kill_point(const Executor& state, const AppendRequest& append) const {
  if (options_.kill_point.empty()) return;
  for (const auto& e : append.events) {
    std::string point;
    std::visit(
        [&](const auto& p) {
          using T = std::decay_t<decltype(p)>;
          auto task = state.tasks.find(e.correlation_id);
          if (task == state.tasks.end() || task->second.kind != "relocate") return;
          if constexpr (std::is_same_v<T, WparPlaced>) {
            point = "relocate.placed";
          } else if constexpr (std::is_same_v<T, OperationStarted>) {
            point = "relocate." + p.action + ".started";
          } else if constexpr (std::is_same_v<T, OperationFinished>) {
            for (const auto& o : task->second.operations) {
              if (o.id == p.operation_id) point = "relocate." + o.action + ".finished";
            }
          }
        },
        e.payload);
    if (point == options_.kill_point) {
      logger_->warn("kill_point name={} task={}", point, e.correlation_id);
      logger_->flush();
      ::kill(::getpid(), SIGKILL);
    }
  }
}

// The agents' answers (and the refusals to send) as OperationFinished, and
// what each running task does now, decided on those answers: operations
// recorded and sent, timeouts, ends. One append for all of them.
Result<size_t> ExecutorService::drive_tasks() {
  std::vector<DispatchResult> results = std::exchange(local_results_, {});
  if (dispatcher_ != nullptr) {
    auto more = dispatcher_->take();
    results.insert(results.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  if (results.size() > kResultsPerRoundMax) {  // the rest next round
    local_results_.assign(std::make_move_iterator(results.begin() + kResultsPerRoundMax),
                          std::make_move_iterator(results.end()));
    results.resize(kResultsPerRoundMax);
  }
  Batch batch;
  uint64_t held_now = 0;
  size_t answers = 0;
  std::vector<std::pair<Task, Operation>> to_send;
  const int64_t now = clock_.wall_ns();
  {
    std::shared_lock lock(state_mutex_);
    const Executor& state = runner_.state();
    // Each answer about the operation its task has in flight (one per task);
    // any other was recorded already.
    std::map<std::string, OperationFinished> answer_of;
    for (const auto& r : results) {
      auto it = state.tasks.find(r.task_id);
      if (it == state.tasks.end()) continue;
      const auto* op = it->second.in_flight();
      if (op == nullptr || op->id != r.operation_id || op->attempt != r.attempt) continue;
      auto f = operation_finished(r);
      if (!answer_of.try_emplace(r.task_id, f).second) continue;
      logger_->info("operation_finished task={} operation={} attempt={} outcome={} exit={} wpar_state={}", r.task_id,
                    r.operation_id, r.attempt, f.outcome, f.exit_code, f.wpar_state);
    }
    inventory_.read([&](const inventory::Inventory& inv) {
      std::set<std::string> claimed;  // WPARs a task of this batch starts on: one each
      // Placements the agents hold that are newer than the log (a restored
      // manager): adopted before any command or fence for those WPARs.
      if (liveness_ != nullptr) {
        std::map<std::string, std::vector<inventory::ReportedWpar>> reports;
        for (const auto& [system, registered] : inv.registry.systems()) {
          auto probe = liveness_->probe(system);
          if (probe && probe->ok) reports.emplace(system, std::move(probe->wpars));
        }
        auto adoptions = adopted_placements(state, reports);
        for (const auto& placed : adoptions.adopted) {
          claimed.insert(placed.wpar);
          auto known = state.placements.find(placed.wpar);
          logger_->warn("placement_adopted wpar={} system={} epoch={} known_epoch={} reason=\"its agent holds a newer "
                        "placement than the log (a manager restored from a backup)\"",
                        placed.wpar, placed.system, placed.epoch,
                        known == state.placements.end() ? 0 : known->second.epoch);
          batch.add(state, placement_stream(placed.wpar), "adopted-" + placed.wpar, placed);
        }
        for (const auto& wpar : adoptions.ambiguous) {
          claimed.insert(wpar);  // no fence either until it is settled
          if (ambiguous_logged_.insert(wpar).second) {
            logger_->error("placement_ambiguous wpar={} reason=\"agents hold copies at the same placement epoch, newer "
                           "than the log, none or several of them Active\" hint=\"remove the copies that are not the "
                           "WPAR with wpm-agent rmwpar on their hosts\"",
                           wpar);
          }
        }
      }
      // Copies an agent still has of WPARs placed elsewhere: each removed there.
      for (auto& fence : fence_tasks(state, inv, now)) {
        if (claimed.contains(fence.created.wpar)) continue;
        claimed.insert(fence.created.wpar);
        batch.add(state, task_stream(fence.child), fence.child, fence.created);
        logger_->warn("stale_copy_fenced task={} wpar={} system={}", fence.child, fence.created.wpar,
                      fence.created.system);
      }
      // Application WPARs whose command ended: taken off their system. A
      // scan of every WPAR, so once a second, not every round.
      std::vector<Spawn> ended;
      if (const int64_t mono = clock_.monotonic_ns(); mono >= next_ended_scan_ns_) {
        ended = ended_application_tasks(state, inv);
        next_ended_scan_ns_ = mono + kEndedScanIntervalNs;
      }
      for (auto& spawn : ended) {
        if (!claimed.insert(spawn.created.wpar).second) continue;
        batch.add(state, task_stream(spawn.child), spawn.child, spawn.created);
        logger_->info("application_ended task={} wpar={} system={}", spawn.child, spawn.created.wpar,
                      spawn.created.system);
      }
      // Nothing is sent to an agent not reconciled since it (re)connected.
      auto held = [&](const std::string& system) {
        if (!options_.request_probe || liveness_ == nullptr) return false;
        if (!held_for_reconciliation(inv, system, liveness_->reconciled_since_connected(system),
                                     liveness_->agent_port(system))) {
          return false;
        }
        options_.request_probe(system);
        ++held_now;
        return true;
      };
      for (const auto& id : state.running) {  // the running tasks only: `tasks` keeps 10,000 finished ones too
        const auto found = state.tasks.find(id);
        WPM_ASSERT(found != state.tasks.end(), "running task {} is not among the tasks", id);
        const Task& recorded = found->second;
        // With its agent's answer, the task as it is once that is recorded.
        std::optional<Task> with_answer;
        if (auto a = answer_of.find(id); a != answer_of.end()) {
          batch.add(state, task_stream(id), id, a->second);
          with_answer = with_event(recorded, a->second, now);
          ++answers;
        } else if (batch.events() >= kBatchEventsMax) {
          continue;  // next round
        }
        const Task& task = with_answer ? *with_answer : recorded;
        Step step = next_step(state, task, inv, now);
        if (auto* start = std::get_if<Start>(&step)) {
          if (held(start->event.system)) continue;
          Operation op{start->event.operation_id, start->event.system, start->event.wpar, start->event.action,
                       start->event.epoch, start->event.attempt, now, start->event.deadline_ns};
          to_send.emplace_back(task, op);
          batch.add(state, task_stream(id), id, start->event);
        } else if (auto* await = std::get_if<Await>(&step)) {
          // After a restart (or a lost question): ask the agent again, same id.
          const bool asked = dispatcher_ != nullptr && dispatcher_->in_flight(await->operation.id, await->operation.attempt);
          const bool answered = std::any_of(local_results_.begin(), local_results_.end(), [&](const auto& r) {
            return r.operation_id == await->operation.id;
          });
          if (!asked && !answered && !held(await->operation.system)) dispatch(task, await->operation, inv, true);
        } else if (auto* timed_out = std::get_if<TimedOut>(&step)) {
          batch.add(state, task_stream(id), id, timed_out->event);
          logger_->warn("operation_timed_out task={} operation={}", id, timed_out->event.operation_id);
        } else if (auto* spawn = std::get_if<Spawn>(&step)) {
          if (!spawn->ended && !claimed.insert(spawn->created.wpar).second) continue;  // next round
          batch.add(state, task_stream(spawn->child), spawn->child, spawn->created);
          if (spawn->ended) batch.add(state, task_stream(spawn->child), spawn->child, *spawn->ended);
          logger_->info("task_child_created task={} child={} kind={} wpar={}", id, spawn->child, spawn->created.kind,
                        spawn->created.wpar);
        } else if (auto* place = std::get_if<Place>(&step)) {
          batch.add(state, placement_stream(task.wpar), id, place->event);
          logger_->info("wpar_placed task={} wpar={} system={} epoch={}", id, task.wpar, place->event.system,
                        place->event.epoch);
        } else if (auto* finish = std::get_if<Finish>(&step)) {
          if (finish->placed) batch.add(state, placement_stream(task.wpar), id, *finish->placed);
          if (finish->defined) {
            batch.add(state, "wpar/" + task.wpar, id, *finish->defined, finish->defined_version);
          }
          batch.add(state, task_stream(id), id, finish->event);
          logger_->info("task_finished task={} kind={} wpar={} state={} error=\"{}\"", id, task.kind, task.wpar,
                        finish->event.state, finish->event.error);
        }
      }
    });
  }
  if (held_now != 0) {
    std::lock_guard lock(stats_mutex_);
    stats_.operations_held += held_now;
  }
  if (batch.events() == 0) return 0;
  auto r = log_.append(batch.append);
  if (!r) {
    // The answers are recorded next round (or were, by another writer).
    local_results_.insert(local_results_.end(), std::make_move_iterator(results.begin()),
                          std::make_move_iterator(results.end()));
    if (r.error().code != ErrorCode::kWrongExpectedVersion) return std::unexpected(r.error());
    std::lock_guard lock(stats_mutex_);
    ++stats_.conflicts;
    return 0;  // another writer: fold and decide again
  }
  {
    std::shared_lock lock(state_mutex_);
    kill_point(runner_.state(), batch.append);
  }
  if (auto f = fold(); !f) return std::unexpected(f.error());
  // Sent only once recorded.
  inventory_.read([&](const inventory::Inventory& inv) {
    for (const auto& [task, op] : to_send) dispatch(task, op, inv);
  });
  std::lock_guard lock(stats_mutex_);
  stats_.operations_started += to_send.size();
  stats_.operations_finished += answers;
  return batch.events();
}

Result<size_t> ExecutorService::step() {
  if (auto r = fold(); !r) return std::unexpected(r.error());
  auto decided = decide_commands();
  if (!decided) return std::unexpected(decided.error());
  auto driven = drive_tasks();
  if (!driven) return std::unexpected(driven.error());
  return *decided + *driven;
}

void ExecutorService::run(const std::atomic<bool>& stop) {
  std::string last_error;
  while (!stop.load()) {
    auto done = step();
    std::string error = done ? "" : done.error().message;
    if (!error.empty() && error != last_error) logger_->error("executor_step_failed error=\"{}\"", error);
    last_error = error;
    if (!done) {
      signal_.pause(options_.idle_wait);
      continue;
    }
    if (*done > 0) continue;
    bool running = false;
    {
      std::shared_lock lock(state_mutex_);
      running = !runner_.state().busy.empty() || !runner_.state().running.empty();
    }
    seen_ = signal_.wait_beyond(std::max(seen_, runner_.sequence()), running ? options_.busy_wait : options_.idle_wait);
  }
  if (snapshots_ != nullptr && runner_.sequence() > snapshot_at_) {
    if (auto r = snapshot(); !r) logger_->warn("executor_snapshot_failed error=\"{}\"", r.error().message);
  }
}

void ExecutorService::read(const std::function<void(const Executor&)>& reader) const {
  std::shared_lock lock(state_mutex_);
  reader(runner_.state());
}

bool ExecutorService::wait_applied(uint64_t sequence, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(applied_mutex_);
  return applied_cv_.wait_for(lock, timeout, [&] { return applied_ >= sequence; });
}

uint64_t ExecutorService::applied() const {
  std::lock_guard lock(applied_mutex_);
  return applied_;
}

ExecutorStats ExecutorService::stats() const {
  std::lock_guard lock(stats_mutex_);
  return stats_;
}

}  // namespace wpm::executor
