#include "agents/runtime/network.h"

#include <gtest/gtest.h>

namespace wpm::runtime {
namespace {

const std::vector<HostInterface> kInterfaces = {{"eth0", *parse_cidr("192.168.5.10/24")},
                                                {"eth1", *parse_cidr("10.1.0.1/16")}};

TEST(Network, ParsesAndFormatsAddresses) {
  EXPECT_EQ(parse_ipv4("10.0.0.7"), 0x0A000007u);
  EXPECT_FALSE(parse_ipv4("10.0.0.256").has_value());
  EXPECT_FALSE(parse_ipv4("ten").has_value());
  EXPECT_EQ(format_ipv4(0xC0A8050Au), "192.168.5.10");
  EXPECT_EQ(parse_cidr("192.168.5.10/24"), (Ipv4Net{0xC0A8050Au, 24}));
  EXPECT_FALSE(parse_cidr("192.168.5.10").has_value());
  EXPECT_FALSE(parse_cidr("192.168.5.10/33").has_value());
  EXPECT_FALSE(parse_cidr("192.168.5.10/x").has_value());
  EXPECT_EQ(format_cidr(*parse_cidr("192.168.5.10/24")), "192.168.5.0/24");
}

TEST(Network, AnAddressInAHostSubnetIsAccepted) {
  EXPECT_FALSE(check_wpar_address("192.168.5.20", "web1", "node1", kInterfaces, {}).has_value());
  EXPECT_FALSE(check_wpar_address("10.1.200.3", "web1", "node1", kInterfaces, {}).has_value());
}

TEST(Network, AnAddressOutsideEverySubnetIsRefusedNamingTheSubnets) {
  auto r = check_wpar_address("10.0.0.7", "web1", "node1", kInterfaces, {});
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->message,
            "address 10.0.0.7 is outside every subnet of host node1 (192.168.5.0/24 on eth0, "
            "10.1.0.0/16 on eth1); choose an address in one of them, or a host on the address's "
            "subnet");
}

TEST(Network, AnAddressUsedByAnotherWparIsRefused) {
  std::map<uint32_t, std::string> used = {{*parse_ipv4("192.168.5.20"), "db1"}};
  auto r = check_wpar_address("192.168.5.20", "web1", "node1", kInterfaces, used);
  ASSERT_TRUE(r.has_value());
  EXPECT_NE(r->message.find("already used by WPAR db1"), std::string::npos) << r->message;
  EXPECT_FALSE(check_wpar_address("192.168.5.20", "db1", "node1", kInterfaces, used).has_value())
      << "a WPAR keeps its own address";
}

TEST(Network, HostNetworkAndBroadcastAddressesAreRefused) {
  EXPECT_NE(check_wpar_address("192.168.5.10", "w", "node1", kInterfaces, {})->message.find("own address"),
            std::string::npos);
  EXPECT_NE(check_wpar_address("192.168.5.0", "w", "node1", kInterfaces, {})->message.find("network address"),
            std::string::npos);
  EXPECT_NE(check_wpar_address("192.168.5.255", "w", "node1", kInterfaces, {})->message.find("broadcast"),
            std::string::npos);
  EXPECT_NE(check_wpar_address("nonsense", "w", "node1", kInterfaces, {})->message.find("not an IPv4"),
            std::string::npos);
}

}  // namespace
}  // namespace wpm::runtime

namespace wpm::runtime {
namespace {

TEST(Network, AnotherInterfacesOwnAddressInTheSameSubnetIsRefused) {
  // Two interfaces on one subnet (or a secondary address): neither address may be taken.
  std::vector<HostInterface> interfaces = {{"eth0", *parse_cidr("10.9.0.10/24")},
                                           {"eth1", *parse_cidr("10.9.0.11/24")}};
  auto r = check_wpar_address("10.9.0.11", "w", "node1", interfaces, {});
  ASSERT_TRUE(r.has_value());
  EXPECT_NE(r->message.find("own address on eth1"), std::string::npos) << r->message;
}

}  // namespace
}  // namespace wpm::runtime

namespace wpm::runtime {
namespace {

TEST(Network, DefaultGatewaysAreReadFromProcNetRoute) {
  const char* route =
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
      "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
      "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
  EXPECT_EQ(parse_default_gateways(route), std::vector<uint32_t>{*parse_ipv4("192.168.0.1")});
  EXPECT_TRUE(parse_default_gateways("Iface\tDestination\tGateway\n").empty());
}

TEST(Network, OnlyCompleteArpEntriesAreNeighbours) {
  const char* arp =
      "IP address       HW type     Flags       HW address            Mask     Device\n"
      "192.168.0.7      0x1         0x2         52:54:00:12:34:56     *        eth0\n"
      "192.168.0.8      0x1         0x0         00:00:00:00:00:00     *        eth0\n";
  auto n = parse_arp_neighbours(arp);
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0], (Neighbour{*parse_ipv4("192.168.0.7"), "52:54:00:12:34:56", "eth0"}));
}

TEST(Network, TheGatewayAndAKnownNeighbourAreRefusedOthersAccepted) {
  std::vector<uint32_t> gateways = {*parse_ipv4("192.168.0.1")};
  std::vector<Neighbour> neighbours = {{*parse_ipv4("192.168.0.7"), "52:54:00:12:34:56", "eth0"}};
  auto gw = check_address_free_on_link(*parse_ipv4("192.168.0.1"), "eth0", gateways, neighbours);
  ASSERT_TRUE(gw.has_value());
  EXPECT_NE(gw->message.find("default gateway"), std::string::npos);
  auto used = check_address_free_on_link(*parse_ipv4("192.168.0.7"), "eth0", gateways, neighbours);
  ASSERT_TRUE(used.has_value());
  EXPECT_NE(used->message.find("52:54:00:12:34:56"), std::string::npos);
  EXPECT_FALSE(check_address_free_on_link(*parse_ipv4("192.168.0.7"), "eth1", gateways, neighbours))
      << "a neighbour on another link is not in the way";
  EXPECT_FALSE(check_address_free_on_link(*parse_ipv4("192.168.0.9"), "eth0", gateways, neighbours));
}

}  // namespace
}  // namespace wpm::runtime
