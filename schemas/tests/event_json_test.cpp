// Events as JSON text, written without a JSON document: valid JSON for every
// payload, every field under its schema name, strings escaped, and bytes that
// are not UTF-8 replaced rather than passed on.

#include "schemas/event_json.h"

#include <gtest/gtest.h>

#include "schemas/profile.h"

namespace wpm {
namespace {

using nlohmann::json;

Event envelope(Payload payload) {
  Event e;
  e.sequence = 42;
  e.event_id = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  e.timestamp_ns = -5;
  e.stream_id = "synthetic/run1";
  e.stream_version = 7;
  e.correlation_id = "task-1";
  e.causation_id = "cmd-1";
  e.actor = "user:alice";
  e.idempotency_key = "key-1";
  e.payload = std::move(payload);
  return e;
}

TEST(EventJson, TheEnvelopeCarriesEveryFieldUnderItsSchemaName) {
  auto j = json::parse(event_json_text(envelope(Synthetic{"run1", 6, "hello", "ab"})));
  EXPECT_EQ(j["sequence"], 42);
  EXPECT_EQ(j["eventId"], "0102030405060708090a0b0c0d0e0f10");
  EXPECT_EQ(j["timestampNs"], -5);
  EXPECT_EQ(j["type"], "synthetic");
  EXPECT_EQ(j["streamId"], "synthetic/run1");
  EXPECT_EQ(j["streamVersion"], 7);
  EXPECT_EQ(j["correlationId"], "task-1");
  EXPECT_EQ(j["causationId"], "cmd-1");
  EXPECT_EQ(j["actor"], "user:alice");
  EXPECT_EQ(j["idempotencyKey"], "key-1");
  EXPECT_EQ(j["payload"]["synthetic"], (json{{"run", "run1"}, {"index", 6}, {"note", "hello"}, {"blob", "YWI="}}));
  // Members in the order the JSON library prints them, so both forms read alike.
  EXPECT_EQ(j.dump(), event_json_text(envelope(Synthetic{"run1", 6, "hello", "ab"})));
}

TEST(EventJson, EveryPayloadIsValidJsonNamedByItsType) {
  WparDefinition w{"web1", "application", "/bin/sleep 1", true, "SIGUSR2", "", 512, 50, 1 << 30, 100,
                   "10.0.0.5/24", "CAP_NET_BIND_SERVICE", "web", "node1", true, "A"};
  std::vector<std::pair<Payload, json>> cases = {
      {CommandRequested{"wpar.create", R"({"name":"web1"})", "alice", {"WPARUser"}, "127.0.0.1"},
       {{"commandRequested",
         {{"command", "wpar.create"}, {"args", {{"name", "web1"}}}, {"user", "alice"}, {"roles", {"WPARUser"}},
          {"address", "127.0.0.1"}}}}},
      {CommandRequested{"x", "not json", "", {}, ""},
       {{"commandRequested", {{"command", "x"}, {"args", nullptr}, {"user", ""}, {"roles", json::array()}, {"address", ""}}}}},
      {CommandDecided{false, "conflict", "deployed", "service:inventory"},
       {{"commandDecided", {{"accepted", false}, {"code", "conflict"}, {"message", "deployed"}, {"decidedBy", "service:inventory"}}}}},
      {WparDefined{w, true}, {{"wparDefined", {{"wpar", wpar_to_json(w)}, {"created", true}}}}},
      {WparRemoved{"web1", "by alice"}, {{"wparRemoved", {{"name", "web1"}, {"reason", "by alice"}}}}},
      {GroupDefined{"web", "front ends", true},
       {{"groupDefined", {{"name", "web"}, {"description", "front ends"}, {"created", true}}}}},
      {GroupDeleted{"web"}, {{"groupDeleted", {{"name", "web"}}}}},
      {SettingChanged{"heartbeat.timeout", "30s", "15s"},
       {{"settingChanged", {{"key", "heartbeat.timeout"}, {"value", "30s"}, {"previous", "15s"}}}}},
      {RoleMappingChanged{"WPARUser", {"alice", "bob"}, {"ops"}},
       {{"roleMappingChanged", {{"role", "WPARUser"}, {"users", {"alice", "bob"}}, {"groups", {"ops"}}}}}},
      {SessionOpened{"alice", "ab12", 99, "127.0.0.1"},
       {{"sessionOpened", {{"user", "alice"}, {"tokenHash", "ab12"}, {"expiresNs", 99}, {"address", "127.0.0.1"}}}}},
      {SessionClosed{"ab12", "logout"}, {{"sessionClosed", {{"tokenHash", "ab12"}, {"reason", "logout"}}}}},
      {LoginRefused{"alice", "127.0.0.1", "wrong password", 3, 1, 2},
       {{"loginRefused",
         {{"user", "alice"}, {"address", "127.0.0.1"}, {"reason", "wrong password"}, {"attempts", 3}, {"firstNs", 1}, {"lastNs", 2}}}}},
      {SystemStateChanged{"node1", "offline", "no heartbeat for 15 s"},
       {{"systemStateChanged", {{"systemId", "node1"}, {"state", "offline"}, {"reason", "no heartbeat for 15 s"}}}}},
      {AgentReportRefused{"node1", "wpar/web1", "it is on node2"},
       {{"agentReportRefused", {{"systemId", "node1"}, {"subject", "wpar/web1"}, {"reason", "it is on node2"}}}}},
      {JoinTokenCreated{"abcd", 77}, {{"joinTokenCreated", {{"tokenHash", "abcd"}, {"expiresNs", 77}}}}},
      {JoinTokenUsed{"abcd", "node1"}, {{"joinTokenUsed", {{"tokenHash", "abcd"}, {"systemId", "node1"}}}}},
      {DomainDefined{"banking", "payment hosts", true},
       {{"domainDefined", {{"name", "banking"}, {"description", "payment hosts"}, {"created", true}}}}},
      {DomainRemoved{"banking"}, {{"domainRemoved", {{"name", "banking"}}}}},
      {SystemDomainSet{"node1", "banking", "default"},
       {{"systemDomainSet", {{"systemId", "node1"}, {"domain", "banking"}, {"previous", "default"}}}}},
      {TaskCreated{"deploy", "web1", "node1", R"({"start":true})", "", "alice"},
       {{"taskCreated",
         {{"kind", "deploy"}, {"wpar", "web1"}, {"system", "node1"}, {"args", {{"start", true}}}, {"parent", ""},
          {"user", "alice"}}}}},
      {OperationStarted{"t1/1", "node1", "web1", "deploy", 3, 1, 99},
       {{"operationStarted",
         {{"operationId", "t1/1"}, {"system", "node1"}, {"wpar", "web1"}, {"action", "deploy"}, {"epoch", 3},
          {"attempt", 1}, {"deadlineNs", 99}}}}},
      {OperationFinished{"t1/1", 2, "failed", 6, "out", "busy", "A"},
       {{"operationFinished",
         {{"operationId", "t1/1"}, {"attempt", 2}, {"outcome", "failed"}, {"exitCode", 6}, {"output", "out"},
          {"error", "busy"}, {"wparState", "A"}}}}},
      {TaskFinished{"failed", "deploy failed", "none", "B", "gone"},
       {{"taskFinished",
         {{"state", "failed"}, {"error", "deploy failed"}, {"recovery", "none"}, {"wparState", "B"}, {"cause", "gone"}}}}},
      {WparPlaced{"web1", "node2", 4, "node1"},
       {{"wparPlaced", {{"wpar", "web1"}, {"system", "node2"}, {"epoch", 4}, {"previous", "node1"}}}}},
      {TaskApproved{"alice"}, {{"taskApproved", {{"user", "alice"}}}}},
      {SystemRemoved{"node1", "gone"}, {{"systemRemoved", {{"systemId", "node1"}, {"reason", "gone"}}}}},
      {RegistrationRejected{"10.0.0.9", "bad proof", 4, 10, 20, "h9", "pk"},
       {{"registrationRejected",
         {{"address", "10.0.0.9"}, {"reason", "bad proof"}, {"attempts", 4}, {"firstNs", 10}, {"lastNs", 20},
          {"hostname", "h9"}, {"publicKey", "pk"}}}}},
      {CompatibilityAnalyzed{"p1", "p2", {{"glibc", false, "2.36", "2.31", "upgrade glibc"}}},
       {{"compatibilityAnalyzed",
         {{"departureProperties", "p1"},
          {"arrivalProperties", "p2"},
          {"results",
           {{{"test", "glibc"}, {"passed", false}, {"departure", "2.36"}, {"arrival", "2.31"}, {"remedy", "upgrade glibc"}}}}}}}},
      {UnknownPayload{99, "xyz"}, {{"unknown", {{"type", 99}, {"bytes", "eHl6"}}}}},
  };
  profile::SystemProfile profile;
  profile.distribution = "debian";
  cases.push_back({SystemRegistered{"1", "h1", "10.0.0.1", "pk", profile, 9510},
                   {{"systemRegistered",
                     {{"systemId", "1"}, {"hostname", "h1"}, {"address", "10.0.0.1"}, {"publicKey", "pk"},
                      {"profile", profile::profile_to_json(profile)}, {"agentPort", 9510}}}}});
  cases.push_back({SystemProfileChanged{"1", profile},
                   {{"systemProfileChanged", {{"systemId", "1"}, {"profile", profile::profile_to_json(profile)}}}}});
  for (const auto& [payload, expected] : cases) {
    Event e = envelope(payload);
    std::string text = event_json_text(e);
    ASSERT_TRUE(json::accept(text)) << text;
    auto j = json::parse(text);
    EXPECT_EQ(j["payload"], expected) << text;
    EXPECT_EQ(j["type"], event_type_label(e.type()));
    EXPECT_EQ(j.dump(), text) << "members in the library's order";
  }
}

TEST(EventJson, StringsAreEscapedAndInvalidUtf8IsReplaced) {
  std::string nasty = std::string("quote\" back\\ nl\n tab\t bell\x07 nul") + '\0' + " é € 𝄞";
  auto text = event_json_text(envelope(SettingChanged{nasty, "", ""}));
  auto j = json::parse(text);
  EXPECT_EQ(j["payload"]["settingChanged"]["key"], nasty);
  EXPECT_EQ(j.dump(), text) << "escaped as the library escapes";

  // A lone continuation byte, a truncated sequence, an overlong form, a
  // surrogate: each invalid byte becomes U+FFFD and the text stays JSON.
  for (std::string bad : {std::string("a\x80z"), std::string("a\xe2\x82"), std::string("\xc0\xaf"),
                          std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"), std::string("\xff"),
                          std::string("\xf8\x80\x80"), std::string("\xff\xbf\xbf")}) {
    auto t = event_json_text(envelope(SettingChanged{bad, "", ""}));
    ASSERT_TRUE(json::accept(t)) << t;
    auto key = json::parse(t)["payload"]["settingChanged"]["key"].get<std::string>();
    EXPECT_NE(key.find("\xef\xbf\xbd"), std::string::npos) << key;
  }
  // Parts still built as documents are lenient too: a profile with a bad byte.
  profile::SystemProfile profile;
  profile.distribution = "deb\xffian";
  auto t = event_json_text(envelope(SystemProfileChanged{"1", profile}));
  ASSERT_TRUE(json::accept(t)) << t;
}

// Command arguments spread over lines by their writer stay on the event's one line.
TEST(EventJson, ArgumentsWrittenOverSeveralLinesStayOnOneLine) {
  auto text = event_json_text(envelope(CommandRequested{"wpar.create", "{\n  \"name\": \"web1\"\n}", "alice", {}, ""}));
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  EXPECT_EQ(json::parse(text)["payload"]["commandRequested"]["args"], (json{{"name", "web1"}}));
}

}  // namespace
}  // namespace wpm
