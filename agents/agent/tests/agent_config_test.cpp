#include "agents/agent/agent_config.h"

#include <gtest/gtest.h>

namespace wpm::agent {
namespace {

TEST(AgentConfig, DefaultsWithoutAFile) {
  auto c = parse_agent_config("", "agent.toml");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->agent_endpoint, "tcp://0.0.0.0:9510");
  EXPECT_EQ(c->metrics_listen, "0.0.0.0:9511");
  EXPECT_EQ(c->heartbeat_s, 5u);
  EXPECT_TRUE(c->logging.enabled);
}

TEST(AgentConfig, SeedLoggingKeysAndLevelsAreAccepted) {
  auto c = parse_agent_config("[log]\nenabled = false\nappend = true\ncount = 3\nlevel = \"FINEST\"\nlimit = 500000\n",
                              "agent.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_FALSE(c->logging.enabled);
  EXPECT_TRUE(c->logging.append);
  EXPECT_EQ(c->logging.count, 3u);
  EXPECT_EQ(c->logging.level, "trace");
  EXPECT_EQ(c->logging.limit_bytes, 500000u);
}

TEST(AgentConfig, SeedLevelsMapOntoSpdlogLevels) {
  EXPECT_EQ(map_log_level("ERROR"), "error");
  EXPECT_EQ(map_log_level("WARNING"), "warn");
  EXPECT_EQ(map_log_level("INFO"), "info");
  EXPECT_EQ(map_log_level("VERBOSE"), "debug");
  EXPECT_EQ(map_log_level("FINE"), "debug");
  EXPECT_EQ(map_log_level("FINER"), "trace");
  EXPECT_EQ(map_log_level("finest"), "trace");
  EXPECT_EQ(map_log_level("LOUD"), "");
}

TEST(AgentConfig, UnknownKeysAndBadValuesAreRefusedWithTheirName) {
  auto typo = parse_agent_config("[log]\nlevl = \"INFO\"\n", "agent.toml");
  ASSERT_FALSE(typo);
  EXPECT_NE(typo.error().message.find("log.levl"), std::string::npos);
  auto level = parse_agent_config("[log]\nlevel = \"LOUD\"\n", "agent.toml");
  ASSERT_FALSE(level);
  EXPECT_NE(level.error().message.find("FINEST"), std::string::npos);
  EXPECT_FALSE(parse_agent_config("[agent]\nendpoint = \"udp://x\"\n", "agent.toml"));
  EXPECT_FALSE(parse_agent_config("[agent]\nheartbeat_s = 0\n", "agent.toml"));
}

}  // namespace
}  // namespace wpm::agent

namespace wpm::agent {
namespace {

TEST(AgentConfig, ProfileOverridesApplyAndAreNamedInTheProfile) {
  auto c = parse_agent_config(R"(
[profile]
kernel_version = "5.10.0-26-amd64"
glibc_version = "2.31"
memory_bytes = 4294967296
ntp = false
cpu_flags = ["sse2", "avx"]
)",
                              "agent.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_FALSE(c->profile.empty());
  profile::SystemProfile p;
  p.kernel_version = "6.1.0";
  p.distribution = "debian";
  p.ntp_synchronized = true;
  c->profile.apply(p);
  EXPECT_EQ(p.kernel_version, "5.10.0-26-amd64");
  EXPECT_EQ(p.glibc_version, "2.31");
  EXPECT_EQ(p.memory_bytes, 4ull << 30);
  EXPECT_EQ(p.ntp_synchronized, false);
  EXPECT_EQ(p.cpu_flags, (std::vector<std::string>{"avx", "sse2"})) << "sorted, as detected flags are";
  EXPECT_EQ(p.distribution, "debian") << "what is not overridden stays";
  EXPECT_EQ(p.overridden_facts,
            (std::vector<std::string>{"kernelVersion", "glibcVersion", "cpuFlags", "memoryBytes", "ntp"}));
  EXPECT_TRUE(parse_agent_config("", "agent.toml")->profile.empty());
}

TEST(AgentConfig, BadProfileOverridesAreRefusedWithTheirName) {
  auto unknown = parse_agent_config("[profile]\nkernel = \"6\"\n", "agent.toml");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("profile.kernel"), std::string::npos) << unknown.error().message;
  auto typed = parse_agent_config("[profile]\nmemory_bytes = \"lots\"\n", "agent.toml");
  ASSERT_FALSE(typed);
  EXPECT_NE(typed.error().message.find("profile.memory_bytes"), std::string::npos) << typed.error().message;
}

}  // namespace
}  // namespace wpm::agent
