// The store's request, reply and publication codec (schemas/store.capnp):
// what clients and the store server exchange. The events inside an append
// are encoded by codec.cpp (put_draft/get_draft).
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/exception.h>

#include <cstring>
#include <memory>

#include "schemas/assert.h"
#include "schemas/codec.h"
#include "schemas/codec_detail.h"
#include "schemas/store.capnp.h"

namespace wpm {
namespace {

namespace s = wpm::schema;
using namespace codec_detail;

// ---- metric samples ------------------------------------------------------

void put_values(const metrics::MetricValues& v, s::MetricValues::Builder b) {
  b.setPresent(v.present);
  unsigned n = 0;
  for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) n += (v.present >> m) & 1u;
  auto list = b.initValues(n);
  unsigned i = 0;
  for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) {
    if ((v.present >> m) & 1u) list.set(i++, v.fixed[m]);
  }
}

metrics::MetricValues get_values(s::MetricValues::Reader r) {
  metrics::MetricValues v;
  v.present = r.getPresent();
  if ((v.present & ~((2u << metrics::kMetricMax) - 2)) != 0) {
    throw Refused{fmt::format("metric values name unknown metrics (bits {:#x})", v.present)};
  }
  auto list = r.getValues();
  unsigned i = 0;
  for (uint8_t m = 1; m <= metrics::kMetricMax; ++m) {
    if (((v.present >> m) & 1u) == 0) continue;
    if (i >= list.size()) throw Refused{"metric values: fewer values than metrics named"};
    v.fixed[m] = list[i++];
  }
  if (i != list.size()) throw Refused{"metric values: more values than metrics named"};
  return v;
}

void put_host_sample(const metrics::HostSample& h, s::HostSample::Builder b) {
  b.setSystem(text(h.system));
  b.setTimeS(h.time_s);
  put_values(h.host, b.initHost());
  auto list = b.initWpars(static_cast<unsigned>(h.wpars.size()));
  for (unsigned i = 0; i < h.wpars.size(); ++i) {
    list[i].setName(text(h.wpars[i].name));
    put_values(h.wpars[i].values, list[i].initValues());
  }
}

metrics::HostSample get_host_sample(s::HostSample::Reader r) {
  metrics::HostSample h{str(r.getSystem()), r.getTimeS(), get_values(r.getHost()), {}};
  h.wpars.reserve(r.getWpars().size());
  for (auto w : r.getWpars()) h.wpars.push_back({str(w.getName()), get_values(w.getValues())});
  return h;
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

void put_append(const AppendRequest& body, s::AppendRequest::Builder a) {
  a.setIdempotencyKey(text(body.idempotency_key));
  put_batch(body, a.initBatch());
}

void put_request(const Request& req, s::Request::Builder b) {
  b.setRequestId(req.request_id);
  b.setProtocolVersion(req.protocol_version);
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, AppendRequest>) {
          put_append(body, b.initAppend());
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
        } else if constexpr (std::is_same_v<T, VerifyRequest>) {
          auto x = b.initVerify();
          x.setFrom(body.from);
          x.setTo(body.to);
          x.setPreviousChain(data(body.previous_chain));
          x.setMaxEvents(body.max_events);
        } else if constexpr (std::is_same_v<T, WriteSamplesRequest>) {
          put_host_sample(body.sample, b.initWriteSamples());
        } else if constexpr (std::is_same_v<T, ReadSamplesRequest>) {
          auto x = b.initReadSamples();
          x.setWpar(body.wpar);
          x.setName(text(body.name));
          x.setFromS(body.from_s);
          x.setToS(body.to_s);
          x.setAggregates(body.aggregates);
        } else if constexpr (std::is_same_v<T, BackupRequest>) {
          b.initBackup().setDir(text(body.dir));
        }
      },
      req.body);
}

Request get_request(s::Request::Reader r) {
  Request req;
  req.request_id = r.getRequestId();
  req.protocol_version = r.getProtocolVersion();
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
    case s::Request::VERIFY: {
      auto x = r.getVerify();
      req.body = VerifyRequest{x.getFrom(), x.getTo(), digest_of(x.getPreviousChain(), "previousChain"),
                               x.getMaxEvents()};
      break;
    }
    case s::Request::WRITE_SAMPLES:
      req.body = WriteSamplesRequest{get_host_sample(r.getWriteSamples())};
      break;
    case s::Request::READ_SAMPLES: {
      auto x = r.getReadSamples();
      req.body = ReadSamplesRequest{x.getWpar(), str(x.getName()), x.getFromS(), x.getToS(), x.getAggregates()};
      break;
    }
    case s::Request::BACKUP:
      req.body = BackupRequest{str(r.getBackup().getDir())};
      break;
    default:
      throw Refused{fmt::format("unknown request kind {}", static_cast<unsigned>(r.which()))};
  }
  return req;
}

// ---- replies ---------------------------------------------------------------

