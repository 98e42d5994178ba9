#include "schemas/hash.h"

#include <gtest/gtest.h>

namespace wpm {
namespace {

TEST(Hash, Crc32cMatchesKnownVectors) {
  // RFC 3720 B.4 test vectors.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
}

TEST(Hash, Crc32cIsIncremental) {
  std::string s = "the quick brown fox jumps over the lazy dog";
  EXPECT_EQ(crc32c(s), crc32c(s.substr(10), crc32c(s.substr(0, 10))));
}

TEST(Hash, FromHexInvertsToHexAndRefusesOtherText) {
  std::string bytes("\x00\x01\x7f\x80\xfe\xff", 6);
  std::string hex = to_hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  EXPECT_EQ(hex, "00017f80feff");
  EXPECT_EQ(from_hex(hex), bytes);
  EXPECT_EQ(from_hex("00017F80FEFF"), bytes);
  EXPECT_EQ(from_hex(""), std::string());
  for (const char* bad : {"0", "0g", "-1", "+1", " 1", "123"}) EXPECT_EQ(from_hex(bad), std::nullopt) << bad;
}

TEST(Hash, Sha256MatchesKnownVector) {
  EXPECT_EQ(to_hex(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.update("a");
  h.update("bc");
  EXPECT_EQ(h.final(), sha256("abc"));
  h.update("abc");
  EXPECT_EQ(h.final(), sha256("abc")) << "reusable after final()";
}

}  // namespace
}  // namespace wpm
