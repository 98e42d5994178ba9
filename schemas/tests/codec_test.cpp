#include "schemas/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cstring>

#include "schemas/events.capnp.h"
#include "schemas/store.capnp.h"
#include "schemas/testing/future_event.h"

namespace wpm {
namespace {

Event sample_event() {
  Event e;
  e.sequence = 42;
  e.event_id = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  e.timestamp_ns = 1'700'000'000'000'000'000;
  e.stream_id = "synthetic/run1";
  e.stream_version = 7;
  e.correlation_id = "task-1";
  e.causation_id = "cmd-1";
  e.actor = "root";
  e.idempotency_key = "key-1";
  e.payload = Synthetic{"run1", 6, "hello", std::string(100, 'x')};
  return e;
}

TEST(Codec, EventRoundTripsEveryField) {
  Event e = sample_event();
  auto back = decode_event(encode_event(e));
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(*back, e);
  e.payload = SystemRegistered{"sys1", "node1", "10.0.0.1", "pubkey"};
  EXPECT_EQ(*decode_event(encode_event(e)), e);
  e.payload = SystemRemoved{"sys1", "decommissioned"};
  EXPECT_EQ(*decode_event(encode_event(e)), e);
}

TEST(Codec, EveryControlPlanePayloadRoundTripsWithEveryFieldSet) {
  Event e = sample_event();
  WparDefinition w{"web1", "application", "/bin/sleep 1", true, "SIGUSR2", "", 512, 50, 1 << 30, 100,
                   "10.0.0.5/24", "CAP_NET_BIND_SERVICE", "web", "node1", true, "A"};
  w.epoch = 7;
  w.operation = "deploy";
  w.cause = "lost";
  w.privileged = true;
  std::vector<Payload> payloads = {
      CommandRequested{"wpar.create", R"({"name":"web1"})", "alice", {"WPARUser"}, "127.0.0.1"},
      CommandDecided{false, "conflict", "deployed", "service:inventory"},
      WparDefined{w, true},
      WparRemoved{"web1", "by alice"},
      GroupDefined{"web", "front ends", true},
      GroupDeleted{"web"},
      SettingChanged{"heartbeat.timeout", "30s", "15s"},
      RoleMappingChanged{"WPARUser", {"alice", "bob"}, {"ops"}},
      SessionOpened{"alice", "ab12", 99, "127.0.0.1"},
      SessionClosed{"ab12", "logout"},
      LoginRefused{"alice", "127.0.0.1", "wrong password", 3, 1, 2},
      SystemStateChanged{"node1", "offline", "no heartbeat for 15 s"},
      AgentReportRefused{"node1", "wpar/web1", "it is on node2"},
      JoinTokenCreated{"abcd", 77},
      JoinTokenUsed{"abcd", "node1"},
      DomainDefined{"banking", "payment hosts", true},
      DomainRemoved{"banking"},
      SystemDomainSet{"node1", "banking", "default"},
      TaskCreated{"deploy", "web1", "node1", R"({"start":true})", "", "alice"},
      OperationStarted{"t1/1", "node1", "web1", "deploy", 3, 1, 99},
      OperationFinished{"t1/1", 2, "failed", 6, "out", "busy", "A"},
      TaskFinished{"failed", "deploy failed", "nothing to undo"},
      TaskApproved{"alice"},
      WparPlaced{"web1", "node2", 4, "node1"},
  };
  for (const auto& p : payloads) {
    e.payload = p;
    auto back = decode_event(encode_event(e));
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(*back, e) << event_type_name(e.type());
    EXPECT_GT(payload_bytes(p), 0u);
  }
}

TEST(Codec, RequestAndReplyRoundTrip) {
  AppendRequest a;
  a.idempotency_key = "k";
  a.expectations = {{"s1", ExpectKind::kExact, 3}, {"s2", ExpectKind::kNoStream, 0}};
  a.events = {EventDraft{"s1", "c", "d", "me", Synthetic{"r", 1, "", ""}}};
  Request req{9, a};
  EXPECT_EQ(encode_request(9, a), encode_request(req));
  auto back = decode_request(encode_request(req));
  ASSERT_TRUE(back.has_value()) << back.error().message;
  auto& got = std::get<AppendRequest>(back->body);
  EXPECT_EQ(got.events, a.events);
  EXPECT_EQ(got.expectations, a.expectations);

  for (const ReplyBody& body :
       {ReplyBody{Error{ErrorCode::kWrongExpectedVersion, "conflict", "s1", 3, 4}},
        ReplyBody{AppendResult{5, 2, true}}, ReplyBody{ReadReply{{"ab", "cd"}, 10, 11, true}},
        ReplyBody{StatsReply{10, 10, 1000, 4096, {{EventType::kSynthetic, 10}}, true, "disk", "/d", "tcp://x:1"}},
        ReplyBody{VerifyReply{7, 8, sha256("x"), "sequence 8: hash chain broken", 9, true}}}) {
    Reply reply{77, body};
    auto r = decode_reply(encode_reply(reply));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(*r, reply);
  }
  Request verify{3, VerifyRequest{5, 9, sha256("prev"), 100}};
  auto v = decode_request(encode_request(verify));
  ASSERT_TRUE(v.has_value()) << v.error().message;
  EXPECT_EQ(*v, verify);
}

TEST(Codec, SampleRequestsRepliesAndPublicationsRoundTrip) {
  metrics::HostSample sample{"node1", 1'700'000'000, {}, {{"web", {}}, {"db", {}}}};
  sample.host.set(metrics::Metric::kCpu, 12.34);
  sample.host.set(metrics::Metric::kPageFaults, 3.5);
  sample.wpars[0].values.set(metrics::Metric::kThreads, 17);
  for (const RequestBody& body : {RequestBody{WriteSamplesRequest{sample}},
                                  RequestBody{ReadSamplesRequest{true, "web", 10, 20, true}},
                                  RequestBody{BackupRequest{"/srv/backups"}}}) {
    Request req{4, body};
    auto back = decode_request(encode_request(req));
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(*back, req);
  }
  metrics::History h{{10, 20}, {{1, {5, metrics::kMissing}}, {9, {1, 2}}}, {"node1", "node2"}};
  for (const ReplyBody& body : {ReplyBody{h}, ReplyBody{SamplesWritten{}},
                                ReplyBody{BackupReply{"wpm-x", "/srv/backups/wpm-x", 42, 4096, 12, 77}}}) {
    Reply reply{5, body};
    auto r = decode_reply(encode_reply(reply));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(*r, reply);
  }
  auto published = decode_host_sample(encode_host_sample(sample));
  ASSERT_TRUE(published.has_value());
  EXPECT_EQ(*published, sample);
  // A column shorter than the times is refused, not read past.
  metrics::History ragged{{10, 20}, {{1, {5}}}, {"a", "b"}};
  EXPECT_FALSE(decode_reply(encode_reply(Reply{5, ReplyBody{ragged}})).has_value());
}

TEST(Codec, AVerifyRequestWhoseChainIsNotADigestIsRefused) {
  capnp::MallocMessageBuilder m;
  auto root = m.initRoot<schema::Request>();
  root.setRequestId(1);
  root.setProtocolVersion(kProtocolVersion);
  auto verify = root.initVerify();
  verify.setFrom(2);
  std::string short_chain(31, 'x');
  verify.setPreviousChain(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(short_chain.data()), 31));
  auto words = capnp::messageToFlatArray(m);
  auto bytes = words.asBytes();
  auto r = decode_request(std::string_view(reinterpret_cast<const char*>(bytes.begin()), bytes.size()));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("previousChain holds 31 bytes"), std::string::npos) << r.error().message;
}

// The first word of a flat message is the segment count minus one.
uint32_t segment_count(const std::string& frame) {
  uint32_t minus_one = 0;
  std::memcpy(&minus_one, frame.data(), 4);
  return minus_one + 1;
}

AppendRequest request_of(size_t events, size_t blob_bytes) {
  AppendRequest a;
  a.idempotency_key = "k";
  for (size_t i = 0; i < events; ++i) {
    a.events.push_back(EventDraft{"s1", "", "", "me", Synthetic{"r", i, "", std::string(blob_bytes, 'b')}});
  }
  return a;
}

TEST(Codec, LargeMessagesAreEncodedAsOneSegment) {
  // Over the 32 KiB scratch segment (built again in a larger one), then over
  // its 1 MiB cap (built in a segment of its own), then small again.
  for (auto [events, blob] : {std::pair<size_t, size_t>{256, 100}, {512, 3000}, {4, 10}, {256, 100}}) {
    Request req{1, request_of(events, blob)};
    std::string frame = encode_request(req);
    EXPECT_EQ(segment_count(frame), 1u) << events << " events of " << blob << " bytes";
    DecodeLimits limits;
    limits.max_frame_bytes = 4u << 20;
    auto back = decode_request(frame, limits);
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(std::get<AppendRequest>(back->body).events, std::get<AppendRequest>(req.body).events);
  }
}

TEST(Codec, RefusesFrameOverTheSizeLimitBeforeParsing) {
  std::string bytes = encode_event(sample_event());
  DecodeLimits limits;
  limits.max_frame_bytes = bytes.size() - 8;
  auto r = decode_event(bytes, limits);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidRequest);
  EXPECT_NE(r.error().message.find("exceeds the limit"), std::string::npos);
}

