#pragma once
// Who may write what to the store (DESIGN.md §8, §9: a local socket is not a
// credential). The store server learns each request's identity from how it
// arrived: the user id its ZAP handler gave a CURVE connection, or the
// identity an in-process client declares on the inproc endpoint (only code
// inside wpmd can reach that). Before an append is staged, every event is
// put to the AppendAccess policy, which refuses it or names the actor to
// stamp on it: a client never chooses its own actor.
//
// The policy is pure and injected by main(); the store knows no service.
// Thread safety: authorize() is called on the sequencer thread only.

#include <string>
#include <string_view>

#include "schemas/error.h"
#include "schemas/events.h"

namespace wpm::eventstore {

// Routing ids of in-process clients: "local/<identity>/<nonce>". A message
// that arrives without a ZAP user id can only have come over inproc (every
// other endpoint of the store is CURVE), so only then is this read.
inline constexpr std::string_view kLocalRoutingPrefix = "local/";
std::string local_routing_id(std::string_view identity, uint64_t nonce);
// The identity in a local routing id; empty when `routing_id` is not one.
std::string identity_of_local_routing_id(std::string_view routing_id);

class AppendAccess {
 public:
  virtual ~AppendAccess() = default;
  // The actor to stamp on `draft` when `identity` appends it, or a
  // kPermissionDenied error that names the identity and the stream.
  virtual Result<std::string> authorize(const std::string& identity, const EventDraft& draft) const = 0;
};

}  // namespace wpm::eventstore
