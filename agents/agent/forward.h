#pragma once
// The message a local `wpm-agent` command sends to the daemon's socket: its
// working directory, arguments and environment, as length-prefixed bytes (any
// bytes: arguments need not be UTF-8). Its stdin, stdout and stderr travel
// beside it (SCM_RIGHTS). Pure; thread safety: free functions.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wpm::agent {

struct ForwardRequest {
  std::string cwd;
  std::vector<std::string> args;  // after the program name, without --data
  std::vector<std::string> env;   // KEY=VALUE
  bool operator==(const ForwardRequest&) const = default;
};

inline constexpr size_t kForwardBytesMax = 128 * 1024;  // one SOCK_SEQPACKET message
inline constexpr size_t kForwardItemsMax = 4096;

std::string encode_forward(const ForwardRequest& request);
// Empty when the bytes are not a whole, well-formed request within the limits.
std::optional<ForwardRequest> decode_forward(std::string_view bytes);

}  // namespace wpm::agent
