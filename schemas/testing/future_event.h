#pragma once
// Test support: events as a newer wpm writes them, with an event type and a
// payload union member this binary does not know (DESIGN.md §9, "old readers,
// new events"). Made from a known event by moving the payload's union
// discriminant and the type past the known ones. Test code only.

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>

#include <cstring>
#include <string>
#include <string_view>

#include "schemas/codec.h"
#include "schemas/events.capnp.h"

namespace wpm::testing {

// The encoded Event; `member` 0 means the same number as `type`.
inline std::string future_event_bytes(uint16_t type, std::string_view note, uint16_t member = 0,
                                      std::string_view stream = "wpar/web1") {
  capnp::MallocMessageBuilder m;
  auto e = m.initRoot<schema::Event>();
  e.setSequence(9);
  e.setEventId(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("0123456789abcdef"), 16));
  e.setStreamId(capnp::Text::Reader(stream.data(), stream.size()));
  e.setStreamVersion(3);
  e.setActor("service:inventory");
  e.setType(static_cast<schema::EventType>(type));
  auto synthetic = e.initPayload().initSynthetic();
  synthetic.setNote(capnp::Text::Reader(note.data(), note.size()));
  auto payload = capnp::AnyStruct::Builder(e.getPayload());
  auto offset = capnp::Schema::from<schema::Payload>().getProto().getStruct().getDiscriminantOffset();
  uint16_t discriminant = member != 0 ? member : type;
  std::memcpy(payload.getDataSection().begin() + offset * 2, &discriminant, 2);
  auto flat = capnp::messageToFlatArray(m);
  return std::string(reinterpret_cast<const char*>(flat.asBytes().begin()), flat.asBytes().size());
}

// The opaque payload of such an event, to append in-process as a newer
// writer would.
inline UnknownPayload future_payload(uint16_t type, std::string_view note) {
  auto e = decode_event(future_event_bytes(type, note));
  return e ? std::get<UnknownPayload>(e->payload) : UnknownPayload{};
}

}  // namespace wpm::testing
