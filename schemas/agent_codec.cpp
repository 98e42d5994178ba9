#include "schemas/agent.capnp.h"
#include "schemas/agent_protocol.h"
#include "schemas/codec_detail.h"

namespace wpm::agentproto {
namespace {

namespace s = wpm::schema;
using namespace codec_detail;

template <typename... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};

void put_error(const ProtocolError& e, s::ProtocolError::Builder b) {
  b.setCode(static_cast<s::ProtocolErrorCode>(e.kind));
  b.setMessage(text(e.message));
}

ProtocolError get_error(s::ProtocolError::Reader r) {
  return ProtocolError{checked_enum<ErrorKind>(static_cast<uint16_t>(r.getCode()), kErrorKindMax,
                                               "error code"),
                       str(r.getMessage())};
}

void put_metric_set(const MetricSet& m, s::MetricSet::Builder b) {
  b.setPresent(m.present);
  b.setCpuPercent(m.cpu_percent);
  b.setMemoryPercent(m.memory_percent);
  b.setLoad1(m.load1);
  b.setProcesses(m.processes);
  b.setThreads(m.threads);
  b.setPageFaultsPerS(m.page_faults_per_s);
}

MetricSet get_metric_set(s::MetricSet::Reader r) {
  return MetricSet{r.getPresent(), r.getCpuPercent(), r.getMemoryPercent(), r.getLoad1(),
                   r.getProcesses(), r.getThreads(),  r.getPageFaultsPerS()};
}

[[noreturn]] void unknown(const char* what, unsigned tag) {
  throw Refused{fmt::format("unknown or empty {} (union tag {})", what, tag)};
}

}  // namespace

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidRequest: return "invalid_request";
    case ErrorKind::kWrongPassword: return "wrong_password";
    case ErrorKind::kRegistrationClosed: return "registration_closed";
    case ErrorKind::kNotRegistered: return "not_registered";
    case ErrorKind::kRateLimited: return "rate_limited";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kInternal: return "internal";
    case ErrorKind::kNotFound: return "not_found";
  }
  return "unknown";
}

std::string encode(const ManagerRequest& request) {
  return build_flat(0, [&](capnp::MessageBuilder& m) {
    auto b = m.initRoot<s::ManagerRequest>();
    b.setRequestId(request.request_id);
    b.setProtocolVersion(request.protocol_version);
    std::visit(Overloaded{
                   [&](const GetManagerKey&) { b.setGetManagerKey(); },
                   [&](const Register& r) {
                     auto x = b.initRegister();
                     x.setProof(data(r.proof));
                     x.setPublicKey(text(r.public_key));
                     x.setHostname(text(r.hostname));
                     x.setAgentPort(r.agent_port);
                     put_profile(r.profile, x.initProfile());
                     x.setToken(text(r.token));
                   },
                   [&](const Started& r) {
                     auto x = b.initStarted();
                     x.setAgentVersion(text(r.agent_version));
                     put_profile(r.profile, x.initProfile());
                     x.setWpars(r.wpars);
                     x.setAgentPort(r.agent_port);
                   },
                   [&](const Heartbeat& r) {
                     auto x = b.initHeartbeat();
                     x.setSentNs(r.sent_ns);
                     x.setWpars(r.wpars);
                     x.setWparsActive(r.wpars_active);
                     x.setLoad1(r.load1);
                     x.setCpus(r.cpus);
                     x.setAgentPort(r.agent_port);
                   },
                   [&](const Unregister&) { b.setUnregister(); },
                   [&](const ProfileReport& r) { put_profile(r.profile, b.initProfile()); },
                   [&](const MetricsReport& r) {
                     auto x = b.initMetrics();
                     x.setIntervalMs(r.interval_ms);
                     put_metric_set(r.host, x.initHost());
                     auto list = x.initWpars(static_cast<unsigned>(r.wpars.size()));
                     for (unsigned i = 0; i < r.wpars.size(); ++i) {
                       list[i].setName(text(r.wpars[i].name));
                       put_metric_set(r.wpars[i].metrics, list[i].initMetrics());
                     }
                     x.setHostScope(text(r.host_scope));
                     x.setMetricsPort(r.metrics_port);
                   },
               },
               request.body);
  });
}

