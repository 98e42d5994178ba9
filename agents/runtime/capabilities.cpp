#include "agents/runtime/capabilities.h"

#include <cap-ng.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <set>

namespace wpm::runtime {
namespace {

// Capability numbers stop well below 64 (40 in Linux 6.x); a bound for loops.
constexpr int kCapabilityNumberMax = 63;

int number_of(const std::string& canonical) {
  return capng_name_to_capability(canonical.substr(4).c_str());
}

std::vector<std::string> trimmed_items(std::string_view list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string item(list.substr(start, comma - start));
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

std::unexpected<Refusal> refuse(int code, std::string message) {
  return std::unexpected(Refusal{code, std::move(message)});
}

std::unexpected<Refusal> not_on_host(const std::string& cap, const std::vector<std::string>& host) {
  return refuse(
      kExitCapabilityNotOnHost,
      fmt::format("capability {} is not in this host's bounding set, so no WPAR on it can "
                  "have it; leave it out (the host allows: {})",
                  cap, fmt::join(host, ",")));
}

std::vector<std::string> sorted(const std::set<std::string>& names) {
  std::vector<std::string> out(names.begin(), names.end());
  std::sort(out.begin(), out.end(),
            [](const std::string& a, const std::string& b) { return number_of(a) < number_of(b); });
  return out;
}

std::set<std::string> default_on(const std::set<std::string>& host) {
  std::set<std::string> out;
  for (const char* c : kDefaultCapabilities) {
    if (host.contains(c)) out.insert(c);
  }
  return out;
}

}  // namespace

std::optional<std::string> canonical_capability(std::string_view name) {
  std::string lower;
  for (char c : name)
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (lower.starts_with("cap_")) lower.erase(0, 4);
  if (lower.empty() || capng_name_to_capability(lower.c_str()) < 0) return std::nullopt;
  return "cap_" + lower;
}

std::expected<std::vector<std::string>, Refusal> resolve_capabilities(
    std::string_view request, const std::vector<std::string>& host_list) {
  const std::set<std::string> host(host_list.begin(), host_list.end());
  auto items = trimmed_items(request);
  if (items.empty()) return sorted(default_on(host));
  if (items.size() == 1 && (items[0] == "none" || items[0] == "all")) {
    return items[0] == "none" ? std::vector<std::string>{} : sorted(host);
  }
  size_t edits = std::count_if(items.begin(), items.end(),
                               [](const std::string& i) { return i[0] == '+' || i[0] == '-'; });
  if (edits != 0 && edits != items.size()) {
    return refuse(kExitCapabilitySyntax,
                  fmt::format("--capabilities '{}' mixes plain names with +/- edits; give either "
                              "the whole set (cap_chown,cap_kill) or only edits of the default "
                              "(+cap_net_admin,-cap_net_raw)",
                              request));
  }
  std::set<std::string> out = edits != 0 ? default_on(host) : std::set<std::string>{};
  for (const auto& item : items) {
    bool remove = item[0] == '-';
    auto cap = canonical_capability(edits != 0 ? std::string_view(item).substr(1) : item);
    if (!cap) {
      return refuse(kExitCapabilitySyntax,
                    fmt::format("'{}' is not a Linux capability; use names such as cap_chown or "
                                "cap_net_admin (see capabilities(7))",
                                item));
    }
    if (remove) {
      out.erase(*cap);
      continue;
    }
    if (!host.contains(*cap)) return not_on_host(*cap, host_list);
    out.insert(*cap);
  }
  return sorted(out);
}

std::expected<std::vector<std::string>, Refusal> wpar_capabilities(
    const std::optional<std::vector<std::string>>& stored,
    const std::vector<std::string>& host_list) {
  if (!stored) return resolve_capabilities("", host_list);
  const std::set<std::string> host(host_list.begin(), host_list.end());
  std::set<std::string> out;
  for (const auto& name : *stored) {
    auto cap = canonical_capability(name);
    if (!cap) {
      return refuse(kExitCapabilitySyntax,
                    fmt::format("the WPAR's spec names '{}', which is not a Linux capability on "
                                "this host; change the WPAR's capability set",
                                name));
    }
    if (!host.contains(*cap)) return not_on_host(*cap, host_list);
    out.insert(*cap);
  }
  return sorted(out);
}

Result<std::vector<std::string>> host_bounding_set() {
  std::vector<std::string> out;
  for (int cap = 0; cap <= kCapabilityNumberMax; ++cap) {
    int in = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (in < 0) break;  // EINVAL: past the kernel's last capability
    if (in == 0) continue;
    const char* name = capng_capability_to_name(static_cast<unsigned>(cap));
    if (name == nullptr) continue;  // newer than libcap-ng: never granted
    out.push_back(fmt::format("cap_{}", name));
  }
  if (out.empty() && errno != EINVAL) {
    return fail(ErrorCode::kIo,
                fmt::format("cannot read the capability bounding set: {}", std::strerror(errno)));
  }
  return out;
}

Result<void> apply_capabilities(const std::vector<std::string>& names) {
  capng_clear(CAPNG_SELECT_ALL);
  constexpr auto kAllSets = static_cast<capng_type_t>(CAPNG_EFFECTIVE | CAPNG_PERMITTED |
                                                      CAPNG_INHERITABLE | CAPNG_BOUNDING_SET);
  for (const auto& name : names) {
    int cap = canonical_capability(name) ? number_of(*canonical_capability(name)) : -1;
    if (cap < 0 || capng_update(CAPNG_ADD, kAllSets, static_cast<unsigned>(cap)) != 0) {
      return fail(ErrorCode::kInvalidRequest, fmt::format("unknown capability {}", name));
    }
  }
  // Bounding set first (that needs cap_setpcap, which capset may drop), then
  // the process's sets, then the ambient set cleared.
  if (int rc = capng_apply(CAPNG_SELECT_ALL); rc != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot apply the capability set {} (libcap-ng "
                                            "error {}): {}",
                                            fmt::join(names, ","), rc, std::strerror(errno)));
  }
  return {};
}

}  // namespace wpm::runtime
