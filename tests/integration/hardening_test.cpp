// Hardening of WPARs against their own root user (agents/README.md "What
// keeps the host safe from a WPAR's root user"), tested from inside real
// WPARs as root: the system call filter, application WPARs' namespaces,
// devices, and system WPARs' own user namespaces.

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <fstream>
#include <sstream>

#include "tests/integration/agent_fixture.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

// The system call filter (agents/runtime/seccomp.h), seen from inside: the
// same probe (wpm-test-syscalls: each refused call with arguments that change
// nothing when it is allowed) in a filtered WPAR and in a privileged one with
// the same capabilities (all of the host's). The filter's errno in the first,
// something else in the second: the answer is the filter's, not the kernel's
// (this kernel lacks modules and kexec, so a bare failure would prove nothing).
std::map<std::string, int> probe_results(const std::string& console) {
  std::map<std::string, int> out;
  std::istringstream in(console);
  std::string name;
  int err = 0;
  while (in >> name >> err) out[name] = err;
  return out;
}

bool sysctl_on(const char* path) { return read_file(path).starts_with("1"); }

// Whether this process may make a user namespace (not in a chroot, where the
// kernel refuses it with EPERM whatever the filter).
bool can_make_user_namespace() {
  pid_t pid = ::fork();
  if (pid == 0) _exit(::unshare(CLONE_NEWUSER) == 0 ? 0 : 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST_F(Agent, TheFilterAnswersEachRefusedCallWithItsOwnErrnoAndAPrivilegedWparRunsWithoutIt) {
  auto filtered = agent(data_a(), {"wparexec", "-n", "filtered", "--capabilities", "all", "--", bin("wpm-test-syscalls")});
  ASSERT_EQ(filtered.exit_code, 0) << filtered.err;
  auto privileged = agent(data_a(), {"wparexec", "-n", "privileged", "--privileged", "--capabilities", "all", "--",
                                     bin("wpm-test-syscalls")});
  ASSERT_EQ(privileged.exit_code, 0) << privileged.err;
  ASSERT_EQ(exit_code_of(data_a(), "filtered"), 0);
  ASSERT_EQ(exit_code_of(data_a(), "privileged"), 0);
  auto in = probe_results(read_file(data_a() + "/wpars/filtered/console.log"));
  auto out = probe_results(read_file(data_a() + "/wpars/privileged/console.log"));
  const std::vector<std::string> refused = {
      "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf", "perf_event_open",
      "add_key", "request_key", "keyctl", "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
      "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "swapon", "swapoff", "reboot", "acct",
      "open_by_handle_at", "quotactl", "syslog", "iopl", "ioperm", "mount", "umount2", "pivot_root", "fsopen",
      "open_tree", "move_mount", "mount_setattr", "ioctl(TIOCSTI)", "unshare(CLONE_NEWUSER)", "clone(CLONE_NEWUSER)"};
  // Where the host itself refuses a call with EPERM, the two cannot differ.
  const bool modules_off = sysctl_on("/proc/sys/kernel/modules_disabled");
  const bool kexec_off = sysctl_on("/proc/sys/kernel/kexec_load_disabled");
  const bool userns_off = !can_make_user_namespace();
  if (userns_off) std::printf("this host refuses user namespaces to root (a chroot?): the filter's EPERM for them is "
                              "not told apart from the kernel's here\n");
  for (const auto& call : refused) {
    ASSERT_TRUE(in.contains(call) && out.contains(call)) << call << " not probed";
    EXPECT_EQ(in[call], EPERM) << call << " in the filtered WPAR";
    if ((modules_off && call.ends_with("_module")) || (kexec_off && call.starts_with("kexec")) ||
        (userns_off && call.find("CLONE_NEWUSER") != std::string::npos)) {
      continue;
    }
    EXPECT_NE(out[call], EPERM) << call << " in the privileged WPAR: the kernel refused it too";
  }
  EXPECT_EQ(in["clone3"], ENOSYS) << "clone3 answered ENOSYS, so the C library falls back to clone";
  EXPECT_NE(out["clone3"], ENOSYS);
  EXPECT_EQ(in["fork"], 0) << "a plain fork is not refused";
  EXPECT_EQ(in["NoNewPrivs"], 1);
  EXPECT_EQ(in["Seccomp"], 2) << "a filter is loaded";
  EXPECT_EQ(out["NoNewPrivs"], 0);
  EXPECT_EQ(out["Seccomp"], 0);
  // Shown where an operator looks.
  auto ls = agent(data_a(), {"lswpar"}).out;
  EXPECT_NE(ls.find("filtered                 D     A    -"), std::string::npos) << ls;
  EXPECT_NE(ls.find("privileged               D     A    yes"), std::string::npos) << ls;
  EXPECT_NE(agent(data_a(), {"lswpar", "-o", "json", "privileged"}).out.find("\"privileged\": true"), std::string::npos);
}

TEST_F(Agent, ASystemWparsInitAndEveryLoginRunUnderTheFilter) {
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "sys", "-s"}).exit_code, 0);
  auto status = agent(data_a(), {"clogin", "sys", "--", "sh", "-c",
                                 "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status /proc/1/status"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  for (const char* line : {"/proc/self/status:NoNewPrivs:\t1", "/proc/self/status:Seccomp:\t2",
                           "/proc/1/status:NoNewPrivs:\t1", "/proc/1/status:Seccomp:\t2"}) {
    EXPECT_NE(status.out.find(line), std::string::npos) << line << " in\n" << status.out;
  }
  auto userns = agent(data_a(), {"clogin", "sys", "--", "unshare", "-U", "true"});
  EXPECT_NE(userns.exit_code, 0);
  EXPECT_NE(userns.err.find("Operation not permitted"), std::string::npos) << userns.err;
  ASSERT_EQ(agent(data_a(), {"stopwpar", "-F", "sys"}).exit_code, 0);
}

// Devices (agents/runtime/devices.h): a WPAR's root with every capability
// opens and makes only the minimal /dev's devices; a privileged WPAR opens
// the host's. /dev/kmsg stands for a host device (it opens for root here).
TEST_F(Agent, AWparOpensAndMakesOnlyTheMinimalDevicesAndAPrivilegedOneTheHosts) {
  if (::access("/dev/kmsg", R_OK) != 0) GTEST_SKIP() << "no /dev/kmsg on this host";
  const std::string script = "dd if=/dev/kmsg of=/dev/null count=0 2>&1; echo dev=$?";
  ASSERT_EQ(agent(data_a(), {"wparexec", "-n", "devapp", "--capabilities", "all", "--", "/bin/sh", "-c", script})
                .exit_code, 0);
  ASSERT_EQ(agent(data_a(), {"wparexec", "-n", "devraw", "--privileged", "--capabilities", "all", "--", "/bin/sh",
                             "-c", script}).exit_code, 0);
  ASSERT_EQ(exit_code_of(data_a(), "devapp"), 0);
  ASSERT_EQ(exit_code_of(data_a(), "devraw"), 0);
  const std::string in = read_file(data_a() + "/wpars/devapp/console.log");
  EXPECT_NE(in.find("Operation not permitted"), std::string::npos) << in;
  EXPECT_NE(in.find("dev=1"), std::string::npos) << in;
  const std::string out = read_file(data_a() + "/wpars/devraw/console.log");
  EXPECT_NE(out.find("dev=0"), std::string::npos) << out;
  // A system WPAR's root, in its own user namespace, makes no device node at
  // all, even with every capability (cap_mknod counts in the host's user
  // namespace only).
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "devsys", "-s", "--capabilities", "all"}).exit_code, 0);
  const std::string mknods = "mknod /tmp/null2 c 1 3; echo null=$?; mknod /tmp/kmsg2 c 1 11; echo kmsg=$?";
  auto made = agent(data_a(), {"clogin", "devsys", "--", "sh", "-c", mknods});
  EXPECT_NE(made.out.find("null=1"), std::string::npos) << made.out << made.err;
  EXPECT_NE(made.out.find("kmsg=1"), std::string::npos) << made.out << made.err;
  EXPECT_NE(made.err.find("Operation not permitted"), std::string::npos) << made.err;
  ASSERT_EQ(agent(data_a(), {"stopwpar", "-F", "devsys"}).exit_code, 0);
}

