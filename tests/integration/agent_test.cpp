// wpm-agent's local WPAR commands through the real binary, with real
// supervisors, cgroups and the wpm-demo-counter workload (root).

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "tests/integration/agent_fixture.h"
#include "tests/support/netns_child.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

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

TEST_F(Agent, RestartWithAUserCommandReturnsItsStatusAndEndsTheWparWhenItFails) {
  ASSERT_EQ(exec(data_a(), "ctr", counter()).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return count() >= 3; }, 10s));
  std::string state = dir_ / "statefile";
  ASSERT_EQ(agent(data_a(), {"chkptwpar", "-d", state, "-k", "ctr"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return agent(data_a(), {"lswpar", "ctr"}).out.find(" D ") != std::string::npos; }, 10s));
  auto script = [&](const std::string& name, const std::string& body) {
    std::string path = dir_ / name;
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    fs::permissions(path, fs::perms::owner_all);
    return path;
  };
  std::string seen = dir_ / "seen";
  std::string ok = script("ok.sh", "echo \"$1\" > " + seen);
  std::string low = script("low.sh", "exit 3");
  std::string high = script("high.sh", "exit 101");

  EXPECT_EQ(agent(data_a(), {"restartwpar", "-d", state, "-u", ok, "ctr"}).exit_code, 1) << "-u needs -p";
  EXPECT_EQ(agent(data_a(), {"restartwpar", "-d", state, "-p", "-u", "relative.sh", "ctr"}).exit_code, 1);

  auto rs = agent(data_a(), {"restartwpar", "-d", state, "-p", "-u", ok, "ctr"});
  ASSERT_EQ(rs.exit_code, 0) << rs.err;
  EXPECT_EQ(read_file(seen), "ctr\n") << "the user command gets the WPAR's name";
  EXPECT_NE(agent(data_a(), {"lswpar", "ctr"}).out.find(" P "), std::string::npos) << "stays paused";
  ASSERT_EQ(agent(data_a(), {"killwpar", "ctr"}).exit_code, 0);

  auto failed = agent(data_a(), {"restartwpar", "-d", state, "-p", "-u", low, "ctr"});
  EXPECT_EQ(failed.exit_code, 13) << "a status of 100 or less becomes 13: " << failed.err;
  EXPECT_NE(agent(data_a(), {"lswpar", "ctr"}).out.find(" D "), std::string::npos) << "the WPAR was ended";

  EXPECT_EQ(agent(data_a(), {"restartwpar", "-d", state, "-p", "-u", high, "ctr"}).exit_code, 101)
      << "the user command's own status above 100";
  EXPECT_NE(agent(data_a(), {"lswpar", "ctr"}).out.find(" D "), std::string::npos);
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
  EXPECT_EQ(agent(data_a(), {"resumewpar", "ctr"}).exit_code, 17) << "resume of an active WPAR (seed: neither paused nor frozen)";
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
                             "for d in / /var /home /tmp; do echo $d > ${d%/}/wpm-agent-test; done"})
                .exit_code,
            0);
  for (const char* dir : {"", "/var", "/home"}) {
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
      agent(data_a(), {"clogin", "sys", "--", "cat", "/wpm-agent-test", "/var/wpm-agent-test",
                       "/home/wpm-agent-test", "/tmp/wpm-agent-test"});
  EXPECT_EQ(kept.out, "/\n/var\n/home\n/tmp\n") << kept.err;

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

// chwpar (what the manager's wpar modify runs): limits change on the
// running cgroups at once; the capability set applies to processes started
// from then on, and lswpar shows it pending until the WPAR starts again.
TEST_F(Agent, ChwparChangesLimitsAtOnceAndCapabilitiesForNewProcesses) {
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "sys", "--memory", "67108864", "-s"}).exit_code, 0);
  // Its memory limit where the hierarchy keeps it (v2 memory.max, v1 memory.limit_in_bytes).
  auto memory_limit = [&]() -> std::string {
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator("/sys/fs/cgroup", ec)) {
      std::string path = e.path().string();
      if (e.path().filename() == "sys" && path.find("/agent-a-") != std::string::npos) {
        for (const char* file : {"memory.max", "memory.limit_in_bytes"}) {
          if (fs::exists(e.path() / file)) return read_file(e.path() / file);
        }
      }
    }
    return "";
  };
  EXPECT_EQ(memory_limit(), "67108864\n");
  auto changed = agent(data_a(), {"chwpar", "--memory", "33554432", "--capabilities", "cap_kill", "sys"});
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_NE(changed.out.find("its limits apply now"), std::string::npos) << changed.out;
  EXPECT_NE(changed.out.find("processes started from now on"), std::string::npos) << changed.out;
  EXPECT_EQ(memory_limit(), "33554432\n");
  // Below what it uses now: refused (cgroup v2 would take it and kill inside), nothing changed.
  auto below = agent(data_a(), {"chwpar", "--memory", "4096", "sys"});
  EXPECT_EQ(below.exit_code, 1);
  EXPECT_NE(below.err.find("more than the 4096 asked for"), std::string::npos) << below.err;
  EXPECT_EQ(memory_limit(), "33554432\n");
  auto ls = agent(data_a(), {"lswpar", "-o", "json", "sys"}).out;
  EXPECT_NE(ls.find("\"capabilitiesPending\": true"), std::string::npos) << ls;
  // A process started now holds only cap_kill (bit 5); the init keeps what it started with.
  auto caps = agent(data_a(), {"clogin", "sys", "--", "sh", "-c", "grep CapBnd /proc/self/status; grep CapBnd /proc/1/status"});
  ASSERT_EQ(caps.exit_code, 0) << caps.err;
  EXPECT_TRUE(caps.out.starts_with("CapBnd:\t0000000000000020\n")) << caps.out;
  EXPECT_EQ(caps.out.find("CapBnd:\t0000000000000020", 10), std::string::npos) << "the init's set changed: " << caps.out;
  // The same again changes nothing; 0 lifts the limit; an unknown WPAR is 3.
  EXPECT_NE(agent(data_a(), {"chwpar", "--memory", "33554432", "sys"}).out.find("nothing to change"), std::string::npos);
  ASSERT_EQ(agent(data_a(), {"chwpar", "--memory", "0", "sys"}).exit_code, 0);
  EXPECT_TRUE(memory_limit() == "max\n" || std::stoull(memory_limit()) > (uint64_t{1} << 60)) << memory_limit();
  EXPECT_EQ(agent(data_a(), {"chwpar", "--memory", "1", "nope"}).exit_code, 3);
  EXPECT_EQ(agent(data_a(), {"chwpar", "--capabilities", "cap_bogus", "sys"}).exit_code, 2);
  // Started again, the WPAR runs with its new set: nothing pending.
  ASSERT_EQ(agent(data_a(), {"stopwpar", "sys"}).exit_code, 0);
  ASSERT_EQ(agent(data_a(), {"startwpar", "sys"}).exit_code, 0);
  ls = agent(data_a(), {"lswpar", "-o", "json", "sys"}).out;
  EXPECT_NE(ls.find("\"capabilitiesPending\": false"), std::string::npos) << ls;
  EXPECT_NE(agent(data_a(), {"clogin", "sys", "--", "grep", "CapBnd", "/proc/1/status"}).out.find("0000000000000020"),
            std::string::npos);
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

