#include "schemas/profile.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "schemas/hash.h"

namespace wpm::profile {

nlohmann::json profile_to_json(const SystemProfile& p) {
  nlohmann::json cgroups = nlohmann::json::array();
  for (const auto& c : p.cgroups) {
    cgroups.push_back({{"name", c.name}, {"version", c.version}, {"mount", c.mount}});
  }
  nlohmann::json checkpointers = nlohmann::json::array();
  for (const auto& c : p.checkpointers) {
    nlohmann::json j = {{"name", c.name}, {"available", c.available}};
    if (c.available) j["version"] = c.version;
    else j["reason"] = c.reason;
    checkpointers.push_back(std::move(j));
  }
  nlohmann::json interfaces = nlohmann::json::array();
  for (const auto& n : p.network_interfaces) {
    interfaces.push_back({{"name", n.name}, {"addresses", n.addresses}, {"up", n.up}, {"mtu", n.mtu}});
  }
  return {{"osType", p.os_type},
          {"distribution", p.distribution},
          {"distributionVersion", p.distribution_version},
          {"kernelVersion", p.kernel_version},
          {"baseSystemVersion", p.base_system_version},
          {"glibcVersion", p.glibc_version},
          {"architecture", p.architecture},
          {"isaLevel", p.isa_level},
          {"cpuFlags", p.cpu_flags},
          {"cpuModel", p.cpu_model},
          {"cpuMhz", p.cpu_mhz},
          {"cpuCores", p.cpu_cores},
          {"memoryBytes", p.memory_bytes},
          {"memoryProtectionKeys", p.memory_protection_keys},
          {"ntpSynchronized", p.ntp_synchronized ? nlohmann::json(*p.ntp_synchronized) : nlohmann::json()},
          {"cgroups", cgroups},
          {"cgroupV2Freeze", p.cgroup_v2_freeze},
          {"namespaces", p.namespaces},
          {"checkpointers", checkpointers},
          {"agentVersion", p.agent_version},
          {"capabilities", p.capabilities},
          {"overriddenFacts", p.overridden_facts},
          {"networkInterfaces", interfaces},
          {"subnets", subnets(p)}};
}

std::optional<std::string> subnet_of(std::string_view cidr) {
  auto slash = cidr.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string address(cidr.substr(0, slash));
  unsigned prefix = 0;
  auto tail = cidr.substr(slash + 1);
  if (auto [end, ec] = std::from_chars(tail.data(), tail.data() + tail.size(), prefix);
      ec != std::errc{} || end != tail.data() + tail.size()) {
    return std::nullopt;
  }
  const bool v6 = address.find(':') != std::string::npos;
  uint8_t bytes[16] = {};
  const unsigned size = v6 ? 16 : 4;
  if (prefix > size * 8 || ::inet_pton(v6 ? AF_INET6 : AF_INET, address.c_str(), bytes) != 1) return std::nullopt;
  for (unsigned bit = prefix; bit < size * 8; ++bit) bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(v6 ? AF_INET6 : AF_INET, bytes, text, sizeof text);
  return fmt::format("{}/{}", text, prefix);
}

std::vector<std::string> subnets(const SystemProfile& p) {
  std::set<std::string> out;
  for (const auto& n : p.network_interfaces) {
    for (const auto& a : n.addresses) {
      if (auto s = subnet_of(a)) out.insert(*s);
    }
  }
  return {out.begin(), out.end()};
}

namespace {
// Memory in whole GiB: MemTotal moves by megabytes with the kernel (and its
// reservations) on the same hardware.
uint64_t memory_gib(const SystemProfile& p) {
  return static_cast<uint64_t>(std::llround(static_cast<double>(p.memory_bytes) / double(1ULL << 30)));
}
}  // namespace

std::string hardware_class(const SystemProfile& p) {
  return fmt::format("{}|{}|{}|{}|{}GiB", p.architecture, p.isa_level, p.cpu_model, p.cpu_cores, memory_gib(p));
}

std::string profile_name(std::string_view domain, const SystemProfile& p) {
  auto digest = to_hex(sha256(hardware_class(p)));
  auto gib = memory_gib(p);
  return fmt::format("{}/{}-{}c-{}g-{}", domain, p.architecture.empty() ? "unknown" : p.architecture, p.cpu_cores,
                     gib, digest.substr(0, 8));
}

}  // namespace wpm::profile
