// The manager's lifecycle operations on this agent (docs/executor.md): each
// journaled before it acts, fenced by placement epochs, run once by a runner
// process of its own, and settled when its runner died with a previous
// daemon.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <fstream>
#include <utility>

#include "agents/agent/daemon_internal.h"
#include "agents/runtime/wpar_files.h"

namespace wpm::agent::detail {

namespace {


// Whether `pid` is a live operation runner (not a reused pid).
bool runner_alive(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid));
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return cmdline.find("operation-run") != std::string::npos;
}

bool valid_wpar_name(const std::string& n) {
  if (n.empty() || n.size() > 63 || n.front() == '.' || n.front() == '-') return false;
  return n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == std::string::npos;
}

ap::OperationResult result_of(const OperationRecord& r) {
  return ap::OperationResult{r.id, r.attempt, !r.done, r.exit_code, r.output, r.error, r.wpar_state, r.refused};
}

}  // namespace

bool Daemon::settle(OperationRecord& record) {
  if (record.done) return false;
  // A runner this daemon started is gone once reaped (its /proc entry is
  // not a sure sign: just after the spawn its command line may still read
  // empty). One started by a daemon before this one: by the pid it wrote;
  // one that never wrote its pid within 10 s was never started.
  bool gone = false;
  if (auto it = spawned_.find(record.id); it != spawned_.end()) {
    gone = it->second <= 0;
  } else {
    int pid = record.runner_pid;
    gone = pid > 0 ? !runner_alive(pid) : now_ns() - record.started_ns > 10'000'000'000;
  }
  if (!gone) return false;
  if (auto again = journal_->read(record.id); again && again->done) {  // it finished just now
    record = *again;
    return false;
  }
  record.done = true;
  record.exit_code = 4;
  record.error = "the operation was interrupted: its runner is gone without a result (the host restarted, or it "
                 "was killed); it is not run again: check the WPAR's state";
  record.wpar_state = wpar_state_letter(o_.paths, record.wpar);
  record.finished_ns = now_ns();
  if (record.action == "receive" && valid_operation_id(record.state_id) && valid_wpar_name(record.wpar)) {
    // What it received is incomplete and never verified: not kept.
    std::error_code ec;
    fs::remove_all(fmt::format("{}/state/{}/{}.part", o_.paths.data_dir, record.wpar, record.state_id), ec);
  }
  (void)journal_->write(record);
  log_->warn("operation_interrupted id={} wpar={} action={}", record.id, record.wpar, record.action);
  return true;
}

bool Daemon::hold_answer(bus::ServerRequest& request, uint64_t request_id, const std::string& operation_id,
                         std::chrono::milliseconds wait) {
  {
    std::lock_guard lock(waiters_mutex_);
    if (waiters_closed_ || waiters_.size() >= kWaitersMax) return false;
    waiters_.push_back(Waiter{std::move(request), request_id, operation_id, std::chrono::steady_clock::now() + wait});
  }
  // The main loop looks at it now: the operation may have ended meanwhile
  // (its runner's exit is what wakes the loop otherwise).
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  return true;
}

std::optional<std::chrono::steady_clock::time_point> Daemon::answer_waiters(bool all) {
  std::vector<Waiter> held;
  {
    std::lock_guard lock(waiters_mutex_);
    if (all) waiters_closed_ = true;  // none held from now on
    if (waiters_.empty()) return std::nullopt;
    held.swap(waiters_);
  }
  const auto now = std::chrono::steady_clock::now();
  const bool reaped = std::exchange(reaped_, false);
  std::vector<Waiter> keep;
  std::vector<std::pair<Waiter, ap::OperationResult>> answers;
  {
    std::lock_guard lock(ops_mutex_);
    for (auto& w : held) {
      if (w.checked && !reaped && !all && now < w.until) {  // nothing ended since it was read
        keep.push_back(std::move(w));
        continue;
      }
      w.checked = true;
      auto record = journal_->read(w.operation_id);
      if (record) settle(*record);
      if (record && !record->done && !all && now < w.until) {
        keep.push_back(std::move(w));
        continue;
      }
      ap::OperationResult result =
          record ? result_of(*record)
                 : ap::OperationResult{w.operation_id, 1, false, 4, "", "the operation's record is gone", "", true};
      answers.emplace_back(std::move(w), std::move(result));
    }
  }
  for (auto& [w, result] : answers) {
    port_->reply(std::move(w.request), ap::encode(ap::AgentReply{w.request_id, std::move(result)}));
  }
  std::lock_guard lock(waiters_mutex_);
  for (auto& w : keep) waiters_.push_back(std::move(w));
  std::optional<std::chrono::steady_clock::time_point> next;
  for (const auto& w : waiters_) next = next ? std::min(*next, w.until) : w.until;
  return next;
}

