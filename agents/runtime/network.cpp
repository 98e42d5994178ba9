#include "agents/runtime/network.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <cstdio>
#include <string>

namespace wpm::runtime {
namespace {
uint32_t mask_of(int prefix) { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }
}  // namespace

bool Ipv4Net::contains(uint32_t a) const { return (a & mask_of(prefix)) == (address & mask_of(prefix)); }

std::optional<uint32_t> parse_ipv4(std::string_view text) {
  std::string s(text);
  in_addr a{};
  if (::inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

std::optional<Ipv4Net> parse_cidr(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto address = parse_ipv4(text.substr(0, slash));
  std::string prefix_text(text.substr(slash + 1));
  if (!address || prefix_text.empty() || prefix_text.size() > 2 ||
      prefix_text.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  int prefix = std::stoi(prefix_text);
  if (prefix > 32) return std::nullopt;
  return Ipv4Net{*address, prefix};
}

std::string format_ipv4(uint32_t address) {
  return fmt::format("{}.{}.{}.{}", address >> 24, (address >> 16) & 0xFF, (address >> 8) & 0xFF,
                     address & 0xFF);
}

std::string format_cidr(const Ipv4Net& net) {
  return fmt::format("{}/{}", format_ipv4(net.address & mask_of(net.prefix)), net.prefix);
}

std::optional<Refusal> check_wpar_address(std::string_view address, const std::string& wpar,
                                          const std::string& host,
                                          const std::vector<HostInterface>& interfaces,
                                          const std::map<uint32_t, std::string>& in_use) {
  auto a = parse_ipv4(address);
  if (!a) {
    return Refusal{kExitFailed, fmt::format("'{}' is not an IPv4 address; give one like 10.0.0.7",
                                            address)};
  }
  const HostInterface* home = nullptr;
  for (const auto& i : interfaces) {
    if (i.net.contains(*a)) home = &i;
  }
  if (home == nullptr) {
    std::string nets;
    for (const auto& i : interfaces) {
      nets += fmt::format("{}{} on {}", nets.empty() ? "" : ", ", format_cidr(i.net), i.name);
    }
    return Refusal{kExitFailed,
                   fmt::format("address {} is outside every subnet of host {} ({}); choose an "
                               "address in one of them, or a host on the address's subnet",
                               address, host, nets.empty() ? "no IPv4 interface" : nets)};
  }
  for (const auto& i : interfaces) {  // any of the host's own addresses, on any interface
    if (*a == i.net.address) {
      return Refusal{kExitFailed, fmt::format("address {} is host {}'s own address on {}; choose a "
                                              "free address in {}",
                                              address, host, i.name, format_cidr(home->net))};
    }
  }
  uint32_t network = home->net.address & mask_of(home->net.prefix);
  uint32_t broadcast = network | ~mask_of(home->net.prefix);
  if (home->net.prefix < 31 && (*a == network || *a == broadcast)) {
    return Refusal{kExitFailed, fmt::format("address {} is the {} address of {}; choose a host "
                                            "address in it",
                                            address, *a == network ? "network" : "broadcast",
                                            format_cidr(home->net))};
  }
  if (auto it = in_use.find(*a); it != in_use.end() && it->second != wpar) {
    return Refusal{kExitFailed, fmt::format("address {} is already used by WPAR {} on host {}; "
                                            "choose another address in {}",
                                            address, it->second, host, format_cidr(home->net))};
  }
  return std::nullopt;
}

namespace {

// Calls `row` with each line of a /proc table after its header line.
template <typename Row>
void for_each_row(std::string_view text, Row row) {
  size_t start = text.find('\n');
  while (start != std::string_view::npos && start + 1 < text.size()) {
    size_t end = text.find('\n', start + 1);
    row(std::string(text.substr(start + 1, end == std::string_view::npos ? std::string_view::npos : end - start - 1)));
    start = end;
  }
}

}  // namespace

std::vector<uint32_t> parse_default_gateways(std::string_view text) {
  std::vector<uint32_t> out;
  for_each_row(text, [&](const std::string& line) {
    char iface[64] = {};
    unsigned long destination = 0, gateway = 0;
    if (std::sscanf(line.c_str(), "%63s %lx %lx", iface, &destination, &gateway) == 3 && destination == 0 &&
        gateway != 0) {
      out.push_back(ntohl(static_cast<uint32_t>(gateway)));  // printed as the raw network-order word
    }
  });
  return out;
}

std::vector<Neighbour> parse_arp_neighbours(std::string_view text) {
  std::vector<Neighbour> out;
  for_each_row(text, [&](const std::string& line) {
    char ip[64] = {}, type[16] = {}, mac[64] = {}, mask[16] = {}, device[64] = {};
    unsigned flags = 0;
    if (std::sscanf(line.c_str(), "%63s %15s %x %63s %15s %63s", ip, type, &flags, mac, mask, device) != 6) return;
    auto a = parse_ipv4(ip);
    constexpr unsigned kComplete = 0x2;  // ATF_COM
    if (a && (flags & kComplete) != 0) out.push_back(Neighbour{*a, mac, device});
  });
  return out;
}

std::optional<Refusal> check_address_free_on_link(uint32_t address, const std::string& interface,
                                                  const std::vector<uint32_t>& gateways,
                                                  const std::vector<Neighbour>& neighbours) {
  for (uint32_t g : gateways) {
    if (g == address) {
      return Refusal{kExitFailed, fmt::format("address {} is this host's default gateway; a WPAR holding it "
                                              "would cut the subnet off; choose a free address",
                                              format_ipv4(address))};
    }
  }
  for (const auto& n : neighbours) {
    if (n.address == address && n.device == interface) {
      return Refusal{kExitFailed, fmt::format("address {} is in use by another machine on {} (MAC {}); "
                                              "choose a free address",
                                              format_ipv4(address), interface, n.mac)};
    }
  }
  return std::nullopt;
}

}  // namespace wpm::runtime
