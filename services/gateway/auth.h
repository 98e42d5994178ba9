#pragma once
// Authentication for the gateway (DESIGN.md §8): local Linux users through
// PAM (authentication and account checks only), login tokens (random, kept
// only as their SHA-256), the Linux groups of a user (for role mappings),
// and the root-only credential wpmd writes into its data directory.
//
// PAM calls block (a failure sleeps, as pam_unix does on purpose), so they
// run on a small bounded pool: at most `concurrent` at once; more wait in a
// bounded queue, and beyond it a login is answered "busy".
//
// Thread safety: PamAuthenticator is thread-safe; the functions keep no state.

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

#include "schemas/error.h"

namespace wpm::gateway {

struct PamOptions {
  // The PAM service (/etc/pam.d/<service>). Default: "wpm".
  std::string service = "wpm";
  // A directory holding the service file instead of /etc/pam.d (tests).
  std::string config_dir;
  // PAM conversations at once. Default: 2.
  size_t concurrent = 2;
  // Logins waiting for a slot; beyond it "busy". Default: 0 (a login finds
  // a slot or is told to retry: waiting ones would hold the gateway's workers
  // through PAM's failure delay).
  size_t waiting_max = 0;
};

enum class PamOutcome { kOk, kRefused, kBusy, kError };
struct PamResult {
  PamOutcome outcome = PamOutcome::kError;
  std::string reason;  // when not ok: what PAM said (never the password)
};

class PamAuthenticator {
 public:
  explicit PamAuthenticator(PamOptions options) : options_(std::move(options)) {}
  // Authenticates `user` with `password` and checks the account.
  PamResult authenticate(const std::string& user, const std::string& password);

 private:
  PamOptions options_;
  std::mutex mutex_;
  std::condition_variable cv_;
  size_t running_ = 0;
  size_t waiting_ = 0;
};

// A new login token: "wpm_" and 64 hex digits of randomness.
Result<std::string> new_token();
// The hex SHA-256 of a token: what is kept and recorded.
std::string token_hash(const std::string& token);
// The Linux groups `user` belongs to (primary and supplementary); empty for
// an unknown user.
std::vector<std::string> linux_groups(const std::string& user);

// The root-only credential: DATA/keys/root.credential (0600, in the 0700
// keys folder), made at the first start. Returns the token it holds.
Result<std::string> ensure_root_credential(const std::string& data_dir);

}  // namespace wpm::gateway
