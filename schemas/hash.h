#pragma once
// Checksums and digests used across components: CRC-32C for record checksums
// (hardware instruction when the CPU has SSE4.2), SHA-256 for the hash chain and
// request digests (OpenSSL). Thread safety: free functions are reentrant;
// a Sha256 object belongs to one thread.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace wpm {

using Sha256Digest = std::array<uint8_t, 32>;

uint32_t crc32c(const void* data, size_t size, uint32_t seed = 0);
inline uint32_t crc32c(std::string_view bytes, uint32_t seed = 0) {
  return crc32c(bytes.data(), bytes.size(), seed);
}

// Incremental SHA-256; reusable after final().
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  Sha256Digest final();

 private:
  evp_md_ctx_st* ctx_;
};

Sha256Digest sha256(std::string_view bytes);
std::string to_hex(const uint8_t* data, size_t size);
template <size_t N>
std::string to_hex(const std::array<uint8_t, N>& bytes) {
  return to_hex(bytes.data(), N);
}
// The bytes written as `hex` (two digits each, either case); empty when `hex`
// is anything else.
std::optional<std::string> from_hex(std::string_view hex);

}  // namespace wpm
