// The WPAR lifecycle table (seed "WPAR states", glossary, chkptwpar, killwpar,
// restartwpar, resumewpar; DESIGN.md §4).

#include "agents/runtime/lifecycle.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace wpm::runtime {
namespace {

using S = WparState;
using O = Operation;

constexpr WparStatus system_wpar(S s, bool checkpointable = true) {
  return WparStatus{s, WparType::kSystem, checkpointable};
}
constexpr WparStatus app_wpar(S s, bool checkpointable = true) {
  return WparStatus{s, WparType::kApplication, checkpointable};
}

struct Allowed {
  WparStatus wpar;
  Operation op;
  WparState on_success;
  bool removed;
  WparState on_failure;
};

TEST(Lifecycle, AllowedTransitions) {
  const Allowed table[] = {
      {system_wpar(S::kDefined), O::kStart, S::kActive, false, S::kBroken},
      {system_wpar(S::kActive), O::kStop, S::kDefined, false, S::kBroken},
      {app_wpar(S::kActive), O::kStop, S::kDefined, true, S::kBroken},
      {system_wpar(S::kBroken), O::kForceStop, S::kDefined, false, S::kBroken},
      {system_wpar(S::kPaused), O::kForceStop, S::kDefined, false, S::kBroken},
      {system_wpar(S::kActive), O::kFreeze, S::kFrozen, false, S::kActive},
      {system_wpar(S::kActive), O::kCheckpoint, S::kActive, false, S::kActive},
      {system_wpar(S::kFrozen), O::kCheckpoint, S::kActive, false, S::kFrozen},
      {system_wpar(S::kActive), O::kCheckpointPause, S::kPaused, false, S::kActive},
      {app_wpar(S::kActive), O::kCheckpointKill, S::kDefined, true, S::kActive},
      {system_wpar(S::kFrozen), O::kCheckpointKill, S::kDefined, false, S::kFrozen},
      {system_wpar(S::kPaused), O::kResume, S::kActive, false, S::kPaused},
      {system_wpar(S::kFrozen), O::kResume, S::kActive, false, S::kFrozen},
      {system_wpar(S::kPaused), O::kKill, S::kDefined, false, S::kBroken},
      {app_wpar(S::kPaused), O::kKill, S::kDefined, true, S::kBroken},
      {system_wpar(S::kDefined), O::kRestart, S::kActive, false, S::kBroken},
      {system_wpar(S::kDefined), O::kRestartPaused, S::kPaused, false, S::kBroken},
      {system_wpar(S::kDefined), O::kRemove, S::kDefined, true, S::kBroken},
      {system_wpar(S::kBroken), O::kRemove, S::kDefined, true, S::kBroken},
  };
  for (const auto& row : table) {
    SCOPED_TRACE(fmt::format("{} on {}", operation_name(row.op), state_name(row.wpar.state)));
    auto t = decide(row.wpar, row.op);
    ASSERT_TRUE(t.has_value()) << t.error().message;
    EXPECT_EQ(t->during, S::kTransitional);
    EXPECT_EQ(t->on_success, row.on_success);
    EXPECT_EQ(t->removed_on_success, row.removed);
    EXPECT_EQ(t->on_failure, row.on_failure);
  }
}

TEST(Lifecycle, RemovingAnActiveWparStopsItFirst) {
  auto t = decide(system_wpar(S::kActive), O::kRemove);
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->stops_first);
  EXPECT_FALSE(decide(system_wpar(S::kDefined), O::kRemove)->stops_first);
}

struct Refused {
  WparStatus wpar;
  Operation op;
  int exit_code;
  const char* says;
};

TEST(Lifecycle, RefusedTransitionsSayWhyWithTheSeedsExitCode) {
  const Refused table[] = {
      {system_wpar(S::kActive), O::kStart, 1, "only a defined WPAR can be started"},
      {app_wpar(S::kDefined), O::kStart, 1, "application WPARs start when they are created"},
      {system_wpar(S::kPaused), O::kStop, 1, "killwpar"},
      {system_wpar(S::kFrozen), O::kStop, 1, "killwpar"},
      {system_wpar(S::kDefined), O::kStop, 1, "only an active WPAR"},
      {system_wpar(S::kDefined), O::kForceStop, 1, "not running"},
      {system_wpar(S::kActive, false), O::kFreeze, 19, "checkpoint enabled"},
      {system_wpar(S::kActive, false), O::kCheckpoint, 19, "checkpoint enabled"},
      {system_wpar(S::kDefined, false), O::kRestart, 19, "checkpoint enabled"},
      {system_wpar(S::kPaused), O::kCheckpoint, 1, "active or frozen"},
      {system_wpar(S::kActive), O::kResume, 17, "paused or frozen"},
      {system_wpar(S::kActive), O::kKill, 17, "use stopwpar"},
      {system_wpar(S::kActive), O::kRestart, 1, "stopped WPAR"},
      {system_wpar(S::kPaused), O::kRemove, 1, "killwpar"},
      {system_wpar(S::kTransitional), O::kStop, 17, "in progress"},
      {system_wpar(S::kTransitional), O::kCheckpoint, 17, "in progress"},
      {system_wpar(S::kLoaded), O::kStop, 1, "loaded"},
      {system_wpar(S::kLoaded), O::kRemove, 1, "loaded"},
      {system_wpar(S::kBroken), O::kChange, 1, "remove it"},
      {system_wpar(S::kTransitional), O::kChange, 17, "in progress"},
      {system_wpar(S::kLoaded), O::kChange, 1, "loaded"},
  };
  for (const auto& row : table) {
    SCOPED_TRACE(fmt::format("{} on {}", operation_name(row.op), state_name(row.wpar.state)));
    auto t = decide(row.wpar, row.op);
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().exit_code, row.exit_code);
    EXPECT_NE(t.error().message.find(row.says), std::string::npos) << t.error().message;
  }
}

// chwpar changes nothing that runs: the WPAR keeps its state, before, during and after.
TEST(Lifecycle, ChangingAWparKeepsItsState) {
  for (S s : {S::kDefined, S::kActive, S::kPaused, S::kFrozen}) {
    SCOPED_TRACE(state_name(s));
    for (const auto& w : {system_wpar(s), app_wpar(s, false)}) {
      auto t = decide(w, O::kChange);
      ASSERT_TRUE(t.has_value()) << t.error().message;
      EXPECT_EQ(*t, (Transition{s, s, false, false, s}));
    }
  }
}

TEST(Lifecycle, StateLettersAreTheSeeds) {
  std::string letters;
  for (S s : {S::kDefined, S::kActive, S::kPaused, S::kFrozen, S::kLoaded, S::kTransitional,
              S::kBroken}) {
    letters += state_letter(s);
  }
  EXPECT_EQ(letters, "DAPFLTB");
}

}  // namespace
}  // namespace wpm::runtime
