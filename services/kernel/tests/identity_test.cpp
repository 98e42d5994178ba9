// The stream ownership rule and the actor stamped on appends (DESIGN.md §8, §9).

#include "services/kernel/identity.h"

#include <gtest/gtest.h>

namespace wpm::kernel {
namespace {

EventDraft draft(std::string stream, std::string actor = "") {
  return EventDraft{std::move(stream), "", "", std::move(actor), Synthetic{}};
}

TEST(StreamOwner, EveryControlPlaneStreamHasOneOwner) {
  struct Row {
    std::string stream;
    std::optional<std::string_view> owner;
  };
  for (const auto& row : std::vector<Row>{
           {"registry", "inventory"},
           {"registration-rejections", "inventory"},
           {"system/node1", "inventory"},
           {"wpar/web1", "inventory"},
           {"settings", "inventory"},
           {"token/abc", "inventory"},
           {"compat/p1-p2", "compatibility"},
           {"command/42", "gateway"},
           {"role/administrator", "gateway"},
           {"task/7", "executor"},
           {"policy/g1", "policy"},
           {"synthetic/run", std::nullopt},
           {"registryx", std::nullopt},  // a whole-name stream is not a prefix
           {"system", std::nullopt},
           {"", std::nullopt},
       }) {
    EXPECT_EQ(stream_owner(row.stream), row.owner) << row.stream;
  }
}

TEST(StreamAccess, OwnedStreamsOnlyByTheirServiceOthersOnlyByTheAdministrator) {
  StreamAccess access;
  struct Row {
    std::string identity;
    std::string stream;
    bool allowed;
  };
  for (const auto& row : std::vector<Row>{
           {"service:inventory", "registry", true},
           {"admin", "registry", false},
           {"service:gateway", "registry", false},
           {"service:compatibility", "compat/x", true},
           {"service:inventory", "compat/x", false},
           {"service:gateway", "command/1", true},
           {"service:gateway", "wpar/web1", false},
           {"admin", "synthetic/run", true},
           {"service:inventory", "synthetic/run", false},
           {"", "synthetic/run", false},
           {"anybody", "synthetic/run", false},
       }) {
    auto r = access.authorize(row.identity, draft(row.stream));
    EXPECT_EQ(r.has_value(), row.allowed) << row.identity << " → " << row.stream;
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied);
      EXPECT_EQ(r.error().stream_id, row.stream);
      // The refusal names who and which stream.
      EXPECT_NE(r.error().message.find(row.stream), std::string::npos) << r.error().message;
      EXPECT_NE(r.error().message.find(row.identity), std::string::npos) << r.error().message;
    }
  }
}

TEST(StreamAccess, ACommandStreamTakesTheDecisionOfAnyServiceButNothingElseFromThem) {
  StreamAccess access;
  EventDraft decided{"command/c1", "c1", "c1", "", CommandDecided{true, "", "", "service:inventory"}};
  EXPECT_TRUE(access.authorize("service:inventory", decided).has_value());
  EXPECT_FALSE(access.authorize("service:compatibility", decided).has_value()) << "it decides no command";
  EventDraft forged = decided;
  std::get<CommandDecided>(forged.payload).decided_by = "service:gateway";
  EXPECT_FALSE(access.authorize("service:inventory", forged).has_value()) << "a decision names its writer";
  EXPECT_FALSE(access.authorize("admin", decided).has_value());
  EXPECT_FALSE(access.authorize("service:nobody", decided).has_value());
  EXPECT_FALSE(access.authorize("service:executor", decided).has_value()) << "not yet a decider";
  EventDraft requested{"command/c1", "c1", "c1", "", CommandRequested{"wpar.create", "{}", "alice", {}, ""}};
  EXPECT_FALSE(access.authorize("service:inventory", requested).has_value());
  EXPECT_TRUE(access.authorize("service:gateway", requested).has_value());
}

// wpm wpar modify: the executor writes a WPAR's changed definition once its
// system took it, and nothing else on the inventory's streams.
TEST(StreamAccess, AWparStreamTakesAChangedDefinitionFromTheExecutorAndNothingElse) {
  StreamAccess access;
  WparDefinition w;
  w.name = "web1";
  EventDraft changed{"wpar/web1", "t1", "t1", "", WparDefined{w, false}};
  EXPECT_TRUE(access.authorize("service:executor", changed).has_value());
  EXPECT_TRUE(access.authorize("service:inventory", changed).has_value());
  EXPECT_FALSE(access.authorize("service:gateway", changed).has_value());
  EventDraft made{"wpar/web1", "t1", "t1", "", WparDefined{w, true}};
  EXPECT_FALSE(access.authorize("service:executor", made).has_value()) << "it makes no WPAR";
  EventDraft other{"wpar/web2", "t1", "t1", "", WparDefined{w, false}};
  EXPECT_FALSE(access.authorize("service:executor", other).has_value()) << "only the WPAR of its stream";
  EventDraft removed{"wpar/web1", "t1", "t1", "", WparRemoved{"web1", ""}};
  EXPECT_FALSE(access.authorize("service:executor", removed).has_value());
  EXPECT_FALSE(access.authorize("service:executor", draft("group/g")).has_value());
}

TEST(StreamAccess, TheActorIsTheIdentityWhateverTheClientSent) {
  StreamAccess access;
  EXPECT_EQ(access.authorize("admin", draft("synthetic/x", "service:inventory")).value(), "admin");
  EXPECT_EQ(access.authorize("service:inventory", draft("registry", "user:root")).value(), "service:inventory");
  // Only the gateway appends for the users it authenticated.
  EXPECT_EQ(access.authorize("service:gateway", draft("command/1", "user:alice")).value(), "user:alice");
  EXPECT_EQ(access.authorize("service:gateway", draft("command/1", "admin")).value(), "service:gateway");
  EXPECT_EQ(access.authorize("service:gateway", draft("command/1", "user:bad name")).value(), "service:gateway");
}

}  // namespace
}  // namespace wpm::kernel
