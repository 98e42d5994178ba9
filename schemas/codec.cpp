#include "schemas/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/exception.h>

#include <cstring>
#include <memory>

#include "schemas/events.capnp.h"
#include "schemas/hash.h"
#include "schemas/store.capnp.h"

namespace wpm {
namespace {

namespace s = wpm::schema;

// ---- small helpers -------------------------------------------------------

capnp::Text::Reader text(const std::string& value) {
  return capnp::Text::Reader(value.c_str(), value.size());
}
capnp::Data::Reader data(const std::string& value) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()), value.size());
}
std::string str(capnp::Text::Reader value) { return std::string(value.cStr(), value.size()); }
std::string str(capnp::Data::Reader value) {
  return std::string(reinterpret_cast<const char*>(value.begin()), value.size());
}

// Thrown inside the guarded block for semantic refusals; caught by decode().
struct Refused {
  std::string message;
};

template <typename Enum>
Enum checked_enum(uint16_t raw, uint16_t max, const char* what) {
  if (raw == 0 || raw > max) throw Refused{fmt::format("unknown {} value {}", what, raw)};
  return static_cast<Enum>(raw);
}

// ---- payloads and events -------------------------------------------------

void put_payload(const Payload& payload, s::Payload::Builder b) {
  std::visit(
      [&](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, Synthetic>) {
          auto x = b.initSynthetic();
          x.setRun(text(p.run));
          x.setIndex(p.index);
          x.setNote(text(p.note));
          x.setBlob(data(p.blob));
        } else if constexpr (std::is_same_v<T, SystemRegistered>) {
          auto x = b.initSystemRegistered();
          x.setSystemId(text(p.system_id));
          x.setHostname(text(p.hostname));
          x.setAddress(text(p.address));
          x.setPublicKey(text(p.public_key));
        } else if constexpr (std::is_same_v<T, SystemRemoved>) {
          auto x = b.initSystemRemoved();
          x.setSystemId(text(p.system_id));
          x.setReason(text(p.reason));
        }
      },
      payload);
}

Payload get_payload(s::Payload::Reader r, s::EventType declared) {
  Payload out;
  switch (r.which()) {
    case s::Payload::SYNTHETIC: {
      auto x = r.getSynthetic();
      out = Synthetic{str(x.getRun()), x.getIndex(), str(x.getNote()), str(x.getBlob())};
      break;
    }
    case s::Payload::SYSTEM_REGISTERED: {
      auto x = r.getSystemRegistered();
      out = SystemRegistered{str(x.getSystemId()), str(x.getHostname()), str(x.getAddress()),
                             str(x.getPublicKey())};
      break;
    }
    case s::Payload::SYSTEM_REMOVED: {
      auto x = r.getSystemRemoved();
      out = SystemRemoved{str(x.getSystemId()), str(x.getReason())};
      break;
    }
    default:
      throw Refused{fmt::format("unknown or empty payload (union tag {})",
                                static_cast<unsigned>(r.which()))};
  }
  auto type = checked_enum<EventType>(static_cast<uint16_t>(declared), kEventTypeMax, "event type");
  if (type != payload_type(out)) {
    throw Refused{fmt::format("event type {} does not match payload {}",
                              static_cast<unsigned>(declared),
                              static_cast<unsigned>(payload_type(out)))};
  }
  return out;
}

// The envelope from its parts: the store's header and the appender's draft.
void put_event(const EventHeader& h, const std::string& stream_id, const std::string& correlation_id,
               const std::string& causation_id, const std::string& actor, const Payload& payload,
               s::Event::Builder b) {
  b.setSequence(h.sequence);
  b.setEventId(capnp::Data::Reader(h.event_id.data(), h.event_id.size()));
  b.setTimestampNs(h.timestamp_ns);
  b.setType(static_cast<s::EventType>(payload_type(payload)));
  b.setStreamId(text(stream_id));
  b.setStreamVersion(h.stream_version);
  b.setCorrelationId(text(correlation_id));
  b.setCausationId(text(causation_id));
  b.setActor(text(actor));
  b.setIdempotencyKey(text(h.idempotency_key));
  put_payload(payload, b.initPayload());
}

