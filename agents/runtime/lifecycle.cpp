#include "agents/runtime/lifecycle.h"

#include <fmt/format.h>

namespace wpm::runtime {

char state_letter(WparState s) {
  switch (s) {
    case WparState::kDefined: return 'D';
    case WparState::kActive: return 'A';
    case WparState::kPaused: return 'P';
    case WparState::kFrozen: return 'F';
    case WparState::kLoaded: return 'L';
    case WparState::kTransitional: return 'T';
    case WparState::kBroken: return 'B';
  }
  return '?';
}

const char* state_name(WparState s) {
  switch (s) {
    case WparState::kDefined: return "defined";
    case WparState::kActive: return "active";
    case WparState::kPaused: return "paused";
    case WparState::kFrozen: return "frozen";
    case WparState::kLoaded: return "loaded";
    case WparState::kTransitional: return "transitional";
    case WparState::kBroken: return "broken";
  }
  return "unknown";
}

const char* operation_name(Operation op) {
  switch (op) {
    case Operation::kStart: return "start";
    case Operation::kStop: return "stop";
    case Operation::kForceStop: return "force stop";
    case Operation::kFreeze: return "freeze";
    case Operation::kCheckpoint: return "checkpoint";
    case Operation::kCheckpointPause: return "checkpoint and pause";
    case Operation::kCheckpointKill: return "checkpoint and kill";
    case Operation::kResume: return "resume";
    case Operation::kKill: return "kill";
    case Operation::kRestart: return "restart";
    case Operation::kRestartPaused: return "restart paused";
    case Operation::kRemove: return "remove";
    case Operation::kChange: return "change";
  }
  return "unknown";
}

namespace {

bool is_checkpoint(Operation op) {
  return op == Operation::kFreeze || op == Operation::kCheckpoint ||
         op == Operation::kCheckpointPause || op == Operation::kCheckpointKill ||
         op == Operation::kRestart || op == Operation::kRestartPaused;
}

std::unexpected<Refusal> refuse(int code, std::string message) {
  return std::unexpected(Refusal{code, std::move(message)});
}

std::unexpected<Refusal> wrong_state(const WparStatus& w, Operation op, const char* hint) {
  return refuse(kExitFailed, fmt::format("cannot {} a WPAR in the {} state ({}); {}",
                                         operation_name(op), state_name(w.state),
                                         state_letter(w.state), hint));
}

// After the processes end: system WPARs are Defined again, application WPARs gone.
Transition ends(const WparStatus& w) {
  bool app = w.type == WparType::kApplication;
  return Transition{WparState::kTransitional, WparState::kDefined, app, false, WparState::kBroken};
}

}  // namespace

std::expected<Transition, Refusal> decide(const WparStatus& w, Operation op) {
  const WparState s = w.state;
  // Nothing may be done to a WPAR that is loaded or mid-operation (glossary).
  if (s == WparState::kLoaded) return wrong_state(w, op, "no operation is possible while loaded");
  if (s == WparState::kTransitional) {
    return refuse(kExitBusy, fmt::format("cannot {}: another operation is in progress on this "
                                         "WPAR; wait for it to finish",
                                         operation_name(op)));
  }
  if (is_checkpoint(op) && !w.checkpointable) {
    return refuse(kExitNotCheckpointable,
                  fmt::format("cannot {}: the WPAR was not created with checkpoint enabled (-c); "
                              "recreate it with -c",
                              operation_name(op)));
  }
  switch (op) {
    case Operation::kStart:
      if (w.type == WparType::kApplication) {
        return refuse(kExitFailed, "application WPARs start when they are created (wparexec); "
                                   "there is nothing to start");
      }
      if (s != WparState::kDefined) return wrong_state(w, op, "only a defined WPAR can be started");
      return Transition{WparState::kTransitional, WparState::kActive, false, false, WparState::kBroken};
    case Operation::kStop:
      if (s == WparState::kPaused || s == WparState::kFrozen) {
        return wrong_state(w, op, "end its processes with killwpar, or resume it first");
      }
      if (s != WparState::kActive) return wrong_state(w, op, "only an active WPAR can be stopped");
      return ends(w);
    case Operation::kForceStop:
      if (s == WparState::kDefined) return wrong_state(w, op, "it is not running");
      return ends(w);  // active, paused, frozen or broken: end whatever runs
    case Operation::kFreeze:
      if (s != WparState::kActive) return wrong_state(w, op, "only an active WPAR can be frozen");
      return Transition{WparState::kTransitional, WparState::kFrozen, false, false, WparState::kActive};
    case Operation::kCheckpoint:
    case Operation::kCheckpointPause:
    case Operation::kCheckpointKill: {
      if (s != WparState::kActive && s != WparState::kFrozen) {
        return wrong_state(w, op, "only an active or frozen WPAR can be checkpointed");
      }
      // A checkpoint that fails leaves the WPAR as it was (seed exit code 6
      // "run the command again"; DESIGN.md §5: it stays Active).
      Transition t{WparState::kTransitional, WparState::kActive, false, false, s};
      if (op == Operation::kCheckpointPause) t.on_success = WparState::kPaused;
      if (op == Operation::kCheckpointKill) {
        t.on_success = WparState::kDefined;
        t.removed_on_success = w.type == WparType::kApplication;
      }
      return t;
    }
    case Operation::kResume:
      if (s != WparState::kPaused && s != WparState::kFrozen) {
        // resumewpar's own code: "the WPAR is neither paused nor frozen".
        return refuse(kExitNeitherPausedNorFrozen,
                      fmt::format("cannot resume a WPAR in the {} state ({}): only a paused or frozen WPAR can be "
                                  "resumed",
                                  state_name(s), state_letter(s)));
      }
      return Transition{WparState::kTransitional, WparState::kActive, false, false, s};
    case Operation::kKill:
      if (s != WparState::kPaused && s != WparState::kFrozen) {
        return refuse(kExitNotPaused, fmt::format("cannot kill a WPAR in the {} state: killwpar "
                                                  "ends a paused WPAR; use stopwpar",
                                                  state_name(s)));
      }
      return ends(w);
    case Operation::kRestart:
    case Operation::kRestartPaused:
      if (s != WparState::kDefined) {
        return wrong_state(w, op, "restart needs a stopped WPAR; stop or remove it first");
      }
      return Transition{WparState::kTransitional,
                        op == Operation::kRestartPaused ? WparState::kPaused : WparState::kActive,
                        false, false, WparState::kBroken};
    case Operation::kRemove:
      if (s == WparState::kPaused || s == WparState::kFrozen) {
        return wrong_state(w, op, "end its processes with killwpar first");
      }
      return Transition{WparState::kTransitional, WparState::kDefined, true,
                        s == WparState::kActive, WparState::kBroken};
    case Operation::kChange:
      // Limits change on the running cgroups and the capability set applies
      // to processes started from then on (DESIGN.md §5): nothing stops.
      if (s == WparState::kBroken) return wrong_state(w, op, "stop it with --force or remove it first");
      return Transition{s, s, false, false, s};
  }
  return refuse(kExitFailed, "unknown operation");
}

}  // namespace wpm::runtime
