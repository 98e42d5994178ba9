#pragma once
// The system profile as a value type (DESIGN.md §6): what an agent reports at
// registration and on change, and what the compatibility tests compare. It
// travels in events (SystemRegistered) and agent messages; the agent collects
// it (agents/profile). Thread safety: plain values.

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wpm::profile {

struct CgroupController {
  std::string name;     // cpu, memory, pids, freezer, …
  int version = 0;      // 1 or 2: the hierarchy that holds it on this host
  std::string mount;    // where that hierarchy is mounted
  bool operator==(const CgroupController&) const = default;
};

struct NetworkInterface {
  std::string name;                    // eth0, ens3, …
  std::vector<std::string> addresses;  // CIDR: "10.0.0.5/24", "fd00::5/64"
  bool up = false;
  uint32_t mtu = 0;
  bool operator==(const NetworkInterface&) const = default;
};

struct Checkpointer {
  std::string name;       // "cooperative", "criu"
  bool available = false;
  std::string version;    // when available
  std::string reason;     // when not
  bool operator==(const Checkpointer&) const = default;
};

struct SystemProfile {
  std::string os_type;               // "Linux"
  std::string distribution;          // os-release ID, e.g. "debian"
  std::string distribution_version;  // os-release VERSION_ID, e.g. "12"
  std::string kernel_version;        // uname -r
  std::string base_system_version;   // Debian: /etc/debian_version, e.g. "12.11"
  std::string glibc_version;         // e.g. "2.36"
  std::string architecture;          // uname -m
  std::string isa_level;             // x86-64-v1..v4, or the architecture elsewhere
  std::vector<std::string> cpu_flags;
  std::string cpu_model;
  double cpu_mhz = 0;
  uint32_t cpu_cores = 0;
  uint64_t memory_bytes = 0;
  bool memory_protection_keys = false;
  std::optional<bool> ntp_synchronized;  // empty when the kernel cannot tell
  std::vector<CgroupController> cgroups;
  bool cgroup_v2_freeze = false;          // a cgroup v2 tree with cgroup.freeze
  std::vector<std::string> namespaces;    // kinds this kernel offers
  std::vector<Checkpointer> checkpointers;
  std::string agent_version;
  std::vector<std::string> capabilities;  // the host's bounding set, lower-case names
  // Facts set by hand in the agent's [profile] table (labs and tests), by
  // their JSON names; empty on a real host.
  std::vector<std::string> overridden_facts;
  // The host's network interfaces (loopback left out), sorted by name: the
  // subnets a WPAR's address may join on arrival.
  std::vector<NetworkInterface> network_interfaces;
  bool operator==(const SystemProfile&) const = default;
};

// The JSON form (field names as in the schema), for listings and log dumps.
nlohmann::json profile_to_json(const SystemProfile& profile);

// The subnets of the host's interfaces, as network/prefix ("10.0.0.0/24"),
// sorted and unique; addresses that do not parse are left out.
std::vector<std::string> subnets(const SystemProfile& profile);
// The network of one CIDR address ("10.0.0.5/24" -> "10.0.0.0/24"), if it parses.
std::optional<std::string> subnet_of(std::string_view cidr);

// The hardware class of a profile (seed "Relocation domains and system
// profiles"): architecture, ISA level, CPU model, cores and memory in whole
// GiB (MemTotal moves with the kernel on the same hardware). Systems
// share a system profile when they share their relocation domain and this.
std::string hardware_class(const SystemProfile& profile);
// The name of a system's profile: "<domain>/<arch>-<cores>c-<GiB>g-<digest>".
std::string profile_name(std::string_view domain, const SystemProfile& profile);

}  // namespace wpm::profile