// Builds a message in a reused, zeroed first segment (Cap'n Proto zeroes a
// caller-provided segment again when the builder is destroyed) and writes it
// flat after `prefix_bytes` zero bytes: one allocation, one copy.
template <typename Fill>
std::string build_flat(size_t prefix_bytes, Fill fill) {
  constexpr size_t kScratchWords = 4096;  // 32 KiB: typical events fit one segment
  thread_local kj::Array<capnp::word> scratch = [] {
    auto a = kj::heapArray<capnp::word>(kScratchWords);
    std::memset(a.begin(), 0, a.size() * sizeof(capnp::word));
    return a;
  }();
  capnp::MallocMessageBuilder message(scratch.asPtr());
  fill(message);
  auto segments = message.getSegmentsForOutput();
  std::string out;
  if (segments.size() == 1) {
    size_t words = segments[0].size();
    size_t size = prefix_bytes + 8 + words * sizeof(capnp::word);
    out.resize_and_overwrite(size, [&](char* p, size_t n) {
      std::memset(p, 0, prefix_bytes);
      uint32_t table[2] = {0, static_cast<uint32_t>(words)};  // segment count - 1, size
      std::memcpy(p + prefix_bytes, table, 8);
      std::memcpy(p + prefix_bytes + 8, segments[0].begin(), words * sizeof(capnp::word));
      return n;
    });
  } else {
    kj::Array<capnp::word> flat = capnp::messageToFlatArray(segments);
    auto bytes = flat.asBytes();
    out.assign(prefix_bytes, '\0');
    out.append(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  }
  return out;
}

Event get_event(s::Event::Reader r) {
  Event e;
  e.sequence = r.getSequence();
  auto id = r.getEventId();
  if (id.size() != e.event_id.size()) throw Refused{fmt::format("event id of {} bytes", id.size())};
  std::memcpy(e.event_id.data(), id.begin(), id.size());
  e.timestamp_ns = r.getTimestampNs();
  e.stream_id = str(r.getStreamId());
  e.stream_version = r.getStreamVersion();
  e.correlation_id = str(r.getCorrelationId());
  e.causation_id = str(r.getCausationId());
  e.actor = str(r.getActor());
  e.idempotency_key = str(r.getIdempotencyKey());
  e.payload = get_payload(r.getPayload(), r.getType());
  return e;
}

void put_draft(const EventDraft& d, s::EventDraft::Builder b) {
  b.setType(static_cast<s::EventType>(payload_type(d.payload)));
  b.setStreamId(text(d.stream_id));
  b.setCorrelationId(text(d.correlation_id));
  b.setCausationId(text(d.causation_id));
  b.setActor(text(d.actor));
  put_payload(d.payload, b.initPayload());
}

EventDraft get_draft(s::EventDraft::Reader r) {
  return EventDraft{str(r.getStreamId()), str(r.getCorrelationId()), str(r.getCausationId()),
                    str(r.getActor()), get_payload(r.getPayload(), r.getType())};
}

// ---- requests --------------------------------------------------------------

void put_batch(const AppendRequest& a, s::AppendBatch::Builder b) {
  auto ex = b.initExpectations(static_cast<unsigned>(a.expectations.size()));
  for (unsigned i = 0; i < a.expectations.size(); ++i) {
    ex[i].setStreamId(text(a.expectations[i].stream_id));
    ex[i].setKind(static_cast<s::ExpectKind>(a.expectations[i].kind));
    ex[i].setVersion(a.expectations[i].version);
  }
  auto evs = b.initEvents(static_cast<unsigned>(a.events.size()));
  for (unsigned i = 0; i < a.events.size(); ++i) put_draft(a.events[i], evs[i]);
}

AppendRequest get_append(s::AppendRequest::Reader r) {
  AppendRequest a;
  a.idempotency_key = str(r.getIdempotencyKey());
  auto batch = r.getBatch();
  for (auto x : batch.getExpectations()) {
    auto raw = static_cast<uint16_t>(x.getKind());
    if (raw > kExpectKindMax) throw Refused{fmt::format("unknown expectation kind {}", raw)};
    a.expectations.push_back(
        StreamExpectation{str(x.getStreamId()), static_cast<ExpectKind>(raw), x.getVersion()});
  }
  a.events.reserve(batch.getEvents().size());
  for (auto d : batch.getEvents()) a.events.push_back(get_draft(d));
  return a;
}

void put_request(const Request& req, s::Request::Builder b) {
  b.setRequestId(req.request_id);
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, AppendRequest>) {
          auto a = b.initAppend();
          a.setIdempotencyKey(text(body.idempotency_key));
          put_batch(body, a.initBatch());
        } else if constexpr (std::is_same_v<T, ReadRangeRequest>) {
          auto x = b.initReadRange();
          x.setFrom(body.from);
          x.setTo(body.to);
          x.setMaxEvents(body.max_events);
        } else if constexpr (std::is_same_v<T, ReadStreamRequest>) {
          auto x = b.initReadStream();
          x.setStreamId(text(body.stream_id));
          x.setFromVersion(body.from_version);
          x.setMaxEvents(body.max_events);
        } else if constexpr (std::is_same_v<T, StatsRequest>) {
          b.setStats();
        }
      },
      req.body);
}

