#include "agents/agent/forward.h"

#include <gtest/gtest.h>

namespace wpm::agent {
namespace {

TEST(Forward, RoundTripsAnyBytesInArguments) {
  ForwardRequest r{"/srv/work", {"wparexec", "-n", "w", "--", "/bin/echo", "\xe9\xff", ""}, {"PATH=/usr/bin", "A=b=c"}};
  auto back = decode_forward(encode_forward(r));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, r);
}

TEST(Forward, RefusesTruncatedForeignOrUnsafeMessages) {
  ForwardRequest r{"/", {"lswpar"}, {"A=1"}};
  std::string bytes = encode_forward(r);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(decode_forward(bytes.substr(0, cut))) << "cut at " << cut;
  }
  EXPECT_FALSE(decode_forward(bytes + "x")) << "trailing bytes";
  EXPECT_FALSE(decode_forward("{\"args\":[]}"));
  EXPECT_FALSE(decode_forward(encode_forward({"relative/dir", {"lswpar"}, {}}))) << "cwd must be absolute";
  EXPECT_FALSE(decode_forward(encode_forward({"/", {"lswpar"}, {"NOEQUALS"}})));
  EXPECT_FALSE(decode_forward(encode_forward({"/", {std::string("a\0b", 3)}, {}}))) << "NUL cannot reach argv";
  EXPECT_FALSE(decode_forward(std::string(kForwardBytesMax + 1, 'W')));
}

}  // namespace
}  // namespace wpm::agent