// An application WPAR has its own PID and IPC namespaces (and a /proc of
// them): it sees and signals only its own processes; a privileged one keeps
// the host's. Its init passes a stop on and reports how the command ended.
TEST_F(Agent, AnApplicationWparSeesAndSignalsOnlyItsOwnProcessesAndAPrivilegedOneTheHosts) {
  const std::string script = fmt::format(
      "echo pid=$$; echo procs=$(ls /proc | grep -c '^[0-9]'); kill -0 {} 2>/dev/null; echo kill=$?; "
      "echo ipc=$(readlink /proc/self/ns/ipc); "
      // The value it has, written back: a change to nothing where it is allowed.
      "d=$(cat /proc/sys/kernel/domainname); echo \"$d\" > /proc/sys/kernel/domainname 2>/dev/null; echo sysctl=$?; "
      // Opened for writing, nothing written: a change to nothing where it is allowed.
      "( : >> /sys/kernel/profiling ) 2>/dev/null; echo sysfs=$?",
      ::getpid());
  ASSERT_EQ(agent(data_a(), {"wparexec", "-n", "apppid", "--", "/bin/sh", "-c", script}).exit_code, 0);
  ASSERT_EQ(agent(data_a(), {"wparexec", "-n", "appraw", "--privileged", "--", "/bin/sh", "-c", script}).exit_code, 0);
  ASSERT_EQ(exit_code_of(data_a(), "apppid"), 0);
  ASSERT_EQ(exit_code_of(data_a(), "appraw"), 0);
  auto value = [](const std::string& text, const std::string& key) {
    auto at = text.find(key + "=");
    return at == std::string::npos ? std::string("?") : text.substr(at + key.size() + 1, text.find('\n', at) - at - key.size() - 1);
  };
  const std::string host_ipc = fs::read_symlink("/proc/self/ns/ipc").string();
  const std::string in = read_file(data_a() + "/wpars/apppid/console.log");
  EXPECT_EQ(value(in, "pid"), "2") << "the command is the first child of the WPAR's init\n" << in;
  EXPECT_LT(std::stoi(value(in, "procs")), 8) << in;
  EXPECT_EQ(value(in, "kill"), "1") << "a host process cannot be signalled\n" << in;
  EXPECT_NE(value(in, "ipc"), host_ipc) << in;
  EXPECT_NE(value(in, "sysctl"), "0") << "/proc/sys is read-only\n" << in;
  EXPECT_NE(value(in, "sysfs"), "0") << "/sys is read-only\n" << in;
  const std::string out = read_file(data_a() + "/wpars/appraw/console.log");
  EXPECT_NE(value(out, "pid"), "2") << out;
  EXPECT_GT(std::stoi(value(out, "procs")), 8) << out;
  EXPECT_EQ(value(out, "kill"), "0") << out;
  EXPECT_EQ(value(out, "ipc"), host_ipc) << out;
  EXPECT_EQ(value(out, "sysctl"), "0") << out;
  EXPECT_EQ(value(out, "sysfs"), "0") << out;
  ASSERT_EQ(agent(data_a(), {"rmwpar", "apppid"}).exit_code, 0);

  // A login joins its namespaces; a stop goes through its init to the
  // command, which ends by the signal as it would without one.
  ASSERT_EQ(agent(data_a(), {"wparexec", "-n", "apppid", "--", "/bin/sleep", "60"}).exit_code, 0);
  auto login = agent(data_a(), {"clogin", "apppid", "--", "sh", "-c", "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'"});
  ASSERT_EQ(login.exit_code, 0) << login.err;
  EXPECT_TRUE(login.out.starts_with("wpm-init\n")) << login.out;
  EXPECT_LT(std::stoi(login.out.substr(login.out.find('\n') + 1)), 8) << login.out;
  ASSERT_EQ(agent(data_a(), {"stopwpar", "apppid"}).exit_code, 0);
  auto ls = agent(data_a(), {"lswpar", "-o", "json", "apppid"}).out;
  EXPECT_NE(ls.find("\"exitSignal\": 15"), std::string::npos) << ls;
}

