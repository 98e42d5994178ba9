// wpm-agent's local WPAR commands through the real binary, with real
// supervisors, cgroups and the wpm-demo-counter workload (root).

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "tests/support/process.h"

namespace wpm::testing {
namespace {

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
      for (const char* name : {"ctr", "stuck", "plain", "sys", "slow", "netcap", "netadm"}) {
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

TEST_F(Agent, CheckpointOnOneAgentAndRestartOnAnotherContinuesTheCount) {
  auto started = exec(data_a(), "ctr", counter());
  ASSERT_EQ(started.exit_code, 0) << started.err;
  ASSERT_TRUE(wait_until([&] { return count() >= 20; }, 10s));
  auto ls = agent(data_a(), {"lswpar"});
  EXPECT_NE(ls.out.find("ctr                      A"), std::string::npos) << ls.out;

  std::string state = dir_ / "statefile";
  auto ck = agent(data_a(), {"chkptwpar", "-d", state, "-k", "ctr"});
  ASSERT_EQ(ck.exit_code, 0) << ck.err;
  uint64_t saved = std::stoull(read_file(state + "/state/count"));
  ASSERT_TRUE(wait_until([&] { return agent(data_a(), {"lswpar", "ctr"}).out.find(" D ") != std::string::npos; }, 10s));

  // The second agent has never seen the WPAR: the state file carries its spec.
  fs::remove(dir_ / "count");
  auto rs = agent(data_b(), {"restartwpar", "-d", state, "ctr"});
  ASSERT_EQ(rs.exit_code, 0) << rs.err;
  ASSERT_TRUE(wait_until([&] { return count() > 0; }, 10s));
  EXPECT_GT(count(), saved);
  EXPECT_LT(count(), saved + 40);
  auto json = agent(data_b(), {"lswpar", "-o", "json"});
  EXPECT_NE(json.out.find("\"stateLetter\": \"A\""), std::string::npos) << json.out;
}

TEST_F(Agent, TwoAgentsWithDifferentDataDirectoriesDoNotSeeEachOthersWpars) {
  ASSERT_EQ(exec(data_a(), "ctr", counter()).exit_code, 0);
  ASSERT_EQ(exec(data_b(), "plain", {"/bin/sleep", "30"}, false).exit_code, 0);
  auto a = agent(data_a(), {"lswpar"});
  auto b = agent(data_b(), {"lswpar"});
  EXPECT_NE(a.out.find("ctr"), std::string::npos);
  EXPECT_EQ(a.out.find("plain"), std::string::npos);
  EXPECT_NE(b.out.find("plain"), std::string::npos);
  EXPECT_EQ(b.out.find("ctr"), std::string::npos);
  EXPECT_EQ(agent(data_b(), {"stopwpar", "ctr"}).exit_code, 3) << "B cannot reach A's WPAR";
  EXPECT_EQ(agent(data_b(), {"stopwpar", "plain"}).exit_code, 0);
}

TEST_F(Agent, CheckpointCommandsReturnTheSeedsExitCodes) {
  ASSERT_EQ(exec(data_a(), "plain", {"/bin/sleep", "30"}, false).exit_code, 0);
  ASSERT_EQ(exec(data_a(), "stuck", {"/bin/sh", "-c", "trap '' USR1; echo ready; while :; do sleep 0.1; done"}).exit_code, 0);
  ASSERT_EQ(exec(data_a(), "ctr", counter()).exit_code, 0);
  std::string state = dir_ / "s1";
  EXPECT_EQ(agent(data_a(), {"chkptwpar", "--bogus"}).exit_code, 1) << "invalid arguments";
  EXPECT_EQ(agent(data_a(), {"chkptwpar", "-d", state, "nope"}).exit_code, 16) << "unknown WPAR";
  EXPECT_EQ(agent(data_a(), {"chkptwpar", "-d", state, "plain"}).exit_code, 19) << "not checkpointable";
  EXPECT_EQ(agent(data_a(), {"chkptwpar", "-d", "relative", "ctr"}).exit_code, 21) << "bad state path";
  fs::create_directories(dir_ / "full");
  std::ofstream(dir_ / "full/x") << "x";
  EXPECT_EQ(agent(data_a(), {"chkptwpar", "-d", dir_ / "full", "ctr"}).exit_code, 23) << "not empty";
  ASSERT_TRUE(wait_until([&] { return read_file(data_a() + "/wpars/stuck/console.log").find("ready") != std::string::npos; }, 10s));
  auto stuck = agent(data_a(), {"chkptwpar", "--timeout", "1", "-d", dir_ / "s2", "stuck"});
  EXPECT_EQ(stuck.exit_code, 6) << stuck.err;
  EXPECT_NE(agent(data_a(), {"lswpar", "stuck"}).out.find(" A "), std::string::npos) << "stays Active";
  EXPECT_EQ(agent(data_a(), {"killwpar", "ctr"}).exit_code, 17) << "killwpar: not paused";
  EXPECT_EQ(agent(data_a(), {"resumewpar", "ctr"}).exit_code, 1) << "resume of an active WPAR";
  EXPECT_EQ(agent(data_a(), {"restartwpar", "-d", dir_ / "nothing", "other"}).exit_code, 16);

  // Pause, then kill: the paused WPAR's processes end.
  ASSERT_TRUE(wait_until([&] { return count() >= 3; }, 10s));
  ASSERT_EQ(agent(data_a(), {"chkptwpar", "-d", state, "-p", "ctr"}).exit_code, 0);
  EXPECT_NE(agent(data_a(), {"lswpar", "ctr"}).out.find(" P "), std::string::npos);
  EXPECT_EQ(agent(data_a(), {"stopwpar", "ctr"}).exit_code, 1) << "stop of a paused WPAR is refused";
  EXPECT_EQ(agent(data_a(), {"killwpar", "ctr"}).exit_code, 0);
  EXPECT_NE(agent(data_a(), {"lswpar", "ctr"}).out.find(" D "), std::string::npos);
  // A forced stop of a paused WPAR ends it too (its processes are thawed to die).
  ASSERT_EQ(agent(data_a(), {"rmwpar", "ctr"}).exit_code, 0);
  ASSERT_EQ(exec(data_a(), "ctr", counter()).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return count() >= 3; }, 10s));
  ASSERT_EQ(agent(data_a(), {"chkptwpar", "-d", dir_ / "s3", "-p", "ctr"}).exit_code, 0);
  auto forced = agent(data_a(), {"stopwpar", "-F", "ctr"});
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(agent(data_a(), {"lswpar", "ctr"}).out.find(" D "), std::string::npos);
  fs::remove(state + "/state/count");
  EXPECT_EQ(agent(data_a(), {"restartwpar", "-d", state, "ctr"}).exit_code, 14) << "missing file";
}

TEST_F(Agent, UsageErrorsExitWithTheirDocumentedCodes) {
  EXPECT_EQ(run({bin("wpm-agent"), "--version"}).exit_code, 0);
  EXPECT_EQ(run({bin("wpm-agent"), "lswpar", "--help"}).exit_code, 0);
  EXPECT_EQ(run({bin("wpm-agent")}).exit_code, 2);
  EXPECT_EQ(agent(data_a(), {"lswpar", "--bogus"}).exit_code, 2);
  EXPECT_EQ(agent(data_a(), {"wparexec", "-n", "x"}).exit_code, 2) << "no command";
  EXPECT_EQ(agent(data_a(), {"wparexec", "-n", "bad/name", "--", "/bin/true"}).exit_code, 2);
  EXPECT_EQ(agent(data_a(), {"restartwpar", "ctr"}).exit_code, 1) << "seed command: -d missing";
  EXPECT_EQ(agent(data_a(), {"lswpar", "nope"}).exit_code, 3);
}

TEST_F(Agent, SystemWparHasItsOwnHostnamePid1AndFileSystemsThatSurviveStopAndStart) {
  auto t0 = std::chrono::steady_clock::now();
  auto made = agent(data_a(), {"mkwpar", "-n", "sys", "--hostname", "wpmsys", "-s"});
  auto start_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  ASSERT_EQ(made.exit_code, 0) << made.err;
  // A figure, not a gate (STYLE.md §8): the target is 200 ms.
  std::printf("system WPAR start (mkwpar -s, wall, whole wpm-agent run): %lld ms\n",
              static_cast<long long>(start_ms.count()));
  EXPECT_NE(agent(data_a(), {"lswpar", "sys"}).out.find("sys                      A     S"),
            std::string::npos);

  auto inside =
      agent(data_a(), {"clogin", "sys", "--", "sh", "-c", "hostname; cat /proc/1/comm; echo $$"});
  ASSERT_EQ(inside.exit_code, 0) << inside.err;
  EXPECT_TRUE(inside.out.starts_with("wpmsys\nwpm-init\n")) << inside.out;
  EXPECT_LT(std::stoi(inside.out.substr(inside.out.rfind('\n', inside.out.size() - 2) + 1)), 100)
      << inside.out;
  auto usr = agent(data_a(), {"clogin", "sys", "--", "touch", "/usr/wpm-agent-test"});
  EXPECT_NE(usr.exit_code, 0);
  EXPECT_NE(usr.err.find("Read-only file system"), std::string::npos) << usr.err;
  EXPECT_EQ(agent(data_a(), {"clogin", "sys", "--", "sh", "-c", "exit 5"}).exit_code, 5)
      << "the command's code";
  ASSERT_EQ(agent(data_a(), {"clogin", "sys", "--", "sh", "-c",
                             "for d in /etc /var /home /tmp; do echo $d > $d/wpm-agent-test; done"})
                .exit_code,
            0);
  for (const char* dir : {"/etc", "/var", "/home"}) {
    EXPECT_FALSE(fs::exists(std::string(dir) + "/wpm-agent-test"))
        << dir << ": the write reached the host";
  }

  ASSERT_EQ(agent(data_a(), {"stopwpar", "sys"}).exit_code, 0);
  EXPECT_NE(agent(data_a(), {"lswpar", "sys"}).out.find(" D "), std::string::npos)
      << "stays Defined";
  EXPECT_EQ(agent(data_a(), {"clogin", "sys", "--", "true"}).exit_code, 125) << "not active";
  EXPECT_EQ(read_file("/proc/self/mountinfo").find(data_a()), std::string::npos)
      << "a mount leaked to the host";
  ASSERT_EQ(agent(data_a(), {"startwpar", "sys"}).exit_code, 0);
  auto kept =
      agent(data_a(), {"clogin", "sys", "--", "cat", "/etc/wpm-agent-test", "/var/wpm-agent-test",
                       "/home/wpm-agent-test", "/tmp/wpm-agent-test"});
  EXPECT_EQ(kept.out, "/etc\n/var\n/home\n/tmp\n") << kept.err;

  // rmwpar -p keeps the file systems for a later mkwpar of the same name.
  ASSERT_EQ(agent(data_a(), {"rmwpar", "-p", "sys"}).exit_code, 0);
  EXPECT_EQ(agent(data_a(), {"lswpar", "sys"}).exit_code, 3);
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "sys", "-s"}).exit_code, 0);
  EXPECT_EQ(agent(data_a(), {"clogin", "sys", "--", "cat", "/var/wpm-agent-test"}).out, "/var\n");
  ASSERT_EQ(agent(data_a(), {"rmwpar", "sys"}).exit_code, 0);
  EXPECT_FALSE(fs::exists(data_a() + "/wpars/sys"));
}

