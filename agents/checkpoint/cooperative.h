#pragma once
// Cooperative checkpoint and restart (DESIGN.md §5, seed "Checkpoint and
// restart", chkptwpar, restartwpar, resumewpar, killwpar). A WPAR created with
// checkpoint enabled runs with WPM_STATE_DIR pointing at its trigger
// directory. A checkpoint empties that directory, sends the checkpoint signal
// (SIGUSR1) to the workload's main process, waits for the workload to write
// its state and `.complete`, freezes the WPAR's cgroups, and writes the state
// file: the workload's files, for a system WPAR its private file systems as
// one archive (internal/fs_archive.h), and a manifest with their SHA-256,
// plus mcr.log. A restart verifies the manifest, puts a system WPAR's file
// systems back in place of what DATA/wpars/NAME/fs held (the state file is
// the truth at restart; resume after a -p checkpoint never touches them), and
// starts the workload with WPM_RESTORE_DIR pointing at the restored state.
//
// Failures carry the seed's exit codes. Thread safety: none.

#include <chrono>
#include <string>

#include "agents/runtime/supervisor.h"
#include "agents/runtime/wpar_files.h"

namespace wpm::checkpoint {

// Seed exit codes (chkptwpar, restartwpar).
inline constexpr int kExitInternal = 4;
inline constexpr int kExitTemporarilyNotCheckpointable = 6;
inline constexpr int kExitFileMissing = 14;  // restartwpar: an expected file is missing or damaged
inline constexpr int kExitCannotWrite = 22;  // chkptwpar: the state file cannot be written
inline constexpr int kExitUnknownWpar = 16;
inline constexpr int kExitNotCheckpointable = 19;
inline constexpr int kExitBadStatePath = 21;
inline constexpr int kExitStateDirNotEmpty = 23;
inline constexpr int kExitCorruptStateFile = 25;  // restartwpar: corruption detected in the state file

struct Failure {
  int exit_code = kExitInternal;
  std::string message;
};
template <typename T>
using Outcome = std::expected<T, Failure>;

enum class After { kContinue, kPause, kKill };  // chkptwpar: none, -p, -k

struct CheckpointRequest {
  std::string wpars_root;       // DATA/wpars
  std::string name;
  std::string cgroup_relative;  // the WPAR's cgroup path
  std::string state_dir;        // -d: created if missing, must be empty
  After after = After::kContinue;
  // How long the workload has to write its state. Default: 30 s (DESIGN.md §5).
  std::chrono::milliseconds timeout{30'000};
};

struct CheckpointResult {
  uint64_t files = 0;  // the workload's files
  uint64_t bytes = 0;  // their bytes
  // A system WPAR's private file systems (fs_archive.h): entries archived and
  // the archive's size; 0 for an application WPAR.
  uint64_t fs_entries = 0;
  uint64_t fs_archive_bytes = 0;
  runtime::WparState state_after = runtime::WparState::kActive;
};

Outcome<CheckpointResult> checkpoint(const CheckpointRequest& request);

// chkptwpar -f: the workload writes its state and the WPAR is frozen, but no
// state file is written yet; a later checkpoint() of the frozen WPAR writes it
// into the directory given here (kept in the WPAR's directory).
Outcome<void> freeze(const CheckpointRequest& request);
// The state file directory a frozen WPAR was frozen for (empty if none).
std::string frozen_state_dir(const std::string& wpars_root, const std::string& name);

struct RestartRequest {
  runtime::SupervisorLaunch launch;  // the WPAR's spec must be on disk
  std::string state_dir;             // -d
  bool pause = false;                // -p: restart, then stay paused
};

Outcome<runtime::WparRecord> restart(const RestartRequest& request);

// Whether the state file in `dir` is whole: its manifest and every file it
// lists, checked against their SHA-256 (14: a file missing, 25: corrupt).
// A relocation's arrival checks a transferred state file with it.
Outcome<void> verify_state_file(const std::string& dir);

// Opens `path` with `flags` (O_RDONLY, or with O_DIRECTORY for a directory)
// and syncs it; false when either fails.
bool fsync_path(const std::string& path, int flags);

// Thaws a paused or frozen WPAR (resumewpar).
Outcome<void> resume(const std::string& wpars_root, const std::string& name,
                     const std::string& cgroup_relative);

// Where a checkpointable WPAR's workload writes its state.
std::string trigger_dir(const std::string& wpars_root, const std::string& name);

}  // namespace wpm::checkpoint
