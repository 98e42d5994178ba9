#pragma once
// The devices a WPAR may use (DESIGN.md §5 "Privileges"; agents/README.md
// "What keeps the host safe from a WPAR's root user"): the minimal /dev a
// system WPAR is given (null, zero, full, random, urandom, tty, ptmx and its
// own pseudo-terminals), enforced by the kernel for every WPAR that is not
// privileged, whatever nodes it can reach or make. Where the v1 devices
// controller is mounted it holds the list; on a cgroup v2 tree a small
// device program (BPF_PROG_TYPE_CGROUP_DEVICE) attached to the WPAR's
// cgroup does. A device not on the list cannot be opened or made (EPERM),
// even by the WPAR's root with every capability.
//
// The rules and the program are pure values; attach_device_program is the
// only I/O. Thread safety: none needed (values), the attach acts on a file.

#include <linux/bpf.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "schemas/error.h"

namespace wpm::runtime {

struct DeviceRule {
  char type = 'c';                 // 'c' character, 'b' block
  std::optional<uint32_t> major;   // nullopt: any
  std::optional<uint32_t> minor;   // nullopt: any
  std::string access = "rwm";      // of r (read), w (write), m (mknod)
  bool operator==(const DeviceRule&) const = default;
};

// The devices of a WPAR's minimal /dev; with `own_ptys`, the pseudo-terminals
// (major 136) of a system WPAR's own devpts. An application WPAR sees the
// host's /dev/pts, whose terminals are other users': it gets none.
std::vector<DeviceRule> minimal_devices(bool own_ptys = true);

// A rule as the v1 devices controller writes it: "c 1:3 rwm", "c 136:* rwm".
std::string v1_rule_text(const DeviceRule& rule);

// The device program allowing exactly `rules` (everything else refused).
std::vector<bpf_insn> device_program(const std::vector<DeviceRule>& rules);

// Loads the program and attaches it to the cgroup v2 directory `dir`,
// replacing a device program attached there before (a WPAR started again).
Result<void> attach_device_program(const std::string& dir, const std::vector<DeviceRule>& rules);

}  // namespace wpm::runtime