TEST(Codec, RefusesGarbageAndTruncation) {
  EXPECT_FALSE(decode_request("").has_value());
  EXPECT_FALSE(decode_request("abc").has_value());
  EXPECT_FALSE(decode_request(std::string(64, '\xff')).has_value());
  std::string bytes = encode_request(Request{1, StatsRequest{}});
  std::string good = encode_event(sample_event());
  EXPECT_FALSE(decode_event(good.substr(0, good.size() - 16)).has_value());
  // Every single-byte corruption is either refused or decodes without crashing.
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    (void)decode_event(bad);
  }
}

TEST(Codec, RefusesUnknownEnumValues) {
  capnp::MallocMessageBuilder message;
  auto b = message.initRoot<schema::Event>();
  b.setEventId(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("0123456789abcdef"), 16));
  b.setType(static_cast<schema::EventType>(200));
  b.initPayload().initSynthetic();
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  auto r = decode_event(std::string_view(reinterpret_cast<const char*>(bytes.begin()), bytes.size()));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("unknown event type value 200"), std::string::npos)
      << r.error().message;

  capnp::MallocMessageBuilder m2;
  auto req = m2.initRoot<schema::Request>();
  auto ex = req.initAppend().initBatch().initExpectations(1);
  ex[0].setKind(static_cast<schema::ExpectKind>(9));
  auto w2 = capnp::messageToFlatArray(m2);
  auto b2 = w2.asBytes();
  auto r2 = decode_request(std::string_view(reinterpret_cast<const char*>(b2.begin()), b2.size()));
  ASSERT_FALSE(r2.has_value());
  EXPECT_NE(r2.error().message.find("unknown expectation kind 9"), std::string::npos);
}

