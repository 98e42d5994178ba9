// System WPARs on real namespaces, through their supervisor and clogin
// (root): their own hostname, PID 1, network and file systems, writes that
// stay inside and survive stop and start, nothing mounted on the host, and
// the graceful stop that turns forced.

#include "agents/runtime/system_wpar.h"

#include <cap-ng.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agents/runtime/capabilities.h"
#include "agents/runtime/supervisor.h"
#include "agents/runtime/system_fs.h"

namespace wpm::runtime {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(SystemWparSpec, HostnameAndCapabilitiesAreStoredWithTheSpec) {
  std::string root = fmt::format("{}/system-spec-{}", WPM_TEST_TMP_DIR, ::getpid());
  WparFiles files(root, "s");
  ASSERT_TRUE(files.create_dir().has_value());
  WparSpec spec;
  spec.name = "s";
  spec.type = WparType::kSystem;
  spec.hostname = "web1";
  spec.capabilities = std::vector<std::string>{"cap_chown", "cap_net_admin"};
  ASSERT_TRUE(files.write_spec(spec).has_value());
  EXPECT_EQ(files.read_spec(), spec);
  spec.capabilities.reset();  // the default set stays "default" (null)
  ASSERT_TRUE(files.write_spec(spec).has_value());
  EXPECT_EQ(files.read_spec(), spec);
  EXPECT_TRUE(spec_to_json(spec)["capabilities"].is_null());
  spec.privileged = true;
  ASSERT_TRUE(files.write_spec(spec).has_value());
  EXPECT_EQ(files.read_spec(), spec);
  // A spec from before hardening has no privileged key: it runs filtered.
  auto old_spec = spec_to_json(spec);
  old_spec.erase("privileged");
  { std::ofstream(files.spec_path(), std::ios::trunc) << old_spec.dump(); }
  EXPECT_FALSE(files.read_spec()->privileged);
  spec.privileged = false;
  EXPECT_EQ(wpar_hostname(spec), "web1");
  spec.hostname.clear();
  EXPECT_EQ(wpar_hostname(spec), "s") << "the hostname defaults to the WPAR's name";
  fs::remove_all(root);
}

TEST(SystemWparSpec, AddressAndAttachedNetworkAreStoredWithSpecAndRecord) {
  std::string root = fmt::format("{}/system-net-{}", WPM_TEST_TMP_DIR, ::getpid());
  WparFiles files(root, "s");
  ASSERT_TRUE(files.create_dir().has_value());
  WparSpec spec{.name = "s", .type = WparType::kSystem, .address = "10.1.7.20"};
  ASSERT_TRUE(files.write_spec(spec).has_value());
  EXPECT_EQ(files.read_spec(), spec);
  EXPECT_EQ(spec_to_json(spec)["address"], "10.1.7.20");
  WparRecord record{.state = WparState::kActive, .supervisor_pid = 42, .workload_pid = 43};
  ASSERT_TRUE(files.write_record(record).has_value());
  EXPECT_EQ(files.read_record(), record);
  EXPECT_TRUE(record_to_json(record)["network"].is_null());
  record.network = VethPlan{.host_ifname = "wpm0123456789ab",
                            .address = *parse_ipv4("10.1.7.20"),
                            .host_interface = "eth2",
                            .host_address = *parse_ipv4("10.1.7.1")};
  record.forwarding_enabled = true;
  ASSERT_TRUE(files.write_record(record).has_value());
  EXPECT_EQ(files.read_record(), record);
  EXPECT_EQ(record_to_json(record)["network"]["address"], "10.1.7.20");
  // A record whose network cannot be read back is corrupt, not "no network".
  auto text = record_to_json(record);
  text["network"]["hostAddress"] = "not-an-address";
  std::ofstream(files.record_path()) << text.dump();
  auto bad = files.read_record();
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, ErrorCode::kCorruption);
  EXPECT_NE(bad.error().message.find("network.hostAddress 'not-an-address'"), std::string::npos)
      << bad.error().message;
  fs::remove_all(root);
}