Request get_request(s::Request::Reader r) {
  Request req;
  req.request_id = r.getRequestId();
  switch (r.which()) {
    case s::Request::APPEND:
      req.body = get_append(r.getAppend());
      break;
    case s::Request::READ_RANGE: {
      auto x = r.getReadRange();
      req.body = ReadRangeRequest{x.getFrom(), x.getTo(), x.getMaxEvents()};
      break;
    }
    case s::Request::READ_STREAM: {
      auto x = r.getReadStream();
      req.body = ReadStreamRequest{str(x.getStreamId()), x.getFromVersion(), x.getMaxEvents()};
      break;
    }
    case s::Request::STATS:
      req.body = StatsRequest{};
      break;
    default:
      throw Refused{fmt::format("unknown request kind {}", static_cast<unsigned>(r.which()))};
  }
  return req;
}

// ---- replies ---------------------------------------------------------------

void put_reply(const Reply& reply, s::Reply::Builder b) {
  b.setRequestId(reply.request_id);
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, Error>) {
          auto e = b.initError();
          // Local-only codes travel as internal errors.
          auto code = static_cast<uint16_t>(body.code);
          e.setCode(static_cast<s::ErrorCode>(code <= 6 ? code : 6));
          e.setMessage(text(body.message));
          e.setStreamId(text(body.stream_id));
          e.setExpectedVersion(body.expected_version);
          e.setActualVersion(body.actual_version);
        } else if constexpr (std::is_same_v<T, AppendResult>) {
          auto a = b.initAppend();
          a.setFirstSequence(body.first_sequence);
          a.setCount(body.count);
          a.setDuplicate(body.duplicate);
        } else if constexpr (std::is_same_v<T, ReadReply>) {
          auto x = b.initRead();
          auto recs = x.initRecords(static_cast<unsigned>(body.records.size()));
          for (unsigned i = 0; i < body.records.size(); ++i) recs.set(i, data(body.records[i]));
          x.setHead(body.head);
          x.setNext(body.next);
          x.setEnd(body.end);
        } else if constexpr (std::is_same_v<T, StatsReply>) {
          auto x = b.initStats();
          x.setHead(body.head);
          x.setEventCount(body.event_count);
          x.setLogBytes(body.log_bytes);
          x.setDiskBytes(body.disk_bytes);
          auto types = x.initPerType(static_cast<unsigned>(body.per_type.size()));
          for (unsigned i = 0; i < body.per_type.size(); ++i) {
            types[i].setType(static_cast<s::EventType>(body.per_type[i].type));
            types[i].setCount(body.per_type[i].count);
          }
          x.setReadOnly(body.read_only);
          x.setReadOnlyReason(text(body.read_only_reason));
          x.setDataDir(text(body.data_dir));
          x.setPublishEndpoint(text(body.publish_endpoint));
        }
      },
      reply.body);
}

Reply get_reply(s::Reply::Reader r) {
  Reply reply;
  reply.request_id = r.getRequestId();
  switch (r.which()) {
    case s::Reply::ERROR: {
      auto e = r.getError();
      auto code = static_cast<uint16_t>(e.getCode());
      if (code == 0 || code > 6) throw Refused{fmt::format("unknown error code {}", code)};
      reply.body = Error{static_cast<ErrorCode>(code), str(e.getMessage()), str(e.getStreamId()),
                         e.getExpectedVersion(), e.getActualVersion()};
      break;
    }
    case s::Reply::APPEND: {
      auto a = r.getAppend();
      reply.body = AppendResult{a.getFirstSequence(), a.getCount(), a.getDuplicate()};
      break;
    }
    case s::Reply::READ: {
      auto x = r.getRead();
      ReadReply rr;
      rr.records.reserve(x.getRecords().size());
      for (auto rec : x.getRecords()) rr.records.push_back(str(rec));
      rr.head = x.getHead();
      rr.next = x.getNext();
      rr.end = x.getEnd();
      reply.body = std::move(rr);
      break;
    }
    case s::Reply::STATS: {
      auto x = r.getStats();
      StatsReply st{x.getHead(), x.getEventCount(), x.getLogBytes(), x.getDiskBytes(), {},
                    x.getReadOnly(), str(x.getReadOnlyReason()), str(x.getDataDir()),
                    str(x.getPublishEndpoint())};
      for (auto t : x.getPerType()) {
        st.per_type.push_back(TypeCount{
            checked_enum<EventType>(static_cast<uint16_t>(t.getType()), kEventTypeMax, "event type"),
            t.getCount()});
      }
      reply.body = std::move(st);
      break;
    }
    default:
      throw Refused{fmt::format("unknown reply kind {}", static_cast<unsigned>(r.which()))};
  }
  return reply;
}

