#pragma once
// Limits of the message bus (STYLE.md §5).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace wpm::bus {

// Largest frame any wpm socket accepts; ZeroMQ drops a peer that sends more
// (ZMQ_MAXMSGSIZE) before allocating it, and decoding checks it again.
inline constexpr size_t kFrameBytesMax = 32u << 20;
// Frames in one request message (ROUTER adds the identity): [identity][request].
inline constexpr size_t kRequestFramesMax = 2;
// Publication topics: "event.<type name>" (schemas/events.cpp names).
inline constexpr std::string_view kEventTopicPrefix = "event.";
// Request/reply: default deadline per attempt and attempts per call.
inline constexpr int kRequestTimeoutMsDefault = 5000;
inline constexpr int kRequestAttemptsDefault = 3;
// Catch-up subscriber: when no publication arrives for this long, it asks the
// store whether it fell behind (publications dropped at the tail).
inline constexpr int kIdleCheckMsDefault = 500;
// Events asked per catch-up read.
inline constexpr uint32_t kCatchUpPageEvents = 4096;

}  // namespace wpm::bus
