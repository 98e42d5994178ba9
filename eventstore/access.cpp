#include "eventstore/access.h"

#include <fmt/format.h>

namespace wpm::eventstore {

std::string local_routing_id(std::string_view identity, uint64_t nonce) {
  return fmt::format("{}{}/{:016x}", kLocalRoutingPrefix, identity, nonce);
}

std::string identity_of_local_routing_id(std::string_view routing_id) {
  if (!routing_id.starts_with(kLocalRoutingPrefix)) return "";
  std::string_view rest = routing_id.substr(kLocalRoutingPrefix.size());
  size_t slash = rest.rfind('/');
  if (slash == std::string_view::npos || slash == 0) return "";
  return std::string(rest.substr(0, slash));
}

}  // namespace wpm::eventstore