TEST_F(Agent, StopOfASystemWparIsGracefulThenForcedAfterItsTimeout) {
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "slow", "--stop-timeout", "1", "-s", "--", "/bin/sh",
                             "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"})
                .exit_code,
            0);
  ASSERT_TRUE(wait_until(
      [&] {
        return read_file(data_a() + "/wpars/slow/console.log").find("ready") != std::string::npos;
      },
      10s));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(agent(data_a(), {"stopwpar", "slow"}).exit_code, 0);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 900ms) << "forced before the timeout";
  EXPECT_NE(agent(data_a(), {"lswpar", "slow"}).out.find("signal 9"), std::string::npos);
  ASSERT_EQ(agent(data_a(), {"startwpar", "slow"}).exit_code, 0);
  t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(agent(data_a(), {"stopwpar", "-F", "slow"}).exit_code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 900ms) << "-F does not wait for the timeout";
  EXPECT_NE(agent(data_a(), {"lswpar", "slow"}).out.find(" D "), std::string::npos);
}

TEST_F(Agent, WithoutCapNetAdminAWparCannotAddALinkToTheHost) {
  // An application WPAR shares the host's network: only its capability set stops it.
  ASSERT_EQ(
      exec(data_a(), "netcap", {"/usr/sbin/ip", "link", "add", "wpmtest0", "type", "bridge"}, false)
          .exit_code,
      0);
  auto code = exit_code_of(data_a(), "netcap");
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_NE(read_file(data_a() + "/wpars/netcap/console.log").find("Operation not permitted"),
            std::string::npos);
  EXPECT_NE(run({"/usr/sbin/ip", "link", "show", "wpmtest0"}).exit_code, 0)
      << "the link reached the host";

  ASSERT_EQ(agent(data_a(), {"wparexec", "-n", "netadm", "--capabilities", "+cap_net_admin", "--",
                             "/usr/sbin/ip", "link", "add", "wpmtest1", "type", "bridge"})
                .exit_code,
            0);
  EXPECT_EQ(exit_code_of(data_a(), "netadm"), 0)
      << read_file(data_a() + "/wpars/netadm/console.log");
  EXPECT_EQ(run({"/usr/sbin/ip", "link", "show", "wpmtest1"}).exit_code, 0)
      << "given cap_net_admin, it can";
}