// ---- system WPARs in their own user namespaces (agents/runtime/id_map.h) ----

// lswpar's JSON object of one WPAR.
nlohmann::json wpar_of(const RunResult& listed) {
  auto j = nlohmann::json::parse(listed.out, nullptr, false);
  return j.is_array() && j.size() == 1 ? j[0] : nlohmann::json();
}

uid_t owner_of(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? st.st_uid : static_cast<uid_t>(-1);
}

TEST_F(Agent, ASystemWparsRootIsAnUnprivilegedHostIdOfARangeOfItsOwn) {
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "idsys", "-s"}).exit_code, 0);
  ASSERT_EQ(agent(data_b(), {"mkwpar", "-n", "idsys", "-s"}).exit_code, 0);
  auto a = wpar_of(agent(data_a(), {"lswpar", "-o", "json", "idsys"}));
  auto b = wpar_of(agent(data_b(), {"lswpar", "-o", "json", "idsys"}));
  ASSERT_TRUE(a["userNamespace"].is_object()) << a.dump(2);
  ASSERT_TRUE(b["userNamespace"].is_object()) << b.dump(2);
  const uint32_t first = a["userNamespace"]["firstHostId"], count = a["userNamespace"]["count"];
  const uint32_t other = b["userNamespace"]["firstHostId"];
  EXPECT_EQ(count, 65536u);
  EXPECT_GT(first, 65535u) << "never the host's own users";
  EXPECT_TRUE(other >= first + count || first >= other + count) << "two WPARs on a host never share an id";
  // Inside: root, mapped to the range; a file it makes is the range's on the host.
  auto inside = agent(data_a(), {"clogin", "idsys", "--", "sh", "-c",
                                 "id -u; cat /proc/self/uid_map /proc/sys/user/max_user_namespaces; "
                                 "echo x > /made-inside && echo x > /tmp/made-inside; " +
                                     fmt::format("kill -0 {} 2>/dev/null && echo host-signalled", ::getpid())});
  ASSERT_EQ(inside.exit_code, 1) << inside.out << inside.err;  // the kill -0's
  EXPECT_EQ(inside.out.find("host-signalled"), std::string::npos) << "a host process was reached";
  std::istringstream lines(inside.out);
  std::string uid, inner, outer, length, limit;
  lines >> uid >> inner >> outer >> length >> limit;
  EXPECT_EQ(uid, "0");
  EXPECT_EQ(inner + " " + outer + " " + length, fmt::format("0 {} 65536", first)) << inside.out;
  EXPECT_EQ(limit, "0") << "no user namespace can be made inside";
  EXPECT_EQ(owner_of(data_a() + "/wpars/idsys/fs/upper/made-inside"), first);
  EXPECT_EQ(owner_of(data_a() + "/wpars/idsys/fs/tmp/made-inside"), first);
  EXPECT_EQ(owner_of(data_a() + "/wpars/idsys/fs"), 0u) << "fs/ itself stays the host root's (mode 0700)";
  // A set-user-id root binary gains a user of the WPAR nothing (no_new_privs,
  // and root is not the host's anyway).
  auto setuid = agent(data_a(), {"clogin", "idsys", "--", "sh", "-c",
                                 "cp /usr/bin/id /root/id-setuid && chmod 4755 /root/id-setuid && "
                                 "setpriv --reuid 1000 --regid 1000 --clear-groups /root/id-setuid -u"});
  EXPECT_EQ(setuid.out, "1000\n") << setuid.err;
  EXPECT_EQ(owner_of(data_a() + "/wpars/idsys/fs/root/id-setuid"), first);
  // A privileged system WPAR keeps the host's ids.
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "idpriv", "--privileged", "-s"}).exit_code, 0);
  auto host_ids = agent(data_a(), {"clogin", "idpriv", "--", "cat", "/proc/self/uid_map"});
  EXPECT_NE(host_ids.out.find("0          0 4294967295"), std::string::npos) << host_ids.out;
  EXPECT_TRUE(wpar_of(agent(data_a(), {"lswpar", "-o", "json", "idpriv"}))["userNamespace"].is_null());
  // Removed, a WPAR's range is free again: the next one takes it.
  for (const char* n : {"idsys", "idpriv"}) ASSERT_EQ(agent(data_a(), {"rmwpar", "-F", n}).exit_code, 0);
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "idsys", "-s"}).exit_code, 0);
  EXPECT_EQ(wpar_of(agent(data_a(), {"lswpar", "-o", "json", "idsys"}))["userNamespace"]["firstHostId"], first);
}

