// The store trusts no one it has not authenticated (DESIGN.md §8, §9): a real
// wpmd, clients with and without listed keys, a non-root local user.

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <zmq.hpp>

#include "bus/client.h"
#include "bus/curve.h"
#include "schemas/codec.h"
#include "services/kernel/keyring.h"
#include "tests/integration/helpers.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr uint32_t kNobody = 65534;

class StoreAccess : public ::testing::Test {
 protected:
  void SetUp() override {
    ::chmod(dir_.path().c_str(), 0755);  // a non-root user may look inside, as under /var/lib
    Wpmd::Options o;
    o.data_dir = dir_ / "data";
    wpmd_ = std::make_unique<Wpmd>(o);
    ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  }

  // A client with `keys` (and the store's real public key).
  bus::StoreClient client_with(const bus::CurveKeyPair& keys, int timeout_ms = 5000, int attempts = 2) {
    auto o = wpmd_->client_options(timeout_ms, attempts);
    o.credentials.client_keys = keys;
    return bus::StoreClient(ctx_, wpmd_->request(), o);
  }
  AppendRequest one_event(const std::string& stream, const std::string& actor, const std::string& key) {
    AppendRequest r;
    r.idempotency_key = key;
    r.events.push_back(EventDraft{stream, "c1", "", actor, Synthetic{"access", 0, "", ""}});
    return r;
  }
  uint64_t head() {
    bus::StoreClient admin(ctx_, wpmd_->request(), wpmd_->client_options());
    auto st = admin.stats();
    EXPECT_TRUE(st) << st.error().message;
    return st ? st->head : 0;
  }

  TempDir dir_{"wpm-store-access"};
  zmq::context_t ctx_{1};
  std::unique_ptr<Wpmd> wpmd_;
};

TEST_F(StoreAccess, AClientWithoutAListedKeyIsRefusedAtTheHandshake) {
  auto stranger = bus::generate_curve_keys();
  ASSERT_TRUE(stranger);
  auto refused = client_with(*stranger, 500, 1);
  auto st = refused.stats();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kTimeout) << st.error().message;
  // No CURVE at all: the handshake fails as well.
  bus::StoreClient plain(ctx_, wpmd_->request(), bus::ClientOptions{500, 1, {}});
  EXPECT_FALSE(plain.stats());
  EXPECT_TRUE(wait_until([&] { return wpmd_->log().find("store_client_refused") != std::string::npos; }, 5s))
      << wpmd_->log();
  // The administrator's key gets in.
  bus::StoreClient admin(ctx_, wpmd_->request(), wpmd_->client_options());
  EXPECT_TRUE(admin.stats());
}

