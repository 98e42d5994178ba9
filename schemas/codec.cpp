// The event codec (schemas/events.capnp): payloads, events and the drafts
// an append carries. The store's requests and replies are in store_codec.cpp.
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
#include "schemas/assert.h"
#include "schemas/codec_detail.h"

namespace wpm {
namespace {

namespace s = wpm::schema;
using namespace codec_detail;

}  // namespace

// ---- the system profile (shared with agent_codec.cpp) ------------------------

namespace codec_detail {

void put_profile(const profile::SystemProfile& p, s::SystemProfile::Builder b) {
  b.setOsType(text(p.os_type));
  b.setDistribution(text(p.distribution));
  b.setDistributionVersion(text(p.distribution_version));
  b.setKernelVersion(text(p.kernel_version));
  b.setBaseSystemVersion(text(p.base_system_version));
  b.setGlibcVersion(text(p.glibc_version));
  b.setArchitecture(text(p.architecture));
  b.setIsaLevel(text(p.isa_level));
  put_texts(p.cpu_flags, b.initCpuFlags(static_cast<unsigned>(p.cpu_flags.size())));
  b.setCpuModel(text(p.cpu_model));
  b.setCpuMhz(p.cpu_mhz);
  b.setCpuCores(p.cpu_cores);
  b.setMemoryBytes(p.memory_bytes);
  b.setMemoryProtectionKeys(p.memory_protection_keys);
  b.setNtp(!p.ntp_synchronized        ? s::NtpState::UNKNOWN
           : *p.ntp_synchronized      ? s::NtpState::SYNCHRONIZED
                                      : s::NtpState::UNSYNCHRONIZED);
  auto cg = b.initCgroups(static_cast<unsigned>(p.cgroups.size()));
  for (unsigned i = 0; i < p.cgroups.size(); ++i) {
    cg[i].setName(text(p.cgroups[i].name));
    cg[i].setVersion(static_cast<uint8_t>(p.cgroups[i].version));
    cg[i].setMount(text(p.cgroups[i].mount));
  }
  b.setCgroupV2Freeze(p.cgroup_v2_freeze);
  put_texts(p.namespaces, b.initNamespaces(static_cast<unsigned>(p.namespaces.size())));
  auto cp = b.initCheckpointers(static_cast<unsigned>(p.checkpointers.size()));
  for (unsigned i = 0; i < p.checkpointers.size(); ++i) {
    cp[i].setName(text(p.checkpointers[i].name));
    cp[i].setAvailable(p.checkpointers[i].available);
    cp[i].setVersion(text(p.checkpointers[i].version));
    cp[i].setReason(text(p.checkpointers[i].reason));
  }
  b.setAgentVersion(text(p.agent_version));
  put_texts(p.capabilities, b.initCapabilities(static_cast<unsigned>(p.capabilities.size())));
  put_texts(p.overridden_facts, b.initOverriddenFacts(static_cast<unsigned>(p.overridden_facts.size())));
  auto nics = b.initNetworkInterfaces(static_cast<unsigned>(p.network_interfaces.size()));
  for (unsigned i = 0; i < p.network_interfaces.size(); ++i) {
    const auto& n = p.network_interfaces[i];
    auto x = nics[i];
    x.setName(text(n.name));
    put_texts(n.addresses, x.initAddresses(static_cast<unsigned>(n.addresses.size())));
    x.setUp(n.up);
    x.setMtu(n.mtu);
  }
}

profile::SystemProfile get_profile(s::SystemProfile::Reader r) {
  profile::SystemProfile p;
  p.os_type = str(r.getOsType());
  p.distribution = str(r.getDistribution());
  p.distribution_version = str(r.getDistributionVersion());
  p.kernel_version = str(r.getKernelVersion());
  p.base_system_version = str(r.getBaseSystemVersion());
  p.glibc_version = str(r.getGlibcVersion());
  p.architecture = str(r.getArchitecture());
  p.isa_level = str(r.getIsaLevel());
  p.cpu_flags = get_texts(r.getCpuFlags());
  p.cpu_model = str(r.getCpuModel());
  p.cpu_mhz = r.getCpuMhz();
  p.cpu_cores = r.getCpuCores();
  p.memory_bytes = r.getMemoryBytes();
  p.memory_protection_keys = r.getMemoryProtectionKeys();
  switch (r.getNtp()) {
    case s::NtpState::UNKNOWN: break;
    case s::NtpState::SYNCHRONIZED: p.ntp_synchronized = true; break;
    case s::NtpState::UNSYNCHRONIZED: p.ntp_synchronized = false; break;
    default: throw Refused{fmt::format("unknown NTP state {}", static_cast<unsigned>(r.getNtp()))};
  }
  for (auto c : r.getCgroups()) {
    if (c.getVersion() != 1 && c.getVersion() != 2) {
      throw Refused{fmt::format("cgroup version {} of {}", c.getVersion(), str(c.getName()))};
    }
    p.cgroups.push_back({str(c.getName()), c.getVersion(), str(c.getMount())});
  }
  p.cgroup_v2_freeze = r.getCgroupV2Freeze();
  p.namespaces = get_texts(r.getNamespaces());
  for (auto c : r.getCheckpointers()) {
    p.checkpointers.push_back({str(c.getName()), c.getAvailable(), str(c.getVersion()), str(c.getReason())});
  }
  p.agent_version = str(r.getAgentVersion());
  p.capabilities = get_texts(r.getCapabilities());
  p.overridden_facts = get_texts(r.getOverriddenFacts());
  for (auto n : r.getNetworkInterfaces()) {
    p.network_interfaces.push_back(
        profile::NetworkInterface{str(n.getName()), get_texts(n.getAddresses()), n.getUp(), n.getMtu()});
  }
  return p;
}

}  // namespace codec_detail

namespace {

// ---- payloads and events -------------------------------------------------

void put_wpar(const WparDefinition& w, s::WparDefinition::Builder b) {
  b.setName(text(w.name));
  b.setType(text(w.type));
  b.setCommand(text(w.command));
  b.setCheckpointable(w.checkpointable);
  b.setTriggerSignal(text(w.trigger_signal));
  b.setTriggerCommand(text(w.trigger_command));
  b.setCpuShares(w.cpu_shares);
  b.setCpuLimitPercent(w.cpu_limit_percent);
  b.setMemoryBytes(w.memory_bytes);
  b.setProcessesMax(w.processes_max);
  b.setAddress(text(w.address));
  b.setCapabilities(text(w.capabilities));
  b.setGroup(text(w.group));
  b.setSystem(text(w.system));
  b.setDiscovered(w.discovered);
  b.setReportedState(text(w.reported_state));
  b.setEpoch(w.epoch);
  b.setOperation(text(w.operation));
  b.setCause(text(w.cause));
  b.setPrivileged(w.privileged);
}

WparDefinition get_wpar(s::WparDefinition::Reader r) {
  WparDefinition w;
  w.name = str(r.getName());
  w.type = str(r.getType());
  w.command = str(r.getCommand());
  w.checkpointable = r.getCheckpointable();
  w.trigger_signal = str(r.getTriggerSignal());
  w.trigger_command = str(r.getTriggerCommand());
  w.cpu_shares = r.getCpuShares();
  w.cpu_limit_percent = r.getCpuLimitPercent();
  w.memory_bytes = r.getMemoryBytes();
  w.processes_max = r.getProcessesMax();
  w.address = str(r.getAddress());
  w.capabilities = str(r.getCapabilities());
  w.group = str(r.getGroup());
  w.system = str(r.getSystem());
  w.discovered = r.getDiscovered();
  w.reported_state = str(r.getReportedState());
  w.epoch = r.getEpoch();
  w.operation = str(r.getOperation());
  w.cause = str(r.getCause());
  w.privileged = r.getPrivileged();
  return w;
}

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
          put_profile(p.profile, x.initProfile());
          x.setAgentPort(p.agent_port);
        } else if constexpr (std::is_same_v<T, SystemRemoved>) {
          auto x = b.initSystemRemoved();
          x.setSystemId(text(p.system_id));
          x.setReason(text(p.reason));
        } else if constexpr (std::is_same_v<T, RegistrationRejected>) {
          auto x = b.initRegistrationRejected();
          x.setAddress(text(p.address));
          x.setReason(text(p.reason));
          x.setAttempts(p.attempts);
          x.setFirstNs(p.first_ns);
          x.setLastNs(p.last_ns);
          x.setHostname(text(p.hostname));
          x.setPublicKey(text(p.public_key));
        } else if constexpr (std::is_same_v<T, SystemProfileChanged>) {
          auto x = b.initSystemProfileChanged();
          x.setSystemId(text(p.system_id));
          put_profile(p.profile, x.initProfile());
        } else if constexpr (std::is_same_v<T, CompatibilityAnalyzed>) {
          auto x = b.initCompatibilityAnalyzed();
          x.setDepartureProperties(text(p.departure_properties));
          x.setArrivalProperties(text(p.arrival_properties));
          auto rs = x.initResults(static_cast<unsigned>(p.results.size()));
          for (unsigned i = 0; i < p.results.size(); ++i) {
            rs[i].setTest(text(p.results[i].test));
            rs[i].setPassed(p.results[i].passed);
            rs[i].setDeparture(text(p.results[i].departure));
            rs[i].setArrival(text(p.results[i].arrival));
            rs[i].setRemedy(text(p.results[i].remedy));
          }
        } else if constexpr (std::is_same_v<T, CommandRequested>) {
          auto x = b.initCommandRequested();
          x.setCommand(text(p.command));
          x.setArgs(text(p.args));
          x.setUser(text(p.user));
          put_texts(p.roles, x.initRoles(static_cast<unsigned>(p.roles.size())));
          x.setAddress(text(p.address));
        } else if constexpr (std::is_same_v<T, CommandDecided>) {
          auto x = b.initCommandDecided();
          x.setAccepted(p.accepted);
          x.setCode(text(p.code));
          x.setMessage(text(p.message));
          x.setDecidedBy(text(p.decided_by));
        } else if constexpr (std::is_same_v<T, WparDefined>) {
          auto x = b.initWparDefined();
          put_wpar(p.wpar, x.initWpar());
          x.setCreated(p.created);
        } else if constexpr (std::is_same_v<T, WparRemoved>) {
          auto x = b.initWparRemoved();
          x.setName(text(p.name));
          x.setReason(text(p.reason));
        } else if constexpr (std::is_same_v<T, GroupDefined>) {
          auto x = b.initGroupDefined();
          x.setName(text(p.name));
          x.setDescription(text(p.description));
          x.setCreated(p.created);
        } else if constexpr (std::is_same_v<T, GroupDeleted>) {
          b.initGroupDeleted().setName(text(p.name));
        } else if constexpr (std::is_same_v<T, SettingChanged>) {
          auto x = b.initSettingChanged();
          x.setKey(text(p.key));
          x.setValue(text(p.value));
          x.setPrevious(text(p.previous));
        } else if constexpr (std::is_same_v<T, RoleMappingChanged>) {
          auto x = b.initRoleMappingChanged();
          x.setRole(text(p.role));
          put_texts(p.users, x.initUsers(static_cast<unsigned>(p.users.size())));
          put_texts(p.groups, x.initGroups(static_cast<unsigned>(p.groups.size())));
        } else if constexpr (std::is_same_v<T, SessionOpened>) {
          auto x = b.initSessionOpened();
          x.setUser(text(p.user));
          x.setTokenHash(text(p.token_hash));
          x.setExpiresNs(p.expires_ns);
          x.setAddress(text(p.address));
        } else if constexpr (std::is_same_v<T, SessionClosed>) {
          auto x = b.initSessionClosed();
          x.setTokenHash(text(p.token_hash));
          x.setReason(text(p.reason));
        } else if constexpr (std::is_same_v<T, LoginRefused>) {
          auto x = b.initLoginRefused();
          x.setUser(text(p.user));
          x.setAddress(text(p.address));
          x.setReason(text(p.reason));
          x.setAttempts(p.attempts);
          x.setFirstNs(p.first_ns);
          x.setLastNs(p.last_ns);
        } else if constexpr (std::is_same_v<T, SystemStateChanged>) {
          auto x = b.initSystemStateChanged();
          x.setSystemId(text(p.system_id));
          x.setState(text(p.state));
          x.setReason(text(p.reason));
        } else if constexpr (std::is_same_v<T, AgentReportRefused>) {
          auto x = b.initAgentReportRefused();
          x.setSystemId(text(p.system_id));
          x.setSubject(text(p.subject));
          x.setReason(text(p.reason));
        } else if constexpr (std::is_same_v<T, JoinTokenCreated>) {
          auto x = b.initJoinTokenCreated();
          x.setTokenHash(text(p.token_hash));
          x.setExpiresNs(p.expires_ns);
        } else if constexpr (std::is_same_v<T, JoinTokenUsed>) {
          auto x = b.initJoinTokenUsed();
          x.setTokenHash(text(p.token_hash));
          x.setSystemId(text(p.system_id));
        } else if constexpr (std::is_same_v<T, DomainDefined>) {
          auto x = b.initDomainDefined();
          x.setName(text(p.name));
          x.setDescription(text(p.description));
          x.setCreated(p.created);
        } else if constexpr (std::is_same_v<T, DomainRemoved>) {
          b.initDomainRemoved().setName(text(p.name));
        } else if constexpr (std::is_same_v<T, SystemDomainSet>) {
          auto x = b.initSystemDomainSet();
          x.setSystemId(text(p.system_id));
          x.setDomain(text(p.domain));
          x.setPrevious(text(p.previous));
        } else if constexpr (std::is_same_v<T, TaskCreated>) {
          auto x = b.initTaskCreated();
          x.setKind(text(p.kind));
          x.setWpar(text(p.wpar));
          x.setSystem(text(p.system));
          x.setArgs(text(p.args));
          x.setParent(text(p.parent));
          x.setUser(text(p.user));
        } else if constexpr (std::is_same_v<T, OperationStarted>) {
          auto x = b.initOperationStarted();
          x.setOperationId(text(p.operation_id));
          x.setSystem(text(p.system));
          x.setWpar(text(p.wpar));
          x.setAction(text(p.action));
          x.setEpoch(p.epoch);
          x.setAttempt(p.attempt);
          x.setDeadlineNs(p.deadline_ns);
        } else if constexpr (std::is_same_v<T, OperationFinished>) {
          auto x = b.initOperationFinished();
          x.setOperationId(text(p.operation_id));
          x.setAttempt(p.attempt);
          x.setOutcome(text(p.outcome));
          x.setExitCode(p.exit_code);
          x.setOutput(text(p.output));
          x.setError(text(p.error));
          x.setWparState(text(p.wpar_state));
        } else if constexpr (std::is_same_v<T, TaskFinished>) {
          auto x = b.initTaskFinished();
          x.setState(text(p.state));
          x.setError(text(p.error));
          x.setRecovery(text(p.recovery));
          x.setWparState(text(p.wpar_state));
          x.setCause(text(p.cause));
        } else if constexpr (std::is_same_v<T, TaskApproved>) {
          b.initTaskApproved().setUser(text(p.user));
        } else if constexpr (std::is_same_v<T, GroupPolicySet>) {
          auto x = b.initGroupPolicySet();
          x.setGroup(text(p.group));
          x.setPolicy(text(p.policy));
        } else if constexpr (std::is_same_v<T, MobilityDecided>) {
          auto x = b.initMobilityDecided();
          x.setGroup(text(p.group));
          x.setWpar(text(p.wpar));
          x.setFrom(text(p.from));
          x.setTo(text(p.to));
          x.setTrigger(text(p.trigger));
          x.setAutomation(text(p.automation));
          x.setCommand(text(p.command));
          x.setExplanation(text(p.explanation));
          x.setInputs(text(p.inputs));
          x.setWatermarkS(p.watermark_s);
        } else if constexpr (std::is_same_v<T, WparPlaced>) {
          auto x = b.initWparPlaced();
          x.setWpar(text(p.wpar));
          x.setSystem(text(p.system));
          x.setEpoch(p.epoch);
          x.setPrevious(text(p.previous));
        }
      },
      payload);
}

