#include "schemas/event_json.h"

#include <fmt/format.h>

#include <concepts>
#include <iterator>

#include "schemas/profile.h"

namespace wpm {

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  if (size_t rest = bytes.size() - i; rest > 0) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    if (rest == 2) v |= uint8_t(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

namespace {

// Appends `value` as a JSON string: quotes, backslashes and control
// characters escaped as the JSON library escapes them, valid UTF-8 kept, and
// each byte that does not begin a valid sequence replaced by U+FFFD (the
// library's "replace" handler writes one U+FFFD for a broken sequence: the
// text differs there, the meaning does not).
void put_string(std::string& out, std::string_view value) {
  out += '"';
  size_t i = 0;
  while (i < value.size()) {
    auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      size_t run = i + 1;
      while (run < value.size()) {
        auto d = static_cast<unsigned char>(value[run]);
        if (d < 0x20 || d >= 0x80 || d == '"' || d == '\\') break;
        ++run;
      }
      out.append(value.substr(i, run - i));
      i = run;
      continue;
    }
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default: fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
      }
      ++i;
      continue;
    }
    // A multi-byte sequence: its length from the lead byte, then continuation
    // bytes, no overlong forms, no surrogates, nothing above U+10FFFF.
    size_t length = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
    bool valid = length > 0 && length <= 4 && i + length <= value.size();
    for (size_t k = 1; valid && k < length; ++k) {
      valid = (static_cast<unsigned char>(value[i + k]) & 0xc0) == 0x80;
    }
    if (valid && length >= 3) {
      auto second = static_cast<unsigned char>(value[i + 1]);
      if (c == 0xe0 && second < 0xa0) valid = false;           // overlong
      if (c == 0xed && second >= 0xa0) valid = false;          // surrogate
      if (c == 0xf0 && second < 0x90) valid = false;           // overlong
      if (c == 0xf4 && second >= 0x90) valid = false;          // above U+10FFFF
    }
    if (!valid) {
      out += "\xef\xbf\xbd";
      ++i;
      continue;
    }
    out.append(value.substr(i, length));
    i += length;
  }
  out += '"';
}

// One JSON object written straight into a string, members in the order
// given (alphabetical below, as the JSON library would print them).
class Obj {
 public:
  explicit Obj(std::string& out) : out_(out) { out_ += '{'; }
  ~Obj() { out_ += '}'; }
  Obj(const Obj&) = delete;
  Obj& operator=(const Obj&) = delete;

  Obj& str(std::string_view key, std::string_view value) {
    put_key(key);
    put_string(out_, value);
    return *this;
  }
  template <std::integral T>
  Obj& num(std::string_view key, T value) {
    put_key(key);
    fmt::format_to(std::back_inserter(out_), "{}", value);
    return *this;
  }
  Obj& flag(std::string_view key, bool value) {
    put_key(key);
    out_ += value ? "true" : "false";
    return *this;
  }
  Obj& strs(std::string_view key, const std::vector<std::string>& values) {
    put_key(key);
    out_ += '[';
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) out_ += ',';
      put_string(out_, values[i]);
    }
    out_ += ']';
    return *this;
  }
  // A member whose value is JSON text already.
  Obj& raw(std::string_view key, std::string_view json) {
    put_key(key);
    out_ += json;
    return *this;
  }
  // A member whose value is an object `fill` writes.
  template <typename F>
  Obj& obj(std::string_view key, F&& fill) {
    put_key(key);
    Obj inner(out_);
    fill(inner);
    return *this;
  }
  std::string& out() { return out_; }

 private:
  void put_key(std::string_view key) {
    if (!first_) out_ += ',';
    first_ = false;
    out_ += '"';
    out_ += key;  // our own names: nothing to escape
    out_ += "\":";
  }
  std::string& out_;
  bool first_ = true;
};

