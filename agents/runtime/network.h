#pragma once
// Address rules for a WPAR's network (DESIGN.md §5, seed "Deploy operation
// fails because of incorrect IP address"): a WPAR's address must lie in the
// subnet of one of the host's interfaces, and no two WPARs on a host may share
// one. Pure: the caller gathers interfaces and addresses in use.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agents/runtime/lifecycle.h"

namespace wpm::runtime {

struct Ipv4Net {
  uint32_t address = 0;  // host byte order
  int prefix = 32;
  bool contains(uint32_t a) const;
  bool operator==(const Ipv4Net&) const = default;
};

std::optional<uint32_t> parse_ipv4(std::string_view text);
std::optional<Ipv4Net> parse_cidr(std::string_view text);  // "10.0.0.7/24"
std::string format_ipv4(uint32_t address);
std::string format_cidr(const Ipv4Net& net);  // the network: "10.0.0.0/24"

struct HostInterface {
  std::string name;
  Ipv4Net net;  // the interface's own address and prefix
};

// Empty when `address` may be given to WPAR `wpar` on host `host`; otherwise a
// refusal that names the value, the rule and what to do. `in_use` maps each
// address to the WPAR holding it.
std::optional<Refusal> check_wpar_address(std::string_view address, const std::string& wpar,
                                          const std::string& host,
                                          const std::vector<HostInterface>& interfaces,
                                          const std::map<uint32_t, std::string>& in_use);

// Default gateways of /proc/net/route (host byte order).
std::vector<uint32_t> parse_default_gateways(std::string_view proc_net_route);

struct Neighbour {
  uint32_t address = 0;  // host byte order
  std::string mac;
  std::string device;
  bool operator==(const Neighbour&) const = default;
};
// Complete entries of /proc/net/arp: machines this host has reached.
std::vector<Neighbour> parse_arp_neighbours(std::string_view proc_net_arp);

// Empty when no other machine on `interface` answers for `address`: a
// gateway, or a neighbour the host knows there. A WPAR taking such an
// address would take it from that machine (the host answers ARP for it).
std::optional<Refusal> check_address_free_on_link(uint32_t address, const std::string& interface,
                                                  const std::vector<uint32_t>& gateways,
                                                  const std::vector<Neighbour>& neighbours);

}  // namespace wpm::runtime
