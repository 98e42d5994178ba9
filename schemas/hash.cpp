#include "schemas/hash.h"

#include <nmmintrin.h>
#include <openssl/evp.h>

#include <charconv>
#include <cstring>

#include "schemas/assert.h"

namespace wpm {
namespace {

constexpr uint32_t kCrc32cPoly = 0x82F63B78;  // Castagnoli, reflected

struct CrcTable {
  uint32_t t[256];
  constexpr CrcTable() : t{} {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kCrc32cPoly : c >> 1;
      t[i] = c;
    }
  }
};
constexpr CrcTable kCrcTable;

uint32_t crc32c_soft(const uint8_t* p, size_t n, uint32_t crc) {
  for (size_t i = 0; i < n; ++i) crc = kCrcTable.t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_hw(const uint8_t* p, size_t n, uint32_t crc) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, *p++);
    --n;
  }
  return c32;
}

// OpenSSL 3 looks the implementation up again on every init given
// EVP_sha256(); fetch it once.
const EVP_MD* sha256_md() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  WPM_ASSERT(md != nullptr, "EVP_MD_fetch(SHA256) failed");
  return md;
}

bool cpu_has_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t seed) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t crc = ~seed;
  crc = cpu_has_sse42() ? crc32c_hw(p, size, crc) : crc32c_soft(p, size, crc);
  return ~crc;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  WPM_ASSERT(ctx_ != nullptr, "EVP_MD_CTX_new failed");
  WPM_ASSERT(EVP_DigestInit_ex(ctx_, sha256_md(), nullptr) == 1, "sha256 init failed");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::update(const void* data, size_t size) {
  WPM_ASSERT(EVP_DigestUpdate(ctx_, data, size) == 1, "sha256 update failed");
}

Sha256Digest Sha256::final() {
  Sha256Digest out{};
  unsigned int len = 0;
  WPM_ASSERT(EVP_DigestFinal_ex(ctx_, out.data(), &len) == 1 && len == out.size(),
             "sha256 final failed");
  WPM_ASSERT(EVP_DigestInit_ex(ctx_, sha256_md(), nullptr) == 1, "sha256 init failed");
  return out;
}

Sha256Digest sha256(std::string_view bytes) {
  Sha256Digest out{};
  unsigned int len = 0;
  WPM_ASSERT(EVP_Digest(bytes.data(), bytes.size(), out.data(), &len, sha256_md(), nullptr) == 1,
             "sha256 failed");
  return out;
}

std::string to_hex(const uint8_t* data, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xF];
  }
  return out;
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, v, 16);
    if (ec != std::errc() || p != hex.data() + 2 * i + 2) return std::nullopt;
    out[i] = static_cast<char>(v);
  }
  return out;
}

}  // namespace wpm
