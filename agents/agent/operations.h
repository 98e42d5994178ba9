#pragma once
// The manager's lifecycle operations on this agent (docs/executor.md): the
// journal that makes each operation run once, the placement epochs that
// fence stale commands, and the translation of an operation into the local
// command that carries it out (one implementation of every lifecycle
// command: the same code as `wpm-agent startwpar …` run by hand).
//
// An operation is journaled (DATA/operations/<id>.json, written and synced)
// before anything acts on it. It then runs in a runner process of its own
// (`wpm-agent operation-run ID`, started in its own session) that runs the
// local command, keeps its output, and writes the result into the journal;
// so the result is kept even when the daemon stops or dies meanwhile. The
// same id again is answered from the journal: "running", or the first
// result. A later attempt of an operation whose exit code says "run the
// command again" (the seed's 3, 5, 6 and 17) runs it again. A runner that
// vanished without a result (the host restarted) leaves the operation
// interrupted: exit code 4 and a message saying so, never a second run.
//
// Placement epochs (DATA/placements/<wpar>): the highest epoch a command
// for that WPAR carried. A command with an older one is refused (the WPAR
// was placed again since); the file outlives the WPAR's removal.
//
// Thread safety: OperationJournal is not synchronised (the daemon holds a
// mutex around it); the pure functions are plain.

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agents/agent/local_commands.h"
#include "schemas/error.h"

namespace wpm::agent {

struct OperationRecord {
  std::string id;
  uint32_t attempt = 1;
  std::string wpar;
  std::string action;
  uint64_t epoch = 0;
  std::string definition;  // deploy: the WPAR's definition, JSON
  bool preserve_fs = false;
  bool start_after = false;
  std::string peer_endpoint;  // receive: the departure agent's port
  std::string peer_key;       // pause: the arrival agent allowed to pull the state file; receive: the departure's key
  std::string state_id;       // receive, restore: the state file's id (its checkpoint's operation id)
  bool force = false;         // remove: end whatever runs first
  std::string state_root;     // pause, restore: a shared state root ("" DATA/state); its wpm-state/ holds them
  bool done = false;       // false: running (or interrupted, when its runner is gone)
  int runner_pid = 0;
  int exit_code = 0;
  std::string output;      // the last kOutputBytesMax of standard output
  std::string error;       // the last kOutputBytesMax of standard error, without the "wpm-agent: " prefixes
  std::string wpar_state;  // the WPAR's state letter afterwards; "" when it no longer exists
  bool refused = false;    // not run: error says why
  int64_t started_ns = 0;
  int64_t finished_ns = 0;
  bool operator==(const OperationRecord&) const = default;
};

inline constexpr size_t kOutputBytesMax = 16 * 1024;
// Finished operations kept (oldest dropped first).
inline constexpr size_t kJournalKeep = 1000;

// The actions an operation may name.
bool known_action(std::string_view action);
// Whether an operation id is usable as a file name: 1-100 of [A-Za-z0-9._-], not starting with '.'.
bool valid_operation_id(std::string_view id);
// The seed's "run the command again" exit codes (chkptwpar, restartwpar: 3, 5, 6; busy: 17).
bool run_again_code(int exit_code);
// Whether an action places the WPAR here (its epoch becomes the one held):
// deploy, and a relocation's receive and restore.
bool places(std::string_view action);

// Why a command for `wpar` with `epoch` may not run here, if it may not:
// an epoch older than the one held (stale: placed again since), or a
// command other than deploy for a WPAR that is not on this system. Pure.
std::optional<std::string> placement_refusal(std::optional<uint64_t> held, uint64_t epoch, std::string_view action,
                                             bool exists, std::string_view wpar);

// A definition's command as the workload's argv: plain words are run as
// they are (the command is the WPAR's main process, which receives the
// checkpoint signal); anything with shell syntax runs under /bin/sh -c, and
// then the shell is that process (it must handle the signal itself).
std::vector<std::string> command_words(const std::string& command);

// The local command (arguments after `wpm-agent --data DIR`) that carries
// out an operation; `state_root` is where pause and freeze put state files.
// The error when the definition cannot be read.
std::expected<std::vector<std::string>, std::string> command_args(const OperationRecord& op,
                                                                  const std::string& state_root);

std::string record_to_json(const OperationRecord& r);
std::optional<OperationRecord> record_from_json(std::string_view text);

class OperationJournal {
 public:
  explicit OperationJournal(std::string dir, size_t keep = kJournalKeep);
  const std::string& dir() const { return dir_; }
  std::optional<OperationRecord> read(const std::string& id) const;
  // Written to a temporary file, synced, renamed: all or nothing.
  Result<void> write(const OperationRecord& record);
  // Drops the oldest finished records beyond `keep`.
  void prune();
  std::string output_path(const std::string& id) const { return dir_ + "/" + id + ".out"; }
  std::string error_path(const std::string& id) const { return dir_ + "/" + id + ".err"; }
  // The records not finished, by id.
  std::vector<OperationRecord> running() const;
  // Every record (at most `keep` finished ones and the running ones).
  std::vector<OperationRecord> records() const;

 private:
  std::string path(const std::string& id) const { return dir_ + "/" + id + ".json"; }
  std::string dir_;
  size_t keep_;
};

std::optional<uint64_t> read_epoch(const std::string& placements_dir, const std::string& wpar);
Result<void> write_epoch(const std::string& placements_dir, const std::string& wpar, uint64_t epoch);
// The epochs are a manager's (its log numbers them): registered with another
// manager (another key: a reinstalled one starts at 1 again), this agent
// forgets the old one's. `placements_dir/.manager` names whose they are; an
// agent that held epochs under a registration with another key (or under
// none named) drops them. Returns how many it dropped.
Result<size_t> adopt_placements(const std::string& placements_dir, const std::string& manager_key,
                                const std::string& previous_key);

// The last `max` bytes of a file ("" when it cannot be read).
std::string read_tail(const std::string& path, size_t max);
// Standard error of a local command as an error message: "wpm-agent: "
// prefixes dropped, trailing newlines trimmed.
std::string error_text(std::string_view stderr_text);

// The state letter of a WPAR on this host as lswpar shows it; "" when it does not exist.
std::string wpar_state_letter(const AgentPaths& paths, const std::string& wpar);

// `wpm-agent operation-run ID`: runs a journaled operation's local command
// and writes its result into the journal. Exit 0 once the result is written.
int run_operation(const AgentPaths& paths, const std::string& id);

}  // namespace wpm::agent
