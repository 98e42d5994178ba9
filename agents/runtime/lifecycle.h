#pragma once
// WPAR lifecycle rules on a managed system: which operation is allowed in which
// state, what state a WPAR passes through and ends in, and the refusal (with
// the seed's exit code) otherwise. Pure: no I/O, no clock (STYLE.md §1).
//
// Seed sections: "WPAR states", the glossary (Defined, Active, Paused, Frozen,
// Loaded, Transitional, Broken), and the chkptwpar, killwpar, restartwpar and
// resumewpar command pages; DESIGN.md §4 (start only from Defined and only
// for system WPARs; stop on a paused WPAR is refused, use kill; pause and
// checkpoint only for WPARs created with checkpoint enabled; remove of an
// active WPAR stops it first; a failed operation leaves Broken).

#include <cstdint>
#include <expected>
#include <string>

namespace wpm::runtime {

enum class WparState : uint8_t {
  kDefined,       // D: exists, not running
  kActive,        // A: running
  kPaused,        // P: checkpoint taken, processes frozen
  kFrozen,        // F: processes quiesced, no state saved
  kLoaded,        // L: loaded, no processes; nothing may be done to it
  kTransitional,  // T: an operation is in progress
  kBroken,        // B: an operation failed and left it unusable
};
char state_letter(WparState state);
const char* state_name(WparState state);

enum class WparType : uint8_t { kApplication, kSystem };

enum class Operation : uint8_t {
  kStart,            // startwpar (system WPARs)
  kStop,             // stopwpar
  kForceStop,        // stopwpar -F
  kFreeze,           // chkptwpar -f
  kCheckpoint,       // chkptwpar -d DIR (keeps running), or of a frozen WPAR
  kCheckpointPause,  // chkptwpar -p
  kCheckpointKill,   // chkptwpar -k
  kResume,           // resumewpar
  kKill,             // killwpar
  kRestart,          // restartwpar
  kRestartPaused,    // restartwpar -p
  kRemove,           // rmwpar
  kChange,           // chwpar: its capability set and resource limits (nothing runs or stops)
};
const char* operation_name(Operation op);

struct WparStatus {
  WparState state = WparState::kDefined;
  WparType type = WparType::kSystem;
  bool checkpointable = false;  // created with -c
};

// What happens to a WPAR when an allowed operation runs.
struct Transition {
  WparState during = WparState::kTransitional;
  WparState on_success = WparState::kActive;
  // An application WPAR whose processes end does not stay Defined: it is gone
  // from the host (its definition goes back to Undeployed on the manager).
  bool removed_on_success = false;
  // Stop first (remove of an active WPAR).
  bool stops_first = false;
  WparState on_failure = WparState::kBroken;
  bool operator==(const Transition&) const = default;
};

struct Refusal {
  int exit_code = 1;  // the seed's code where its command defines one
  std::string message;
  bool operator==(const Refusal&) const = default;
};

// Seed exit codes used by refusals (chkptwpar, killwpar, restartwpar, resumewpar).
inline constexpr int kExitFailed = 1;
inline constexpr int kExitTemporarilyNotCheckpointable = 6;
inline constexpr int kExitUnknownWpar = 16;
inline constexpr int kExitBusy = 17;         // chkptwpar/restartwpar: busy in checkpoint/restart
inline constexpr int kExitNotPaused = 17;    // killwpar: the WPAR is not paused
inline constexpr int kExitNeitherPausedNorFrozen = 17;  // resumewpar
inline constexpr int kExitNotCheckpointable = 19;

std::expected<Transition, Refusal> decide(const WparStatus& wpar, Operation op);

}  // namespace wpm::runtime