// ---- system WPARs with an address ------------------------------------------
//
// The topology, built per test (only addresses assigned here; X from the pid):
//   client netns (c0 10.214.X.2/24) <-veth-> root netns (wpmh… 10.214.X.1/24, the host interface)
//   root netns (wpm… 169.254.0.1/32) <-veth made by the agent-> WPAR netns (eth0 10.214.X.50/32)

constexpr int kListenPort = 7000;


// From a child in `netns_path`: connects to address:port, sends 'a', expects
// 'b' (wpm-test-listen's answer). True when it got it.
bool reaches(const std::string& netns_path, const std::string& address, int port) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) ::_exit(1);
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1) ::_exit(2);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS)
      ::_exit(3);
    pollfd p{s, POLLOUT, 0};
    if (::poll(&p, 1, 3000) != 1) ::_exit(4);  // proxy ARP answers within about a second
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) ::_exit(3);
    char c = 'a';
    if (::write(s, &c, 1) != 1) ::_exit(5);
    p = {s, POLLIN, 0};
    if (::poll(&p, 1, 3000) != 1 || ::read(s, &c, 1) != 1 || c != 'b') ::_exit(5);
    ::_exit(0);
  }
  return pid > 0 && wait_exit(pid, std::chrono::seconds(10)) == 0;
}

