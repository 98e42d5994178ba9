#pragma once
// The shape of every aggregate's pure core (STYLE.md §1, DESIGN.md §2):
//
//   struct Aggregate {
//     using State = …;                 // copyable, with operator==
//     using Command = …;               // what a client asks for
//     static State initial();
//     static State evolve(State, const Event&);         // no I/O, no clock
//     static Decision decide(const State&, const Command&, const Context&);
//   };
//
// decide() returns the payloads of the events to append, or a Rejection (a
// domain value, never an exception). A command that changes nothing returns
// zero events. Time, the actor and the ids come in through Context.

#include <concepts>
#include <cstdint>
#include <expected>
#include <string>
#include <vector>

#include "schemas/events.h"
#include "services/kernel/ids.h"

namespace wpm::kernel {

enum class RejectionCode : uint16_t {
  kInvalid = 1,        // the command is malformed or names an impossible value
  kNotFound = 2,       // it names something that does not exist
  kConflict = 3,       // the state does not allow it now (e.g. a WPAR that is deployed)
  kAlreadyExists = 4,  // it would create something that exists
  kForbidden = 5,      // the actor may not do it
  kExpired = 6,        // a token or a deadline has passed
  kUnauthenticated = 7,  // no valid login: log in first
};
const char* rejection_code_name(RejectionCode code);

struct Rejection {
  RejectionCode code = RejectionCode::kInvalid;
  std::string message;  // what was wrong, with which value, and what to do
  bool operator==(const Rejection&) const = default;
};

using Decision = std::expected<std::vector<Payload>, Rejection>;

struct Context {
  int64_t now_ns = 0;          // the time of the decision
  std::string actor;           // who asked: "user:alice", "service:inventory"
  CommandId command_id;        // this request, unique: the idempotency key derives from it
  std::string correlation_id;  // the task or command the events belong to (DESIGN.md §4)
  bool operator==(const Context&) const = default;
};

template <typename A>
concept Aggregate = requires(const typename A::State& state, const typename A::Command& command,
                             const Context& context, const Event& event) {
  { A::initial() } -> std::same_as<typename A::State>;
  { A::evolve(state, event) } -> std::same_as<typename A::State>;
  { A::decide(state, command, context) } -> std::same_as<Decision>;
};

}  // namespace wpm::kernel