// One line of JSON for the parts still built as documents (profiles, WPAR
// definitions, command arguments: rare in the log); invalid UTF-8 replaced.
std::string dump_lenient(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void put_payload(Obj& o, const Payload& payload) {
  std::visit(
      [&](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, Synthetic>) {
          o.obj("synthetic", [&](Obj& x) {
            x.str("blob", base64(p.blob)).num("index", p.index).str("note", p.note).str("run", p.run);
          });
        } else if constexpr (std::is_same_v<T, SystemRegistered>) {
          o.obj("systemRegistered", [&](Obj& x) {
            x.str("address", p.address)
                .num("agentPort", p.agent_port)
                .str("hostname", p.hostname)
                .raw("profile", dump_lenient(profile::profile_to_json(p.profile)))
                .str("publicKey", p.public_key)
                .str("systemId", p.system_id);
          });
        } else if constexpr (std::is_same_v<T, SystemRemoved>) {
          o.obj("systemRemoved", [&](Obj& x) { x.str("reason", p.reason).str("systemId", p.system_id); });
        } else if constexpr (std::is_same_v<T, CompatibilityAnalyzed>) {
          o.obj("compatibilityAnalyzed", [&](Obj& x) {
            x.str("arrivalProperties", p.arrival_properties).str("departureProperties", p.departure_properties);
            std::string results = "[";
            for (const auto& r : p.results) {
              if (results.size() > 1) results += ',';
              Obj(results)
                  .str("arrival", r.arrival)
                  .str("departure", r.departure)
                  .flag("passed", r.passed)
                  .str("remedy", r.remedy)
                  .str("test", r.test);
            }
            results += ']';
            x.raw("results", results);
          });
        } else if constexpr (std::is_same_v<T, UnknownPayload>) {
          // A newer binary's event: kept as the bytes of its payload.
          o.obj("unknown", [&](Obj& x) { x.str("bytes", base64(p.bytes)).num("type", p.type); });
        } else if constexpr (std::is_same_v<T, SystemProfileChanged>) {
          o.obj("systemProfileChanged", [&](Obj& x) {
            x.raw("profile", dump_lenient(profile::profile_to_json(p.profile))).str("systemId", p.system_id);
          });
        } else if constexpr (std::is_same_v<T, CommandRequested>) {
          o.obj("commandRequested", [&](Obj& x) {
            // The arguments as the JSON they are (null if they are not), in
            // one line whatever spacing the writer used.
            auto args = nlohmann::json::parse(p.args, nullptr, false);
            x.str("address", p.address)
                .raw("args", args.is_discarded() ? std::string("null") : dump_lenient(args))
                .str("command", p.command)
                .strs("roles", p.roles)
                .str("user", p.user);
          });
        } else if constexpr (std::is_same_v<T, CommandDecided>) {
          o.obj("commandDecided", [&](Obj& x) {
            x.flag("accepted", p.accepted).str("code", p.code).str("decidedBy", p.decided_by).str("message", p.message);
          });
        } else if constexpr (std::is_same_v<T, WparDefined>) {
          o.obj("wparDefined", [&](Obj& x) { x.flag("created", p.created).raw("wpar", dump_lenient(wpar_to_json(p.wpar))); });
        } else if constexpr (std::is_same_v<T, WparRemoved>) {
          o.obj("wparRemoved", [&](Obj& x) { x.str("name", p.name).str("reason", p.reason); });
        } else if constexpr (std::is_same_v<T, GroupDefined>) {
          o.obj("groupDefined", [&](Obj& x) {
            x.flag("created", p.created).str("description", p.description).str("name", p.name);
          });
        } else if constexpr (std::is_same_v<T, GroupDeleted>) {
          o.obj("groupDeleted", [&](Obj& x) { x.str("name", p.name); });
        } else if constexpr (std::is_same_v<T, SettingChanged>) {
          o.obj("settingChanged", [&](Obj& x) { x.str("key", p.key).str("previous", p.previous).str("value", p.value); });
        } else if constexpr (std::is_same_v<T, RoleMappingChanged>) {
          o.obj("roleMappingChanged", [&](Obj& x) { x.strs("groups", p.groups).str("role", p.role).strs("users", p.users); });
        } else if constexpr (std::is_same_v<T, SessionOpened>) {
          o.obj("sessionOpened", [&](Obj& x) {
            x.str("address", p.address).num("expiresNs", p.expires_ns).str("tokenHash", p.token_hash).str("user", p.user);
          });
        } else if constexpr (std::is_same_v<T, SessionClosed>) {
          o.obj("sessionClosed", [&](Obj& x) { x.str("reason", p.reason).str("tokenHash", p.token_hash); });
        } else if constexpr (std::is_same_v<T, LoginRefused>) {
          o.obj("loginRefused", [&](Obj& x) {
            x.str("address", p.address)
                .num("attempts", p.attempts)
                .num("firstNs", p.first_ns)
                .num("lastNs", p.last_ns)
                .str("reason", p.reason)
                .str("user", p.user);
          });
        } else if constexpr (std::is_same_v<T, JoinTokenCreated>) {
          o.obj("joinTokenCreated", [&](Obj& x) { x.num("expiresNs", p.expires_ns).str("tokenHash", p.token_hash); });
        } else if constexpr (std::is_same_v<T, JoinTokenUsed>) {
          o.obj("joinTokenUsed", [&](Obj& x) { x.str("systemId", p.system_id).str("tokenHash", p.token_hash); });
        } else if constexpr (std::is_same_v<T, DomainDefined>) {
          o.obj("domainDefined", [&](Obj& x) {
            x.flag("created", p.created).str("description", p.description).str("name", p.name);
          });
        } else if constexpr (std::is_same_v<T, DomainRemoved>) {
          o.obj("domainRemoved", [&](Obj& x) { x.str("name", p.name); });
        } else if constexpr (std::is_same_v<T, SystemDomainSet>) {
          o.obj("systemDomainSet", [&](Obj& x) {
            x.str("domain", p.domain).str("previous", p.previous).str("systemId", p.system_id);
          });
        } else if constexpr (std::is_same_v<T, TaskCreated>) {
          o.obj("taskCreated", [&](Obj& x) {
            auto args = nlohmann::json::parse(p.args, nullptr, false);
            x.raw("args", args.is_discarded() ? std::string("null") : dump_lenient(args))
                .str("kind", p.kind)
                .str("parent", p.parent)
                .str("system", p.system)
                .str("user", p.user)
                .str("wpar", p.wpar);
          });
        } else if constexpr (std::is_same_v<T, OperationStarted>) {
          o.obj("operationStarted", [&](Obj& x) {
            x.str("action", p.action)
                .num("attempt", p.attempt)
                .num("deadlineNs", p.deadline_ns)
                .num("epoch", p.epoch)
                .str("operationId", p.operation_id)
                .str("system", p.system)
                .str("wpar", p.wpar);
          });
        } else if constexpr (std::is_same_v<T, OperationFinished>) {
          o.obj("operationFinished", [&](Obj& x) {
            x.num("attempt", p.attempt)
                .str("error", p.error)
                .num("exitCode", p.exit_code)
                .str("operationId", p.operation_id)
                .str("outcome", p.outcome)
                .str("output", p.output)
                .str("wparState", p.wpar_state);
          });
        } else if constexpr (std::is_same_v<T, TaskFinished>) {
          o.obj("taskFinished", [&](Obj& x) {
            x.str("cause", p.cause).str("error", p.error).str("recovery", p.recovery).str("state", p.state);
            x.str("wparState", p.wpar_state);
          });
        } else if constexpr (std::is_same_v<T, TaskApproved>) {
          o.obj("taskApproved", [&](Obj& x) { x.str("user", p.user); });
        } else if constexpr (std::is_same_v<T, GroupPolicySet>) {
          o.obj("groupPolicySet", [&](Obj& x) {
            x.str("group", p.group);
            x.str("policy", p.policy);
          });
        } else if constexpr (std::is_same_v<T, MobilityDecided>) {
          o.obj("mobilityDecided", [&](Obj& x) {
            x.str("group", p.group);
            x.str("wpar", p.wpar);
            x.str("from", p.from);
            x.str("to", p.to);
            x.str("trigger", p.trigger);
            x.str("automation", p.automation);
            x.str("command", p.command);
            x.str("explanation", p.explanation);
            x.str("inputs", p.inputs);
            x.num("watermarkS", p.watermark_s);
          });
        } else if constexpr (std::is_same_v<T, WparPlaced>) {
          o.obj("wparPlaced", [&](Obj& x) {
            x.num("epoch", p.epoch).str("previous", p.previous).str("system", p.system).str("wpar", p.wpar);
          });
        } else if constexpr (std::is_same_v<T, AgentReportRefused>) {
          o.obj("agentReportRefused", [&](Obj& x) {
            x.str("reason", p.reason).str("subject", p.subject).str("systemId", p.system_id);
          });
        } else if constexpr (std::is_same_v<T, SystemStateChanged>) {
          o.obj("systemStateChanged", [&](Obj& x) {
            x.str("reason", p.reason).str("state", p.state).str("systemId", p.system_id);
          });
        } else {
          static_assert(std::is_same_v<T, RegistrationRejected>);
          o.obj("registrationRejected", [&](Obj& x) {
            x.str("address", p.address)
                .num("attempts", p.attempts)
                .num("firstNs", p.first_ns)
                .str("hostname", p.hostname)
                .num("lastNs", p.last_ns)
                .str("publicKey", p.public_key)
                .str("reason", p.reason);
          });
        }
      },
      payload);
}

}  // namespace