// Where the host's layers cannot be idmapped (an overlayfs root; here turned
// off by agent.toml), their files show the overflow id inside and are
// read-only to the WPAR; lswpar says so. What is the WPAR's own stays writable.
TEST_F(Agent, WithoutIdmappedLayersTheHostsFilesShowTheOverflowIdAndAreReadOnly) {
  fs::create_directories(data_b());
  {
    std::ofstream toml(data_b() + "/agent.toml");
    toml << "[agent]\nidmap_host_layers = false\n";
  }
  ASSERT_EQ(agent(data_b(), {"mkwpar", "-n", "idflat", "-s"}).exit_code, 0);
  auto w = wpar_of(agent(data_b(), {"lswpar", "-o", "json", "idflat"}));
  EXPECT_EQ(w["userNamespace"]["hostLayers"], "overflow") << w.dump(2);
  const std::string note = w["userNamespace"]["note"].get<std::string>();
  EXPECT_NE(note.find("read-only"), std::string::npos) << note;
  EXPECT_NE(note.find("idmap_host_layers"), std::string::npos) << note;
  auto inside = agent(data_b(), {"clogin", "idflat", "--", "sh", "-c",
                                 "stat -c %u /etc /usr/bin/id; touch /etc/wpm-test 2>&1; echo etc=$?; "
                                 "touch /wpm-test /tmp/wpm-test /var/wpm-test; echo own=$?"});
  EXPECT_EQ(inside.out.substr(0, 12), "65534\n65534\n") << inside.out;
  EXPECT_NE(inside.out.find("Permission denied"), std::string::npos) << inside.out;
  EXPECT_NE(inside.out.find("etc=1"), std::string::npos) << inside.out;
  EXPECT_NE(inside.out.find("own=0"), std::string::npos) << inside.out;
  EXPECT_NE(agent(data_b(), {"lswpar", "-L", "idflat"}).out.find("\"hostLayers\": \"overflow\""), std::string::npos);
}