// The string value of "key" in JSON text (the first one), or empty.
std::string json_string(const std::string& text, const std::string& key) {
  std::string marker = "\"" + key + "\": \"";
  auto at = text.find(marker);
  if (at == std::string::npos) return "";
  at += marker.size();
  return text.substr(at, text.find('"', at) - at);
}

bool link_exists(const std::string& name) { return ::if_nametoindex(name.c_str()) != 0; }

std::string read_ip_forward() {
  std::string v = read_file("/proc/sys/net/ipv4/ip_forward");
  return v.substr(0, v.find('\n'));
}

class AgentNetwork : public Agent {
 protected:
  void SetUp() override {
    Agent::SetUp();
    if (IsSkipped()) return;
    if (!fs::exists(kIp) || !fs::exists(kNsenter))
      GTEST_SKIP() << "needs ip(8) (iproute2) and nsenter(1) (util-linux)";
    static int counter = 0;
    subnet_ = "10.214." + std::to_string(1 + ::getpid() % 250);
    address_ = subnet_ + ".50";
    host_if_ = "wpmh" + std::to_string(::getpid()) + "x" + std::to_string(++counter);
    saved_forward_ = read_ip_forward();
    client_.emplace(hold_namespace);
    ASSERT_TRUE(client_->ready()) << "the client namespace did not start";
    std::string ns = "--net=" + client_->netns_path();
    for (const auto& cmd : std::vector<std::vector<std::string>>{
             {kIp, "link", "add", host_if_, "type", "veth", "peer", "name", "c0", "netns",
              std::to_string(client_->pid())},
             {kIp, "addr", "add", subnet_ + ".1/24", "dev", host_if_},
             {kIp, "link", "set", host_if_, "up"},
             {kNsenter, ns, kIp, "addr", "add", subnet_ + ".2/24", "dev", "c0"},
             {kNsenter, ns, kIp, "link", "set", "c0", "up"},
             {kNsenter, ns, kIp, "link", "set", "lo", "up"},
         }) {
      auto r = run(cmd);
      ASSERT_EQ(r.exit_code, 0) << cmd[0] << " " << cmd[1] << " " << cmd[2] << ": " << r.err;
    }
  }
  void TearDown() override {
    // A WPAR whose supervisor a test killed: its init, then its empty cgroups.
    if (lost_init_ > 0 &&
        read_file("/proc/" + std::to_string(lost_init_) + "/comm") == "wpm-init\n") {
      ::kill(lost_init_, SIGKILL);
    }
    std::error_code ec;
    for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup", ec)) {
      std::error_code ec2;
      for (const auto& agent_dir : fs::directory_iterator(hierarchy.path() / "wpm", ec2)) {
        if (!agent_dir.path().filename().string().starts_with("agent-a-")) continue;
        // Bounded: the init's processes die within a moment of it.
        fs::path net1 = agent_dir.path() / "net1";
        wait_until([&] { return ::rmdir(net1.c_str()) == 0 || errno == ENOENT; },
                   lost_init_ > 0 ? 5s : 0s);
      }
    }
    Agent::TearDown();  // stops and removes the WPARs: their supervisors detach
    for (const auto& end : host_ends_) {
      if (link_exists(end)) run({kIp, "link", "del", end});
    }
    if (!host_if_.empty() && link_exists(host_if_)) run({kIp, "link", "del", host_if_});
    client_.reset();
    if (!saved_forward_.empty() && read_ip_forward() != saved_forward_) {
      std::ofstream("/proc/sys/net/ipv4/ip_forward") << saved_forward_ << "\n";
    }
  }
  // Creates and starts system WPAR `name` with `address_`, running the listener.
  RunResult make_listening(const std::string& name) {
    auto made = agent(data_a(), {"mkwpar", "-n", name, "--address", address_, "-s", "--",
                                 bin("wpm-test-listen"), std::to_string(kListenPort)});
    std::string json = agent(data_a(), {"lswpar", "-o", "json", name}).out;
    std::string end = json_string(json, "hostIfname");
    if (!end.empty()) host_ends_.push_back(end);  // for teardown, should the test fail
    return made;
  }
  bool reachable() {
    return wait_until([&] { return reaches(client_->netns_path(), address_, kListenPort); }, 15s);
  }
  std::string proxy_entries() { return run({kIp, "neigh", "show", "proxy", "dev", host_if_}).out; }

  static constexpr const char* kIp = "/usr/sbin/ip";
  static constexpr const char* kNsenter = "/usr/bin/nsenter";
  std::string subnet_, address_, host_if_, saved_forward_;
  std::vector<std::string> host_ends_;
  std::optional<NetnsChild> client_;
  pid_t lost_init_ = 0;
};

