#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include "schemas/agent.capnp.h"

#include "schemas/agent_protocol.h"
#include "schemas/codec.h"

namespace wpm::agentproto {
namespace {

profile::SystemProfile sample_profile() {
  profile::SystemProfile p;
  p.os_type = "Linux";
  p.kernel_version = "6.1.0-test";
  p.cpu_flags = {"sse4_2", "avx2"};
  p.cpu_cores = 2;
  p.ntp_synchronized = false;
  p.cgroups = {{"cpu", 1, "/sys/fs/cgroup/cpu"}, {"memory", 2, "/sys/fs/cgroup"}};
  p.checkpointers = {{"cooperative", true, "1", ""}, {"criu", false, "", "criu check failed"}};
  p.capabilities = {"cap_chown"};
  p.network_interfaces = {{"eth0", {"10.0.0.5/24", "fd00::5/64"}, true, 1500}, {"eth1", {}, false, 9000}};
  return p;
}

TEST(AgentCodec, ManagerRequestsRoundTrip) {
  std::vector<ManagerRequest> requests = {
      {1, GetManagerKey{}},
      {2, Register{std::string("\x01\x02proof", 7), "node1", 9510, sample_profile(), "KEY"}},
      {3, Started{"0.1.0", sample_profile(), 4}},
      {4, Heartbeat{123, 4, 2, 0.5f, 8, 9510}},
      {5, Unregister{}},
      {6, ProfileReport{sample_profile()}},
      {7, MetricsReport{10'000, MetricSet{0x3e, 55.5f, 40.25f, 1.5f, 321, 654, 12.5f},
                        {{"web", MetricSet{0x72, 3.5f, 1.25f, 0, 4, 9, 0.5f}}, {"db", MetricSet{}}}, "wpars", 9511}},
  };
  for (const auto& r : requests) {
    auto back = decode_manager_request(encode(r));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, r);
  }
}

TEST(AgentCodec, RepliesAndCommandsRoundTrip) {
  std::vector<ManagerReply> replies = {
      {1, ManagerKey{"PUB", "sha256:ab", 9514, "0.1.0", "scrypt$1024$8$1$00"}},
      {2, Registered{"node1", true}},
      {3, Ack{}},
      {5, Ack{}, kProtocolVersion, 2000},
      {4, ProtocolError{ErrorKind::kWrongPassword, "wrong"}},
  };
  for (const auto& r : replies) {
    auto back = decode_manager_reply(encode(r));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, r);
  }
  AgentCommand ping{9, Ping{}};
  EXPECT_EQ(*decode_agent_command(encode(ping)), ping);
  AgentCommand refresh{10, RefreshProfile{}};
  EXPECT_EQ(*decode_agent_command(encode(refresh)), refresh);
  // An operation with every field set comes back whole.
  AgentCommand op{11, Operation{"t1.3", 2, "web1", 7, "restore", "{}", true, true, 123, "tcp://10.0.0.2:9510",
                                "KEY", "t1.1", true, "/mnt/wpm", 1000}};
  EXPECT_EQ(*decode_agent_command(encode(op)), op);
  AgentReply list{9, std::vector<WparSummary>{{"w1", "system", "A", 7}, {"w2", "application", "D"}}};
  EXPECT_EQ(*decode_agent_reply(encode(list)), list);
}

TEST(AgentCodec, GarbageAndOversizedFramesAreRefusedNotThrown) {
  EXPECT_FALSE(decode_manager_request(std::string(24, '\x7f')));
  EXPECT_FALSE(decode_manager_request("short"));
  EXPECT_FALSE(decode_agent_command(std::string(kAgentFrameBytesMax + 8, '\0')));
  EXPECT_EQ(peek_request_id("short"), 0u);
  EXPECT_EQ(peek_request_id(encode(AgentCommand{42, Ping{}})), 42u);
}

TEST(AgentCodec, AnUnspecifiedRequestIsRefused) {
  // requestId only: the union is left at "unspecified".
  capnp::MallocMessageBuilder message;
  message.initRoot<schema::ManagerRequest>().setRequestId(11);
  auto words = capnp::messageToFlatArray(message);
  std::string bytes(reinterpret_cast<const char*>(words.asBytes().begin()), words.asBytes().size());
  auto r = decode_manager_request(bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("unknown or empty"), std::string::npos);
  EXPECT_EQ(peek_request_id(bytes), 11u) << "the error reply still reaches the caller";
}

TEST(EventCodec, RegistrationEventsRoundTripWithTheProfile) {
  Event e;
  e.sequence = 5;
  e.payload = SystemRegistered{"node1", "node1", "10.0.0.1", "KEY", sample_profile(), 9510};
  auto back = decode_event(encode_event(e));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->payload, e.payload);
  e.payload = RegistrationRejected{"10.0.0.9", "wrong registration password", 7, 1, 2, "h", "K"};
  back = decode_event(encode_event(e));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->payload, e.payload);
}

}  // namespace
}  // namespace wpm::agentproto