// Where they can (ext4, xfs, btrfs, tmpfs), the host's files show their real
// owners inside and the WPAR's root changes them in its upper layer.
TEST_F(Agent, WithIdmappedLayersTheHostsFilesShowTheirOwnersAndTheWparsRootMayChangeThem) {
  ASSERT_EQ(agent(data_a(), {"mkwpar", "-n", "idsys", "-s"}).exit_code, 0);
  auto w = wpar_of(agent(data_a(), {"lswpar", "-o", "json", "idsys"}));
  if (w["userNamespace"]["hostLayers"] != "idmapped") {
    GTEST_SKIP() << "this host's root cannot be idmapped: " << w["userNamespace"]["note"].get<std::string>();
  }
  const uint32_t first = w["userNamespace"]["firstHostId"];
  auto inside = agent(data_a(), {"clogin", "idsys", "--", "sh", "-c",
                                 "stat -c %u /etc /usr/bin/id; echo wpm >> /etc/wpm-agent-test && echo etc=$?"});
  EXPECT_EQ(inside.out, "0\n0\netc=0\n") << inside.err;
  EXPECT_EQ(owner_of(data_a() + "/wpars/idsys/fs/upper/etc/wpm-agent-test"), first);
  EXPECT_EQ(owner_of(data_a() + "/wpars/idsys/fs/upper/etc"), first) << "copied up with its owner, root, mapped";
  EXPECT_FALSE(fs::exists("/etc/wpm-agent-test")) << "the write reached the host";
}

}  // namespace
}  // namespace wpm::testing
