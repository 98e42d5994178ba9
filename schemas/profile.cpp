#include "schemas/profile.h"

#include <nlohmann/json.hpp>

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
          {"overriddenFacts", p.overridden_facts}};
}

}  // namespace wpm::profile
