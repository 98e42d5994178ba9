#include "agents/profile/profile.h"

#include <arpa/inet.h>
#include <cap-ng.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <fmt/format.h>
#include <gnu/libc-version.h>
#include <sys/timex.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <map>
#include <memory>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "wpm_version.h"

namespace wpm::profile {
namespace {

namespace fs = std::filesystem;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    auto nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> out;
  std::istringstream in{std::string(text)};
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

}  // namespace

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

bool has_all(const std::set<std::string>& flags, std::initializer_list<const char*> wanted) {
  return std::all_of(wanted.begin(), wanted.end(), [&](const char* f) { return flags.contains(f); });
}

// Runs a shell command with a bound on its time; returns exit code and output.
std::pair<int, std::string> run_bounded(const std::string& command) {
  std::FILE* pipe = ::popen(("timeout 10 " + command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "cannot start: " + command};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0 && out.size() < (1u << 20)) out.append(buf, n);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

Checkpointer probe_criu() {
  Checkpointer c{"criu", false, "", ""};
  std::string path;
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"}) {
    if (fs::exists(fs::path(dir) / "criu")) {
      path = std::string(dir) + "/criu";
      break;
    }
  }
  if (path.empty()) {
    c.reason = "criu is not installed";
    return c;
  }
  auto [vcode, vout] = run_bounded(path + " --version");
  if (vcode == 0) {
    for (auto line : lines(vout)) {
      if (line.starts_with("Version:")) c.version = std::string(trim(line.substr(8)));
    }
  }
  auto [code, out] = run_bounded(path + " check");
  if (code == 0) {
    c.available = true;
    return c;
  }
  // The last non-empty line says why.
  std::string reason = "criu check failed";
  for (auto line : lines(out)) {
    if (!trim(line).empty()) reason = std::string(trim(line));
  }
  c.reason = reason;
  return c;
}

bool kernel_at_least(const std::string& release, int major, int minor) {
  int a = 0, b = 0;
  if (std::sscanf(release.c_str(), "%d.%d", &a, &b) != 2) return false;
  return a > major || (a == major && b >= minor);
}

}  // namespace

