#include "services/kernel/identity.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace wpm::kernel {
namespace {

constexpr std::array<std::string_view, 5> kServices = {"inventory", "compatibility", "gateway",
                                                       "executor", "policy"};

struct Ownership {
  std::string_view stream;  // a whole stream id, or a prefix ending in '/'
  std::string_view service;
};
// Every stream family of the control plane and the service that writes it.
constexpr std::array<Ownership, 17> kOwners = {{
    {"registry", "inventory"},
    {"registration-rejections", "inventory"},
    {"agent-report-refusals", "inventory"},
    {"system/", "inventory"},
    {"wpar/", "inventory"},
    {"group/", "inventory"},
    {"domain/", "inventory"},
    {"settings", "inventory"},
    {"token/", "inventory"},
    {"compat/", "compatibility"},
    {"command/", "gateway"},
    {"role/", "gateway"},
    {"session/", "gateway"},
    {"login-refusals", "gateway"},
    {"task/", "executor"},
    {"placement/", "executor"},
    {"policy/", "policy"},
}};

// The services that decide commands the gateway records (the executor and
// policy join them with their commands).
constexpr std::array<std::string_view, 2> kDeciders = {"service:inventory", "service:executor"};

bool valid_user_name(std::string_view name) {
  // Linux user names: letters, digits, '.', '_', '-'; at most 32.
  return !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
  });
}

}  // namespace

std::span<const std::string_view> service_names() { return kServices; }

bool known_service(std::string_view name) {
  return std::find(kServices.begin(), kServices.end(), name) != kServices.end();
}

std::string service_identity(std::string_view name) { return fmt::format("{}{}", kServicePrefix, name); }

std::optional<std::string_view> stream_owner(std::string_view stream_id) {
  for (const auto& o : kOwners) {
    bool prefix = o.stream.ends_with('/');
    if (prefix ? stream_id.starts_with(o.stream) : stream_id == o.stream) return o.service;
  }
  return std::nullopt;
}

Result<std::string> StreamAccess::authorize(const std::string& identity, const EventDraft& draft) const {
  auto refuse = [&](std::string why) -> Result<std::string> {
    Error e{ErrorCode::kPermissionDenied,
            fmt::format("{} may not append to stream '{}': {}", identity, draft.stream_id, why)};
    e.stream_id = draft.stream_id;
    return std::unexpected(std::move(e));
  };
  auto owner = stream_owner(draft.stream_id);
  // The service that decides a command closes it on its stream: command/…
  // takes a CommandDecided from any service.
  if (owner && *owner == "gateway" && draft.stream_id.starts_with("command/")) {
    if (const auto* decided = std::get_if<CommandDecided>(&draft.payload);
        decided != nullptr && identity != service_identity("gateway")) {
      if (std::find(kDeciders.begin(), kDeciders.end(), identity) == kDeciders.end()) {
        return refuse("only the services that decide commands (inventory, executor) close a command");
      }
      if (decided->decided_by != identity) {
        return refuse(fmt::format("a decision says it is by '{}'; it must name its writer", decided->decided_by));
      }
      return identity;
    }
  }
  // The policy asks for relocations as commands of its own
  // (command/policy-…), which the executor decides like any other.
  if (identity == service_identity("policy") && draft.stream_id.starts_with("command/policy-")) {
    const auto* requested = std::get_if<CommandRequested>(&draft.payload);
    if (requested != nullptr && requested->command == "wpar.relocate") return identity;
    return refuse("the policy records only relocation requests there");
  }
  // The executor changes a WPAR's definition once its system took the
  // change (wpm wpar modify, docs/executor.md): a WparDefined that changes an
  // existing definition, never one that makes a WPAR, nothing else there.
  if (owner && *owner == "inventory" && draft.stream_id.starts_with("wpar/") &&
      identity == service_identity("executor")) {
    const auto* defined = std::get_if<WparDefined>(&draft.payload);
    if (defined != nullptr && !defined->created && draft.stream_id == "wpar/" + defined->wpar.name) return identity;
    return refuse("the executor writes only a change of an existing WPAR's definition there");
  }
  if (owner) {
    if (identity != service_identity(*owner)) {
      return refuse(fmt::format("only the {} service writes it", *owner));
    }
  } else if (identity != kAdminIdentity) {
    return refuse("a service writes only its own streams");
  }
  if (identity == service_identity("gateway") && draft.actor.starts_with(kUserPrefix) &&
      valid_user_name(std::string_view(draft.actor).substr(kUserPrefix.size()))) {
    return draft.actor;
  }
  return identity;
}

}  // namespace wpm::kernel