TEST_F(AgentNetwork, SystemWparWithAnAddressIsReachableFromTheHostSubnetAndStopDetachesIt) {
  auto made = make_listening("net1");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_NE(made.out.find("WPAR net1 has address " + address_ + " on " + host_if_),
            std::string::npos)
      << made.out;
  ASSERT_EQ(host_ends_.size(), 1u);
  const std::string end = host_ends_[0];
  EXPECT_TRUE(link_exists(end));
  EXPECT_NE(proxy_entries().find(address_), std::string::npos) << proxy_entries();
  EXPECT_EQ(read_ip_forward(), "1") << "attach turns IPv4 forwarding on";
  auto long_listing = agent(data_a(), {"lswpar", "-L", "net1"}).out;
  EXPECT_NE(long_listing.find("\"address\": \"" + address_ + "\""), std::string::npos)
      << long_listing;
  EXPECT_NE(long_listing.find("\"hostInterface\": \"" + host_if_ + "\""), std::string::npos);

  EXPECT_TRUE(reachable()) << read_file(data_a() + "/wpars/net1/console.log");

  ASSERT_EQ(agent(data_a(), {"stopwpar", "net1"}).exit_code, 0);
  EXPECT_FALSE(link_exists(end)) << "the host end outlived the WPAR";
  EXPECT_EQ(proxy_entries().find(address_), std::string::npos) << proxy_entries();
  EXPECT_EQ(run({kIp, "-4", "route", "show", "exact", address_ + "/32"}).out, "");
  EXPECT_NE(agent(data_a(), {"lswpar", "-o", "json", "net1"}).out.find("\"network\": null"),
            std::string::npos);

  // Started again it is reachable again; a forced stop detaches too.
  auto started = agent(data_a(), {"startwpar", "net1"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  EXPECT_TRUE(reachable());
  ASSERT_EQ(agent(data_a(), {"stopwpar", "-F", "net1"}).exit_code, 0);
  EXPECT_FALSE(link_exists(end));
  EXPECT_EQ(proxy_entries().find(address_), std::string::npos) << proxy_entries();
}

TEST_F(AgentNetwork, TheAddressOfAnotherMachineOnTheLinkIsRefused) {
  // The host reaches the client (a TCP attempt resolves its MAC): the
  // client's address is then known to be in use on the host interface.
  std::string client = subnet_ + ".2";
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  ::inet_pton(AF_INET, client.c_str(), &to.sin_addr);
  (void)::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to);
  auto complete = [&] {  // the client's entry, resolved (flags 0x2)
    std::istringstream lines(read_file("/proc/net/arp"));
    std::string line;
    while (std::getline(lines, line)) {
      if (line.starts_with(client + " ") && line.find(" 0x2 ") != std::string::npos) return true;
    }
    return false;
  };
  ASSERT_TRUE(wait_until(complete, 5s)) << read_file("/proc/net/arp");
  ::close(fd);
  auto refused = agent(data_a(), {"mkwpar", "-n", "net2", "--address", client});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("is in use by another machine on " + host_if_), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(data_a() + "/wpars/net2"));
}

