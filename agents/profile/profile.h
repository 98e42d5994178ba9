#pragma once
// The system profile of a managed system (DESIGN.md §6, seed "Compatibility
// testing"): what the compatibility tests compare between a departure and an
// arrival system, sent by the agent at registration and on change.
//
// Parsing is pure (text in, values out) and unit-tested on fixed inputs;
// collect_profile() is the thin shell that reads this host. Thread safety:
// plain values and free functions.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schemas/profile.h"

namespace wpm::profile {

// The value types (SystemProfile, CgroupController, Checkpointer) are part
// of the shared vocabulary: schemas/profile.h.

// ---- pure parsers ---------------------------------------------------------------

// KEY=value lines, quotes removed (os-release(5)).
std::map<std::string, std::string> parse_os_release(std::string_view text);

struct CpuInfo {
  std::string model;
  double mhz = 0;
  std::vector<std::string> flags;  // sorted, unique
  uint32_t processors = 0;
};
CpuInfo parse_cpuinfo(std::string_view text);

// MemTotal of /proc/meminfo, in bytes; 0 when absent.
uint64_t parse_meminfo_total(std::string_view text);
// The processor's nominal speed in MHz: cpufreq's maximum
// (cpu0/cpufreq/cpuinfo_max_freq, in kHz) where the kernel has it, else
// /proc/cpuinfo's "cpu MHz". The latter follows frequency scaling: a
// profile holding it would change, and be recorded again, every minute.
double nominal_cpu_mhz(std::string_view cpuinfo_max_freq_khz, double cpuinfo_mhz);

// x86-64 micro-architecture level from CPU flags (the psABI levels).
std::string x86_isa_level(const std::vector<std::string>& flags);

// Enabled controllers of /proc/cgroups and where /proc/self/mountinfo mounts
// them: a controller bound to a v1 hierarchy is v1; the others are v2 when a
// cgroup2 tree lists them in cgroup.controllers (`v2_controllers`).
std::vector<CgroupController> parse_cgroups(std::string_view proc_cgroups,
                                            std::string_view mountinfo,
                                            std::string_view v2_controllers);
// Mount point of the cgroup2 tree in mountinfo, if any.
std::optional<std::string> cgroup2_mount(std::string_view mountinfo);

// Capability names of a CapBnd-style hex mask.
std::vector<std::string> capability_names(uint64_t mask);

// ---- the host ---------------------------------------------------------------------

// A small file of the host (/proc, /etc) as text; empty when unreadable.
std::string read_text(const std::string& path);

struct CollectOptions {
  // Root of the files read (/etc, /proc, /sys); tests point it elsewhere.
  // Default: "/".
  std::string root = "/";
  // Run `criu check` (bounded by a timeout) to report CRIU. Default: true.
  bool probe_criu = true;
};

SystemProfile collect_profile(const CollectOptions& options = {});
// The network interfaces of this network namespace that have an address,
// loopback and link-local addresses (169.254/16, fe80::/10) left out, sorted
// by name: what a WPAR's address could join here.
std::vector<NetworkInterface> collect_interfaces();

}  // namespace wpm::profile