TEST_F(StoreAccess, TheStoreStampsTheActorAClientSentIsReplaced) {
  bus::StoreClient admin(ctx_, wpmd_->request(), wpmd_->client_options());
  auto r = admin.append(one_event("synthetic/actor", "service:inventory", "actor-1"));
  ASSERT_TRUE(r) << r.error().message;
  auto events = read_all(admin);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().actor, "admin");
  // The CLI's appends are stamped the same way.
  auto cli = wpm(*wpmd_, {"log", "append", "--synthetic", "2", "--run", "cli"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  auto dump = wpm(*wpmd_, {"log", "dump", "--stream", "synthetic/cli", "-o", "json"});
  EXPECT_NE(dump.out.find("\"actor\":\"admin\""), std::string::npos) << dump.out;
}

TEST_F(StoreAccess, AnAppendToAStreamItDoesNotOwnIsRefusedNamingTheIdentityAndTheStream) {
  uint64_t before = head();
  bus::StoreClient admin(ctx_, wpmd_->request(), wpmd_->client_options());
  auto r = admin.append(one_event("registry", "", "forge-1"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied);
  EXPECT_NE(r.error().message.find("admin"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("registry"), std::string::npos) << r.error().message;
  EXPECT_EQ(head(), before) << "nothing of a refused append is written";
  // A network client cannot pass for an in-process service by its routing id.
  auto o = wpmd_->client_options();
  o.credentials.local_identity = "service:inventory";
  bus::StoreClient pretender(ctx_, wpmd_->request(), o);
  auto forged = pretender.append(one_event("registry", "", "forge-2"));
  ASSERT_FALSE(forged);
  EXPECT_EQ(forged.error().code, ErrorCode::kPermissionDenied) << forged.error().message;
  EXPECT_EQ(head(), before);
}

TEST_F(StoreAccess, AServiceKeyAddedWhileRunningIsAdmittedForItsOwnStreamsOnly) {
  auto added = run({bin("wpmd"), "--data", wpmd_->data_dir(), "keys", "add-service", "compatibility"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  EXPECT_NE(added.out.find("service:compatibility"), std::string::npos) << added.out;
  auto keys = bus::load_curve_keys(wpmd_->data_dir() + "/keys/services", "compatibility");
  ASSERT_TRUE(keys) << keys.error().message;
  auto service = client_with(*keys);
  auto own = service.append(one_event("compat/a-b", "admin", "svc-1"));
  ASSERT_TRUE(own) << own.error().message;
  auto other = service.append(one_event("synthetic/x", "", "svc-2"));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, ErrorCode::kPermissionDenied);
  bus::StoreClient admin(ctx_, wpmd_->request(), wpmd_->client_options());
  auto events = read_all(admin);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().stream_id, "compat/a-b");
  EXPECT_EQ(events.back().actor, "service:compatibility");
  // Unknown services get no key.
  auto bogus = run({bin("wpmd"), "--data", wpmd_->data_dir(), "keys", "add-service", "toaster"});
  EXPECT_EQ(bogus.exit_code, 2) << bogus.err;
}

TEST_F(StoreAccess, AClientOfAnOlderProtocolIsToldToUpgrade) {
  bus::StoreClient admin(ctx_, wpmd_->request(), wpmd_->client_options());
  Request old{7, StatsRequest{}};
  old.protocol_version = 0;  // a client from before the field existed
  auto raw = admin.call_raw(encode_request(old));
  ASSERT_TRUE(raw) << raw.error().message;
  auto reply = decode_reply(*raw);
  ASSERT_TRUE(reply);
  ASSERT_TRUE(std::holds_alternative<Error>(reply->body));
  EXPECT_NE(std::get<Error>(reply->body).message.find("upgrade the client"), std::string::npos);
  EXPECT_EQ(reply->protocol_version, kProtocolVersion) << "the store says what it speaks";
}

TEST_F(StoreAccess, ALocalUserWhoIsNotRootCanNeitherReadTheKeyNorUseTheStore) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to the nobody user";
  auto as_nobody = [&](std::vector<std::string> argv) {
    std::vector<std::string> full = {"/usr/bin/setpriv", "--reuid", std::to_string(kNobody), "--regid",
                                     std::to_string(kNobody), "--clear-groups"};
    full.insert(full.end(), argv.begin(), argv.end());
    return run(full, 30s);
  };
  uint64_t before = head();
  auto cat = as_nobody({"/usr/bin/cat", wpmd_->data_dir() + "/keys/admin.key"});
  EXPECT_NE(cat.exit_code, 0) << cat.out;
  EXPECT_EQ(cat.out.find("secret="), std::string::npos);
  // Nor the root credential of the gateway, and without it the gateway takes them for nobody.
  auto credential = as_nobody({"/usr/bin/cat", wpmd_->data_dir() + "/keys/root.credential"});
  EXPECT_NE(credential.exit_code, 0) << credential.out;
  EXPECT_EQ(credential.out.find("wpm_"), std::string::npos);
  auto list = as_nobody({bin("wpm"), "--data", wpmd_->data_dir(), "--gateway", wpmd_->gateway(), "wpar", "list"});
  EXPECT_EQ(list.exit_code, 1) << list.out;
  EXPECT_NE(list.err.find("not logged in"), std::string::npos) << list.err;
  auto stats = as_nobody({bin("wpm"), "--data", wpmd_->data_dir(), "log", "stats"});
  EXPECT_EQ(stats.exit_code, 1) << stats.out << stats.err;
  EXPECT_NE(stats.err.find("permission denied"), std::string::npos) << stats.err;
  // With keys of their own (in a directory they own), the handshake fails.
  std::string own = dir_ / "nobody";
  ASSERT_TRUE(kernel::ensure_store_keys(own));
  fs::copy_file(wpmd_->data_dir() + "/keys/store.pub", own + "/keys/store.pub", fs::copy_options::overwrite_existing);
  ASSERT_EQ(run({"/usr/bin/chown", "-R", fmt::format("{}:{}", kNobody, kNobody), own}).exit_code, 0);
  auto append = as_nobody({bin("wpm"), "--data", own, "--store", wpmd_->request(), "--timeout", "500", "--attempts",
                           "1", "log", "append", "--synthetic", "1"});
  EXPECT_EQ(append.exit_code, 1) << append.err;
  EXPECT_NE(append.err.find("key listed"), std::string::npos) << append.err;
  EXPECT_EQ(head(), before) << "nothing was appended";
}

}  // namespace
}  // namespace wpm::testing