Result<ManagerRequest> decode_manager_request(std::string_view bytes) {
  return decode<s::ManagerRequest>(bytes, agent_limits(), "manager request", [](s::ManagerRequest::Reader r) {
    ManagerRequest out;
    out.request_id = r.getRequestId();
    out.protocol_version = r.getProtocolVersion();
    switch (r.which()) {
      case s::ManagerRequest::GET_MANAGER_KEY: out.body = GetManagerKey{}; break;
      case s::ManagerRequest::REGISTER: {
        auto x = r.getRegister();
        out.body = Register{str(x.getProof()), str(x.getHostname()), x.getAgentPort(),
                            get_profile(x.getProfile()), str(x.getPublicKey()), str(x.getToken())};
        break;
      }
      case s::ManagerRequest::STARTED: {
        auto x = r.getStarted();
        out.body = Started{str(x.getAgentVersion()), get_profile(x.getProfile()), x.getWpars(), x.getAgentPort()};
        break;
      }
      case s::ManagerRequest::HEARTBEAT: {
        auto x = r.getHeartbeat();
        out.body = Heartbeat{x.getSentNs(), x.getWpars(), x.getWparsActive(), x.getLoad1(), x.getCpus(), x.getAgentPort()};
        break;
      }
      case s::ManagerRequest::UNREGISTER: out.body = Unregister{}; break;
      case s::ManagerRequest::PROFILE: out.body = ProfileReport{get_profile(r.getProfile())}; break;
      case s::ManagerRequest::METRICS: {
        auto x = r.getMetrics();
        MetricsReport m;
        m.interval_ms = x.getIntervalMs();
        m.host = get_metric_set(x.getHost());
        auto list = x.getWpars();
        if (list.size() > kMetricsWparsMax) {
          throw Refused{fmt::format("a metrics report of {} WPARs is over the limit of {}", list.size(),
                                        kMetricsWparsMax)};
        }
        m.wpars.reserve(list.size());
        for (auto w : list) m.wpars.push_back({str(w.getName()), get_metric_set(w.getMetrics())});
        m.host_scope = str(x.getHostScope());
        m.metrics_port = x.getMetricsPort();
        out.body = std::move(m);
        break;
      }
      default: unknown("manager request", static_cast<unsigned>(r.which()));
    }
    return out;
  });
}

std::string encode(const ManagerReply& reply) {
  return build_flat(0, [&](capnp::MessageBuilder& m) {
    auto b = m.initRoot<s::ManagerReply>();
    b.setRequestId(reply.request_id);
    b.setProtocolVersion(reply.protocol_version);
    b.setMetricsIntervalMs(reply.metrics_interval_ms);
    std::visit(Overloaded{
                   [&](const ManagerKey& k) {
                     auto x = b.initManagerKey();
                     x.setPublicKey(text(k.public_key));
                     x.setFingerprint(text(k.fingerprint));
                     x.setAgentChannelPort(k.agent_channel_port);
                     x.setVersion(text(k.version));
                     x.setPasswordKdf(text(k.password_kdf));
                   },
                   [&](const Registered& r) {
                     auto x = b.initRegistered();
                     x.setSystemId(text(r.system_id));
                     x.setAlreadyRegistered(r.already_registered);
                   },
                   [&](const Ack&) { b.setAck(); },
                   [&](const ProtocolError& e) { put_error(e, b.initError()); },
               },
               reply.body);
  });
}