void put_reply(const Reply& reply, s::Reply::Builder b) {
  b.setRequestId(reply.request_id);
  b.setProtocolVersion(reply.protocol_version);
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, Error>) {
          auto e = b.initError();
          // Local-only codes travel as internal errors.
          auto code = static_cast<uint16_t>(body.code);
          e.setCode(static_cast<s::ErrorCode>(code <= kWireErrorCodeMax ? code : 6));
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
          x.setUnknownEvents(body.unknown_events);
        } else if constexpr (std::is_same_v<T, VerifyReply>) {
          auto x = b.initVerify();
          x.setChecked(body.checked);
          x.setNext(body.next);
          x.setChain(data(body.chain));
          x.setProblem(text(body.problem));
          x.setHead(body.head);
          x.setEnd(body.end);
        } else if constexpr (std::is_same_v<T, metrics::History>) {
          auto x = b.initSamples();
          auto times = x.initTimes(static_cast<unsigned>(body.times_s.size()));
          for (unsigned i = 0; i < body.times_s.size(); ++i) times.set(i, body.times_s[i]);
          put_texts(body.systems, x.initSystems(static_cast<unsigned>(body.systems.size())));
          auto columns = x.initColumns(static_cast<unsigned>(body.columns.size()));
          for (unsigned c = 0; c < body.columns.size(); ++c) {
            columns[c].setTag(body.columns[c].tag);
            auto values = columns[c].initValues(static_cast<unsigned>(body.columns[c].values.size()));
            for (unsigned i = 0; i < body.columns[c].values.size(); ++i) values.set(i, body.columns[c].values[i]);
          }
        } else if constexpr (std::is_same_v<T, SamplesWritten>) {
          b.setWritten();
        } else if constexpr (std::is_same_v<T, BackupReply>) {
          auto x = b.initBackup();
          x.setName(text(body.name));
          x.setPath(text(body.path));
          x.setHead(body.head);
          x.setBytes(body.bytes);
          x.setFiles(body.files);
          x.setCreatedNs(body.created_ns);
        }
      },
      reply.body);
}

Reply get_reply(s::Reply::Reader r) {
  Reply reply;
  reply.request_id = r.getRequestId();
  reply.protocol_version = r.getProtocolVersion();
  switch (r.which()) {
    case s::Reply::ERROR: {
      auto e = r.getError();
      auto code = static_cast<uint16_t>(e.getCode());
      if (code == 0 || code > kWireErrorCodeMax) throw Refused{fmt::format("unknown error code {}", code)};
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
                    str(x.getPublishEndpoint()), x.getUnknownEvents()};
      for (auto t : x.getPerType()) {
        st.per_type.push_back(TypeCount{
            checked_enum<EventType>(static_cast<uint16_t>(t.getType()), kEventTypeMax, "event type"),
            t.getCount()});
      }
      reply.body = std::move(st);
      break;
    }
    case s::Reply::VERIFY: {
      auto x = r.getVerify();
      reply.body = VerifyReply{x.getChecked(), x.getNext(), digest_of(x.getChain(), "chain"),
                               str(x.getProblem()), x.getHead(), x.getEnd()};
      break;
    }
    case s::Reply::SAMPLES: {
      auto x = r.getSamples();
      metrics::History h;
      for (auto t : x.getTimes()) h.times_s.push_back(t);
      h.systems = get_texts(x.getSystems());
      for (auto c : x.getColumns()) {
        metrics::Column column{c.getTag(), {}};
        for (auto v : c.getValues()) column.values.push_back(v);
        if (column.values.size() != h.times_s.size()) throw Refused{"a sample column's length differs from its times"};
        h.columns.push_back(std::move(column));
      }
      if (h.systems.size() != h.times_s.size()) throw Refused{"sample systems' length differs from the times"};
      reply.body = std::move(h);
      break;
    }
    case s::Reply::WRITTEN:
      reply.body = SamplesWritten{};
      break;
    case s::Reply::BACKUP: {
      auto x = r.getBackup();
      reply.body = BackupReply{str(x.getName()), str(x.getPath()), x.getHead(), x.getBytes(), x.getFiles(),
                               x.getCreatedNs()};
      break;
    }
    default:
      throw Refused{fmt::format("unknown reply kind {}", static_cast<unsigned>(r.which()))};
  }
  return reply;
}

}  // namespace

std::string encode_request(const Request& request) {
  return build_flat(0, [&](capnp::MessageBuilder& m) { put_request(request, m.initRoot<s::Request>()); });
}

std::string encode_request(uint64_t request_id, const AppendRequest& append) {
  return build_flat(0, [&](capnp::MessageBuilder& m) {
    auto b = m.initRoot<s::Request>();
    b.setRequestId(request_id);
    b.setProtocolVersion(kProtocolVersion);
    put_append(append, b.initAppend());
  });
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

std::string encode_host_sample(const metrics::HostSample& sample) {
  return build_flat(0, [&](capnp::MessageBuilder& m) { put_host_sample(sample, m.initRoot<s::HostSample>()); });
}

Result<metrics::HostSample> decode_host_sample(std::string_view bytes, const DecodeLimits& limits) {
  return decode<s::HostSample>(bytes, limits, "metric sample",
                               [](s::HostSample::Reader r) { return get_host_sample(r); });
}

Result<Publication> decode_publication(std::string_view bytes, const DecodeLimits& limits) {
  return decode<s::Publication>(bytes, limits, "publication", [](s::Publication::Reader r) {
    return Publication{r.getSequence(), str(r.getRecord())};
  });
}

}  // namespace wpm
