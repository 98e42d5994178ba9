#include "bus/registration_proof.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <charconv>
#include <optional>
#include <vector>

#include "schemas/hash.h"

namespace wpm::bus {
namespace {

// The cost an agent accepts: never cheaper than the default (a false manager
// on the plain public port must not buy a proof that is cheap to attack
// offline), never more than 4× (128 MiB), r and p fixed.
constexpr uint64_t kScryptNMin = 1u << 15;
constexpr uint64_t kScryptNMax = 1u << 17;
constexpr size_t kKeyBytes = 32;

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

template <typename T>
bool number(std::string_view s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string hex(std::string_view bytes) {
  return to_hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace

std::string format_kdf(const PasswordKdf& kdf) {
  return fmt::format("scrypt${}${}${}${}", kdf.n, kdf.r, kdf.p, hex(kdf.salt));
}

Result<PasswordKdf> parse_kdf(std::string_view text) {
  auto parts = split(text, '$');
  PasswordKdf kdf;
  if (parts.size() != 5 || parts[0] != "scrypt" || !number(parts[1], kdf.n) || !number(parts[2], kdf.r) ||
      !number(parts[3], kdf.p)) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("'{}' is not scrypt$N$r$p$salt", text));
  }
  auto salt = from_hex(parts[4]);
  if (!salt || salt->size() < 16 || kdf.n < kScryptNMin || kdf.n > kScryptNMax || (kdf.n & (kdf.n - 1)) != 0 ||
      kdf.r != 8 || kdf.p != 1) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("scrypt parameters out of bounds in '{}' (accepted: N from 2^15 to 2^17, r 8, p 1, "
                            "a salt of 16 bytes or more)",
                            text));
  }
  kdf.salt = *salt;
  return kdf;
}

PasswordKdf new_kdf() {
  PasswordKdf kdf;
  kdf.salt.resize(16);
  RAND_bytes(reinterpret_cast<unsigned char*>(kdf.salt.data()), static_cast<int>(kdf.salt.size()));
  return kdf;
}

Result<std::string> derive_password_key(std::string_view password, const PasswordKdf& kdf) {
  std::string key(kKeyBytes, '\0');
  uint64_t max_mem = 128 * kdf.r * (kdf.n + kdf.p + 2) + (1u << 20);
  if (EVP_PBE_scrypt(password.data(), password.size(), reinterpret_cast<const unsigned char*>(kdf.salt.data()),
                     kdf.salt.size(), kdf.n, kdf.r, kdf.p, max_mem, reinterpret_cast<unsigned char*>(key.data()),
                     key.size()) != 1) {
    return fail(ErrorCode::kInternal, "scrypt failed (out of memory?)");
  }
  return key;
}

std::string format_password_hash(const PasswordKdf& kdf, std::string_view key) {
  return format_kdf(kdf) + "$" + hex(key);
}

Result<std::pair<PasswordKdf, std::string>> parse_password_hash(std::string_view text) {
  auto cut = text.rfind('$');
  if (cut == std::string_view::npos) return fail(ErrorCode::kInvalidRequest, "not a password hash");
  auto kdf = parse_kdf(text.substr(0, cut));
  if (!kdf) return std::unexpected(kdf.error());
  auto key = from_hex(text.substr(cut + 1));
  if (!key || key->size() != kKeyBytes) return fail(ErrorCode::kInvalidRequest, "not a password hash");
  return std::pair{*kdf, *key};
}

std::string registration_proof(std::string_view key, std::string_view manager_public_key,
                               std::string_view agent_public_key, std::string_view hostname) {
  std::string context = "wpm-register-v1";
  for (auto part : {manager_public_key, agent_public_key, hostname}) {
    context.push_back('\0');
    context.append(part);
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(context.data()),
       context.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool proof_matches(std::string_view key, std::string_view manager_public_key, std::string_view agent_public_key,
                   std::string_view hostname, std::string_view proof) {
  std::string expected = registration_proof(key, manager_public_key, agent_public_key, hostname);
  return proof.size() == expected.size() && CRYPTO_memcmp(proof.data(), expected.data(), proof.size()) == 0;
}

}  // namespace wpm::bus