// Sets the payload field of an Event or EventDraft builder; an unknown
// payload is copied back byte for byte (Cap'n Proto copies a struct whole,
// its unknown union member included).
template <typename Builder>
void set_payload(const Payload& payload, Builder b) {
  const auto* unknown = std::get_if<UnknownPayload>(&payload);
  if (unknown == nullptr) {
    put_payload(payload, b.initPayload());
    return;
  }
  WPM_ASSERT(unknown->bytes.size() % sizeof(capnp::word) == 0, "unknown payload of {} bytes",
             unknown->bytes.size());
  auto words = kj::heapArray<capnp::word>(unknown->bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), unknown->bytes.data(), unknown->bytes.size());
  capnp::FlatArrayMessageReader reader(words);
  b.setPayload(reader.getRoot<s::Payload>());
}

enum class Unknowns { kRefuse, kKeep };

// The Payload struct alone, as one flat message.
std::string payload_bytes_of(s::Payload::Reader r) {
  capnp::MallocMessageBuilder m;
  m.setRoot(r);
  auto flat = capnp::messageToFlatArray(m);
  auto bytes = flat.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

Payload get_payload(s::Payload::Reader r, s::EventType declared, Unknowns unknowns) {
  auto declared_raw = static_cast<uint16_t>(declared);
  // A type this binary does not know, with a union member it does not know
  // either: a newer writer's event. Stored events keep it opaque; requests
  // refuse it (below, as any unknown member).
  if (unknowns == Unknowns::kKeep && declared_raw > kEventTypeMax &&
      static_cast<uint16_t>(r.which()) > kEventTypeMax) {
    return UnknownPayload{declared_raw, payload_bytes_of(r)};
  }
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
                             str(x.getPublicKey()), get_profile(x.getProfile()), x.getAgentPort()};
      break;
    }
    case s::Payload::SYSTEM_REMOVED: {
      auto x = r.getSystemRemoved();
      out = SystemRemoved{str(x.getSystemId()), str(x.getReason())};
      break;
    }
    case s::Payload::REGISTRATION_REJECTED: {
      auto x = r.getRegistrationRejected();
      out = RegistrationRejected{str(x.getAddress()),  str(x.getReason()), x.getAttempts(),
                                 x.getFirstNs(),       x.getLastNs(),      str(x.getHostname()),
                                 str(x.getPublicKey())};
      break;
    }
    case s::Payload::SYSTEM_PROFILE_CHANGED: {
      auto x = r.getSystemProfileChanged();
      out = SystemProfileChanged{str(x.getSystemId()), get_profile(x.getProfile())};
      break;
    }
    case s::Payload::COMPATIBILITY_ANALYZED: {
      auto x = r.getCompatibilityAnalyzed();
      CompatibilityAnalyzed c{str(x.getDepartureProperties()), str(x.getArrivalProperties()), {}};
      for (auto t : x.getResults()) {
        c.results.push_back(CompatResult{str(t.getTest()), t.getPassed(), str(t.getDeparture()),
                                         str(t.getArrival()), str(t.getRemedy())});
      }
      out = std::move(c);
      break;
    }
    case s::Payload::COMMAND_REQUESTED: {
      auto x = r.getCommandRequested();
      out = CommandRequested{str(x.getCommand()), str(x.getArgs()), str(x.getUser()), get_texts(x.getRoles()),
                             str(x.getAddress())};
      break;
    }
    case s::Payload::COMMAND_DECIDED: {
      auto x = r.getCommandDecided();
      out = CommandDecided{x.getAccepted(), str(x.getCode()), str(x.getMessage()), str(x.getDecidedBy())};
      break;
    }
    case s::Payload::WPAR_DEFINED: {
      auto x = r.getWparDefined();
      out = WparDefined{get_wpar(x.getWpar()), x.getCreated()};
      break;
    }
    case s::Payload::WPAR_REMOVED: {
      auto x = r.getWparRemoved();
      out = WparRemoved{str(x.getName()), str(x.getReason())};
      break;
    }
    case s::Payload::GROUP_DEFINED: {
      auto x = r.getGroupDefined();
      out = GroupDefined{str(x.getName()), str(x.getDescription()), x.getCreated()};
      break;
    }
    case s::Payload::GROUP_DELETED:
      out = GroupDeleted{str(r.getGroupDeleted().getName())};
      break;
    case s::Payload::SETTING_CHANGED: {
      auto x = r.getSettingChanged();
      out = SettingChanged{str(x.getKey()), str(x.getValue()), str(x.getPrevious())};
      break;
    }
    case s::Payload::ROLE_MAPPING_CHANGED: {
      auto x = r.getRoleMappingChanged();
      out = RoleMappingChanged{str(x.getRole()), get_texts(x.getUsers()), get_texts(x.getGroups())};
      break;
    }
    case s::Payload::SESSION_OPENED: {
      auto x = r.getSessionOpened();
      out = SessionOpened{str(x.getUser()), str(x.getTokenHash()), x.getExpiresNs(), str(x.getAddress())};
      break;
    }
    case s::Payload::SESSION_CLOSED: {
      auto x = r.getSessionClosed();
      out = SessionClosed{str(x.getTokenHash()), str(x.getReason())};
      break;
    }
    case s::Payload::LOGIN_REFUSED: {
      auto x = r.getLoginRefused();
      out = LoginRefused{str(x.getUser()), str(x.getAddress()), str(x.getReason()),
                         x.getAttempts(),  x.getFirstNs(),      x.getLastNs()};
      break;
    }
    case s::Payload::SYSTEM_STATE_CHANGED: {
      auto x = r.getSystemStateChanged();
      out = SystemStateChanged{str(x.getSystemId()), str(x.getState()), str(x.getReason())};
      break;
    }
    case s::Payload::AGENT_REPORT_REFUSED: {
      auto x = r.getAgentReportRefused();
      out = AgentReportRefused{str(x.getSystemId()), str(x.getSubject()), str(x.getReason())};
      break;
    }
    case s::Payload::JOIN_TOKEN_CREATED: {
      auto x = r.getJoinTokenCreated();
      out = JoinTokenCreated{str(x.getTokenHash()), x.getExpiresNs()};
      break;
    }
    case s::Payload::JOIN_TOKEN_USED: {
      auto x = r.getJoinTokenUsed();
      out = JoinTokenUsed{str(x.getTokenHash()), str(x.getSystemId())};
      break;
    }
    case s::Payload::DOMAIN_DEFINED: {
      auto x = r.getDomainDefined();
      out = DomainDefined{str(x.getName()), str(x.getDescription()), x.getCreated()};
      break;
    }
    case s::Payload::DOMAIN_REMOVED:
      out = DomainRemoved{str(r.getDomainRemoved().getName())};
      break;
    case s::Payload::SYSTEM_DOMAIN_SET: {
      auto x = r.getSystemDomainSet();
      out = SystemDomainSet{str(x.getSystemId()), str(x.getDomain()), str(x.getPrevious())};
      break;
    }
    case s::Payload::TASK_CREATED: {
      auto x = r.getTaskCreated();
      out = TaskCreated{str(x.getKind()), str(x.getWpar()), str(x.getSystem()), str(x.getArgs()), str(x.getParent()),
                        str(x.getUser())};
      break;
    }
    case s::Payload::OPERATION_STARTED: {
      auto x = r.getOperationStarted();
      out = OperationStarted{str(x.getOperationId()), str(x.getSystem()), str(x.getWpar()), str(x.getAction()),
                             x.getEpoch(), x.getAttempt(), x.getDeadlineNs()};
      break;
    }
    case s::Payload::OPERATION_FINISHED: {
      auto x = r.getOperationFinished();
      out = OperationFinished{str(x.getOperationId()), x.getAttempt(), str(x.getOutcome()), x.getExitCode(),
                              str(x.getOutput()), str(x.getError()), str(x.getWparState())};
      break;
    }
    case s::Payload::TASK_FINISHED: {
      auto x = r.getTaskFinished();
      out = TaskFinished{str(x.getState()), str(x.getError()), str(x.getRecovery()), str(x.getWparState()),
                         str(x.getCause())};
      break;
    }
    case s::Payload::TASK_APPROVED: {
      out = TaskApproved{str(r.getTaskApproved().getUser())};
      break;
    }
    case s::Payload::GROUP_POLICY_SET: {
      auto x = r.getGroupPolicySet();
      out = GroupPolicySet{str(x.getGroup()), str(x.getPolicy())};
      break;
    }
    case s::Payload::MOBILITY_DECIDED: {
      auto x = r.getMobilityDecided();
      out = MobilityDecided{str(x.getGroup()),     str(x.getWpar()),        str(x.getFrom()),
                            str(x.getTo()),        str(x.getTrigger()),     str(x.getAutomation()),
                            str(x.getCommand()),   str(x.getExplanation()), str(x.getInputs()),
                            x.getWatermarkS()};
      break;
    }
    case s::Payload::WPAR_PLACED: {
      auto x = r.getWparPlaced();
      out = WparPlaced{str(x.getWpar()), str(x.getSystem()), x.getEpoch(), str(x.getPrevious())};
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
  set_payload(payload, b);
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
  e.payload = get_payload(r.getPayload(), r.getType(), Unknowns::kKeep);
  return e;
}

}  // namespace

