#pragma once
// The identities that may use the event store (DESIGN.md §8) and the stream
// ownership rule that says which of them may write which stream.
//
//   admin               the local administrator's key (DATA/keys/admin.key,
//                       root only): reads everything, writes only streams
//                       no service owns (test and synthetic streams)
//   service:NAME        a control-plane service (in wpmd over inproc, or its
//                       own process with a key from `wpmd keys add-service`):
//                       writes only the streams it owns
//   user:NAME           an operator, as the gateway appends on their behalf
//
// Pure: no I/O. Thread safety: plain functions and immutable data.

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "eventstore/access.h"

namespace wpm::kernel {

inline constexpr std::string_view kAdminIdentity = "admin";
inline constexpr std::string_view kServicePrefix = "service:";
inline constexpr std::string_view kUserPrefix = "user:";

// The services a key can be made for (`wpmd keys add-service NAME`).
std::span<const std::string_view> service_names();
bool known_service(std::string_view name);
std::string service_identity(std::string_view name);

// The identity that owns `stream_id`, or nothing when no service owns it.
// Owned: registry, registration-rejections, system/…, wpar/…, group/…,
// domain/…, settings, token/… (inventory); compat/… (compatibility);
// command/…, role/…, session/…, login-refusals (gateway); task/… (executor);
// policy/… (policy).
std::optional<std::string_view> stream_owner(std::string_view stream_id);

// The append rule (eventstore/access.h): an owned stream only by its owner,
// any other stream only by the administrator. Two exceptions: a command's
// stream (command/…) takes the CommandDecided of whichever service decided
// it, and a WPAR's (wpar/<name>) takes from the executor a WparDefined that
// changes that existing definition (a modify its system took). The actor stamped is the
// identity, except that the gateway appends for the user it authenticated
// (an actor "user:NAME" it sends is kept).
class StreamAccess final : public eventstore::AppendAccess {
 public:
  Result<std::string> authorize(const std::string& identity, const EventDraft& draft) const override;
};

}  // namespace wpm::kernel