TEST_F(Agent, SystemWparCommandsExitWithTheirDocumentedCodes) {
  EXPECT_EQ(agent(data_a(), {"mkwpar"}).exit_code, 2) << "-n missing";
  EXPECT_EQ(agent(data_a(), {"mkwpar", "-n", "bad/name"}).exit_code, 2);
  EXPECT_EQ(agent(data_a(), {"mkwpar", "-n", "sys", "--capabilities", "cap_bogus"}).exit_code, 2);
  EXPECT_EQ(
      agent(data_a(), {"mkwpar", "-n", "sys", "--capabilities", "cap_kill,+cap_chown"}).exit_code,
      2);
  EXPECT_EQ(agent(data_a(), {"startwpar", "nope"}).exit_code, 3);
  EXPECT_EQ(agent(data_a(), {"clogin", "nope"}).exit_code, 3);
  EXPECT_EQ(agent(data_a(), {"clogin"}).exit_code, 2);
  EXPECT_EQ(agent(data_a(), {"rmwpar", "-p", "nope"}).exit_code, 3);
  // A capability outside the host's bounding set (this host's, read as the agent reads it).
  std::string bounding = read_file("/proc/self/status");
  uint64_t mask = std::stoull(bounding.substr(bounding.find("CapBnd:") + 7), nullptr, 16);
  if ((mask & (1ull << 24)) == 0) {  // CAP_SYS_RESOURCE
    auto lacking = agent(data_a(), {"mkwpar", "-n", "sys", "--capabilities", "+cap_sys_resource"});
    EXPECT_EQ(lacking.exit_code, 1);
    EXPECT_NE(lacking.err.find("cap_sys_resource is not in this host's bounding set"),
              std::string::npos)
        << lacking.err;
  }
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "sys"}).exit_code, 0);
  EXPECT_EQ(agent(data_a(), {"mkwpar", "-n", "sys"}).exit_code, 1) << "exists";
  EXPECT_NE(agent(data_a(), {"lswpar", "sys"}).out.find("sys                      D     S"),
            std::string::npos);
  EXPECT_EQ(agent(data_a(), {"stopwpar", "sys"}).exit_code, 1) << "not active";
  EXPECT_EQ(agent(data_a(), {"clogin", "sys"}).exit_code, 125) << "not active";
  ASSERT_EQ(exec(data_a(), "plain", {"/bin/sleep", "30"}, false).exit_code, 0);
  EXPECT_EQ(agent(data_a(), {"startwpar", "plain"}).exit_code, 1)
      << "application WPARs start when created";
  EXPECT_EQ(agent(data_a(), {"clogin", "plain", "--", "sh", "-c", "exit 4"}).exit_code, 4);
}

}  // namespace
}  // namespace wpm::testing