// ---- drafts (shared with store_codec.cpp) --------------------------------

namespace codec_detail {

void put_draft(const EventDraft& d, s::EventDraft::Builder b) {
  b.setType(static_cast<s::EventType>(payload_type(d.payload)));
  b.setStreamId(text(d.stream_id));
  b.setCorrelationId(text(d.correlation_id));
  b.setCausationId(text(d.causation_id));
  b.setActor(text(d.actor));
  set_payload(d.payload, b);
}

EventDraft get_draft(s::EventDraft::Reader r) {
  return EventDraft{str(r.getStreamId()), str(r.getCorrelationId()), str(r.getCausationId()),
                    str(r.getActor()), get_payload(r.getPayload(), r.getType(), Unknowns::kRefuse)};
}

}  // namespace codec_detail

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

Result<EventHeaderPeek> peek_event_header(std::string_view bytes, const DecodeLimits& limits) {
  return decode<s::Event>(bytes, limits, "event", [](s::Event::Reader r) {
    return EventHeaderPeek{r.getSequence(), static_cast<EventType>(r.getType()), r.getStreamVersion()};
  });
}

Result<uint64_t> peek_event_sequence(std::string_view bytes, const DecodeLimits& limits) {
  return decode<s::Event>(bytes, limits, "event", [](s::Event::Reader r) { return r.getSequence(); });
}

}  // namespace wpm
