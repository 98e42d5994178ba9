#pragma once
// The fixture of the tests of wpm-agent's local WPAR commands (agent_test.cpp,
// hardening_test.cpp): two agents' data directories in a temporary
// directory, the real binaries, and a tear-down that stops and removes the
// WPARs the tests make and the agents' cgroup subtrees.

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace wpm::testing {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class Agent : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for cgroups";
  }
  void TearDown() override {
    for (const auto& data : {data_a(), data_b()}) {
      auto ls = agent(data, {"lswpar", "-o", "json"});
      for (const char* name :
           {"ctr", "stuck", "plain", "sys", "slow", "netcap", "netadm", "net1", "net2", "filtered", "privileged",
            "apppid", "appraw", "devapp", "devraw", "devsys", "idsys", "idflat", "idpriv"}) {
        if (ls.out.find(std::string("\"") + name + "\"") != std::string::npos) {
          agent(data, {"resumewpar", name});
          agent(data, {"stopwpar", "-F", name});
          agent(data, {"rmwpar", name});
        }
      }
    }
    for (const char* link : {"wpmtest0", "wpmtest1"}) run({"/usr/sbin/ip", "link", "del", link});
    // The agents' own cgroup subtrees (wpm/agent-a-*, wpm/agent-b-*), now empty.
    std::error_code ec;
    for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup", ec)) {
      fs::path wpm = hierarchy.path() / "wpm";
      std::error_code ec2;
      for (const auto& sub : fs::directory_iterator(wpm, ec2)) {
        std::string n = sub.path().filename();
        if (n.starts_with("agent-a-") || n.starts_with("agent-b-")) ::rmdir(sub.path().c_str());
      }
      ::rmdir(wpm.c_str());  // only when nothing else uses it
    }
  }
  std::string data_a() const { return dir_ / "agent-a"; }
  std::string data_b() const { return dir_ / "agent-b"; }
  RunResult agent(const std::string& data, std::vector<std::string> args) {
    std::vector<std::string> argv = {bin("wpm-agent"), "--data", data};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, 60s);
  }
  uint64_t count() const {
    std::string s = read_file(dir_ / "count");
    return s.empty() ? 0 : std::stoull(s);
  }
  std::vector<std::string> counter() const {
    return {bin("wpm-demo-counter"), "--out", dir_ / "count", "--interval-ms", "20", "--state-bytes", "65536"};
  }
  RunResult exec(const std::string& data, const std::string& name, std::vector<std::string> command,
                 bool checkpointable = true) {
    std::vector<std::string> args = {"wparexec", "-n", name};
    if (checkpointable) args.push_back("-c");
    args.push_back("--");
    args.insert(args.end(), command.begin(), command.end());
    return agent(data, args);
  }

  // The exit code an application WPAR's command ended with, once it ended.
  std::optional<int> exit_code_of(const std::string& data, const std::string& name) {
    std::optional<int> code;
    wait_until(
        [&] {
          std::string out = agent(data, {"lswpar", "-o", "json", name}).out;
          auto at = out.find("\"exitCode\": ");
          if (at != std::string::npos) code = std::stoi(out.substr(at + 12));
          return code.has_value();
        },
        10s);
    return code;
  }

  TempDir dir_;
};

}  // namespace wpm::testing