Result<ManagerReply> decode_manager_reply(std::string_view bytes) {
  return decode<s::ManagerReply>(bytes, agent_limits(), "manager reply", [](s::ManagerReply::Reader r) {
    ManagerReply out;
    out.request_id = r.getRequestId();
    out.protocol_version = r.getProtocolVersion();
    out.metrics_interval_ms = r.getMetricsIntervalMs();
    switch (r.which()) {
      case s::ManagerReply::MANAGER_KEY: {
        auto x = r.getManagerKey();
        out.body = ManagerKey{str(x.getPublicKey()), str(x.getFingerprint()), x.getAgentChannelPort(),
                              str(x.getVersion()), str(x.getPasswordKdf())};
        break;
      }
      case s::ManagerReply::REGISTERED: {
        auto x = r.getRegistered();
        out.body = Registered{str(x.getSystemId()), x.getAlreadyRegistered()};
        break;
      }
      case s::ManagerReply::ACK: out.body = Ack{}; break;
      case s::ManagerReply::ERROR: out.body = get_error(r.getError()); break;
      default: unknown("manager reply", static_cast<unsigned>(r.which()));
    }
    return out;
  });
}

std::string encode(const AgentCommand& command) {
  return build_flat(0, [&](capnp::MessageBuilder& m) {
    auto b = m.initRoot<s::AgentCommand>();
    b.setRequestId(command.request_id);
    b.setProtocolVersion(command.protocol_version);
    std::visit(Overloaded{[&](const Ping&) { b.setPing(); }, [&](const ListWpars&) { b.setListWpars(); },
                          [&](const RefreshProfile&) { b.setRefreshProfile(); },
                          [&](const Operation& o) {
                            auto x = b.initOperation();
                            x.setOperationId(text(o.operation_id));
                            x.setAttempt(o.attempt);
                            x.setWpar(text(o.wpar));
                            x.setEpoch(o.epoch);
                            x.setAction(text(o.action));
                            x.setDefinition(text(o.definition));
                            x.setPreserveFs(o.preserve_fs);
                            x.setStartAfter(o.start_after);
                            x.setDeadlineNs(o.deadline_ns);
                            x.setPeerEndpoint(text(o.peer_endpoint));
                            x.setPeerKey(text(o.peer_key));
                            x.setStateId(text(o.state_id));
                            x.setForce(o.force);
                            x.setStateRoot(text(o.state_root));
                            x.setWaitMs(o.wait_ms);
                          },
                          [&](const FetchState& f) {
                            auto x = b.initFetchState();
                            x.setWpar(text(f.wpar));
                            x.setStateId(text(f.state_id));
                            x.setPath(text(f.path));
                            x.setOffset(f.offset);
                            x.setLength(f.length);
                          }},
               command.body);
  });
}

Result<AgentCommand> decode_agent_command(std::string_view bytes) {
  return decode<s::AgentCommand>(bytes, agent_limits(), "agent command", [](s::AgentCommand::Reader r) {
    AgentCommand out;
    out.request_id = r.getRequestId();
    out.protocol_version = r.getProtocolVersion();
    switch (r.which()) {
      case s::AgentCommand::PING: out.body = Ping{}; break;
      case s::AgentCommand::LIST_WPARS: out.body = ListWpars{}; break;
      case s::AgentCommand::REFRESH_PROFILE: out.body = RefreshProfile{}; break;
      case s::AgentCommand::OPERATION: {
        auto x = r.getOperation();
        out.body = Operation{str(x.getOperationId()), x.getAttempt(), str(x.getWpar()), x.getEpoch(),
                             str(x.getAction()), str(x.getDefinition()), x.getPreserveFs(), x.getStartAfter(),
                             x.getDeadlineNs(),    str(x.getPeerEndpoint()), str(x.getPeerKey()),
                             str(x.getStateId()),  x.getForce(),        str(x.getStateRoot()),
                             x.getWaitMs()};
        break;
      }
      case s::AgentCommand::FETCH_STATE: {
        auto x = r.getFetchState();
        out.body = FetchState{str(x.getWpar()), str(x.getStateId()), str(x.getPath()), x.getOffset(), x.getLength()};
        break;
      }
      default: unknown("agent command", static_cast<unsigned>(r.which()));
    }
    return out;
  });
}

