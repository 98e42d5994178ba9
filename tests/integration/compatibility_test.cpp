// The compatibility service (DESIGN.md §6): embedded in wpmd and as its own
// process against a remote store, with the same results.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bus/client.h"
#include "bus/curve.h"
#include "tests/integration/helpers.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

profile::SystemProfile profile_with_kernel(const std::string& kernel) {
  profile::SystemProfile p;
  p.os_type = "Linux";
  p.distribution = "debian";
  p.distribution_version = "12";
  p.kernel_version = kernel;
  p.base_system_version = "12.4";
  p.glibc_version = "2.36";
  p.architecture = "x86_64";
  p.isa_level = "x86-64-v2";
  p.memory_bytes = 8ull << 30;
  p.ntp_synchronized = true;
  p.cpu_mhz = 2400;
  p.agent_version = "0.1.0";
  p.checkpointers = {{"cooperative", true, "1", ""}};
  return p;
}

// Registers systems as the inventory service does, with a key made for it.
void register_systems(const Wpmd& w, const std::vector<std::pair<std::string, std::string>>& systems) {
  auto made = run({bin("wpmd"), "--data", w.data_dir(), "keys", "add-service", "inventory", "--replace"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto keys = bus::load_curve_keys(w.data_dir() + "/keys/services", "inventory");
  ASSERT_TRUE(keys);
  auto o = w.client_options();
  o.credentials.client_keys = *keys;
  zmq::context_t ctx(1);
  bus::StoreClient inventory(ctx, w.request(), o);
  for (const auto& [id, kernel] : systems) {
    auto key = bus::generate_curve_keys();
    ASSERT_TRUE(key);
    AppendRequest r;
    r.idempotency_key = "register-" + id;
    r.events.push_back(EventDraft{"registry", r.idempotency_key, "", "",
                                  SystemRegistered{id, id, "10.0.0.1", key->public_key, profile_with_kernel(kernel), 9510}});
    auto done = inventory.append(r);
    ASSERT_TRUE(done) << done.error().message;
  }
}

// stream → payload of every CompatibilityAnalyzed event.
std::map<std::string, nlohmann::json> compat_results(const Wpmd& w) {
  std::map<std::string, nlohmann::json> out;
  auto dump = wpm(w, {"log", "dump", "-o", "json"});
  std::istringstream lines(dump.out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    auto e = nlohmann::json::parse(line);
    if (e["type"] == "compatibilityAnalyzed") out[e["streamId"]] = e["payload"]["compatibilityAnalyzed"];
  }
  return out;
}

const std::vector<std::pair<std::string, std::string>> kFleet = {
    {"old1", "6.1.0-13-amd64"}, {"old2", "6.1.0-13-amd64"}, {"new1", "6.5.0-1-amd64"}};

TEST(Compatibility, EveryPairOfDistinctPropertiesIsAnalysedOnceBothWays) {
  TempDir dir;
  Wpmd w(Wpmd::Options{dir / "data", {}});
  ASSERT_TRUE(w.start()) << w.log();
  register_systems(w, kFleet);
  std::map<std::string, nlohmann::json> results;
  ASSERT_TRUE(wait_until([&] { return (results = compat_results(w)).size() == 2; }, 20s)) << results.size();
  // Older kernel → newer: passes; newer → older: the kernel test fails, with both values and the remedy.
  int failed_kernel = 0;
  for (const auto& [stream, r] : results) {
    EXPECT_TRUE(stream.starts_with("compat/")) << stream;
    for (const auto& t : r["results"]) {
      if (t["passed"] == false) {
        EXPECT_EQ(t["test"], "kernel");
        EXPECT_EQ(t["departure"], "6.5.0-1-amd64");
        EXPECT_EQ(t["arrival"], "6.1.0-13-amd64");
        EXPECT_NE(t["remedy"].get<std::string>().find("upgrade the kernel"), std::string::npos);
        ++failed_kernel;
      }
    }
  }
  EXPECT_EQ(failed_kernel, 1);
  auto dump = wpm(w, {"log", "dump", "--stream", results.begin()->first, "-o", "json"});
  EXPECT_NE(dump.out.find("\"actor\":\"service:compatibility\""), std::string::npos) << dump.out;
  // A restart analyses again and records nothing twice.
  ASSERT_EQ(w.stop(), 0);
  ASSERT_TRUE(w.start()) << w.log();
  register_systems(w, {{"new2", "6.5.0-1-amd64"}});  // known properties: nothing new to analyse
  auto head = wpm(w, {"log", "stats", "-o", "json"});
  uint64_t before = nlohmann::json::parse(head.out)["head"];
  // The restarted service analysed both pairs again; the store answered
  // both appends as already recorded (by their idempotency key, or, past its
  // window, because their streams exist).
  EXPECT_TRUE(wait_until(
      [&] {
        auto text = http_get(w.metrics());
        return metric_value(text, "wpm_store_duplicate_appends_total").value_or(0) +
                   metric_value(text, "wpm_store_expected_version_conflicts_total").value_or(0) >=
               2;
      },
      20s));
  EXPECT_EQ(compat_results(w).size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(wpm(w, {"log", "stats", "-o", "json"}).out)["head"], before);
}

TEST(Compatibility, AsItsOwnProcessItGivesTheSameResultsAsEmbedded) {
  TempDir dir;
  Wpmd embedded(Wpmd::Options{dir / "embedded", {}});
  ASSERT_TRUE(embedded.start()) << embedded.log();
  register_systems(embedded, kFleet);
  std::map<std::string, nlohmann::json> expected;
  ASSERT_TRUE(wait_until([&] { return (expected = compat_results(embedded)).size() == 2; }, 20s));

  Wpmd store(Wpmd::Options{dir / "store", {"--services", "store,inventory"}});
  ASSERT_TRUE(store.start()) << store.log();
  register_systems(store, kFleet);
  auto made = run({bin("wpmd"), "--data", store.data_dir(), "keys", "add-service", "compatibility"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  // The service's own host: its key and the store's public key, nothing else.
  std::string remote = dir / "remote";
  fs::create_directories(remote + "/keys/services");
  fs::copy_file(store.data_dir() + "/keys/services/compatibility.key", remote + "/keys/services/compatibility.key");
  fs::copy_file(store.data_dir() + "/keys/store.pub", remote + "/keys/store.pub");
  EXPECT_TRUE(compat_results(store).empty()) << "no compatibility service yet";
  pid_t pid = spawn({bin("wpmd"), "--data", remote, "--services", "compatibility", "--store", store.request(),
                     "--publish", store.publish()},
                    dir / "remote.out", dir / "remote.err");
  std::map<std::string, nlohmann::json> got;
  bool done = wait_until([&] { return (got = compat_results(store)).size() == 2; }, 20s);
  ::kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit(pid, 10s), 0) << read_file(dir / "remote.err");
  ASSERT_TRUE(done) << read_file(dir / "remote.err");
  EXPECT_EQ(got, expected);
  auto dump = wpm(store, {"log", "dump", "--stream", got.begin()->first, "-o", "json"});
  EXPECT_NE(dump.out.find("\"actor\":\"service:compatibility\""), std::string::npos) << dump.out;
}

TEST(Compatibility, RealAgentsMadeToDifferByProfileOverridesGetTheFailedTestNamed) {
  TempDir dir;
  std::ofstream(dir / "password") << "correct horse battery staple\n";
  Wpmd w(Wpmd::Options{dir / "data", {"--registration-password-file", dir / "password"}});
  ASSERT_TRUE(w.start()) << w.log();
  std::string pubport = w.agent_public().substr(w.agent_public().rfind(':') + 1);
  // Two agents on this machine; the first claims an older kernel.
  for (const auto& [name, overrides] : std::vector<std::pair<std::string, std::string>>{
           {"older", "[profile]\nkernel_version = \"5.10.0-26-amd64\"\n"}, {"real", ""}}) {
    fs::create_directories(dir / name);
    std::ofstream(dir / name + "/agent.toml") << "[agent]\nendpoint = \"tcp://127.0.0.1:0\"\n" << overrides;
    auto r = run({bin("wpm-agent"), "--data", dir / name, "configure", "--manager", "127.0.0.1", "--pubport", pubport,
                  "--agentport", "0", "--password-file", dir / "password", "--hostname", name},
                 30s);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  std::map<std::string, nlohmann::json> results;
  ASSERT_TRUE(wait_until([&] { return (results = compat_results(w)).size() == 2; }, 20s)) << results.size();
  int kernel_failures = 0;
  for (const auto& [stream, r] : results) {
    for (const auto& t : r["results"]) {
      if (t["test"] == "kernel" && t["passed"] == false) {
        EXPECT_EQ(t["arrival"], "5.10.0-26-amd64");
        ++kernel_failures;
      }
    }
  }
  EXPECT_EQ(kernel_failures, 1) << "real → older fails the kernel test; older → real passes it";
  auto registry = wpm(w, {"log", "dump", "--stream", "registry", "-o", "json"});
  EXPECT_NE(registry.out.find("\"overriddenFacts\":[\"kernelVersion\"]"), std::string::npos) << registry.out;
}

TEST(Compatibility, ARemoteServiceWithoutItsKeyOrWithoutAStoreIsToldWhatToDo) {
  TempDir dir;
  auto no_store = run({bin("wpmd"), "--data", dir / "x", "--services", "compatibility"});
  EXPECT_EQ(no_store.exit_code, 2);
  EXPECT_NE(no_store.err.find("--store tcp://HOST:9515"), std::string::npos) << no_store.err;
  auto no_key = run({bin("wpmd"), "--data", dir / "x", "--services", "compatibility", "--store",
                     "tcp://127.0.0.1:1"});
  EXPECT_EQ(no_key.exit_code, 1);
  EXPECT_NE(no_key.err.find("keys add-service compatibility"), std::string::npos) << no_key.err;
  auto gateway = run({bin("wpmd"), "--services", "store,gateway"});
  EXPECT_EQ(gateway.exit_code, 2);
  auto bogus = run({bin("wpmd"), "--services", "store,toaster"});
  EXPECT_EQ(bogus.exit_code, 2);
  EXPECT_NE(bogus.err.find("toaster"), std::string::npos);
}

}  // namespace
}  // namespace wpm::testing