std::map<std::string, std::string> parse_os_release(std::string_view text) {
  std::map<std::string, std::string> out;
  for (auto line : lines(text)) {
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view value = trim(line.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    out[std::string(trim(line.substr(0, eq)))] = std::string(value);
  }
  return out;
}

CpuInfo parse_cpuinfo(std::string_view text) {
  CpuInfo info;
  std::set<std::string> flags;
  for (auto line : lines(text)) {
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = trim(line.substr(0, colon));
    std::string_view value = trim(line.substr(colon + 1));
    if (key == "processor") {
      ++info.processors;
    } else if (key == "model name" && info.model.empty()) {
      info.model = std::string(value);
    } else if (key == "cpu MHz" && info.mhz == 0) {
      info.mhz = std::atof(std::string(value).c_str());
    } else if (key == "flags" || key == "Features") {
      for (auto& f : words(value)) flags.insert(f);
    }
  }
  info.flags.assign(flags.begin(), flags.end());
  return info;
}

double nominal_cpu_mhz(std::string_view cpuinfo_max_freq_khz, double cpuinfo_mhz) {
  double khz = std::atof(std::string(trim(cpuinfo_max_freq_khz)).c_str());
  return khz > 0 ? khz / 1000.0 : cpuinfo_mhz;
}

uint64_t parse_meminfo_total(std::string_view text) {
  for (auto line : lines(text)) {
    if (!line.starts_with("MemTotal:")) continue;
    auto w = words(line.substr(9));
    if (w.empty()) return 0;
    uint64_t kib = std::strtoull(w[0].c_str(), nullptr, 10);
    return kib * 1024;
  }
  return 0;
}

std::string x86_isa_level(const std::vector<std::string>& flag_list) {
  std::set<std::string> f(flag_list.begin(), flag_list.end());
  // x86-64 psABI micro-architecture levels, in the kernel's flag names.
  if (!has_all(f, {"lm", "cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2"})) return "";
  if (!has_all(f, {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"})) return "x86-64-v1";
  if (!has_all(f, {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})) {
    return "x86-64-v2";
  }
  if (!has_all(f, {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})) return "x86-64-v3";
  return "x86-64-v4";
}

std::optional<std::string> cgroup2_mount(std::string_view mountinfo) {
  for (auto line : lines(mountinfo)) {
    // "... mount-point options - fstype source super-options"
    auto dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    auto after = words(line.substr(dash + 3));
    auto before = words(line.substr(0, dash));
    if (!after.empty() && after[0] == "cgroup2" && before.size() >= 5) return before[4];
  }
  return std::nullopt;
}

std::vector<CgroupController> parse_cgroups(std::string_view proc_cgroups,
                                            std::string_view mountinfo,
                                            std::string_view v2_controllers) {
  // v1 hierarchies: mount point per controller named in the super options.
  std::map<std::string, std::string> v1_mount;
  for (auto line : lines(mountinfo)) {
    auto dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    auto after = words(line.substr(dash + 3));
    auto before = words(line.substr(0, dash));
    if (after.size() < 3 || after[0] != "cgroup" || before.size() < 5) continue;
    std::string opts = after[2];
    std::stringstream ss(opts);
    std::string opt;
    while (std::getline(ss, opt, ',')) v1_mount.emplace(opt, before[4]);
  }
  std::set<std::string> v2;
  for (auto& c : words(v2_controllers)) v2.insert(c);
  std::string v2_mount = cgroup2_mount(mountinfo).value_or("");
  std::vector<CgroupController> out;
  for (auto line : lines(proc_cgroups)) {
    if (line.empty() || line.front() == '#') continue;
    auto w = words(line);
    if (w.size() < 4 || w[3] != "1") continue;  // not enabled
    const std::string& name = w[0];
    if (auto it = v1_mount.find(name); it != v1_mount.end() && w[1] != "0") {
      out.push_back(CgroupController{name, 1, it->second});
    } else if (v2.contains(name)) {
      out.push_back(CgroupController{name, 2, v2_mount});
    }
  }
  return out;
}

std::vector<std::string> capability_names(uint64_t mask) {
  std::vector<std::string> out;
  for (unsigned i = 0; i < 64; ++i) {
    if ((mask >> i) & 1) {
      const char* name = capng_capability_to_name(i);
      out.push_back(name != nullptr ? name : fmt::format("cap_{}", i));
    }
  }
  return out;
}

namespace {
// Leading one bits of a netmask.
unsigned prefix_length(const uint8_t* mask, size_t size) {
  unsigned bits = 0;
  for (size_t i = 0; i < size; ++i) bits += static_cast<unsigned>(std::popcount(mask[i]));
  return bits;
}
}  // namespace

std::vector<NetworkInterface> collect_interfaces() {
  std::map<std::string, NetworkInterface> found;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  std::unique_ptr<ifaddrs, decltype(&::freeifaddrs)> holder(list, ::freeifaddrs);
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_name == nullptr || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    auto& n = found[i->ifa_name];
    n.name = i->ifa_name;
    n.up = (i->ifa_flags & IFF_UP) != 0;
    if (i->ifa_addr == nullptr || i->ifa_netmask == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      // 169.254/16 is link-local: the host ends of WPARs' veths, the same on every host.
      if ((ntohl(a->sin_addr.s_addr) >> 16) == 0xA9FE) continue;
      const auto* m = reinterpret_cast<const sockaddr_in*>(i->ifa_netmask);
      ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
      n.addresses.push_back(fmt::format("{}/{}", text, prefix_length(reinterpret_cast<const uint8_t*>(&m->sin_addr), 4)));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr)) continue;  // the same fe80::/64 everywhere
      const auto* m = reinterpret_cast<const sockaddr_in6*>(i->ifa_netmask);
      ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
      n.addresses.push_back(fmt::format("{}/{}", text, prefix_length(m->sin6_addr.s6_addr, 16)));
    }
  }
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  std::vector<NetworkInterface> out;
  for (auto& [name, n] : found) {
    // Only interfaces a WPAR's address could join: containers' and WPARs'
    // host-side veths (no address of their own) come and go with them.
    if (n.addresses.empty()) continue;
    if (fd >= 0) {
      ifreq request{};
      std::snprintf(request.ifr_name, sizeof request.ifr_name, "%s", name.c_str());
      if (::ioctl(fd, SIOCGIFMTU, &request) == 0) n.mtu = static_cast<uint32_t>(request.ifr_mtu);
    }
    std::sort(n.addresses.begin(), n.addresses.end());
    out.push_back(std::move(n));
  }
  if (fd >= 0) ::close(fd);
  return out;
}

SystemProfile collect_profile(const CollectOptions& options) {
  fs::path root(options.root);
  SystemProfile p;
  utsname u{};
  ::uname(&u);
  p.os_type = u.sysname;
  p.kernel_version = u.release;
  p.architecture = u.machine;
  auto os = parse_os_release(read_text(root / "etc/os-release"));
  p.distribution = os["ID"];
  p.distribution_version = os["VERSION_ID"];
  p.base_system_version = std::string(trim(read_text(root / "etc/debian_version")));
  if (auto nl = p.base_system_version.find('\n'); nl != std::string::npos) {
    p.base_system_version.resize(nl);
  }
  p.glibc_version = gnu_get_libc_version();
  CpuInfo cpu = parse_cpuinfo(read_text(root / "proc/cpuinfo"));
  p.cpu_flags = cpu.flags;
  p.cpu_model = cpu.model;
  p.cpu_mhz = nominal_cpu_mhz(read_text(root / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"), cpu.mhz);
  p.cpu_cores = static_cast<uint32_t>(::sysconf(_SC_NPROCESSORS_ONLN));
  p.isa_level = p.architecture == "x86_64" ? x86_isa_level(cpu.flags) : p.architecture;
  p.memory_bytes = parse_meminfo_total(read_text(root / "proc/meminfo"));
  p.memory_protection_keys = std::binary_search(cpu.flags.begin(), cpu.flags.end(), "pku");
  timex tx{};
  if (::adjtimex(&tx) >= 0) p.ntp_synchronized = (tx.status & STA_UNSYNC) == 0;

  std::string mountinfo = read_text(root / "proc/self/mountinfo");
  auto v2 = cgroup2_mount(mountinfo);
  std::string v2_controllers = v2 ? read_text(fs::path(*v2) / "cgroup.controllers") : "";
  p.cgroups = parse_cgroups(read_text(root / "proc/cgroups"), mountinfo, v2_controllers);
  if (v2) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(*v2, ec)) {
      if (entry.is_directory() && fs::exists(entry.path() / "cgroup.freeze")) {
        p.cgroup_v2_freeze = true;
        break;
      }
    }
    if (!p.cgroup_v2_freeze) p.cgroup_v2_freeze = kernel_at_least(p.kernel_version, 5, 2);
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root / "proc/self/ns", ec)) {
    std::string name = entry.path().filename();
    if (!name.ends_with("_for_children")) p.namespaces.push_back(name);
  }
  std::sort(p.namespaces.begin(), p.namespaces.end());

  p.checkpointers.push_back(Checkpointer{"cooperative", true, kVersion, ""});
  if (options.probe_criu) p.checkpointers.push_back(probe_criu());
  p.agent_version = kVersion;
  // The text must outlive the views into it.
  const std::string status = read_text(root / "proc/self/status");
  for (auto line : lines(status)) {
    if (line.starts_with("CapBnd:")) {
      p.capabilities = capability_names(std::strtoull(std::string(trim(line.substr(7))).c_str(), nullptr, 16));
    }
  }
  p.network_interfaces = collect_interfaces();
  return p;
}

}  // namespace wpm::profile
