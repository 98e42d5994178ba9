#pragma once
// CURVE security for wpm sockets (DESIGN.md §8): key pairs kept in files,
// key fingerprints, and a ZAP handler that admits only the keys its policy
// allows. CURVE alone admits any client that knows the server's public key;
// the ZAP handler is what turns it into an allow-list.
//
// Thread safety: CurveKeyPair and the free functions are plain values; a
// ZapHandler runs its own thread and its policy must be thread-safe.

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <zmq.hpp>

#include "schemas/error.h"

namespace wpm::bus {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

Result<CurveKeyPair> generate_curve_keys();

// Key files: NAME.key (mode 0600: both keys) and NAME.pub (the public key),
// one `public=…`/`secret=…` line each, in `dir`.
Result<CurveKeyPair> load_curve_keys(const std::string& dir, const std::string& name);
// The public key alone, from NAME.pub.
Result<std::string> load_public_key(const std::string& dir, const std::string& name);
// Loads the pair, or creates it (and `dir`, mode 0700) when there is none.
Result<CurveKeyPair> load_or_create_curve_keys(const std::string& dir, const std::string& name);
// Writes a new pair, replacing any (atomically, the secret never world-readable).
Result<void> store_curve_keys(const std::string& dir, const std::string& name, const CurveKeyPair& keys);

// True when `z85` is a well-formed Z85 CURVE public key.
bool valid_curve_key(std::string_view z85);
// "sha256:" + hex of the SHA-256 of the raw 32-byte key.
std::string key_fingerprint(std::string_view public_key_z85);
// Whether an operator-given fingerprint names `fingerprint`: case-insensitive,
// with or without the "sha256:" prefix, colons ignored; at least 16 hex digits.
bool fingerprint_matches(std::string_view given, std::string_view fingerprint);

// Socket set-up.
void make_curve_server(zmq::socket_t& socket, const CurveKeyPair& keys, const std::string& zap_domain);
void make_curve_client(zmq::socket_t& socket, const CurveKeyPair& keys, const std::string& server_public_key);

// The ZAP handler of one ZeroMQ context (RFC 27): answers every CURVE
// handshake of that context's server sockets, whatever their ZAP domain
// (libzmq binds one handler per context, so there is exactly one of these per
// context; DESIGN.md §9). Each domain is served by its own policy, which gets
// the peer address and the client's Z85 public key and returns the user id to
// admit it with, or nothing to refuse it. A handshake for a domain nobody
// serves is refused.
//
// Thread safety: serve_domain() and drop_domain() from any thread; a policy
// runs on the handler's thread, under the handler's lock, so after
// drop_domain() returns it is never called again (its captures may go).
class ZapHandler {
 public:
  using Policy = std::function<std::optional<std::string>(const std::string& address,
                                                          const std::string& public_key)>;
  explicit ZapHandler(zmq::context_t& context);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Serves `domain` with `policy` from now on, replacing any earlier policy.
  void serve_domain(const std::string& domain, Policy policy);
  // Stops serving `domain`: its handshakes are refused from now on.
  void drop_domain(const std::string& domain);

  uint64_t admitted() const { return admitted_.load(); }
  uint64_t refused() const { return refused_.load(); }

 private:
  void run();
  std::optional<std::string> decide(const std::string& domain, const std::string& address,
                                    const std::string& key);
  zmq::socket_t socket_;
  std::mutex mutex_;  // guards policies_, held while a policy runs
  std::map<std::string, Policy> policies_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> admitted_{0};
  std::atomic<uint64_t> refused_{0};
  std::thread thread_;
};

}  // namespace wpm::bus