TEST_F(AgentNetwork, AnAddressOutsideEveryHostSubnetIsRefusedAndNoWparIsMade) {
  // 198.51.100.0/24 is reserved for documentation (RFC 5737): no host has it.
  auto refused = agent(data_a(), {"mkwpar", "-n", "net2", "--address", "198.51.100.7", "-s"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("cannot create WPAR net2: address 198.51.100.7 is outside every "
                             "subnet of host"),
            std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find(subnet_ + ".0/24 on " + host_if_), std::string::npos)
      << "names the subnets there are: " << refused.err;
  EXPECT_EQ(agent(data_a(), {"lswpar", "net2"}).exit_code, 3);
  EXPECT_FALSE(fs::exists(data_a() + "/wpars/net2"));
  EXPECT_EQ(agent(data_a(), {"mkwpar", "-n", "net2", "--address", "not-an-address"}).exit_code, 1);
  EXPECT_EQ(agent(data_a(), {"mkwpar", "-n", "net2", "-N", "netmask=255.255.255.0"}).exit_code, 2)
      << "-N takes only address=";
  EXPECT_FALSE(fs::exists(data_a() + "/wpars/net2"));
}

TEST_F(AgentNetwork, ASecondWparWithTheSameAddressIsRefusedNamingTheFirst) {
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "net1", "-N", "address=" + address_}).exit_code, 0);
  EXPECT_NE(agent(data_a(), {"lswpar", "-o", "json", "net1"}).out.find(address_),
            std::string::npos);
  auto refused = agent(data_a(), {"mkwpar", "-n", "net2", "--address", address_});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("cannot create WPAR net2: address " + address_ +
                             " is already used by WPAR net1 on host "),
            std::string::npos)
      << refused.err;
  EXPECT_EQ(agent(data_a(), {"lswpar", "net2"}).exit_code, 3);
  EXPECT_FALSE(fs::exists(data_a() + "/wpars/net2"));
  // Another agent on this host has its own WPARs: there the address is free.
  EXPECT_EQ(agent(data_b(), {"mkwpar", "-n", "net2", "--address", address_}).exit_code, 0);

  // Checked again at start: without its host interface the WPAR cannot start
  // and stays Defined.
  ASSERT_EQ(run({kIp, "link", "del", host_if_}).exit_code, 0);
  auto start = agent(data_a(), {"startwpar", "net1"});
  EXPECT_EQ(start.exit_code, 1);
  EXPECT_NE(
      start.err.find("cannot start WPAR net1: address " + address_ + " is outside every subnet"),
      std::string::npos)
      << start.err;
  EXPECT_NE(agent(data_a(), {"lswpar", "net1"}).out.find(" D "), std::string::npos);
}

