#include "schemas/profile.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace wpm::profile {
namespace {

TEST(Profile, SubnetOfMasksTheHostBits) {
  EXPECT_EQ(subnet_of("10.0.0.5/24"), "10.0.0.0/24");
  EXPECT_EQ(subnet_of("192.168.7.200/30"), "192.168.7.200/30");
  EXPECT_EQ(subnet_of("192.168.7.203/30"), "192.168.7.200/30");
  EXPECT_EQ(subnet_of("10.1.2.3/32"), "10.1.2.3/32");
  EXPECT_EQ(subnet_of("10.1.2.3/0"), "0.0.0.0/0");
  EXPECT_EQ(subnet_of("fd00::5/64"), "fd00::/64");
  EXPECT_EQ(subnet_of("2001:db8:1:2:3::1/48"), "2001:db8:1::/48");
  EXPECT_EQ(subnet_of("10.0.0.5"), std::nullopt) << "no prefix";
  EXPECT_EQ(subnet_of("10.0.0.5/33"), std::nullopt);
  EXPECT_EQ(subnet_of("fd00::5/129"), std::nullopt);
  EXPECT_EQ(subnet_of("10.0.0.5/2x"), std::nullopt);
  EXPECT_EQ(subnet_of("host/24"), std::nullopt);
}

TEST(Profile, SubnetsAreSortedAndUniqueAcrossInterfaces) {
  SystemProfile p;
  p.network_interfaces = {{"eth0", {"10.0.0.5/24", "10.0.0.6/24", "fd00::5/64"}, true, 1500},
                          {"eth1", {"192.168.1.9/16", "bad"}, true, 1500}};
  EXPECT_EQ(subnets(p), (std::vector<std::string>{"10.0.0.0/24", "192.168.0.0/16", "fd00::/64"}));
  auto j = profile_to_json(p);
  EXPECT_EQ(j["networkInterfaces"][0]["name"], "eth0");
  EXPECT_EQ(j["subnets"].size(), 3u);
}

TEST(Profile, ProfileNamesFollowTheDomainAndTheHardwareOnly) {
  SystemProfile a;
  a.architecture = "x86_64";
  a.isa_level = "x86-64-v3";
  a.cpu_model = "Example CPU";
  a.cpu_cores = 8;
  a.memory_bytes = 16ULL << 30;
  a.kernel_version = "6.1.0";
  SystemProfile b = a;
  b.kernel_version = "6.12.0";  // software, not hardware: the same profile
  b.network_interfaces = {{"eth0", {"10.0.0.9/24"}, true, 1500}};
  b.memory_bytes -= 40ULL << 20;  // another kernel's reservations: still 16 GiB
  EXPECT_EQ(profile_name("default", a), profile_name("default", b));
  EXPECT_TRUE(profile_name("default", a).starts_with("default/x86_64-8c-16g-")) << profile_name("default", a);
  EXPECT_NE(profile_name("default", a), profile_name("banking", a)) << "domains never share a profile";
  SystemProfile c = a;
  c.memory_bytes = 32ULL << 30;
  EXPECT_NE(profile_name("default", a), profile_name("default", c)) << "different hardware";
  SystemProfile d = a;
  d.cpu_model = "Other CPU";
  EXPECT_NE(profile_name("default", a), profile_name("default", d)) << "the digest tells models apart";
  EXPECT_NE(hardware_class(a), hardware_class(d));
}

}  // namespace
}  // namespace wpm::profile
