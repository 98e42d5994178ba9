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
// handshake of that context's server sockets. The policy gets the ZAP domain,
// the peer address and the client's Z85 public key, and returns the user id
// to admit it with, or nothing to refuse it.
class ZapHandler {
 public:
  using Policy = std::function<std::optional<std::string>(const std::string& domain, const std::string& address,
                                                          const std::string& public_key)>;
  ZapHandler(zmq::context_t& context, Policy policy);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  uint64_t admitted() const { return admitted_.load(); }
  uint64_t refused() const { return refused_.load(); }

 private:
  void run();
  zmq::socket_t socket_;
  Policy policy_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> admitted_{0};
  std::atomic<uint64_t> refused_{0};
  std::thread thread_;
};

}  // namespace wpm::bus