nlohmann::json wpar_to_json(const WparDefinition& w) {
  return {{"name", w.name},
          {"type", w.type},
          {"command", w.command},
          {"checkpointable", w.checkpointable},
          {"triggerSignal", w.trigger_signal},
          {"triggerCommand", w.trigger_command},
          {"cpuShares", w.cpu_shares},
          {"cpuLimitPercent", w.cpu_limit_percent},
          {"memoryBytes", w.memory_bytes},
          {"processesMax", w.processes_max},
          {"address", w.address},
          {"capabilities", w.capabilities},
          {"group", w.group},
          {"system", w.system},
          {"discovered", w.discovered},
          {"reportedState", w.reported_state},
          {"epoch", w.epoch},
          {"operation", w.operation},
          {"cause", w.cause},
          {"privileged", w.privileged}};
}

void append_event_json(std::string& out, const Event& e) {
  Obj o(out);
  o.str("actor", e.actor)
      .str("causationId", e.causation_id)
      .str("correlationId", e.correlation_id)
      .str("eventId", event_id_hex(e.event_id))
      .str("idempotencyKey", e.idempotency_key)
      .obj("payload", [&](Obj& p) { put_payload(p, e.payload); })
      .num("sequence", e.sequence)
      .str("streamId", e.stream_id)
      .num("streamVersion", e.stream_version)
      .num("timestampNs", e.timestamp_ns)
      .str("type", event_type_label(e.type()));
}

std::string event_json_text(const Event& e) {
  std::string out;
  out.reserve(512);
  append_event_json(out, e);
  return out;
}

nlohmann::json event_to_json(const Event& e) { return nlohmann::json::parse(event_json_text(e)); }

}  // namespace wpm
