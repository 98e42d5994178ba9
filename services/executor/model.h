#pragma once
// The executor's state and rules (DESIGN.md §2, §4, §9; seed "Managing
// WPARs", the chkptwpar/restartwpar/resumewpar/killwpar references;
// docs/executor.md): lifecycle commands become tasks of operations on
// agents; each operation is recorded before it is sent and after it ends;
// every placement of a WPAR carries a higher epoch than the last.
//
// Pure (STYLE.md §1): evolve() folds one event; decide() turns a command
// into the events to append (or a Rejection), reading the inventory's state
// for the WPAR definitions and systems; next_step() says what a running
// task does now. The lifecycle rules are the agent's own table
// (agents/runtime/lifecycle.h), applied to the state the manager knows
// before anything is sent. No I/O, no clock: the time comes in.
//
// Thread safety: plain values.

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "schemas/events.h"
#include "services/inventory/model.h"
#include "services/kernel/decision.h"
#include "services/kernel/projection.h"

namespace wpm::executor {

// The commands the executor decides, by their gateway names.
bool is_executor_command(std::string_view name);

struct Operation {
  std::string id;  // <task>.<n>
  std::string system;
  std::string wpar;
  std::string action;
  uint64_t epoch = 0;
  uint32_t attempt = 1;
  int64_t started_ns = 0;
  int64_t deadline_ns = 0;
  bool finished = false;
  std::string outcome;  // ok failed refused timeout unreachable (sent, no answer) unsent (never left the manager)
  int32_t exit_code = 0;
  std::string output;
  std::string error;
  std::string wpar_state;
  int64_t finished_ns = 0;
  bool operator==(const Operation&) const = default;
};

// A task's options (TaskCreated.args).
struct TaskOptions {
  bool force = false;            // stop --force
  bool start = false;            // deploy --start
  bool preserve_fs = false;      // remove --preserve-fs
  bool keep_definition = false;  // remove --keep-definition
  std::string target;            // relocate: the arrival system (--to)
  // remove: an application WPAR whose command ended is taken off its system
  // (made by the executor; Undeployed also when the removal there fails).
  bool ended = false;
  // relocate, evacuate: the shared state root (statefile.shared-root) when
  // the task was decided: no transfer step; "" the agents transfer it.
  std::string shared_root;
  // evacuate: the WPARs to move and where (one child relocation each, in
  // this order), and those that cannot move, with why; fixed when decided.
  std::vector<std::pair<std::string, std::string>> plan;
  std::vector<std::pair<std::string, std::string>> skipped;
  // modify: the fields it sets, as wpar.modify's arguments (without the name).
  nlohmann::json changes;
  // relocate: why it was asked for (the policy's explanation), shown by task show.
  std::string reason;
  // relocate, evacuate asked for with --approval: the task waits (state
  // "waiting", its WPARs claimed) until task.approve, or ends cancelled at
  // this time (Unix ns). 0: it runs at once.
  int64_t approval_expires_ns = 0;
  bool operator==(const TaskOptions&) const = default;
};
nlohmann::json options_to_json(const TaskOptions& o);
TaskOptions options_from_json(std::string_view text);
// The change a modify task carries (its options' `changes`) for WPAR
// `name`, as wpar.modify reads it; the refusal when it cannot be read.
std::expected<inventory::ModifyWpar, kernel::Rejection> modify_change(const TaskOptions& options,
                                                                      const std::string& name);

struct Task {
  std::string id;
  std::string kind;  // deploy start stop pause resume freeze kill remove relocate modify evacuate fence
  std::string wpar;
  std::string system;
  std::string user;
  std::string parent;
  TaskOptions options;
  std::string state = "running";  // waiting (for approval) running succeeded failed cancelled
  std::string approved_by;        // who approved it (task.approve), when it waited
  int64_t approved_ns = 0;
  std::string error;
  std::string recovery;
  std::string wpar_state;  // what the task's end says of the WPAR ("" nothing)
  std::string cause;
  int64_t created_ns = 0;
  int64_t finished_ns = 0;
  uint64_t version = 0;  // of task/<id>
  std::vector<Operation> operations;
  bool operator==(const Task&) const = default;
  bool finished() const { return state != "running" && state != "waiting"; }
  bool waiting() const { return state == "waiting"; }
  // The operation in flight (started, not finished), if any.
  const Operation* in_flight() const;
};

struct Placement {
  std::string system;  // "" on none
  uint64_t epoch = 0;
  uint64_t version = 0;  // of placement/<wpar>
  bool operator==(const Placement&) const = default;
};

struct PendingCommand {
  std::string id;
  CommandRequested request;
  uint64_t sequence = 0;
  int64_t requested_ns = 0;
  bool operator==(const PendingCommand&) const = default;
};

// Finished tasks kept in memory (the newest); older ones are read from
// their stream when asked for (task_from_events).
inline constexpr size_t kFinishedTasksKept = 10'000;
// An operation's output and error kept in memory: their last 1 KiB each.
inline constexpr size_t kOutputKeptBytes = 1024;

// Compatibility analyses as recorded (CompatibilityAnalyzed): by the
// properties digests of departure and arrival. A few per distinct profile pair.
using CompatTable = std::map<std::pair<std::string, std::string>, std::vector<CompatResult>>;

struct Executor {
  std::map<std::string, Task> tasks;             // running, and the newest finished
  std::set<std::string> running;                 // the ids of the tasks not finished (an index of `tasks`)
  std::deque<std::string> finished_order;        // finished task ids, oldest first
  std::map<std::string, Placement> placements;   // by WPAR
  std::map<std::string, std::string> busy;       // WPAR → its running task
  std::map<std::string, PendingCommand> pending;
  CompatTable compat;
  // Copies of WPARs an agent still has where the WPAR is no longer placed
  // (its host came back, or a relocation could not remove its departure):
  // (WPAR, system) → the sequence of the report; each gets a fence task.
  struct StaleCopy {
    uint64_t sequence = 0;     // of the report (or of the fence that failed): the next fence's id
    int64_t not_before_ns = 0;  // a failed fence is tried again after a pause
    bool operator==(const StaleCopy&) const = default;
  };
  std::map<std::pair<std::string, std::string>, StaleCopy> stale;
  uint64_t applied = 0;
  bool operator==(const Executor&) const = default;
};

Executor evolve(Executor state, const Event& event);
void fold_into(Executor& state, Event&& event);
// A task folded from its own stream's events.
std::optional<Task> task_from_events(const std::string& id, const std::vector<Event>& events);
// `task` with one more event of its own stream folded, as it will be once
// recorded (its next version, at `timestamp_ns`): the executor decides a
// task's next step on an agent's answer in the same append that records it.
Task with_event(Task task, Payload payload, int64_t timestamp_ns);

std::string task_stream(const std::string& id);
std::string placement_stream(const std::string& wpar);

// ---- commands -------------------------------------------------------------

// wpar.deploy|start|stop|pause|resume|freeze|kill|remove|relocate|modify
struct WparAction {
  std::string kind;
  std::string wpar;    // any unique prefix
  std::string system;  // deploy: the target system; relocate: the arrival (--to); any unique prefix
  TaskOptions options;
  int64_t approval_ns = 0;  // relocate: wait this long for task.approve (0: run at once)
};
// task.cancel: no further operation starts; the task ends cancelled.
struct CancelTask {
  std::string task;  // any unique prefix
};
// system.evacuate: every mobile WPAR of a system relocated to the best
// candidate, one after another, as child tasks.
struct Evacuate {
  std::string system;  // any unique prefix
  int64_t approval_ns = 0;  // wait this long for task.approve (0: run at once)
};
// task.approve: a waiting task runs from now on.
struct ApproveTask {
  std::string task;  // any unique prefix
};
// The longest an approval may be waited for (7 days); the shortest, 1 minute.
inline constexpr int64_t kApprovalMaxNs = 7 * 86'400'000'000'000;
inline constexpr int64_t kApprovalMinNs = 60'000'000'000;
// system.mark-dead: the operator confirms that an Offline system is gone;
// its WPARs are taken off it (Undeployed, deployable elsewhere); a copy it
// still runs when it comes back is fenced.
struct MarkDead {
  std::string system;  // any unique prefix
};
using Command = std::variant<WparAction, CancelTask, Evacuate, MarkDead, ApproveTask>;

// How long a system must have been Offline before it may be marked dead:
// the setting mark-dead.grace (default 30 s).

std::expected<Command, kernel::Rejection> parse_command(std::string_view name, const nlohmann::json& args);

struct Change {
  std::string stream;
  Payload payload;
  // The version the stream must be at, for a stream that is not the
  // executor's (a WPAR's definition, wpar/<name>, by the inventory's
  // version); unset: the executor's own version of it.
  std::optional<uint64_t> version;
  bool operator==(const Change&) const = default;
};
struct Decided {
  std::vector<Change> changes;
  std::string warning;  // accepted, with something the user should know
};
using Decision = std::expected<Decided, kernel::Rejection>;

// `context.command_id` becomes the task's id.
Decision decide(const Executor& state, const inventory::Inventory& inventory, const Command& command,
                const kernel::Context& context);

// The stream version a decision was made on (0: the stream does not exist).
uint64_t stream_version(const Executor& state, const std::string& stream);

// The actions of a task, in order (the agent's actions, agent.capnp).
std::vector<std::string> plan(const Task& task, const inventory::Inventory& inventory);
// How long an operation may take before it fails as timed out.
int64_t action_timeout_ns(std::string_view action);
// The seed's "run the command again" exit codes: 3, 5, 6, 17.
bool run_again_code(int exit_code);
// Whether a failed operation is tried again: the seed's run-again codes of
// the checkpoint commands (pause, freeze), and the agent's "busy" refusal.
bool run_again(const Operation& op);
inline constexpr uint32_t kAttemptsMax = 3;
inline constexpr int64_t kRetryDelayNs = 1'000'000'000;

// What a running task does now.
struct Start {     // send the next operation (recorded first)
  OperationStarted event;
};
struct Await {     // an operation is in flight: keep asking the agent
  Operation operation;
};
struct TimedOut {  // it is past its deadline
  OperationFinished event;
};
struct Finish {    // the task ends; with the placement change it makes, if any
  TaskFinished event;
  std::optional<WparPlaced> placed;
  // A modify that succeeded: the WPAR's definition from now on, written on
  // wpar/<name> expected at `defined_version` (the inventory's).
  std::optional<WparDefined> defined;
  uint64_t defined_version = 0;
};
struct Place {     // a relocation moves the WPAR's placement (no operation)
  WparPlaced event;
};
struct Spawn {     // an evacuation starts its next child relocation (task/<child>)
  std::string child;
  TaskCreated created;
  std::optional<TaskFinished> ended;  // it cannot start (the WPAR is busy): it ends at once
};
struct Idle {};    // a retry waits for its delay
using Step = std::variant<Idle, Start, Await, TimedOut, Finish, Place, Spawn>;

// `system_problem` is set when the task's system cannot be reached now
// (Offline, Unreachable, removed): an operation that would be sent fails.
Step next_step(const Executor& state, const Task& task, const inventory::Inventory& inventory, int64_t now_ns);

// Why operations cannot be sent to `system` now, if they cannot.
std::optional<std::string> system_problem(const inventory::Inventory& inventory, const std::string& system);

// Whether an operation for `system` waits (neither recorded nor sent) for
// its agent's reconciliation (docs/executor.md "Reconciliation"): it can be
// reached, its WPAR list was not reconciled since it (re)connected, and its
// agent said where it listens (`agent_port`: what its Started said, 0 if
// nothing), so a probe can be asked for. Otherwise it is sent, or fails at
// once saying why.
bool held_for_reconciliation(const inventory::Inventory& inventory, const std::string& system, bool reconciled,
                             uint16_t agent_port);

// ---- relocation (docs/relocation.md) ---------------------------------------
//
// A relocate task moves an Active WPAR from its system (departure, the
// task's system) to options.target (arrival), as a saga whose every step is
// an operation recorded before and after it runs, or a recorded placement:
//   .1 pause on departure (checkpoint, frozen; the arrival's key may pull it)
//      placement → arrival (epoch + 1): the departure's copy is frozen
//   .2 receive on arrival (pull the state file, verify its checksums); none
//      with a shared state root (options.shared_root): .3 reads it there
//   .3 restore on arrival (restartwpar from it: Active there)
//   .4 remove on departure (its frozen copy, and the state file)
// On a failure of .2 or .3 it compensates:
//      placement → departure (epoch + 2: the arrival's commands are stale)
//   .5 remove on arrival (whatever of it is there)
//   .6 resume on departure (Active again)
// A failure of .1 whose outcome is unknown goes to .6 directly. Each step's
// operation id is fixed, so a manager that restarts resumes the saga from
// the log and asks the agents about the same ids.

// The state file's id of a relocation: its checkpoint's operation id.
std::string relocation_state_id(const Task& task);
// The next step of a relocate task (called by next_step).
Step relocation_step(const Executor& state, const Task& task, int64_t now_ns);

// One direction of compatibility as the log holds it.
struct DirectionCompat {
  std::string state;                // compatible, incompatible, pending
  std::vector<CompatResult> failed;  // the critical tests that failed
};
// `optional_tests`: optional tests that count as well (a group's policy).
DirectionCompat direction_compat(const Executor& state, const inventory::Inventory& inventory,
                                 const std::string& departure, const std::string& arrival,
                                 const std::vector<std::string>& optional_tests = {});

// Where a WPAR could go, best first: compatible in the departure → arrival
// direction first, then by load (1-minute load average per CPU from the
// heartbeats; unknown last), then by WPARs placed there, then by name. One
// ranking for relocation, evacuation and policy.
struct Candidate {
  std::string system;
  std::string hostname;
  std::string compatibility;  // compatible, incompatible, pending (departure → this system)
  std::vector<CompatResult> failed;
  std::string state;          // online, offline, unreachable
  std::optional<double> load;
  size_t wpars = 0;           // WPARs placed there
  bool eligible = false;      // a relocation there would be accepted (without --force)
  std::string reason;         // when not eligible: why
};
// `planned`: WPARs already planned onto each system (an evacuation spreads them).
std::vector<Candidate> rank_candidates(const Executor& state, const inventory::Inventory& inventory,
                                       const std::string& wpar, const std::map<std::string, double>& loads,
                                       const std::map<std::string, size_t>& planned = {});
nlohmann::json candidate_to_json(const Candidate& c);

// ---- evacuation ------------------------------------------------------------

// Which WPARs of `system` go where (the best eligible candidate of each,
// spreading them: a target counts the WPARs planned there), and which
// cannot move and why. The same plan for --dry-run and the task.
struct EvacuationPlan {
  std::vector<std::pair<std::string, std::string>> moves;    // WPAR → target
  std::vector<std::pair<std::string, std::string>> skipped;  // WPAR → why not
};
EvacuationPlan plan_evacuation(const Executor& state, const inventory::Inventory& inventory, const std::string& system,
                               const std::map<std::string, double>& loads);
// The children of a task (evacuate), in the order they were made.
std::vector<const Task*> children_of(const Executor& state, const std::string& task);
Step evacuation_step(const Executor& state, const Task& task);

// ---- fencing ---------------------------------------------------------------

// The fence tasks to start now: one per stale copy whose WPAR has no task
// running, once its system can take commands (Online again); its id is
// derived from the report, so deciding again makes none twice.
std::vector<Spawn> fence_tasks(const Executor& state, const inventory::Inventory& inventory, int64_t now_ns);

// Placements agents hold that are newer than the log's: a manager restored
// from a backup does not know what happened after it, its agents do
// (docs/backup.md). A WPAR reported (in `reports`, by system) with a higher
// placement epoch than this executor's, and no task running on it, is
// adopted: placed on that system at the agent's epoch (so that its commands
// are not stale and its copy there is not fenced). The highest epoch wins;
// between equal ones the Active copy (a relocation cut short leaves a
// paused one at the same epoch); when that does not decide, none is
// adopted and the WPAR is named in `ambiguous` (its copies stay: fences
// carry the log's older epoch, which the agents refuse).
struct Adoptions {
  std::vector<WparPlaced> adopted;  // in WPAR order
  std::vector<std::string> ambiguous;
};
Adoptions adopted_placements(const Executor& state,
                             const std::map<std::string, std::vector<inventory::ReportedWpar>>& reports);
// The tasks that take an application WPAR whose command ended off its
// system (the seed: it returns to Undeployed): one remove --keep-definition
// per such WPAR placed on an Online system with no task running; its id
// names the placement epoch, which its end raises, so none is made twice.
std::vector<Spawn> ended_application_tasks(const Executor& state, const inventory::Inventory& inventory);

// A failed fence is tried again after this long.
inline constexpr int64_t kFenceRetryDelayNs = 10'000'000'000;

// A task as JSON (task.show, task.list).
nlohmann::json task_to_json(const Task& task, bool with_output);

// The executor as a projection of the whole log.
struct ExecutorModel {
  using State = Executor;
  static constexpr std::string_view kName = "executor";
  static constexpr std::string_view kStream = "";
  static constexpr kernel::UnknownEvents kUnknown = kernel::UnknownEvents::kSkip;
  static State initial() { return {}; }
  static State evolve(State state, const Event& event) { return executor::evolve(std::move(state), event); }
  static void fold_into(State& state, Event&& event) { executor::fold_into(state, std::move(event)); }
  static bool wants(EventType type);
  static std::string encode(const State& state);
  static Result<State> decode(std::string_view bytes);
};

}  // namespace wpm::executor
