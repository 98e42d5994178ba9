// Checks shared by the executor's decisions: the arrival checks of deploy
// and relocation, and what an operation's outcome means for its task.
#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "services/executor/internal.h"

namespace wpm::executor::detail {

using kernel::Rejection;
using kernel::RejectionCode;

std::unexpected<Rejection> reject(RejectionCode code, std::string message) {
  return std::unexpected(Rejection{code, std::move(message)});
}

std::string user_of(const kernel::Context& context) {
  return context.actor.starts_with("user:") ? context.actor.substr(5) : context.actor;
}

std::optional<runtime::WparState> state_of_letter(const std::string& letter) {
  static const std::map<std::string, runtime::WparState> kStates = {
      {"D", runtime::WparState::kDefined}, {"A", runtime::WparState::kActive},
      {"P", runtime::WparState::kPaused},  {"F", runtime::WparState::kFrozen},
      {"L", runtime::WparState::kLoaded},  {"T", runtime::WparState::kTransitional},
      {"B", runtime::WparState::kBroken}};
  auto it = kStates.find(letter);
  if (it == kStates.end()) return std::nullopt;
  return it->second;
}

namespace {

// An IPv4 address and prefix length from "a.b.c.d" or "a.b.c.d/len".
std::optional<std::pair<uint32_t, int>> parse_ipv4(const std::string& text) {
  std::string address = text.substr(0, text.find('/'));
  int length = 32;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    try {
      length = std::stoi(text.substr(slash + 1));
    } catch (const std::exception&) {  // std::stoi: not a number
      return std::nullopt;
    }
    if (length < 0 || length > 32) return std::nullopt;
  }
  in_addr a{};
  if (::inet_pton(AF_INET, address.c_str(), &a) != 1) return std::nullopt;
  return std::pair{ntohl(a.s_addr), length};
}

bool same_subnet(uint32_t a, uint32_t b, int length) {
  uint32_t mask = length == 0 ? 0 : ~uint32_t{0} << (32 - length);
  return (a & mask) == (b & mask);
}

}  // namespace

std::expected<std::string, Rejection> check_arrival(const inventory::Inventory& inv, const WparDefinition& w,
                                                    const std::string& system) {
  const auto* s = inv.registry.by_id(system);
  if (s == nullptr) return reject(RejectionCode::kNotFound, fmt::format("no system named '{}'", system));
  std::string warning;
  if (!w.address.empty()) {
    auto address = parse_ipv4(w.address);
    if (!address) {
      return reject(RejectionCode::kInvalid, fmt::format("WPAR {}'s address {} is not an IPv4 address", w.name,
                                                         w.address));
    }
    bool inside = false;
    for (const auto& nic : s->profile.network_interfaces) {
      for (const auto& a : nic.addresses) {
        auto host = parse_ipv4(a);
        if (!host) continue;
        if (host->first == address->first) {
          return reject(RejectionCode::kConflict,
                        fmt::format("WPAR {}'s address {} is the address of {}'s interface {}; give the WPAR an "
                                    "address of its own (wpm wpar modify {} --address A)",
                                    w.name, w.address, system, nic.name, w.name));
        }
        if (same_subnet(host->first, address->first, host->second)) inside = true;
      }
    }
    if (!inside) {
      std::vector<std::string> subnets;
      for (const auto& nic : s->profile.network_interfaces) {
        for (const auto& a : nic.addresses) subnets.push_back(fmt::format("{} {}", nic.name, a));
      }
      return reject(RejectionCode::kConflict,
                    fmt::format("WPAR {}'s address {} is outside every subnet of {} ({}); choose an address in "
                                "one of them, or another system",
                                w.name, w.address, system, subnets.empty() ? "it reports none" : fmt::format("{}", fmt::join(subnets, ", "))));
    }
    for (const auto& [name, other] : inv.wpars) {
      if (name == w.name || other.wpar.system.empty()) continue;
      auto theirs = parse_ipv4(other.wpar.address);
      if (!theirs || theirs->first != address->first) continue;
      if (other.wpar.system == system) {
        return reject(RejectionCode::kConflict,
                      fmt::format("address {} is already used on {} by WPAR {}; give WPAR {} another address",
                                  w.address, system, name, w.name));
      }
      warning = fmt::format("address {} is also deployed on {} (WPAR {}); both hosts will answer for it if they "
                            "share a network",
                            w.address, other.wpar.system, name);
    }
  }
  // Every capability the WPAR names must be in the host's bounding set.
  if (!w.capabilities.empty() && w.capabilities != "none" && w.capabilities != "all" &&
      !s->profile.capabilities.empty()) {
    // Profiles name them as libcap-ng does ("kill"); definitions as cap_kill, Kill or kill.
    auto canonical = [](std::string name) {
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      return name.starts_with("cap_") ? name : "cap_" + name;
    };
    std::set<std::string> host;
    for (const auto& c : s->profile.capabilities) host.insert(canonical(c));
    std::vector<std::string> missing;
    size_t start = 0;
    while (start <= w.capabilities.size()) {  // bounded: each turn moves past a comma
      size_t comma = w.capabilities.find(',', start);
      std::string item = w.capabilities.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!item.empty() && item.front() != '-') {
        if (item.front() == '+') item.erase(0, 1);
        std::string name = canonical(item);
        if (!host.contains(name)) missing.push_back(name);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (!missing.empty()) {
      return reject(RejectionCode::kConflict,
                    fmt::format("WPAR {} needs capabilities that {}'s bounding set lacks: {}; remove them from its "
                                "definition or choose another system",
                                w.name, system, fmt::join(missing, ", ")));
    }
  }
  return warning;
}

// Whether an operation did what its task needs: it succeeded, or it was a
// removal from a system that no longer has the WPAR (the seed's 16, nothing
// left there), which is what a removal wants.
bool achieved(const Operation& op) {
  if (op.outcome == "ok") return true;
  return op.action == "remove" && op.finished && op.exit_code == 16 && op.wpar_state.empty();
}

std::string describe_failure(const Operation& op) {
  std::string why = op.error.empty() ? op.outcome : op.error;
  if (op.outcome == "failed" || op.outcome == "refused") {
    return fmt::format("operation {} ({} of {} on {}) failed with exit code {}: {}", op.id, op.action, op.wpar,
                       op.system, op.exit_code, why);
  }
  return fmt::format("operation {} ({} of {} on {}) {}: {}", op.id, op.action, op.wpar, op.system,
                     op.outcome == "timeout"  ? "timed out"
                     : op.outcome == "unsent" ? "was not sent"
                                              : "could not reach its agent",
                     why);
}

}  // namespace wpm::executor::detail
