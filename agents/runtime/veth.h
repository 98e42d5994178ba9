#pragma once
// The optional network of a WPAR (DESIGN.md §5, seed "Deploy operation fails
// because of incorrect IP address"): a veth pair from the host into the
// network namespace of the WPAR, in routed mode (like LXD's "routed" NIC).
//
// For WPAR address A on host interface H (the interface whose subnet holds A):
//   inside the WPAR: lo up; eth0 up with A/32; a link-scope route to the
//     gateway 169.254.0.1 and the default route via it;
//   on the host: the host end up with 169.254.0.1/32, a /32 route to A via the
//     host end, a proxy ARP entry for A on H (so machines on H's subnet reach
//     A) and IPv4 forwarding on.
// No bridge: the host's own interfaces are never changed, except H's proxy
// entry for A. Planning (names, the operations) is pure; attach_veth and
// detach_veth talk rtnetlink to the kernel and need CAP_NET_ADMIN and
// CAP_SYS_ADMIN (to enter the WPAR's namespace).
//
// Never: attach into the host's own network namespace (refused), or touch a
// link this module did not name. Thread safety: the functions keep no state;
// attach and detach of one WPAR must not run concurrently. errno stays inside.

#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agents/runtime/lifecycle.h"
#include "agents/runtime/network.h"
#include "schemas/error.h"

namespace wpm::runtime {

// The host-side address every WPAR uses as its gateway (LXD's default for
// routed NICs): link-local, so it never clashes with a real subnet.
inline constexpr uint32_t kVethGateway = 0xA9FE0001;  // 169.254.0.1
inline constexpr char kVethWparIfname[] = "eth0";
// Linux interface names hold at most 15 characters (IFNAMSIZ - 1).
inline constexpr size_t kIfnameMax = 15;

struct VethPlan {
  std::string host_ifname;                    // host end, in the host's namespace
  std::string wpar_ifname = kVethWparIfname;  // the peer, inside the WPAR
  uint32_t address = 0;                       // the WPAR's address (host byte order)
  std::string host_interface;                 // H: its subnet holds `address`
  uint32_t host_address = 0;                  // H's own address: the host's source towards the WPAR
  uint32_t gateway = kVethGateway;
  bool operator==(const VethPlan&) const = default;
};

// One change to the kernel's network configuration, as data, so the sequence
// is testable without root; describe() gives the equivalent ip(8) command.
enum class VethNamespace : uint8_t { kHost, kWpar };
struct VethOperation {
  enum class Kind : uint8_t {
    kCreatePair,            // ifname in the host, peer_ifname in the WPAR
    kLinkUp,                // ifname
    kAddAddress,            // address/prefix on ifname
    kAddRoute,              // address/prefix via gateway (0: on-link) dev ifname [src source]
    kAddProxyNeighbour,     // answer ARP for address on ifname
    kEnableForwarding,      // net.ipv4.ip_forward=1
    kDeleteLink,            // ifname (and with it its peer and routes); a missing link is success
    kDeleteProxyNeighbour,  // a missing entry or interface is success
  };
  Kind kind = Kind::kLinkUp;
  VethNamespace where = VethNamespace::kHost;
  std::string ifname;
  std::string peer_ifname;
  uint32_t address = 0;
  int prefix = 32;
  uint32_t gateway = 0;
  uint32_t source = 0;  // preferred source of a route; 0: the kernel chooses
  bool operator==(const VethOperation&) const = default;
};

// The host end's name for WPAR `wpar` of agent `agent_id`: "wpm" and 12 hex
// digits of a FNV-1a hash of both, so at most 15 characters, the same on
// every run and on every machine, and distinct between agents on one host.
std::string veth_host_name(std::string_view agent_id, std::string_view wpar);

// The host's IPv4 addresses (getifaddrs), one HostInterface per address on
// an interface that is up and not loopback: the candidates for H.
Result<std::vector<HostInterface>> host_interfaces();

// The plan for giving `address` to WPAR `wpar` of agent `agent_id` on host
// `host` (named in messages), or the refusal of check_wpar_address (exit code
// 1, the message names the value and the fix): outside every interface's
// subnet, the host's own, network or broadcast address, or used by another
// WPAR (`in_use`: address -> WPAR, gathered by the caller).
std::expected<VethPlan, Refusal> plan_veth(std::string_view agent_id, const std::string& wpar,
                                           std::string_view address, const std::string& host,
                                           const std::vector<HostInterface>& interfaces,
                                           const std::map<uint32_t, std::string>& in_use);

// What attach_veth and detach_veth do, in order.
std::vector<VethOperation> attach_operations(const VethPlan& plan);
std::vector<VethOperation> detach_operations(const VethPlan& plan);
// The ip(8) (or sysctl) command equivalent to `op`, for logs and messages.
std::string describe(const VethOperation& op);

struct VethAttachment {
  // net.ipv4.ip_forward was off and attach turned it on (the caller logs it).
  bool forwarding_enabled = false;
  bool operator==(const VethAttachment&) const = default;
};

// Creates the pair and configures both ends, the WPAR's end in the network
// namespace of process `netns_pid` (the WPAR's init or workload, already in
// its own network namespace). On failure everything attach made is removed
// again and the error names the step, the value and what to do. A host end
// left by an earlier attach makes it fail (kInvalidRequest): detach first.
Result<VethAttachment> attach_veth(const VethPlan& plan, pid_t netns_pid);

// Removes the host end (the kernel removes its peer and its routes with it)
// and H's proxy entry. Idempotent: whatever is already gone is success, so a
// restarted agent can clean what a crash left. Forwarding stays on.
Result<void> detach_veth(const VethPlan& plan);

}  // namespace wpm::runtime