class SystemWpar : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for namespaces, mounts and cgroups";
    if (slurp("/proc/filesystems").find("\toverlay\n") == std::string::npos) {
      GTEST_SKIP() << "the kernel has no overlayfs (a system WPAR's root is an overlay)";
    }
    static int counter = 0;
    root_ = fmt::format("{}/system-wpar-{}-{}", WPM_TEST_TMP_DIR, ::getpid(), ++counter);
    fs::create_directories(root_);
    cgroup_ = fmt::format("wpm-test/sys-{}-{}", ::getpid(), counter);
  }
  void TearDown() override {
    if (root_.empty()) return;
    if (auto r = files().read_record(); r && supervisor_alive(r->supervisor_pid)) {
      ::kill(r->supervisor_pid, SIGQUIT);
      wait_until_ended(files(), 10s);
    }
    EXPECT_EQ(slurp("/proc/self/mountinfo").find(root_), std::string::npos)
        << "a mount leaked to the host";
    std::error_code ec;
    fs::remove_all(root_, ec);
    if (auto parent = CgroupSet::create(CgroupLayout::detect(), "wpm-test")) (void)parent->remove();
  }
  WparFiles files() const { return WparFiles(root_, "w"); }
  SystemFsPaths paths() const { return SystemFsPaths::of(files().dir()); }

  Result<WparRecord> start(WparSpec spec) {
    EXPECT_TRUE(files().create_dir().has_value());
    spec.name = "w";
    spec.type = WparType::kSystem;
    EXPECT_TRUE(files().write_spec(spec).has_value());
    return start_supervisor(SupervisorLaunch{WPM_SUPERVISOR, root_, "w", cgroup_, 10s});
  }
  Result<WparRecord> start_again() {
    return start_supervisor(SupervisorLaunch{WPM_SUPERVISOR, root_, "w", cgroup_, 10s});
  }
  std::optional<WparRecord> stop(StopMode mode) {
    auto r = files().read_record();
    if (!r || !stop_supervisor(*r, mode)) return std::nullopt;
    if (!wait_until_ended(files(), 20s)) return std::nullopt;
    return files().read_record().value_or(WparRecord{});
  }
  // clogin in a child process (setns of the PID namespace would otherwise
  // stay with this test process); returns the command's exit code.
  int login(const std::string& script) {
    pid_t child = ::fork();
    if (child == 0) {
      auto spec = files().read_spec();
      auto record = files().read_record();
      auto host = host_bounding_set();
      if (!spec || !record || !host) ::_exit(200);
      auto caps = wpar_capabilities(spec->capabilities, *host);
      if (!caps) ::_exit(201);
      auto rc =
          runtime::login(LoginRequest{*spec, *record, cgroup_, {"/bin/sh", "-c", script}, *caps});
      ::_exit(rc ? *rc : 202);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // The WPAR's /tmp seen from the host.
  std::string tmp_file(const std::string& name) const { return slurp(paths().tmp + "/" + name); }

  std::string root_;
  std::string cgroup_;
};

TEST_F(SystemWpar, SeesItsOwnHostnamePid1AndOnlyLoopback) {
  WparSpec spec;
  spec.hostname = "wpmtest-host";
  auto started = start(spec);
  ASSERT_TRUE(started.has_value()) << started.error().message;
  EXPECT_EQ(started->state, WparState::kActive);
  ASSERT_EQ(login("hostname > /tmp/o; cat /proc/1/comm >> /tmp/o; ls /sys/class/net >> /tmp/o; "
                  "cat /etc/hostname >> /tmp/o; echo $$ > /tmp/pid"),
            0);
  EXPECT_EQ(tmp_file("o"), "wpmtest-host\nwpm-init\nlo\nwpmtest-host\n");
  int pid = std::stoi(tmp_file("pid"));
  EXPECT_GT(pid, 1);
  EXPECT_LT(pid, 100) << "the shell's pid is its PID namespace's, not the host's";
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  EXPECT_NE(std::string(host), "wpmtest-host") << "the host's hostname changed";
}

TEST_F(SystemWpar, CannotWriteTheHostsUsrAndKeepsTheDefaultCapabilitySet) {
  auto started = start(WparSpec{});
  ASSERT_TRUE(started.has_value()) << started.error().message;
  EXPECT_NE(login("touch /usr/wpm-should-not-exist 2>/tmp/err"), 0);
  EXPECT_NE(tmp_file("err").find("Read-only file system"), std::string::npos) << tmp_file("err");
  EXPECT_FALSE(fs::exists("/usr/wpm-should-not-exist"));
  EXPECT_NE(login("mount -t tmpfs none /mnt 2>/dev/null"), 0) << "no cap_sys_admin by default";
  ASSERT_EQ(
      login("grep CapBnd /proc/self/status > /tmp/caps; grep CapBnd /proc/1/status >> /tmp/caps"),
      0);
  auto host = host_bounding_set();
  ASSERT_TRUE(host.has_value());
  auto want = wpar_capabilities(std::nullopt, *host);
  ASSERT_TRUE(want.has_value());
  uint64_t mask = 0;
  for (const auto& c : *want) mask |= 1ull << capng_name_to_capability(c.substr(4).c_str());
  std::string line = fmt::format("CapBnd:\t{:016x}\n", mask);
  EXPECT_EQ(tmp_file("caps"), line + line) << "the init and what runs inside hold the WPAR's set";
}

// Changing the host's files in its upper layer takes a root that owns them
// inside: its own user namespace where the host can idmap its layers, else
// (an overlayfs root) a privileged WPAR, which keeps the host's ids.
WparSpec changing_host_files() {
  WparSpec spec;
  if (auto idmap = can_idmap_host_layers(); !idmap) {
    std::printf("the host's layers cannot be idmapped here (%s): a privileged WPAR changes them\n",
                idmap.error().message.c_str());
    spec.privileged = true;
  }
  return spec;
}

TEST_F(SystemWpar, WritesStayInsideAndSurviveStopAndStart) {
  ASSERT_TRUE(start(changing_host_files()).has_value());
  ASSERT_EQ(login("echo etc > /etc/wpm-test-file && echo var > /var/wpm-test-file && "
                  "echo home > /home/wpm-test-file && echo tmp > /tmp/wpm-test-file"),
            0);
  for (const char* dir : {"/etc", "/var", "/home"}) {
    EXPECT_FALSE(fs::exists(std::string(dir) + "/wpm-test-file"))
        << dir << ": the write reached the host";
  }
  auto stopped = stop(StopMode::kGraceful);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(stopped->state, WparState::kDefined);
  auto again = start_again();
  ASSERT_TRUE(again.has_value()) << again.error().message;
  ASSERT_EQ(login("cat /etc/wpm-test-file /var/wpm-test-file /home/wpm-test-file "
                  "/tmp/wpm-test-file > /tmp/all"),
            0);
  EXPECT_EQ(tmp_file("all"), "etc\nvar\nhome\ntmp\n");
}

TEST_F(SystemWpar, ALinkPlantedInItsRootNeverMakesTheInitWriteOnTheHost) {
  std::string canary = root_ + "/canary";
  std::ofstream(canary) << "host\n";
  ASSERT_TRUE(start(changing_host_files()).has_value());
  // The WPAR's root replaces files the init writes at every start with links
  // to a host file, absolute and relative.
  ASSERT_EQ(login(fmt::format("ln -sf {} /etc/hosts && ln -sf ../../../../../../../..{} /etc/hostname",
                              canary, canary)),
            0);
  ASSERT_TRUE(stop(StopMode::kGraceful).has_value());
  auto again = start_again();
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(slurp(canary), "host\n") << "the init wrote through the WPAR's link";
  ASSERT_EQ(login("test ! -L /etc/hosts && grep -q 127.0.0.1 /etc/hosts && hostname > /tmp/h"), 0);
  EXPECT_EQ(tmp_file("h"), "w\n");
}

TEST_F(SystemWpar, TheAgentsFilesHostSecretsAndDevicesAreOutOfReach) {
  ASSERT_TRUE(start(WparSpec{}).has_value());
  // The agent's data directory (here the test's root) is an empty, read-only tmpfs inside.
  EXPECT_NE(login(fmt::format("ls {}/w/spec.json 2>/dev/null", root_)), 0) << "another WPAR's files are visible";
  EXPECT_NE(login(fmt::format("touch {}/x 2>/dev/null", root_)), 0);
  // The host's password hashes are not the WPAR's.
  ASSERT_EQ(login("cut -d: -f2 /etc/shadow | sort -u > /tmp/pw"), 0);
  EXPECT_TRUE(tmp_file("pw").empty() || tmp_file("pw") == "*\n") << tmp_file("pw");
  // No device node it could make would open: no cap_mknod, and nodev everywhere.
  EXPECT_NE(login("mknod /tmp/disk b 8 0 2>/dev/null"), 0);
  ASSERT_EQ(login("awk '$5 == \"/\" || $5 == \"/tmp\" || $5 == \"/var\" || $5 == \"/home\" || "
                  "$5 == \"/root\"' /proc/self/mountinfo > /tmp/mi"),
            0);
  std::istringstream lines(tmp_file("mi"));
  std::string line;
  int mounts = 0;
  while (std::getline(lines, line)) {
    ++mounts;
    EXPECT_NE(line.find("nodev"), std::string::npos) << line;
  }
  EXPECT_EQ(mounts, 5);
  // /dev holds its nodes and nothing can be added.
  EXPECT_NE(login("touch /dev/new 2>/dev/null"), 0);
}

TEST_F(SystemWpar, AnAgentInAChrootStillGivesTheWparItsOwnRootAndCloginLandsInIt) {
  // As on a CI machine that runs everything in a chroot: pivot_root there
  // replaces the chroot, not the namespace's root, and setns puts clogin at
  // the namespace's root. The WPAR must still be rooted at its own root.
  std::string marker = fmt::format("/usr/wpm-chroot-test-{}", ::getpid());
  std::string jail = root_ + "/jail";
  fs::create_directories(jail);
  ASSERT_TRUE(files().create_dir().has_value());
  WparSpec spec;
  spec.name = "w";
  spec.type = WparType::kSystem;
  ASSERT_TRUE(files().write_spec(spec).has_value());
  pid_t child = ::fork();
  if (child == 0) {
    // A private mount namespace whose chroot is a recursive bind of "/".
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("/", jail.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0 || ::chroot(jail.c_str()) != 0 ||
        ::chdir("/") != 0) {
      ::_exit(90);
    }
    auto started = start_supervisor(SupervisorLaunch{WPM_SUPERVISOR, root_, "w", cgroup_, 10s});
    if (!started) ::_exit(91);
    ::_exit(login(fmt::format("touch {} 2>/dev/null; hostname > /tmp/h", marker)) == 0 ? 0 : 92);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(fs::exists(marker)) << "clogin wrote on the host's /usr";
  ::unlink(marker.c_str());
  EXPECT_EQ(tmp_file("h"), "w\n") << "clogin did not land in the WPAR";
}

TEST_F(SystemWpar, GracefulStopPassesToItsProcessesAndTheNamespacesGo) {
  WparSpec spec;
  spec.command = {"/bin/sleep", "1000"};
  auto started = start(spec);
  ASSERT_TRUE(started.has_value()) << started.error().message;
  std::string net_ns =
      fs::read_symlink(fmt::format("/proc/{}/ns/net", started->workload_pid)).string();
  EXPECT_NE(net_ns, fs::read_symlink("/proc/self/ns/net").string()) << "its own network namespace";
  auto t0 = std::chrono::steady_clock::now();
  auto stopped = stop(StopMode::kGraceful);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "the init did not pass the stop on";
  EXPECT_EQ(stopped->exit_code, 0) << "the init exits once its children are gone";
  EXPECT_FALSE(fs::exists(fmt::format("/proc/{}", started->workload_pid)));
  auto layout = CgroupLayout::detect();
  for (const auto& [name, c] : layout.controllers)
    EXPECT_FALSE(fs::exists(c.mount + "/" + cgroup_)) << name;
}

TEST_F(SystemWpar, GracefulStopTurnsForcedAfterTheTimeout) {
  WparSpec spec;
  spec.stop_timeout_s = 1;
  spec.command = {"/bin/sh", "-c",
                  "trap '' TERM; echo ready > /tmp/ready; while :; do sleep 0.1; done"};
  auto started = start(spec);
  ASSERT_TRUE(started.has_value()) << started.error().message;
  for (int i = 0; i < 500 && tmp_file("ready").empty(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(tmp_file("ready"), "ready\n");
  auto stopped = stop(StopMode::kGraceful);
  ASSERT_TRUE(stopped.has_value()) << "the workload ignored SIGTERM and was not killed";
  EXPECT_EQ(stopped->exit_signal, SIGKILL);
  EXPECT_GE(stopped->ended_at_ns - started->started_at_ns, 900'000'000)
      << "forced before the timeout";
}

TEST_F(SystemWpar, LoginReturnsTheCommandsExitCode) {
  ASSERT_TRUE(start(WparSpec{}).has_value());
  EXPECT_EQ(login("exit 7"), 7);
  EXPECT_EQ(login("kill -TERM $$"), 128 + SIGTERM);
  EXPECT_EQ(login("/nonexistent/command"), 127);
}

TEST_F(SystemWpar, ACommandThatCannotRunLeavesItBrokenWithTheReason) {
  WparSpec spec;
  spec.command = {"/nonexistent/wpm-command"};
  auto started = start(spec);
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find("cannot run '/nonexistent/wpm-command'"),
            std::string::npos)
      << started.error().message;
  EXPECT_EQ(files().read_record()->state, WparState::kBroken);
}

}  // namespace
}  // namespace wpm::runtime
