#pragma once
// A WPAR's cgroups (DESIGN.md §5): one directory per hierarchy that holds a
// controller wpm uses, chosen per controller (a hybrid host keeps cpu, memory,
// pids and freezer on v1 while a v2 tree exists; a pure v2 host has one tree).
// Resource controls are written and read back, processes are added, the group
// is frozen with the v1 freezer or v2 cgroup.freeze, and removed when empty.
//
// Cgroups outlive the agent on purpose: a CgroupSet is a handle, not an owner;
// remove() is explicit. errno stays inside this component.
// Thread safety: none; one owner at a time.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agents/profile/profile.h"
#include "agents/runtime/devices.h"
#include "schemas/error.h"

namespace wpm::runtime {

struct ResourceLimits {
  // Relative CPU weight (v1 cpu.shares, 2..262144; v2 cpu.weight is derived).
  std::optional<uint64_t> cpu_shares;
  // Hard CPU cap in percent of one CPU (200 = two CPUs).
  std::optional<uint32_t> cpu_limit_percent;
  std::optional<uint64_t> memory_bytes;
  std::optional<uint64_t> max_processes;
  bool operator==(const ResourceLimits&) const = default;
};

// Which hierarchy serves each controller wpm uses, from the host's profile.
struct CgroupLayout {
  std::map<std::string, profile::CgroupController> controllers;  // by name
  std::optional<std::string> v2_mount;  // the cgroup2 tree, if any

  static CgroupLayout from_profile(const profile::SystemProfile& profile,
                                   std::optional<std::string> v2_mount);
  static CgroupLayout detect();  // this host
};

class CgroupSet {
 public:
  // Creates (or reuses) `relative` (e.g. "wpm/agent1/web1") in every
  // hierarchy needed, enabling v2 controllers on the way down.
  static Result<CgroupSet> create(const CgroupLayout& layout, const std::string& relative);
  // The group as it exists; kNotFound when it is gone (never creates it).
  static Result<CgroupSet> open(const CgroupLayout& layout, const std::string& relative);

  const std::string& relative() const { return relative_; }

  Result<void> add_process(pid_t pid);
  Result<std::vector<pid_t>> processes() const;
  Result<void> apply(const ResourceLimits& limits);
  // Makes the limits exactly these: a limit not set is lifted (the default
  // CPU weight, no CPU cap, no memory or process limit). For a change of a
  // running WPAR (chwpar).
  Result<void> apply_exactly(const ResourceLimits& limits);
  Result<ResourceLimits> read_limits() const;
  // The memory its processes use now (v2 memory.current, v1
  // memory.usage_in_bytes); nullopt without a memory controller.
  Result<std::optional<uint64_t>> memory_usage() const;
  // Only these devices may be opened or made by the group's processes (the
  // v1 devices controller, else a device program on the v2 group).
  Result<void> restrict_devices(const std::vector<DeviceRule>& allowed);
  Result<void> freeze();
  Result<void> thaw();
  Result<bool> frozen() const;
  // Freezes and waits until every task is frozen. A v1 freezer can stay in
  // FREEZING when a task forks while it freezes; there the group is thawed
  // and frozen again after 250 ms, then after twice as long each time (a
  // slow freeze keeps its progress). At the timeout the group
  // is thawed and the error names the tasks that did not freeze (state and
  // where they wait).
  Result<void> freeze_and_wait(std::chrono::milliseconds timeout);
  // CPU time used by the group, in nanoseconds.
  Result<uint64_t> cpu_usage_ns() const;
  // Its tasks (threads) now (pids.current); nullopt without a pids controller.
  Result<std::optional<uint64_t>> task_count() const;
  // Page faults of its processes since it was made (memory.stat pgfault,
  // v1 total_pgfault); nullopt without a memory controller.
  Result<std::optional<uint64_t>> page_faults() const;
  // Removes the directories (the group must have no processes).
  Result<void> remove();

 private:
  CgroupSet(CgroupLayout layout, std::string relative) : layout_(std::move(layout)), relative_(std::move(relative)) {}
  // Directory of the hierarchy serving `controller`; empty if none.
  std::string dir_for(const std::string& controller) const;
  std::vector<std::string> all_dirs() const;

  CgroupLayout layout_;
  std::string relative_;
};

// v1 cpu.shares to v2 cpu.weight (the mapping systemd and runc use).
uint64_t shares_to_weight(uint64_t shares);

}  // namespace wpm::runtime
