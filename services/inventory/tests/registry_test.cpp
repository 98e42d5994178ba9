#include "services/inventory/registry.h"

#include <gtest/gtest.h>

namespace wpm::inventory {
namespace {

Event registered(uint64_t seq, std::string id, std::string host, std::string key) {
  Event e;
  e.sequence = seq;
  e.payload = SystemRegistered{std::move(id), std::move(host), "10.0.0.1", std::move(key), {}, 9510};
  return e;
}

Event removed(uint64_t seq, std::string id) {
  Event e;
  e.sequence = seq;
  e.payload = SystemRemoved{std::move(id), "test"};
  return e;
}

TEST(Registry, AdmitsRegisteredKeysAndRevokesRemovedOnes) {
  Registry r;
  r.evolve(registered(1, "node1", "node1", "KEY1"));
  r.evolve(registered(2, "node2", "node2", "KEY2"));
  ASSERT_NE(r.by_key("KEY1"), nullptr);
  EXPECT_EQ(r.by_key("KEY1")->system_id, "node1");
  r.evolve(removed(3, "node1"));
  EXPECT_EQ(r.by_key("KEY1"), nullptr);
  EXPECT_EQ(r.by_id("node1"), nullptr);
  EXPECT_NE(r.by_key("KEY2"), nullptr);
  EXPECT_EQ(r.applied(), 3u);
}

TEST(Registry, ReplayingAnEventTwiceChangesNothing) {
  Registry r;
  r.evolve(registered(1, "node1", "node1", "KEY1"));
  r.evolve(removed(2, "node1"));
  r.evolve(registered(1, "node1", "node1", "KEY1"));  // redelivered: ignored
  EXPECT_EQ(r.by_key("KEY1"), nullptr);
}

TEST(Registry, ReRegistrationWithANewKeyRevokesTheOldKey) {
  Registry r;
  r.evolve(registered(1, "node1", "node1", "OLD"));
  r.evolve(registered(2, "node1", "node1", "NEW"));
  EXPECT_EQ(r.by_key("OLD"), nullptr);
  ASSERT_NE(r.by_key("NEW"), nullptr);
  EXPECT_EQ(r.size(), 1u);
}

TEST(Registry, ASnapshotRestoresTheSameRegistry) {
  Registry r;
  r.evolve(registered(1, "node1", "node1", "KEY1"));
  r.evolve(registered(2, "node2", "node2", "KEY2"));
  Event changed;
  changed.sequence = 3;
  profile::SystemProfile p;
  p.kernel_version = "6.1.0";
  changed.payload = SystemProfileChanged{"node2", p};
  r.evolve(changed);
  r.evolve(removed(4, "node1"));
  auto back = RegistryModel::decode(RegistryModel::encode(r));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->systems(), r.systems());
  EXPECT_EQ(back->applied(), 4u);
  EXPECT_EQ(back->by_key("KEY2")->profile.kernel_version, "6.1.0");
  EXPECT_EQ(back->by_key("KEY1"), nullptr);
  EXPECT_FALSE(RegistryModel::decode("short"));
}

TEST(Registry, SystemIdIsTheHostNameUnlessTaken) {
  Registry r;
  EXPECT_EQ(r.choose_system_id("node1", "sha256:abcdef0123456789"), "node1");
  r.evolve(registered(1, "node1", "node1", "KEY1"));
  EXPECT_EQ(r.choose_system_id("node1", "sha256:abcdef0123456789"), "node1-abcdef01");
  EXPECT_EQ(r.choose_system_id("", "sha256:abcdef0123456789"), "system");
}

}  // namespace
}  // namespace wpm::inventory
