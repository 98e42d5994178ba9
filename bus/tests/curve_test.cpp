#include "bus/curve.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>
#include <atomic>

#include "bus/frame.h"
#include "bus/registration_proof.h"

namespace wpm::bus {
namespace {

using namespace std::chrono_literals;

std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / fmt::format("wpm-curve-{}-{}", name, ::getpid());
  std::filesystem::remove_all(dir);
  return dir.string();
}

// ---- keys and fingerprints ------------------------------------------------------

TEST(CurveKeys, AreStoredOwnerOnlyAndLoadBack) {
  auto dir = temp_dir("store");
  auto keys = load_or_create_curve_keys(dir, "agent");
  ASSERT_TRUE(keys) << keys.error().message;
  EXPECT_TRUE(valid_curve_key(keys->public_key));
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/agent.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = load_or_create_curve_keys(dir, "agent");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->public_key, keys->public_key);
  EXPECT_EQ(again->secret_key, keys->secret_key);
  std::filesystem::remove_all(dir);
}

TEST(CurveKeys, AWorldReadableSecretIsRefused) {
  auto dir = temp_dir("mode");
  ASSERT_TRUE(load_or_create_curve_keys(dir, "k"));
  ::chmod((dir + "/k.key").c_str(), 0644);
  auto keys = load_curve_keys(dir, "k");
  ASSERT_FALSE(keys);
  EXPECT_NE(keys.error().message.find("chmod 600"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Fingerprint, MatchesWithOrWithoutPrefixAndColonsButNotOtherKeys) {
  auto a = generate_curve_keys();
  auto b = generate_curve_keys();
  ASSERT_TRUE(a && b);
  std::string fp = key_fingerprint(a->public_key);
  ASSERT_EQ(fp.size(), 7u + 64u);
  EXPECT_TRUE(fingerprint_matches(fp, fp));
  EXPECT_TRUE(fingerprint_matches(fp.substr(7), fp));
  EXPECT_TRUE(fingerprint_matches("SHA256:" + fp.substr(7, 16), fp));
  std::string upper = fp.substr(7);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(fingerprint_matches(upper, fp));
  EXPECT_FALSE(fingerprint_matches(key_fingerprint(b->public_key), fp));
  EXPECT_FALSE(fingerprint_matches(fp.substr(7, 8), fp)) << "too short to mean anything";
  EXPECT_FALSE(fingerprint_matches("", fp));
}

// ---- the registration proof -------------------------------------------------------

TEST(RegistrationProof, OnlyTheRightPasswordKeyAndContextMatch) {
  PasswordKdf kdf = new_kdf();
  kdf.n = 1024;  // fast for the test
  auto key = derive_password_key("right horse battery", kdf);
  auto wrong = derive_password_key("wrong", kdf);
  ASSERT_TRUE(key && wrong);
  auto proof = registration_proof(*key, "M", "A", "host1");
  EXPECT_TRUE(proof_matches(*key, "M", "A", "host1", proof));
  EXPECT_FALSE(proof_matches(*wrong, "M", "A", "host1", proof));
  EXPECT_FALSE(proof_matches(*key, "M", "B", "host1", proof)) << "bound to the agent's key";
  EXPECT_FALSE(proof_matches(*key, "N", "A", "host1", proof)) << "bound to the manager's key";
  EXPECT_FALSE(proof_matches(*key, "M", "A", "host2", proof));
  EXPECT_FALSE(proof_matches(*key, "M", "A", "host1", proof.substr(1)));
}

TEST(RegistrationProof, KdfRoundTripsAndHostileParametersAreRefused) {
  PasswordKdf kdf = new_kdf();
  auto parsed = parse_kdf(format_kdf(kdf));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->salt, kdf.salt);
  EXPECT_EQ(parsed->n, kdf.n);
  EXPECT_FALSE(parse_kdf("scrypt$4194304$8$1$00112233445566778899aabbccddeeff")) << "N over 2^17";
  EXPECT_FALSE(parse_kdf("scrypt$2$1$1$00112233445566778899aabbccddeeff")) << "a cost too cheap: a downgrade";
  EXPECT_FALSE(parse_kdf("scrypt$32768$32$1$00112233445566778899aabbccddeeff")) << "r is fixed";
  EXPECT_FALSE(parse_kdf("scrypt$40000$8$1$00112233445566778899aabbccddeeff")) << "N not a power of 2";
  EXPECT_TRUE(parse_kdf("scrypt$65536$8$1$00112233445566778899aabbccddeeff"));
  EXPECT_FALSE(parse_kdf("bcrypt$1024$8$1$0011223344556677"));
  EXPECT_FALSE(parse_kdf("scrypt$1024$8$1$zz"));
  auto key = derive_password_key("pw", kdf);
  ASSERT_TRUE(key);
  auto hash = parse_password_hash(format_password_hash(kdf, *key));
  ASSERT_TRUE(hash);
  EXPECT_EQ(hash->second, *key);
}

// ---- the ZAP allow-list on real sockets ---------------------------------------------

// Sends "ping" from a client with `client_keys` and waits for the echo.
bool echoed(zmq::context_t& context, const std::string& endpoint, const CurveKeyPair& client_keys,
            const std::string& server_key) {
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  make_curve_client(dealer, client_keys, server_key);
  dealer.connect(endpoint);
  dealer.send(zmq::str_buffer("ping"), zmq::send_flags::none);
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  if (poll(&item, 1, 1500ms) <= 0) return false;
  zmq::message_t reply;
  return dealer.recv(reply) && view(reply) == "ping";
}

// Echoes every request on a CURVE router of `domain` until destroyed.
class EchoServer {
 public:
  EchoServer(zmq::context_t& context, const CurveKeyPair& keys, const std::string& domain)
      : router_(context, zmq::socket_type::router) {
    router_.set(zmq::sockopt::linger, 0);
    make_curve_server(router_, keys, domain);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = last_endpoint(router_);
    thread_ = std::thread([this] {
      while (!stop_) {
        zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
        if (poll(&item, 1, 50ms) <= 0) continue;
        zmq::message_t id, body;
        if (!router_.recv(id) || !router_.recv(body)) continue;
        {
          std::lock_guard lock(mutex_);
          last_user_ = body.gets("User-Id");
        }
        router_.send(id, zmq::send_flags::sndmore);
        router_.send(body, zmq::send_flags::none);
      }
    });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  // The ZAP user id of the last request echoed.
  std::string last_user() const {
    std::lock_guard lock(mutex_);
    return last_user_;
  }

 private:
  zmq::socket_t router_;
  std::string endpoint_;
  mutable std::mutex mutex_;
  std::string last_user_;
  std::atomic<bool> stop_ = false;
  std::thread thread_;
};

TEST(ZapHandler, AdmitsOnlyAllowedKeysAndLabelsThem) {
  zmq::context_t context(1);
  auto server_keys = generate_curve_keys();
  auto allowed = generate_curve_keys();
  auto stranger = generate_curve_keys();
  ASSERT_TRUE(server_keys && allowed && stranger);
  std::mutex mutex;
  std::set<std::string> allow = {allowed->public_key};
  ZapHandler zap(context);
  zap.serve_domain("agent", [&](const std::string&, const std::string& key) -> std::optional<std::string> {
    std::lock_guard lock(mutex);
    if (!allow.contains(key)) return std::nullopt;
    return "system-1";
  });
  EchoServer echo(context, *server_keys, "agent");
  EXPECT_TRUE(echoed(context, echo.endpoint(), *allowed, server_keys->public_key));
  EXPECT_FALSE(echoed(context, echo.endpoint(), *stranger, server_keys->public_key));
  EXPECT_EQ(echo.last_user(), "system-1");
  {
    std::lock_guard lock(mutex);
    allow.insert(stranger->public_key);  // the allow-list changes while serving
  }
  EXPECT_TRUE(echoed(context, echo.endpoint(), *stranger, server_keys->public_key));
  EXPECT_GE(zap.refused(), 1u);
  EXPECT_GE(zap.admitted(), 2u);
}

TEST(ZapHandler, OneHandlerServesEveryDomainOfItsContextWithItsOwnPolicy) {
  zmq::context_t context(1);
  auto server_keys = generate_curve_keys();
  auto agent = generate_curve_keys();
  auto service = generate_curve_keys();
  ASSERT_TRUE(server_keys && agent && service);
  ZapHandler zap(context);
  zap.serve_domain("agent", [&](const std::string&, const std::string& key) -> std::optional<std::string> {
    if (key == agent->public_key) return "system-1";
    return std::nullopt;
  });
  zap.serve_domain("store", [&](const std::string&, const std::string& key) -> std::optional<std::string> {
    if (key == service->public_key) return "service:compatibility";
    return std::nullopt;
  });
  EchoServer agents(context, *server_keys, "agent");
  EchoServer store(context, *server_keys, "store");
  EchoServer nobody(context, *server_keys, "unserved");
  EXPECT_TRUE(echoed(context, agents.endpoint(), *agent, server_keys->public_key));
  EXPECT_FALSE(echoed(context, agents.endpoint(), *service, server_keys->public_key)) << "the other domain's key";
  EXPECT_TRUE(echoed(context, store.endpoint(), *service, server_keys->public_key));
  EXPECT_FALSE(echoed(context, store.endpoint(), *agent, server_keys->public_key));
  EXPECT_FALSE(echoed(context, nobody.endpoint(), *agent, server_keys->public_key)) << "a domain nobody serves";
  zap.drop_domain("store");
  EXPECT_FALSE(echoed(context, store.endpoint(), *service, server_keys->public_key)) << "dropped";
  EXPECT_TRUE(echoed(context, agents.endpoint(), *agent, server_keys->public_key)) << "the other domain stays";
}

}  // namespace
}  // namespace wpm::bus