TEST_F(AgentNetwork, RemovingAWparWhoseSupervisorWasLostDetachesWhatItLeft) {
  ASSERT_EQ(make_listening("net1").exit_code, 0);
  ASSERT_EQ(host_ends_.size(), 1u);
  std::string json = agent(data_a(), {"lswpar", "-o", "json", "net1"}).out;
  pid_t supervisor = std::stoi(json.substr(json.find("\"supervisorPid\": ") + 17));
  pid_t init = std::stoi(json.substr(json.find("\"workloadPid\": ") + 15));
  lost_init_ = init;
  // The supervisor dies (nothing detaches) and its init with it (it holds
  // the init by PR_SET_PDEATHSIG): the kernel takes the pair with the WPAR's
  // namespace but not the proxy entry.
  ASSERT_EQ(::kill(supervisor, SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] { return ::kill(supervisor, 0) != 0; }, 10s));
  EXPECT_TRUE(wait_until([&] { return ::kill(init, 0) != 0; }, 10s)) << "the init outlived its supervisor";
  ASSERT_TRUE(wait_until([&] { return !link_exists(host_ends_[0]); }, 10s));
  EXPECT_NE(proxy_entries().find(address_), std::string::npos) << "nothing detached it yet";
  // What a restarted agent does with a lost supervisor (daemon.cpp reattach).
  std::string status_path = data_a() + "/wpars/net1/status.json";
  std::string status = read_file(status_path);
  auto at = status.find("\"state\": \"active\"");
  ASSERT_NE(at, std::string::npos) << status;
  status.replace(at, 17, "\"state\": \"broken\"");
  std::ofstream(status_path) << status;

  auto removed = agent(data_a(), {"rmwpar", "net1"});
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_EQ(proxy_entries().find(address_), std::string::npos) << proxy_entries();
  EXPECT_FALSE(fs::exists(data_a() + "/wpars/net1"));
  // The cgroups the lost supervisor left go in TearDown.
}

TEST_F(Agent, ASystemWparCheckpointedOnOneAgentRestartsOnAnotherWithItsFileSystems) {
  // The command writes a file into its root on its first start, then runs the counter.
  std::vector<std::string> made = {
      "mkwpar", "-c", "-n", "sys", "-s", "--", "/bin/sh", "-c",
      "[ -n \"$WPM_RESTORE_DIR\" ] || echo from-a > /wpm-agent-ckpt || exit 9\nexec \"$@\"",
      "sh"};
  // The counter writes at its root (what the WPAR's root owns, whether or not
  // the host's layers are idmapped here): into the upper layer.
  for (const auto& arg : counter()) made.push_back(arg == std::string(dir_ / "count") ? "/count" : arg);
  auto mk = agent(data_a(), made);
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  std::string count_a = data_a() + "/wpars/sys/fs/upper/count";
  ASSERT_TRUE(wait_until([&] { return !read_file(count_a).empty(); }, 10s));
  std::string state = dir_ / "statefile";
  auto ck = agent(data_a(), {"chkptwpar", "-d", state, "-k", "sys"});
  ASSERT_EQ(ck.exit_code, 0) << ck.err;
  EXPECT_TRUE(fs::exists(state + "/fs.tar.zst"));

  auto rs = agent(data_b(), {"restartwpar", "-d", state, "sys"});
  ASSERT_EQ(rs.exit_code, 0) << rs.err;
  auto seen = agent(data_b(), {"clogin", "sys", "--", "cat", "/wpm-agent-ckpt"});
  EXPECT_EQ(seen.out, "from-a\n") << seen.err;
  // Each agent's WPAR owns its files in its own range of host ids: the state
  // file holds the WPAR's own ids (the archive lists the file as root's).
  auto first_id = [&](const std::string& data) {
    std::string out = agent(data, {"lswpar", "-o", "json", "sys"}).out;
    auto at = out.find("\"firstHostId\": ");
    return at == std::string::npos ? 0ull : std::stoull(out.substr(at + 15));
  };
  struct stat on_a {}, on_b {};
  ASSERT_EQ(::stat((data_a() + "/wpars/sys/fs/upper/wpm-agent-ckpt").c_str(), &on_a), 0);
  ASSERT_EQ(::stat((data_b() + "/wpars/sys/fs/upper/wpm-agent-ckpt").c_str(), &on_b), 0);
  EXPECT_EQ(on_b.st_uid, first_id(data_b()));
  EXPECT_NE(on_a.st_uid, on_b.st_uid) << "two WPARs on one host never share a range";
  auto listed = run({"/usr/bin/tar", "--numeric-owner", "-I", "zstd", "-tvf", state + "/fs.tar.zst", "upper/wpm-agent-ckpt"});
  EXPECT_NE(listed.out.find(" 0/0 "), std::string::npos) << listed.out << listed.err;
  EXPECT_NE(agent(data_b(), {"lswpar", "sys"}).out.find(" A "), std::string::npos);
}

}  // namespace
}  // namespace wpm::testing
