#include "agents/agent/forward.h"

#include <cstdint>
#include <cstring>

namespace wpm::agent {
namespace {

constexpr std::string_view kMagic = "WPMF1";

void put_u32(std::string& out, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}
void put_bytes(std::string& out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

struct Reader {
  std::string_view in;
  bool u32(uint32_t& v) {
    if (in.size() < 4) return false;
    std::memcpy(&v, in.data(), 4);
    in.remove_prefix(4);
    return true;
  }
  bool bytes(std::string& s) {
    uint32_t n = 0;
    if (!u32(n) || in.size() < n) return false;
    s.assign(in.substr(0, n));
    in.remove_prefix(n);
    return true;
  }
  bool list(std::vector<std::string>& items) {
    uint32_t n = 0;
    if (!u32(n) || n > kForwardItemsMax) return false;
    items.resize(n);
    for (auto& s : items) {
      if (!bytes(s)) return false;
    }
    return true;
  }
};

}  // namespace

std::string encode_forward(const ForwardRequest& r) {
  std::string out(kMagic);
  put_bytes(out, r.cwd);
  put_u32(out, static_cast<uint32_t>(r.args.size()));
  for (const auto& a : r.args) put_bytes(out, a);
  put_u32(out, static_cast<uint32_t>(r.env.size()));
  for (const auto& e : r.env) put_bytes(out, e);
  return out;
}

std::optional<ForwardRequest> decode_forward(std::string_view bytes) {
  if (bytes.size() > kForwardBytesMax || !bytes.starts_with(kMagic)) return std::nullopt;
  Reader r{bytes.substr(kMagic.size())};
  ForwardRequest out;
  if (!r.bytes(out.cwd) || !r.list(out.args) || !r.list(out.env) || !r.in.empty()) return std::nullopt;
  if (out.cwd.empty() || out.cwd.front() != '/') return std::nullopt;
  for (const auto& e : out.env) {
    if (e.find('=') == std::string::npos || e.find('\0') != std::string::npos) return std::nullopt;
  }
  for (const auto& a : out.args) {
    if (a.find('\0') != std::string::npos) return std::nullopt;
  }
  return out;
}

}  // namespace wpm::agent
