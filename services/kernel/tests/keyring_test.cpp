// The store's keys and allow-list under DATA/keys.

#include "services/kernel/keyring.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace wpm::kernel {
namespace {

namespace fs = std::filesystem;

class Keyring : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    dir_ = fs::path(tmp != nullptr ? tmp : "/tmp") /
           ("wpm-keyring-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string data() const { return dir_.string(); }
  fs::path dir_;
};

TEST_F(Keyring, FirstStartMakesTheStoreAndAdministratorKeysRootOnly) {
  auto keys = ensure_store_keys(data());
  ASSERT_TRUE(keys) << keys.error().message;
  struct stat st {};
  ASSERT_EQ(::stat((data() + "/keys").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((data() + "/keys/admin.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The second start loads the same keys.
  auto again = ensure_store_keys(data());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->store.public_key, keys->store.public_key);
  EXPECT_EQ(again->admin.public_key, keys->admin.public_key);
  auto access = read_local_store_access(data());
  ASSERT_TRUE(access) << access.error().message;
  EXPECT_EQ(access->store_public_key, keys->store.public_key);
  EXPECT_EQ(access->admin.secret_key, keys->admin.secret_key);
}

TEST_F(Keyring, ListsTheAdministratorAndServiceKeysAndSeesKeysAddedLater) {
  auto keys = ensure_store_keys(data());
  ASSERT_TRUE(keys);
  StoreKeyring ring(data() + "/keys");
  EXPECT_EQ(ring.identify(keys->admin.public_key), "admin");
  EXPECT_EQ(ring.identify(keys->store.public_key), std::nullopt) << "the store's own key is no client";
  auto service = add_service_key(data(), "compatibility", ReplaceKey::kNo);
  ASSERT_TRUE(service) << service.error().message;
  EXPECT_EQ(ring.identify(service->public_key), "service:compatibility") << "added while running";
  auto twice = add_service_key(data(), "compatibility", ReplaceKey::kNo);
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.error().message.find("--replace"), std::string::npos);
  auto replaced = add_service_key(data(), "compatibility", ReplaceKey::kYes);
  ASSERT_TRUE(replaced);
  EXPECT_EQ(ring.identify(replaced->public_key), "service:compatibility");
  EXPECT_EQ(ring.identify(service->public_key), std::nullopt) << "the replaced key is revoked";
  fs::remove(data() + "/keys/services/compatibility.pub");
  EXPECT_EQ(ring.identify(replaced->public_key), std::nullopt) << "removing the .pub revokes";
}

TEST_F(Keyring, RefusesUnknownServicesAndSaysWhatIsMissing) {
  auto bad = add_service_key(data(), "toaster", ReplaceKey::kNo);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("inventory"), std::string::npos) << bad.error().message;
  auto none = read_local_store_access(data());
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(none.error().message.find("WPM_DATA"), std::string::npos) << none.error().message;
}

}  // namespace
}  // namespace wpm::kernel