std::string encode(const AgentReply& reply) {
  return build_flat(0, [&](capnp::MessageBuilder& m) {
    auto b = m.initRoot<s::AgentReply>();
    b.setRequestId(reply.request_id);
    b.setProtocolVersion(reply.protocol_version);
    std::visit(Overloaded{
                   [&](const Pong& p) {
                     auto x = b.initPong();
                     x.setSystemId(text(p.system_id));
                     x.setAgentVersion(text(p.agent_version));
                   },
                   [&](const std::vector<WparSummary>& list) {
                     auto x = b.initWpars(static_cast<unsigned>(list.size()));
                     for (unsigned i = 0; i < list.size(); ++i) {
                       x[i].setName(text(list[i].name));
                       x[i].setType(text(list[i].type));
                       x[i].setState(text(list[i].state));
                       x[i].setEpoch(list[i].epoch);
                     }
                   },
                   [&](const ProtocolError& e) { put_error(e, b.initError()); },
                   [&](const OperationResult& o) {
                     auto x = b.initOperation();
                     x.setOperationId(text(o.operation_id));
                     x.setAttempt(o.attempt);
                     x.setRunning(o.running);
                     x.setExitCode(o.exit_code);
                     x.setOutput(text(o.output));
                     x.setError(text(o.error));
                     x.setWparState(text(o.wpar_state));
                     x.setRefused(o.refused);
                   },
                   [&](const StateData& d) {
                     auto x = b.initStateData();
                     auto files = x.initFiles(static_cast<unsigned>(d.files.size()));
                     for (unsigned i = 0; i < d.files.size(); ++i) {
                       files[i].setPath(text(d.files[i].path));
                       files[i].setSize(d.files[i].size);
                     }
                     x.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(d.data.data()), d.data.size()));
                     x.setSize(d.size);
                   },
               },
               reply.body);
  });
}

Result<AgentReply> decode_agent_reply(std::string_view bytes) {
  return decode<s::AgentReply>(bytes, agent_limits(), "agent reply", [](s::AgentReply::Reader r) {
    AgentReply out;
    out.request_id = r.getRequestId();
    out.protocol_version = r.getProtocolVersion();
    switch (r.which()) {
      case s::AgentReply::PONG: {
        auto x = r.getPong();
        out.body = Pong{str(x.getSystemId()), str(x.getAgentVersion())};
        break;
      }
      case s::AgentReply::WPARS: {
        std::vector<WparSummary> list;
        for (auto w : r.getWpars()) {
          list.push_back({str(w.getName()), str(w.getType()), str(w.getState()), w.getEpoch()});
        }
        out.body = std::move(list);
        break;
      }
      case s::AgentReply::ERROR: out.body = get_error(r.getError()); break;
      case s::AgentReply::OPERATION: {
        auto x = r.getOperation();
        out.body = OperationResult{str(x.getOperationId()), x.getAttempt(), x.getRunning(), x.getExitCode(),
                                   str(x.getOutput()), str(x.getError()), str(x.getWparState()), x.getRefused()};
        break;
      }
      case s::AgentReply::STATE_DATA: {
        auto x = r.getStateData();
        StateData d;
        for (auto f : x.getFiles()) d.files.push_back({str(f.getPath()), f.getSize()});
        auto data = x.getData();
        d.data.assign(reinterpret_cast<const char*>(data.begin()), data.size());
        d.size = x.getSize();
        out.body = std::move(d);
        break;
      }
      default: unknown("agent reply", static_cast<unsigned>(r.which()));
    }
    return out;
  });
}

uint64_t peek_request_id(std::string_view bytes) {
  // Every root of this protocol keeps its request id as field 0 (same layout).
  return decode<s::ManagerRequest>(bytes, agent_limits(), "request",
                                   [](s::ManagerRequest::Reader r) { return r.getRequestId(); })
      .value_or(0);
}

}  // namespace wpm::agentproto
