#include "services/gateway/discovery.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace wpm::gateway {
namespace {

inventory::RegisteredSystem system(std::string id, std::string address) {
  inventory::RegisteredSystem s;
  s.system_id = std::move(id);
  s.hostname = s.system_id;
  s.address = std::move(address);
  return s;
}

TEST(Discovery, AgentsThatSaidTheirPortInSystemOrderWithTheirSystemLabel) {
  auto registry = inventory::Registry::restore(
      {system("web2", "10.0.0.2"), system("db1", "fd00::7"), system("quiet", "10.0.0.9"), system("web1", "10.0.0.1")},
      10);
  auto targets = agent_targets(registry, {{"web1", 9511}, {"web2", 9600}, {"db1", 9511}, {"gone", 9511}, {"quiet", 0}});
  ASSERT_EQ(targets.size(), 3u);
  EXPECT_EQ(targets[0], (ScrapeTarget{"[fd00::7]:9511", {{"system", "db1"}}}));
  EXPECT_EQ(targets[1], (ScrapeTarget{"10.0.0.1:9511", {{"system", "web1"}}}));
  EXPECT_EQ(targets[2], (ScrapeTarget{"10.0.0.2:9600", {{"system", "web2"}}}));
}

TEST(Discovery, WpmdOnAWildcardIsScrapedOnLoopback) {
  EXPECT_EQ(wpmd_target("0.0.0.0", 9521).address, "127.0.0.1:9521");
  EXPECT_EQ(wpmd_target("::", 9521).address, "[::1]:9521");
  EXPECT_EQ(wpmd_target("10.1.2.3", 9521).address, "10.1.2.3:9521");
}

TEST(Discovery, FileSdJsonIsOneGroupPerTarget) {
  auto j = nlohmann::json::parse(file_sd_json({{"a:1", {{"system", "a"}}}, {"b:2", {}}}));
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["targets"], nlohmann::json::array({"a:1"}));
  EXPECT_EQ(j[0]["labels"]["system"], "a");
  EXPECT_TRUE(j[1]["labels"].is_object());
  EXPECT_EQ(file_sd_json({}), "[]\n");
}

TEST(Discovery, WritesOnlyWhenTheContentChanges) {
  std::string dir = std::string(WPM_TEST_TMP_DIR) + "/discovery-" + std::to_string(::getpid()) + "/prometheus";
  std::filesystem::remove_all(dir);
  DiscoveryFiles files(dir);
  ASSERT_EQ(files.write("agents.json", "[]\n"), true);
  EXPECT_EQ(files.write("agents.json", "[]\n"), false);
  ASSERT_EQ(files.write("agents.json", "[1]\n"), true);
  std::ifstream in(dir + "/agents.json");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "[1]\n");
  EXPECT_FALSE(std::filesystem::exists(dir + "/agents.json.tmp"));
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
  // A directory that cannot be made: an error that names it.
  DiscoveryFiles bad("/proc/wpm-no/prometheus");
  auto r = bad.write("wpmd.json", "[]\n");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("/proc/wpm-no/prometheus"), std::string::npos);
}

}  // namespace
}  // namespace wpm::gateway