// ---- the guarded decode ----------------------------------------------------

template <typename Root, typename Convert>
auto decode(std::string_view bytes, const DecodeLimits& limits, const char* what, Convert convert)
    -> Result<decltype(convert(std::declval<typename Root::Reader>()))> {
  if (bytes.size() > limits.max_frame_bytes) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} of {} bytes exceeds the limit of {} bytes", what, bytes.size(),
                            limits.max_frame_bytes));
  }
  if (bytes.size() < sizeof(capnp::word) || bytes.size() % sizeof(capnp::word) != 0) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} of {} bytes is not a Cap'n Proto message", what, bytes.size()));
  }
  // FlatArrayMessageReader needs word alignment; copy only when the bytes are not aligned.
  kj::Array<capnp::word> copy;
  const auto* words = reinterpret_cast<const capnp::word*>(bytes.data());
  size_t count = bytes.size() / sizeof(capnp::word);
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) != 0) {
    copy = kj::heapArray<capnp::word>(count);
    std::memcpy(copy.begin(), bytes.data(), bytes.size());
    words = copy.begin();
  }
  capnp::ReaderOptions options;
  options.traversalLimitInWords = count * limits.traversal_factor + 64;
  options.nestingLimit = limits.nesting_limit;
  try {
    capnp::FlatArrayMessageReader reader(kj::ArrayPtr<const capnp::word>(words, count), options);
    return convert(reader.getRoot<Root>());
  } catch (const Refused& r) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("{} refused: {}", what, r.message));
  } catch (const kj::Exception& e) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} is malformed: {}", what, e.getDescription().cStr()));
  }
}

}  // namespace

std::string encode_event(const Event& e) {
  EventHeader h{e.sequence, e.event_id, e.timestamp_ns, e.stream_version, e.idempotency_key};
  return build_flat(0, [&](capnp::MessageBuilder& m) {
    put_event(h, e.stream_id, e.correlation_id, e.causation_id, e.actor, e.payload,
              m.initRoot<s::Event>());
  });
}

std::string encode_event(const EventHeader& h, const EventDraft& d, size_t prefix_bytes) {
  return build_flat(prefix_bytes, [&](capnp::MessageBuilder& m) {
    put_event(h, d.stream_id, d.correlation_id, d.causation_id, d.actor, d.payload,
              m.initRoot<s::Event>());
  });
}

Result<Event> decode_event(std::string_view bytes, const DecodeLimits& limits) {
  return decode<s::Event>(bytes, limits, "event", [](s::Event::Reader r) { return get_event(r); });
}

std::string encode_request(const Request& request) {
  return build_flat(0, [&](capnp::MessageBuilder& m) { put_request(request, m.initRoot<s::Request>()); });
}

Result<Request> decode_request(std::string_view bytes, const DecodeLimits& limits) {
  return decode<s::Request>(bytes, limits, "request",
                            [](s::Request::Reader r) { return get_request(r); });
}

uint64_t peek_request_id(std::string_view bytes, const DecodeLimits& limits) {
  auto id = decode<s::Request>(bytes, limits, "request",
                               [](s::Request::Reader r) { return r.getRequestId(); });
  return id.value_or(0);
}

std::string encode_reply(const Reply& reply) {
  return build_flat(0, [&](capnp::MessageBuilder& m) { put_reply(reply, m.initRoot<s::Reply>()); });
}

Result<Reply> decode_reply(std::string_view bytes, const DecodeLimits& limits) {
  return decode<s::Reply>(bytes, limits, "reply", [](s::Reply::Reader r) { return get_reply(r); });
}

std::string encode_publication(uint64_t sequence, std::string_view record) {
  return build_flat(0, [&](capnp::MessageBuilder& m) {
    auto b = m.initRoot<s::Publication>();
    b.setSequence(sequence);
    b.setRecord(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(record.data()), record.size()));
  });
}

Result<Publication> decode_publication(std::string_view bytes, const DecodeLimits& limits) {
  return decode<s::Publication>(bytes, limits, "publication", [](s::Publication::Reader r) {
    return Publication{r.getSequence(), str(r.getRecord())};
  });
}

}  // namespace wpm
