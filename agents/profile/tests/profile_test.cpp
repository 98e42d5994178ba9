#include "agents/profile/profile.h"

#include <gtest/gtest.h>
#include <sys/utsname.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace wpm::profile {
namespace {

// ---- pure parsers ------------------------------------------------------------------

TEST(ProfileParse, OsReleaseStripsQuotesAndComments) {
  auto os = parse_os_release(
      "# comment\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID='12'\n\n");
  EXPECT_EQ(os["ID"], "debian");
  EXPECT_EQ(os["VERSION_ID"], "12");
  EXPECT_EQ(os["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
  EXPECT_EQ(os.size(), 3u);
}

TEST(ProfileParse, CpuInfoGivesModelSpeedFlagsAndProcessors) {
  auto cpu = parse_cpuinfo(
      "processor\t: 0\nmodel name\t: Test CPU @ 2.00GHz\ncpu MHz\t\t: 1999.998\n"
      "flags\t\t: sse2 fpu avx\n\nprocessor\t: 1\nmodel name\t: Test CPU @ 2.00GHz\n"
      "flags\t\t: fpu sse2 avx\n");
  EXPECT_EQ(cpu.model, "Test CPU @ 2.00GHz");
  EXPECT_DOUBLE_EQ(cpu.mhz, 1999.998);
  EXPECT_EQ(cpu.processors, 2u);
  EXPECT_EQ(cpu.flags, (std::vector<std::string>{"avx", "fpu", "sse2"}));
}

TEST(ProfileParse, MemTotalIsInBytes) {
  EXPECT_EQ(parse_meminfo_total("MemFree: 10 kB\nMemTotal:       24576000 kB\n"),
            24576000ull * 1024);
  EXPECT_EQ(parse_meminfo_total("nothing here"), 0u);
}

TEST(ProfileParse, IsaLevelFollowsThePsAbiLevels) {
  std::vector<std::string> v1 = {"lm", "cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2"};
  EXPECT_EQ(x86_isa_level({"sse2"}), "");
  EXPECT_EQ(x86_isa_level(v1), "x86-64-v1");
  auto v2 = v1;
  v2.insert(v2.end(), {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"});
  EXPECT_EQ(x86_isa_level(v2), "x86-64-v2");
  auto v3 = v2;
  v3.insert(v3.end(), {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"});
  EXPECT_EQ(x86_isa_level(v3), "x86-64-v3");
  auto v4 = v3;
  v4.insert(v4.end(), {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"});
  EXPECT_EQ(x86_isa_level(v4), "x86-64-v4");
  v4.erase(std::find(v4.begin(), v4.end(), "popcnt"));
  EXPECT_EQ(x86_isa_level(v4), "x86-64-v1") << "a level needs every flag of the levels below";
}

constexpr const char* kHybridCgroups =
    "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t4\t14\t1\n"
    "pids\t8\t1\t1\nfreezer\t6\t1\t1\nnet_cls\t0\t1\t1\nrdma\t0\t1\t0\n";
constexpr const char* kHybridMountinfo =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(ProfileParse, HybridHostBindsControllersToV1AndKeepsTheV2Tree) {
  auto cg = parse_cgroups(kHybridCgroups, kHybridMountinfo, "");
  EXPECT_EQ(cg, (std::vector<CgroupController>{{"cpu", 1, "/sys/fs/cgroup/cpu"},
                                                {"memory", 1, "/sys/fs/cgroup/memory"},
                                                {"pids", 1, "/sys/fs/cgroup/pids"},
                                                {"freezer", 1, "/sys/fs/cgroup/freezer"}}));
  EXPECT_EQ(cgroup2_mount(kHybridMountinfo), "/sys/fs/cgroup/unified");
}

TEST(ProfileParse, PureV2HostPutsEveryControllerOnTheUnifiedTree) {
  auto cg = parse_cgroups("#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\t1\n"
                          "memory\t0\t1\t1\npids\t0\t1\t1\nfreezer\t0\t1\t1\n",
                          "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
                          "cpuset cpu io memory pids\n");
  EXPECT_EQ(cg, (std::vector<CgroupController>{{"cpu", 2, "/sys/fs/cgroup"},
                                                {"memory", 2, "/sys/fs/cgroup"},
                                                {"pids", 2, "/sys/fs/cgroup"}}))
      << "freezer has no v2 controller: v2 freezes with cgroup.freeze";
}

TEST(ProfileParse, CapabilityMaskToNames) {
  auto names = capability_names((1ull << 0) | (1ull << 12) | (1ull << 21));
  EXPECT_EQ(names, (std::vector<std::string>{"chown", "net_admin", "sys_admin"}));
  EXPECT_TRUE(capability_names(0).empty());
}

TEST(ProfileParse, TheCpuSpeedIsTheNominalOneNotTheCurrentOne) {
  EXPECT_DOUBLE_EQ(nominal_cpu_mhz("3500000\n", 1234.5), 3500.0) << "cpufreq's maximum, in kHz";
  EXPECT_DOUBLE_EQ(nominal_cpu_mhz("", 2995.2), 2995.2) << "no cpufreq (a VM): /proc/cpuinfo";
  EXPECT_DOUBLE_EQ(nominal_cpu_mhz("garbage", 2995.2), 2995.2);
}

// ---- this host ---------------------------------------------------------------------

std::string command_output(const std::string& command) {
  std::FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  ::pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

TEST(HostProfile, MatchesUnameOsReleaseLddAndNproc) {
  CollectOptions options;
  options.probe_criu = false;
  SystemProfile p = collect_profile(options);
  EXPECT_EQ(p.os_type, "Linux");
  EXPECT_EQ(p.kernel_version, command_output("uname -r"));
  EXPECT_EQ(p.architecture, command_output("uname -m"));
  EXPECT_EQ(p.distribution, command_output(". /etc/os-release && echo \"$ID\""));
  EXPECT_EQ(p.distribution_version, command_output(". /etc/os-release && echo \"$VERSION_ID\""));
  // `ldd --version` ends its first line with the glibc version.
  std::string ldd = command_output("ldd --version | head -n 1");
  EXPECT_EQ(ldd.substr(ldd.rfind(' ') + 1), p.glibc_version);
  EXPECT_EQ(std::to_string(p.cpu_cores), command_output("nproc"));
  EXPECT_GT(p.memory_bytes, 0u);
  EXPECT_FALSE(p.cpu_flags.empty());
  if (p.architecture == "x86_64") {
    EXPECT_TRUE(p.isa_level.starts_with("x86-64-v")) << p.isa_level;
  }
  EXPECT_FALSE(p.cgroups.empty()) << "no cgroup controller found";
  EXPECT_NE(std::find(p.namespaces.begin(), p.namespaces.end(), "pid"), p.namespaces.end());
  EXPECT_NE(std::find(p.namespaces.begin(), p.namespaces.end(), "mnt"), p.namespaces.end());
  ASSERT_FALSE(p.checkpointers.empty());
  EXPECT_EQ(p.checkpointers[0].name, "cooperative");
  EXPECT_TRUE(p.checkpointers[0].available);
  EXPECT_FALSE(p.capabilities.empty());
}

TEST(HostProfile, CriuIsReportedAvailableOrWithTheReason) {
  SystemProfile p = collect_profile();
  ASSERT_EQ(p.checkpointers.size(), 2u);
  const Checkpointer& criu = p.checkpointers[1];
  EXPECT_EQ(criu.name, "criu");
  if (!criu.available) {
    EXPECT_FALSE(criu.reason.empty());
  }
}

}  // namespace
}  // namespace wpm::profile