TEST(Codec, RefusesTypeThatDoesNotMatchPayload) {
  capnp::MallocMessageBuilder message;
  auto b = message.initRoot<schema::Event>();
  b.setEventId(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("0123456789abcdef"), 16));
  b.setType(schema::EventType::SYSTEM_REMOVED);
  b.initPayload().initSynthetic();
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  auto r = decode_event(std::string_view(reinterpret_cast<const char*>(bytes.begin()), bytes.size()));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("does not match"), std::string::npos);
}

TEST(Codec, TraversalLimitStopsAmplification) {
  // A list of many copies of one large struct pointer would be amplified; a
  // message whose content exceeds traversal_factor x its size is refused.
  ReadReply rr;
  rr.records.assign(100, std::string(1000, 'a'));
  std::string bytes = encode_reply(Reply{1, rr});
  DecodeLimits limits;
  limits.traversal_factor = 0;  // budget: 64 words only
  EXPECT_FALSE(decode_reply(bytes, limits).has_value());
  EXPECT_TRUE(decode_reply(bytes).has_value());
}

}  // namespace
}  // namespace wpm

namespace wpm {
namespace {

using testing::future_event_bytes;

TEST(Codec, AStoredEventOfAnUnknownTypeIsKeptOpaqueAndReEncodedByteForByte) {
  std::string bytes = future_event_bytes(99, "from the future");
  auto e = decode_event(bytes);
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(static_cast<uint16_t>(e->type()), 99);
  EXPECT_FALSE(known_event_type(e->type()));
  EXPECT_EQ(event_type_label(e->type()), "unknown(99)");
  ASSERT_TRUE(is_unknown(e->payload));
  // The envelope is read as usual.
  EXPECT_EQ(e->stream_id, "wpar/web1");
  EXPECT_EQ(e->stream_version, 3u);
  EXPECT_EQ(e->actor, "service:inventory");
  // Encoded again (a copy, a re-send), the payload is the same bytes.
  auto again = decode_event(encode_event(*e));
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(*again, *e);
  EXPECT_NE(std::get<UnknownPayload>(again->payload).bytes.find("from the future"), std::string::npos);
}

TEST(Codec, ARequestCarryingAnUnknownEventTypeIsStillRefused) {
  // Protocol decoders refuse unknown members: only stored events are kept opaque.
  std::string event = future_event_bytes(99, "x");
  auto e = decode_event(event);
  ASSERT_TRUE(e.has_value());
  AppendRequest append;
  append.events.push_back(EventDraft{"wpar/web1", "", "", "", e->payload});
  auto decoded = decode_request(encode_request(Request{7, append}));
  ASSERT_FALSE(decoded.has_value());
  EXPECT_NE(decoded.error().message.find("unknown"), std::string::npos) << decoded.error().message;
  // A known type with an unknown payload member, or the reverse, is damage, not the future.
  EXPECT_FALSE(decode_event(future_event_bytes(1, "x", 99)).has_value()) << "known type, unknown member";
  EXPECT_FALSE(decode_event(future_event_bytes(99, "x", 1)).has_value()) << "unknown type, known member";
}

}  // namespace
}  // namespace wpm
