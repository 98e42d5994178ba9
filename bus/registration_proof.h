#pragma once
// The registration password, proven and never sent (schemas/agent.capnp):
// the manager keeps K = scrypt(password, salt) (a salted hash; never the
// password), publishes the KDF parameters, and an agent proves it knows the
// password with HMAC-SHA256(K, context), the context binding the manager's
// key, the agent's key and its host name. Thread safety: free functions.

#include <string>
#include <string_view>

#include "schemas/error.h"

namespace wpm::bus {

struct PasswordKdf {
  uint64_t n = 1u << 15;  // scrypt cost; 32 MiB of memory with r = 8
  uint32_t r = 8;
  uint32_t p = 1;
  std::string salt;  // raw bytes (16)
};

// "scrypt$N$r$p$<salt hex>"; parse accepts only N from 2^15 to 2^17 with
// r = 8, p = 1: a false manager can neither make the proof cheap to attack
// offline nor make an agent burn its memory.
std::string format_kdf(const PasswordKdf& kdf);
Result<PasswordKdf> parse_kdf(std::string_view text);
PasswordKdf new_kdf();  // fresh random salt, default cost

// K = scrypt(password, kdf): 32 bytes.
Result<std::string> derive_password_key(std::string_view password, const PasswordKdf& kdf);

// The stored form of the manager's password hash: "<kdf>$<K hex>".
std::string format_password_hash(const PasswordKdf& kdf, std::string_view key);
Result<std::pair<PasswordKdf, std::string>> parse_password_hash(std::string_view text);

std::string registration_proof(std::string_view key, std::string_view manager_public_key,
                               std::string_view agent_public_key, std::string_view hostname);
// Constant-time comparison with the expected proof.
bool proof_matches(std::string_view key, std::string_view manager_public_key,
                   std::string_view agent_public_key, std::string_view hostname, std::string_view proof);

}  // namespace wpm::bus