// One lifecycle operation from the manager (operations.h): journaled before
// it runs, run once by its own runner process, answered from the journal.
ap::OperationResult Daemon::handle_operation(const ap::Operation& op) {
  auto invalid = [&](std::string why) {
    return ap::OperationResult{op.operation_id, op.attempt, false, 1, "", std::move(why), "", true};
  };
  if (!valid_operation_id(op.operation_id)) return invalid("not a valid operation id");
  if (!valid_wpar_name(op.wpar)) return invalid(fmt::format("'{}' is not a valid WPAR name", op.wpar));
  if (!known_action(op.action)) return invalid(fmt::format("no action '{}' (upgrade wpm-agent)", op.action));
  if (!op.state_root.empty()) {
    std::error_code ec;
    if (!op.state_root.starts_with('/') || op.state_root.find("..") != std::string::npos || op.state_root == "/") {
      return invalid(fmt::format("state root '{}' is not an absolute path without '..' (and not /)", op.state_root));
    }
    if (!fs::is_directory(op.state_root, ec)) {
      return invalid(fmt::format("the shared state root {} is not a directory on this host: mount it there (the "
                                 "manager's statefile.shared-root), or empty that setting",
                                 op.state_root));
    }
  }
  std::lock_guard lock(ops_mutex_);
  auto existing = journal_->read(op.operation_id);
  if (existing) {
    if (existing->wpar != op.wpar || existing->action != op.action) {
      return invalid(fmt::format("operation id {} was used for another operation ({} of {}); not run",
                                 op.operation_id, existing->action, existing->wpar));
    }
    settle(*existing);
    bool again = existing->done && run_again_code(existing->exit_code) && op.attempt > existing->attempt;
    if (!again) return result_of(*existing);
  }
  OperationRecord record{op.operation_id, op.attempt,  op.wpar,        op.action,
                         op.epoch,        op.definition, op.preserve_fs, op.start_after,
                         op.peer_endpoint, op.peer_key,  op.state_id,    op.force,
                         op.state_root};
  record.started_ns = wall_ns();
  auto refuse = [&](int code, std::string why) {
    record.done = true;
    record.refused = true;
    record.exit_code = code;
    record.error = std::move(why);
    record.wpar_state = wpar_state_letter(o_.paths, op.wpar);
    record.finished_ns = wall_ns();
    (void)journal_->write(record);
    log_->warn("operation_refused id={} wpar={} action={} error=\"{}\"", op.operation_id, op.wpar, op.action,
               record.error);
    return result_of(record);
  };
  // The manager gave up waiting for it (it was queued while this agent was
  // away): running it now would surprise whoever decided since.
  if (op.deadline_ns != 0 && wall_ns() > op.deadline_ns) {
    return refuse(1, fmt::format("operation {} arrived after its deadline (the manager no longer waits for it); not "
                                 "run",
                                 op.operation_id));
  }
  for (auto it = running_ops_.begin(); it != running_ops_.end();) {
    auto other = journal_->read(it->first);
    if (!other || other->done || (settle(*other), other->done)) {
      spawned_.erase(it->first);
      it = running_ops_.erase(it);
      continue;
    }
    if (it->second == op.wpar) {
      return refuse(17, fmt::format("another operation ({} {}) is in progress on WPAR {}; wait for it to finish",
                                    other->action, other->id, op.wpar));
    }
    ++it;
  }
  const std::string placements = o_.paths.data_dir + "/placements";
  auto held = read_epoch(placements, op.wpar);
  bool exists = runtime::WparFiles(o_.paths.wpars_root, op.wpar).read_spec().has_value();
  if (auto why = placement_refusal(held, op.epoch, op.action, exists, op.wpar)) {
    if (op.action == "remove" && !exists && !(held && op.epoch < *held)) {
      // Nothing of it may stay here: a state file a relocation brought
      // (its clean-up after a failed arrival) goes too.
      std::error_code ignored;
      fs::remove_all(o_.paths.data_dir + "/state/" + op.wpar, ignored);
    }
    return refuse(exists ? 1 : 16, *why);
  }
  // The epoch is kept before anything acts: from now on older commands are stale.
  if (op.epoch > held.value_or(0)) {
    if (auto w = write_epoch(placements, op.wpar, op.epoch); !w) return refuse(4, w.error().message);
  }
  if (auto w = journal_->write(record); !w) return invalid("cannot journal the operation: " + w.error().message);
  // A relocation's checkpoint: the arrival agent may pull its state file.
  if (op.action == "pause" && !op.peer_key.empty()) {
    grants_.allow(op.peer_key, StateGrant{op.wpar, op.operation_id, record.started_ns + kGrantLifetimeNs});
  }
  if (op.action == "remove") grants_.revoke_wpar(op.wpar);
  std::error_code ec;
  std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  std::vector<std::string> argv = {self, "--data", o_.paths.data_dir, "operation-run", op.operation_id};
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (int fd = 0; fd < 3; ++fd) posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_RDWR, 0);
  pid_t runner = 0;
  int rc = ::posix_spawn(&runner, cargv[0], &actions, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    record.done = true;
    record.exit_code = 4;
    record.error = fmt::format("cannot start the operation's runner: {}", std::strerror(rc));
    record.finished_ns = wall_ns();
    (void)journal_->write(record);
    return result_of(record);
  }
  running_ops_[op.operation_id] = op.wpar;
  spawned_[op.operation_id] = runner;
  metrics_->operations.Add({{"result", "accepted"}}).Increment();
  log_->info("operation_started id={} attempt={} wpar={} action={} epoch={} runner={}", op.operation_id, op.attempt,
             op.wpar, op.action, op.epoch, runner);
  return result_of(record);
}

}  // namespace wpm::agent::detail
