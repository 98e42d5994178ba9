#include "services/gateway/gateway.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "schemas/event_json.h"
#include "schemas/profile.h"
#include "services/compatibility/tests.h"
#include "services/kernel/repository.h"
#include "wpm_version.h"

namespace wpm::gateway {
namespace {

using nlohmann::json;

json error_reply(std::string_view code, std::string_view message, std::string_view command_id = "") {
  json e = {{"code", code}, {"message", message}};
  if (!command_id.empty()) e["command"] = command_id;
  return {{"v", kGatewayProtocol}, {"ok", false}, {"error", e}};
}

// A success, with its members in a fixed order (v, ok, result) so that a
// client can take the result's text as it is (a list of 100,000 WPARs need
// not be parsed to be printed).
std::string ok_text(const std::string& result) {
  return fmt::format("{{\"v\":{},\"ok\":true,\"result\":{}}}", kGatewayProtocol, result);
}

// The deepest nesting of arrays and objects in `text` (strings skipped), up
// to `limit` + 1: checked before parsing, since copying or destroying a
// deeply nested JSON value recurses and a hostile request must not be able
// to exhaust a worker's stack.
size_t nesting_depth(std::string_view text, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}
constexpr size_t kRequestDepthMax = 16;

bool loopback_endpoint(const std::string& endpoint) {
  return endpoint.starts_with("tcp://127.") || endpoint.starts_with("tcp://localhost:") ||
         endpoint.starts_with("tcp://[::1]:") || endpoint.starts_with("inproc://") || endpoint.starts_with("ipc://");
}

bool valid_command_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
  });
}

}  // namespace

Gateway::Gateway(zmq::context_t& context, GatewayDeps deps, GatewayOptions options,
                 std::shared_ptr<spdlog::logger> logger)
    : context_(context),
      deps_(std::move(deps)),
      options_(std::move(options)),
      logger_(std::move(logger)),
      server_(context, bus::RequestServerOptions{options_.endpoint, options_.workers, options_.queue_max,
                                                 options_.message_bytes_max, options_.curve, "gateway"}),
      pam_(options_.pam),
      runner_(*deps_.reads, deps_.snapshots),
      refusals_(options_.login_limits),
      by_user_(options_.login_limits),
      by_address_(options_.login_limits) {}

Gateway::~Gateway() { stop(); }

Result<void> Gateway::start() {
  if (!options_.curve && !loopback_endpoint(options_.endpoint)) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("the gateway may listen on {} only with CURVE (passwords must not travel in clear); "
                            "listen on 127.0.0.1 or give it a key",
                            options_.endpoint));
  }
  {
    std::unique_lock lock(state_mutex_);
    if (auto r = runner_.start(); !r) return r;
    snapshot_at_ = runner_.stats().from_snapshot ? runner_.stats().snapshot_sequence : 0;
  }
  auto root = ensure_root_credential(options_.data_dir);
  if (!root) return std::unexpected(root.error());
  root_token_hash_ = token_hash(*root);
  fold();
  {
    // Decisions are looked for in what is committed from now on: a request
    // registers before it appends, so none of its decisions is older.
    std::shared_lock state_lock(state_mutex_);
    std::lock_guard lock(decisions_mutex_);
    scanned_ = runner_.sequence();
  }
  if (auto r = server_.bind(); !r) return r;
  server_.start([this](bus::ServerRequest& r) { return serve(r); },
                [](const bus::ServerRequest&, std::string_view why) {
                  return error_reply("unavailable", why).dump();
                });
  follower_ = std::thread([this] { follow(); });
  logger_->info("gateway_ready endpoint={} curve={} pam_service={}", server_.endpoint(), options_.curve.has_value(),
                options_.pam.service);
  return {};
}

void Gateway::stop() {
  if (stop_.exchange(true)) return;
  if (follower_.joinable()) follower_.join();
  snapshot(0);
  {
    std::lock_guard lock(parked_mutex_);
    parking_closed_ = true;  // a request parked from now on is answered at once
    for (auto& p : parked_) server_.reply(std::move(p.request), error_reply("unavailable", "wpmd is stopping").dump());
    parked_.clear();
  }
  server_.stop();
}

uint64_t Gateway::folded() const {
  std::shared_lock lock(state_mutex_);
  return runner_.sequence();
}

void Gateway::fold() {
  {
    std::unique_lock lock(state_mutex_);
    if (auto r = runner_.catch_up(); !r) logger_->error("gateway_fold_failed error=\"{}\"", r.error().message);
  }
  snapshot(kSnapshotEvery);
}

void Gateway::snapshot(uint64_t after_events) {
  if (deps_.snapshots == nullptr) return;
  std::shared_lock lock(state_mutex_);
  if (runner_.sequence() <= snapshot_at_ || runner_.sequence() - snapshot_at_ < after_events) return;
  if (auto r = runner_.snapshot(); !r) {
    logger_->warn("gateway_snapshot_failed error=\"{}\"", r.error().message);
    return;
  }
  snapshot_at_ = runner_.sequence();
}

void Gateway::follow() {
  auto log = deps_.make_log();
  uint64_t head = 0;
  int64_t folded_at = 0;
  while (!stop_.load()) {
    head = deps_.signal->wait_beyond(std::max(head, folded()), std::chrono::milliseconds(200));
    // Under a stream of commits, fold at most every 5 ms (many batches per
    // fold, not one wake-up per batch taken from the store's sequencer).
    int64_t left = 5'000'000 - (deps_.clock->monotonic_ns() - folded_at);
    if (left > 0) deps_.signal->pause(std::chrono::milliseconds(left / 1'000'000 + 1));
    fold();
    scan_decisions(head);
    folded_at = deps_.clock->monotonic_ns();
    const int64_t now = deps_.clock->monotonic_ns();
    std::vector<Parked> wake, expired;
    {
      std::lock_guard lock(parked_mutex_);
      for (auto it = parked_.begin(); it != parked_.end();) {
        if (head > it->after) {
          wake.push_back(std::move(*it));
          it = parked_.erase(it);
        } else if (now >= it->deadline_mono_ns) {
          expired.push_back(std::move(*it));
          it = parked_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& p : wake) server_.requeue(std::move(p.request));
    for (auto& p : expired) {
      // Nothing new within the wait: a heartbeat, so a silent stream is told from a dead one.
      server_.reply(std::move(p.request),
                    ok_text(Reply(json{{"events", json::array()}, {"next", p.after + 1}, {"head", head},
                                       {"heartbeat", true}})));
    }
    std::vector<RegistrationRejected> due;
    {
      std::lock_guard lock(limits_mutex_);
      due = refusals_.due(deps_.clock->wall_ns());
    }
    for (const auto& d : due) {
      AppendRequest append;
      append.events.push_back(EventDraft{"login-refusals", "", "", "",
                                         LoginRefused{d.hostname, d.address, d.reason, d.attempts, d.first_ns, d.last_ns}});
      if (auto r = log->append(append); !r) logger_->warn("login_refusal_not_recorded error=\"{}\"", r.error().message);
    }
  }
}

std::optional<std::string> Gateway::serve(bus::ServerRequest& request) {
  thread_local std::unique_ptr<kernel::EventLog> log;
  if (!log) log = deps_.make_log();
  if (nesting_depth(request.body, kRequestDepthMax) > kRequestDepthMax) {
    return error_reply("invalid", fmt::format("the request nests deeper than {} levels", kRequestDepthMax)).dump();
  }
  json parsed = json::parse(request.body, nullptr, false);
  bool park = false;
  std::string reply = handle_request(parsed, request.peer_address, *log, &park);
  if (!park) return reply;
  std::lock_guard lock(parked_mutex_);
  if (parking_closed_) return error_reply("unavailable", "wpmd is stopping").dump();
  if (parked_.size() >= options_.parked_max) {
    return error_reply("unavailable", "too many event streams open; retry in a moment").dump();
  }
  const json args = parsed.value("args", json::object());
  uint64_t after = args.value("from", uint64_t{1});
  after = after == 0 ? 0 : after - 1;
  int64_t wait_ms = std::min<int64_t>(args.value("waitMs", int64_t{0}), options_.poll_wait_max.count());
  parked_.push_back(Parked{std::move(request), deps_.clock->monotonic_ns() + wait_ms * 1'000'000, after});
  return std::nullopt;
}

json Gateway::handle(const json& request, const std::string& address, kernel::EventLog& log) {
  return json::parse(handle_request(request, address, log, nullptr));
}

std::string Gateway::ok_text(const Reply& result) {
  return wpm::gateway::ok_text(result.raw.empty() ? result.value.dump() : result.raw) + result.after;
}

std::string Gateway::handle_request(const json& request, const std::string& address, kernel::EventLog& log, bool* park) {
  if (!request.is_object()) return error_reply("invalid", "a request is one JSON object").dump();
  for (const auto& [key, value] : request.items()) {
    if (key != "v" && key != "id" && key != "token" && key != "command" && key != "args") {
      return error_reply("invalid", fmt::format("unknown request member '{}'", key)).dump();
    }
  }
  if (!request.contains("v") || !request["v"].is_number_integer()) {
    return error_reply("invalid", "the request has no protocol version (\"v\")").dump();
  }
  int v = request["v"].get<int>();
  if (v > kGatewayProtocol) {
    return error_reply("unsupported", fmt::format("this gateway speaks protocol {} and the client {}: upgrade wpmd",
                                                  kGatewayProtocol, v)).dump();
  }
  if (v < 1) return error_reply("unsupported", "the client's protocol is too old: upgrade wpm").dump();
  if (!request.contains("command") || !request["command"].is_string()) {
    return error_reply("invalid", "the request names no command").dump();
  }
  const std::string command = request["command"].get<std::string>();
  const json args = request.contains("args") && !request["args"].is_null() ? request["args"] : json::object();
  if (!args.is_object()) return error_reply("invalid", "\"args\" must be a JSON object").dump();
  auto access = command_access(command);
  if (!access) return error_reply("invalid", fmt::format("no command '{}'; `wpm --help` lists them", command)).dump();
  access = access_of(command, args, *access, command == "wpar.modify" && names_privileged_wpar(args));
  std::string token = request.contains("token") && request["token"].is_string() ? request["token"].get<std::string>() : "";
  std::string id = request.contains("id") && request["id"].is_string() ? request["id"].get<std::string>() : "";

  Answer answer;
  if (command == "version") {
    answer = json{{"version", kVersion}, {"protocol", kGatewayProtocol}};
  } else if (command == "login") {
    answer = login(args, address, log);
  } else {
    Caller caller;
    if (auto a = authenticate(token, caller); !a) {
      answer = std::unexpected(a.error());
    } else if (!allowed(caller.roles, *access)) {
      std::string roles = caller.roles.empty() ? "no role" : fmt::format("{}", fmt::join(role_names(caller.roles), ", "));
      Fail why{"forbidden", fmt::format("{} ({}) may not {}: it needs {}", caller.user, roles, command,
                                        *access == Access::kRead          ? "any role but administrator alone"
                                        : *access == Access::kWparAction  ? "role WPARUser or WPARAdministrator"
                                        : *access == Access::kFleetChange ? "role WPARAdministrator"
                                                                          : "role administrator")};
      if (is_change(command) && valid_command_id(id)) {
        answer = refuse_recorded(id, command, args, caller, address, why, log);
      } else {
        answer = std::unexpected(why);
      }
    } else if (command == "logout") {
      answer = logout(caller, log);
    } else if (command == "whoami") {
      answer = json{{"user", caller.user},
                    {"roles", role_names(caller.roles)},
                    {"groups", linux_groups(caller.user)},
                    {"credential", caller.token_hash.empty() ? "root credential" : "login"}};
    } else if (command == "events.read") {
      answer = read_events(args, caller);
      // Nothing new at all: a long poll waits (parked, holding no worker)
      // for the next commit or its deadline.
      if (park != nullptr && answer && answer->value.at("shown").get<size_t>() == 0 &&
          answer->value.at("next").get<uint64_t>() == std::max<uint64_t>(args.value("from", uint64_t{1}), 1) &&
          args.value("waitMs", 0) > 0) {
        *park = true;
        return {};
      }
    } else if (is_change(command)) {
      if (!valid_command_id(id)) {
        answer = std::unexpected(Fail{"invalid", "a change needs a command id (\"id\": 1 to 64 letters, digits, - or _)"});
      } else {
        answer = change(id, command, args, caller, address, log);
      }
    } else {
      answer = query(command, args, caller);
    }
  }
  if (!answer) {
    const bool with_id = is_change(command) && valid_command_id(id) && answer.error().code != "unauthenticated";
    return error_reply(answer.error().code, answer.error().message, with_id ? id : "").dump();
  }
  return ok_text(*answer);
}

// Whether args' "name" is (the unique prefix of) a privileged WPAR's.
bool Gateway::names_privileged_wpar(const json& args) const {
  if (deps_.inventory == nullptr || !args.contains("name") || !args["name"].is_string()) return false;
  const std::string name = args["name"].get<std::string>();
  bool privileged = false;
  deps_.inventory->read([&](const inventory::Inventory& inv) {
    auto found = inventory::resolve_prefix(inv.wpars, name, "WPAR");
    privileged = found && inv.wpars.at(*found).wpar.privileged;
  });
  return privileged;
}

Gateway::Answer Gateway::authenticate(const std::string& token, Caller& caller) {
  if (token.empty()) return std::unexpected(Fail{"unauthenticated", "not logged in: run `wpm login` first"});
  std::string hash = token_hash(token);
  if (hash == root_token_hash_) {
    caller.user = "root";
  } else {
    std::shared_lock lock(state_mutex_);
    auto session = session_of(runner_.state(), hash, deps_.clock->wall_ns());
    if (!session) {
      return std::unexpected(
          Fail{"unauthenticated", "your login expired or was revoked: run `wpm login` again"});
    }
    caller.user = session->user;
    caller.token_hash = hash;
  }
  auto groups = linux_groups(caller.user);
  std::shared_lock lock(state_mutex_);
  caller.roles = roles_of(runner_.state(), caller.user, groups);
  return json{};
}

Gateway::Answer Gateway::login(const json& args, const std::string& address, kernel::EventLog& log) {
  std::string user = args.value("user", "");
  std::string password = args.contains("password") && args["password"].is_string() ? args["password"].get<std::string>() : "";
  if (user.empty() || password.empty()) return std::unexpected(Fail{"invalid", "login needs a user and a password"});
  if (user.size() > 32 || !std::all_of(user.begin(), user.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
      })) {
    return std::unexpected(Fail{"invalid", "not a Linux user name (letters, digits, '.', '_', '-'; at most 32)"});
  }
  for (const auto& [key, value] : args.items()) {
    if (key != "user" && key != "password") return std::unexpected(Fail{"invalid", fmt::format("unknown argument '{}'", key)});
  }
  const std::string where = address.empty() ? "local" : address;
  {
    std::lock_guard lock(limits_mutex_);
    int64_t now = deps_.clock->wall_ns();
    if (by_user_.blocked(user, now) || by_address_.blocked(where, now)) {
      return std::unexpected(Fail{"rate_limited",
                                  "too many failed logins for this user or from this address; wait a minute and "
                                  "try again"});
    }
  }
  PamResult pam = pam_.authenticate(user, password);
  if (pam.outcome == PamOutcome::kBusy) return std::unexpected(Fail{"unavailable", pam.reason});
  if (pam.outcome == PamOutcome::kError) {
    logger_->error("login_pam_error user={} address={} error=\"{}\"", user, where, pam.reason);
    return std::unexpected(Fail{"internal", pam.reason + "; check the PAM service file (/etc/pam.d/" +
                                                options_.pam.service + ")"});
  }
  if (pam.outcome == PamOutcome::kRefused) {
    record_login_refusal(user, where, pam.reason, log);
    return std::unexpected(Fail{"unauthenticated", pam.reason});
  }
  auto token = new_token();
  if (!token) return std::unexpected(Fail{"internal", token.error().message});
  std::string hash = token_hash(*token);
  int64_t expires = deps_.clock->wall_ns() + options_.session_ttl_ns;
  AppendRequest append;
  append.expectations.push_back(StreamExpectation{session_stream(hash), ExpectKind::kNoStream, 0});
  append.events.push_back(EventDraft{session_stream(hash), "", "", "user:" + user, SessionOpened{user, hash, expires, where}});
  auto r = log.append(append);
  if (!r) return std::unexpected(Fail{"unavailable", "cannot record the login: " + r.error().message});
  {
    // The session must be known before the token is used.
    std::unique_lock lock(state_mutex_);
    (void)runner_.catch_up();
  }
  auto groups = linux_groups(user);
  Roles roles;
  {
    std::shared_lock lock(state_mutex_);
    roles = roles_of(runner_.state(), user, groups);
  }
  logger_->info("login user={} address={} roles={}", user, where, fmt::join(role_names(roles), ","));
  return json{{"token", *token}, {"user", user}, {"roles", role_names(roles)}, {"expiresNs", expires}};
}

void Gateway::record_login_refusal(const std::string& user, const std::string& address, const std::string& reason,
                                   kernel::EventLog& log) {
  std::optional<RegistrationRejected> now_due;
  {
    std::lock_guard lock(limits_mutex_);
    int64_t now = deps_.clock->wall_ns();
    (void)by_user_.refuse(user, reason, user, "", now);
    (void)by_address_.refuse(address, reason, user, "", now);
    now_due = refusals_.refuse(user + " from " + address, reason, user, "", now);
  }
  logger_->warn("login_refused user={} address={} reason=\"{}\"", user, address, reason);
  if (!now_due) return;
  AppendRequest append;
  append.events.push_back(EventDraft{"login-refusals", "", "", "",
                                     LoginRefused{user, address, reason, now_due->attempts, now_due->first_ns,
                                                  now_due->last_ns}});
  if (auto r = log.append(append); !r) logger_->warn("login_refusal_not_recorded error=\"{}\"", r.error().message);
}

Gateway::Answer Gateway::logout(const Caller& caller, kernel::EventLog& log) {
  if (caller.token_hash.empty()) {
    return std::unexpected(Fail{"invalid", "the root credential is not a login: there is nothing to log out"});
  }
  AppendRequest append;
  append.events.push_back(EventDraft{session_stream(caller.token_hash), "", "", "user:" + caller.user,
                                     SessionClosed{caller.token_hash, "logout"}});
  auto r = log.append(append);
  if (!r) return std::unexpected(Fail{"unavailable", "cannot record the logout: " + r.error().message});
  {
    std::unique_lock lock(state_mutex_);
    (void)runner_.catch_up();
  }
  return json{{"user", caller.user}, {"loggedOut", true}};
}

Gateway::Answer Gateway::refuse_recorded(const std::string& id, const std::string& command, const json& args,
                                         const Caller& caller, const std::string& address, const Fail& why,
                                         kernel::EventLog& log) {
  const std::string stream = "command/" + id;
  AppendRequest append;
  append.idempotency_key = kernel::idempotency_key_of(kernel::CommandId(id));
  append.expectations.push_back(StreamExpectation{stream, ExpectKind::kNoStream, 0});
  append.events.push_back(EventDraft{stream, id, id, "user:" + caller.user,
                                     CommandRequested{command, args.dump(), caller.user, role_names(caller.roles), address}});
  append.events.push_back(EventDraft{stream, id, id, "user:" + caller.user,
                                     CommandDecided{false, why.code, why.message, "service:gateway"}});
  auto r = log.append(append);
  if (!r && r.error().code != ErrorCode::kWrongExpectedVersion) {
    logger_->warn("refusal_not_recorded command={} error=\"{}\"", id, r.error().message);
  }
  logger_->info("command_refused id={} command={} user={} code={}", id, command, caller.user, why.code);
  return std::unexpected(why);
}

Gateway::Answer Gateway::change(const std::string& id, const std::string& command, const json& args,
                                const Caller& caller, const std::string& address, kernel::EventLog& log) {
  const std::string stream = "command/" + id;
  CommandRequested requested{command, args.dump(), caller.user, role_names(caller.roles), address};
  if (command.starts_with("role.")) {
    // The gateway decides role commands itself: request, mapping and
    // decision in one batch.
    DecisionWaiter waiter(*this, id);
    uint64_t requested_at = 0;  // the request's sequence, when appended here
    for (int attempt = 0; attempt < 5; ++attempt) {
      AppendRequest append;
      append.idempotency_key = kernel::idempotency_key_of(kernel::CommandId(id));
      append.expectations.push_back(StreamExpectation{stream, ExpectKind::kNoStream, 0});
      append.events.push_back(EventDraft{stream, id, id, "user:" + caller.user, requested});
      CommandDecided decided{true, "", "", "service:gateway"};
      {
        std::shared_lock lock(state_mutex_);
        auto decision = decide_role(runner_.state(), command, args);
        if (!decision) {
          decided = CommandDecided{false, kernel::rejection_code_name(decision.error().code), decision.error().message,
                                   "service:gateway"};
        } else if (*decision) {
          const auto& c = **decision;
          auto it = runner_.state().roles.find(*role_from_name(c.event.role));
          uint64_t v = it == runner_.state().roles.end() ? 0 : it->second.version;
          append.expectations.push_back(
              StreamExpectation{c.stream, v == 0 ? ExpectKind::kNoStream : ExpectKind::kExact, v});
          append.events.push_back(EventDraft{c.stream, id, id, "user:" + caller.user, c.event});
        }
      }
      append.events.push_back(EventDraft{stream, id, id, "user:" + caller.user, decided});
      auto r = log.append(append);
      // Recorded before under this command's key (a re-sent request): its first answer is below.
      if (!r && r.error().code == ErrorCode::kIdempotencyKeyReused) break;
      if (r || r.error().code != ErrorCode::kWrongExpectedVersion) {
        if (!r) return std::unexpected(Fail{"unavailable", "cannot record the command: " + r.error().message});
        if (!r->duplicate) requested_at = r->first_sequence;
        break;
      }
      // Either this command was sent before (its stream exists: its first
      // answer is below) or a role changed under it: fold and decide again.
      fold();
      auto existing = kernel::read_stream_events(*deps_.reads, stream, 1, 2);
      if (existing && !existing->empty()) break;
    }
    return wait_decision(id, requested_at);
  }
  // A join token is made here, shown once to the one who asked, and only its
  // hash goes into the log (the command's arguments included).
  std::string join_token;
  if (command == "system.token-create") {
    for (const auto& [key, value] : args.items()) {
      if (key != "ttl") return std::unexpected(Fail{"invalid", fmt::format("unknown argument '{}'", key)});
    }
    auto made = new_token();
    if (!made) return std::unexpected(Fail{"internal", made.error().message});
    join_token = "wpmj_" + made->substr(4);
    json recorded = {{"ttl", args.value("ttl", "1h")}, {"tokenHash", token_hash(join_token)}};
    requested.args = recorded.dump();
  }
  AppendRequest append;
  append.idempotency_key = "request/" + id;
  append.expectations.push_back(StreamExpectation{stream, ExpectKind::kNoStream, 0});
  append.events.push_back(EventDraft{stream, id, id, "user:" + caller.user, requested});
  DecisionWaiter waiter(*this, id);  // before the append: its decision cannot pass by unseen
  auto r = log.append(append);
  if (!r && r.error().code != ErrorCode::kWrongExpectedVersion && r.error().code != ErrorCode::kIdempotencyKeyReused) {
    return std::unexpected(Fail{"unavailable", "cannot record the command: " + r.error().message});
  }
  // Recorded now (or by an earlier send of the same id): wait for its decision.
  auto decided = wait_decision(id, r && !r->duplicate ? r->first_sequence : 0);
  if (decided && !join_token.empty()) {
    if (!r) {
      // A re-sent request: the token made the first time was shown then and is not kept.
      return std::unexpected(Fail{"conflict", fmt::format("command {} made its join token before and it is shown "
                                                          "only once; make another",
                                                          id)});
    }
    auto created = kernel::read_stream_events(*deps_.reads, "token/" + token_hash(join_token).substr(0, 16), 1, 1);
    decided->value["token"] = join_token;
    if (created && !created->empty()) {
      if (const auto* c = std::get_if<JoinTokenCreated>(&created->front().payload)) {
        decided->value["expiresNs"] = c->expires_ns;
      }
    }
  }
  return decided;
}

Gateway::Answer Gateway::read_events(const json& args, const Caller& caller) {
  uint64_t from = args.value("from", uint64_t{1});
  if (from == 0) from = 1;
  uint32_t max = std::clamp<uint32_t>(args.value("max", uint32_t{1000}), 1, 10'000);
  std::set<EventType> types;
  if (args.contains("types")) {
    for (const auto& t : args["types"]) {
      auto type = t.is_string() ? event_type_from_name(t.get<std::string>()) : std::nullopt;
      if (!type) return std::unexpected(Fail{"invalid", fmt::format("no event type {}", t.dump())});
      types.insert(*type);
    }
  }
  auto reply = deps_.reads->read_range(ReadRangeRequest{from, 0, max});
  if (!reply) return std::unexpected(Fail{"unavailable", reply.error().message});
  auto events = kernel::decode_records(reply->records);
  if (!events) return std::unexpected(Fail{"internal", events.error().message});
  // The reply's text is written here, one event at a time: a JSON document of
  // a thousand events costs more to build and free than to write. With
  // "lines", the events follow the reply, one JSON line each, so a client
  // prints them without parsing them (`wpm events watch -o json`).
  const bool lines = args.value("lines", false);
  std::string text = "{\"events\":[";
  std::string after;
  uint64_t next = from;
  size_t shown = 0;
  for (const auto& e : *events) {
    next = e.sequence + 1;
    if (!types.empty() && !types.contains(e.type())) continue;
    if (!may_see(caller.roles, e)) continue;
    if (lines) {
      after += '\n';
      append_event_json(after, e);
    } else {
      if (shown > 0) text += ',';
      append_event_json(text, e);
    }
    ++shown;
  }
  text += fmt::format("],\"next\":{},\"head\":{}", next, reply->head);
  if (lines) text += fmt::format(",\"lines\":{}", shown);
  text += '}';
  Reply out = Reply::text(std::move(text));
  out.value = json{{"next", next}, {"shown", shown}};  // for the long poll; not sent
  out.after = std::move(after);
  return out;
}

Gateway::Answer Gateway::query(const std::string& command, const json& args, const Caller& caller) {
  auto answer = [](ViewResult r) -> Answer {
    if (!r) return std::unexpected(Fail{kernel::rejection_code_name(r.error().code), r.error().message});
    return r->raw.empty() ? Reply(std::move(r->value)) : Reply::text(std::move(r->raw));
  };
  if (command == "compat.show" || command == "compat.matrix") {
    std::map<std::string, profile::SystemProfile> profiles;
    deps_.inventory->read([&](const inventory::Inventory& inv) {
      for (const auto& [id, s] : inv.registry.systems()) profiles.emplace(id, s.profile);
    });
    std::shared_lock lock(state_mutex_);
    return answer(compat_view(profiles, runner_.state(), command, args));
  }
  if (command == "task.list" || command == "task.show") return task_query(command, args);
  if (command == "system.metrics" || command == "wpar.metrics") return metrics_query(command, args);
  if (command == "policy.simulate") return simulate_query(args);
  if (command == "group.state" || command == "group.explain") {
    if (deps_.policy == nullptr) return std::unexpected(Fail{"unavailable", "this wpmd runs no policy service (wpmd --services)"});
    auto group = resolve_group(args.value("name", ""));
    if (!group) return std::unexpected(group.error());
    auto explained = deps_.policy->explain(*group);
    if (!explained) {
      return std::unexpected(Fail{explained.error().code == ErrorCode::kNotFound ? "not_found" : "invalid",
                                  explained.error().message});
    }
    return Reply(std::move(*explained));
  }
  if (command == "wpar.candidates" || command == "wpar.relocate-check" || command == "system.evacuate-check") {
    return relocation_query(command, args, caller);
  }
  if (command == "role.query") {
    std::shared_lock lock(state_mutex_);
    auto r = query_roles(runner_.state(), args);
    if (!r) return answer(std::unexpected(r.error()));
    return *r;
  }
  ViewResult result = std::unexpected(kernel::Rejection{kernel::RejectionCode::kInvalid, "no query " + command});
  deps_.inventory->read([&](const inventory::Inventory& inv) { result = inventory_view(inv, command, args); });
  // How its agent reports metrics (host_scope = "wpars" on lab hosts that share a machine).
  if (command == "system.show" && result && deps_.liveness != nullptr && result->value.is_object()) {
    std::string scope = deps_.liveness->metrics_scope(result->value.value("name", ""));
    result->value["metricsHostScope"] = scope.empty() ? json(nullptr) : json(scope);
  }
  return answer(std::move(result));
}

std::expected<std::string, Gateway::Fail> Gateway::resolve_group(const std::string& asked) const {
  std::expected<std::string, Fail> out = std::unexpected(Fail{"not_found", "no group"});
  deps_.inventory->read([&](const inventory::Inventory& inv) {
    auto found = inventory::resolve_prefix(inv.groups, asked, "WPAR group");
    out = found ? std::expected<std::string, Fail>(*found)
                : std::unexpected(Fail{kernel::rejection_code_name(found.error().code), found.error().message});
  });
  return out;
}

// system.metrics, wpar.metrics: a host's or a WPAR's history (args: name,
// since (seconds back from now, default 3600), until (seconds back, default
// 0), metrics (names), resolution raw | 5m | auto: raw within the raw
// retention and up to 6 h, else 5-minute aggregates).
Gateway::Answer Gateway::metrics_query(const std::string& command, const json& args) {
  if (deps_.samples == nullptr) {
    return std::unexpected(Fail{"unavailable", "this wpmd keeps no metric history (it runs without the store)"});
  }
  const bool wpar = command == "wpar.metrics";
  const std::string asked = args.value("name", "");
  std::optional<Fail> problem;
  std::string name;
  deps_.inventory->read([&](const inventory::Inventory& inv) {
    auto found = wpar ? inventory::resolve_prefix(inv.wpars, asked, "WPAR")
                      : inventory::resolve_prefix(inv.registry.systems(), asked, "system");
    if (!found) {
      problem = Fail{kernel::rejection_code_name(found.error().code), found.error().message};
      return;
    }
    name = *found;
  });
  if (problem) return std::unexpected(*problem);
  auto since = seconds_arg(args, "since", 3600);
  auto until = seconds_arg(args, "until", 0);
  if (!since || !until || *until > *since) {
    return std::unexpected(Fail{"invalid", "since and until are seconds before now (since ≥ until ≥ 0)"});
  }
  std::vector<eventstore::series::Metric> metrics;
  for (const auto& m : args.value("metrics", json::array())) {
    auto id = m.is_string() ? eventstore::series::metric_by_name(m.get<std::string>()) : std::nullopt;
    if (!id) {
      std::vector<std::string_view> names;
      for (const auto& info : eventstore::series::metric_infos()) names.push_back(info.name);
      return std::unexpected(Fail{"invalid", fmt::format("no metric {}; the metrics are {}", m.dump(),
                                                         fmt::join(names, ", "))});
    }
    metrics.push_back(*id);
  }
  const auto& options = deps_.samples->options();
  std::string resolution = args.value("resolution", "auto");
  if (resolution != "raw" && resolution != "5m" && resolution != "auto") {
    return std::unexpected(Fail{"invalid", fmt::format("resolution '{}' must be raw, 5m or auto", resolution)});
  }
  if (resolution == "auto") resolution = *since <= std::min<int64_t>(options.raw_retention_s, 6 * 3600) ? "raw" : "5m";
  auto r = resolution == "raw" ? eventstore::Resolution::kRaw : eventstore::Resolution::kAggregate;
  int64_t now = deps_.clock->wall_ns() / 1'000'000'000;
  auto history = deps_.samples->read(wpar, name, now - *since, now - *until, r);
  if (!history) return std::unexpected(Fail{"unavailable", "cannot read the metric history: " + history.error().message});
  return Reply(metrics_json(*history, wpar ? "wpar" : "system", name, r, metrics, now - *since, now - *until));
}

// wpar.candidates: where a WPAR could move, ranked (executor::rank_candidates).
// wpar.relocate-check: `wpm wpar relocate --dry-run`: the executor's own
// decision on the relocation, without recording anything.
Gateway::Answer Gateway::relocation_query(const std::string& command, const json& args, const Caller& caller) {
  if (deps_.executor == nullptr) {
    return std::unexpected(Fail{"unavailable", "this wpmd runs no executor (wpmd --services)"});
  }
  const std::map<std::string, double> loads = deps_.liveness != nullptr ? deps_.liveness->loads()
                                                                        : std::map<std::string, double>{};
  std::optional<Fail> problem;
  json out;
  deps_.executor->read([&](const executor::Executor& x) {
    deps_.inventory->read([&](const inventory::Inventory& inv) {
      if (command == "system.evacuate-check") {
        auto parsed = executor::parse_command("system.evacuate", args);
        if (!parsed) {
          problem = Fail{kernel::rejection_code_name(parsed.error().code), parsed.error().message};
          return;
        }
        auto system = inventory::resolve_prefix(inv.registry.systems(), std::get<executor::Evacuate>(*parsed).system,
                                                "system");
        if (!system) {
          problem = Fail{kernel::rejection_code_name(system.error().code), system.error().message};
          return;
        }
        auto plan = executor::plan_evacuation(x, inv, *system, {});
        json moves = json::array(), skipped = json::array();
        for (const auto& [w, to] : plan.moves) moves.push_back({{"wpar", w}, {"to", to}});
        for (const auto& [w, why] : plan.skipped) skipped.push_back({{"wpar", w}, {"reason", why}});
        out = {{"system", *system}, {"moves", std::move(moves)}, {"skipped", std::move(skipped)}};
        return;
      }
      if (command == "wpar.candidates") {
        for (const auto& [key, value] : args.items()) {
          if (key != "name") {
            problem = Fail{"invalid", fmt::format("unknown argument '{}'", key)};
            return;
          }
        }
        auto name = inventory::resolve_prefix(inv.wpars, args.value("name", ""), "WPAR");
        if (!name) {
          problem = Fail{kernel::rejection_code_name(name.error().code), name.error().message};
          return;
        }
        const auto& w = inv.wpars.at(*name).wpar;
        if (w.system.empty()) {
          problem = Fail{"conflict", fmt::format("WPAR {} is not deployed: candidates are for moving a deployed "
                                                 "WPAR (deploy it with wpm wpar deploy {} --system H)",
                                                 *name, *name)};
          return;
        }
        json list = json::array();
        for (const auto& c : executor::rank_candidates(x, inv, *name, loads)) list.push_back(executor::candidate_to_json(c));
        out = {{"wpar", *name}, {"departure", w.system}, {"candidates", std::move(list)}};
        return;
      }
      auto parsed = executor::parse_command("wpar.relocate", args);
      if (!parsed) {
        problem = Fail{kernel::rejection_code_name(parsed.error().code), parsed.error().message};
        return;
      }
      kernel::Context context{deps_.clock != nullptr ? deps_.clock->wall_ns() : 0, "user:" + caller.user, kernel::CommandId("dry-run"), ""};
      auto decided = executor::decide(x, inv, *parsed, context);
      if (!decided) {
        problem = Fail{kernel::rejection_code_name(decided.error().code), decided.error().message};
        return;
      }
      const auto& a = std::get<executor::WparAction>(*parsed);
      auto name = inventory::resolve_prefix(inv.wpars, a.wpar, "WPAR");
      const auto& w = inv.wpars.at(*name).wpar;
      auto target = inventory::resolve_prefix(inv.registry.systems(), a.system, "system");
      auto compat = executor::direction_compat(x, inv, w.system, *target);
      json failed = json::array();
      for (const auto& f : compat.failed) failed.push_back(f.test);
      out = {{"wpar", *name},
             {"departure", w.system},
             {"arrival", *target},
             {"compatibility", compat.state},
             {"failedTests", std::move(failed)},
             {"warning", decided->warning},
             {"steps",
              {fmt::format("pause and checkpoint {} on {}", *name, w.system),
               fmt::format("place it on {} (a new placement epoch)", *target),
               fmt::format("{} pulls the state file from {} and verifies its checksums", *target, w.system),
               fmt::format("restore {} on {} and run it", *name, *target),
               fmt::format("remove the frozen copy on {}", w.system)}}};
    });
  });
  if (problem) return std::unexpected(*problem);
  return Reply(std::move(out));
}

Gateway::Answer Gateway::task_query(const std::string& command, const json& args) {
  if (deps_.executor == nullptr) {
    return std::unexpected(Fail{"unavailable", "this wpmd runs no executor (wpmd --services)"});
  }
  if (command == "task.list") {
    for (const auto& [key, value] : args.items()) {
      if (key != "state" && key != "wpar" && key != "limit") {
        return std::unexpected(Fail{"invalid", fmt::format("unknown argument '{}'", key)});
      }
    }
    std::string state = args.value("state", "");
    std::string wpar = args.value("wpar", "");
    size_t limit = std::clamp<size_t>(args.value("limit", size_t{50}), 1, executor::kFinishedTasksKept);
    std::vector<const executor::Task*> found;
    json list = json::array();
    deps_.executor->read([&](const executor::Executor& x) {
      for (const auto& [id, t] : x.tasks) {
        if (!state.empty() && t.state != state) continue;
        if (!wpar.empty() && t.wpar != wpar) continue;
        found.push_back(&t);
      }
      // The newest first.
      std::sort(found.begin(), found.end(), [](const auto* a, const auto* b) {
        return a->created_ns != b->created_ns ? a->created_ns > b->created_ns : a->id > b->id;
      });
      if (found.size() > limit) found.resize(limit);
      for (const auto* t : found) list.push_back(executor::task_to_json(*t, false));
    });
    return Reply(std::move(list));
  }
  // task.show: any unique prefix among the tasks kept in memory; else the exact id, from its stream.
  for (const auto& [key, value] : args.items()) {
    if (key != "id") return std::unexpected(Fail{"invalid", fmt::format("unknown argument '{}'", key)});
  }
  std::string id = args.value("id", "");
  if (id.empty()) return std::unexpected(Fail{"invalid", "task.show needs the task's id"});
  std::optional<json> shown;
  std::optional<Fail> problem;
  json children = json::array();  // an evacuation's relocations
  deps_.executor->read([&](const executor::Executor& x) {
    auto found = inventory::resolve_prefix(x.tasks, id, "task");
    if (found) {
      id = *found;
      shown = executor::task_to_json(x.tasks.at(*found), true);
    } else if (found.error().code != kernel::RejectionCode::kNotFound) {
      problem = Fail{kernel::rejection_code_name(found.error().code), found.error().message};
    }
    for (const auto* c : executor::children_of(x, id)) {
      children.push_back({{"id", c->id},
                          {"wpar", c->wpar},
                          {"to", c->options.target},
                          {"state", c->state},
                          {"error", c->error},
                          {"recovery", c->recovery}});
    }
  });
  auto with_children = [&](json j) {
    if (!children.empty()) j["children"] = children;
    return Reply(std::move(j));
  };
  if (problem) return std::unexpected(*problem);
  if (!valid_command_id(id)) return std::unexpected(Fail{"not_found", fmt::format("no task named '{}'", id)});
  // Read-your-writes: once a task is seen ended, the WPARs' view holds its end too.
  const bool going = shown && (shown->value("state", "") == "running" || shown->value("state", "") == "waiting");
  if (shown && !going && deps_.inventory != nullptr) {
    (void)deps_.inventory->wait_applied(deps_.executor->applied(), options_.decision_timeout);
  }
  // The whole task (outputs in full) from its stream; a running one as folded.
  if (going) return with_children(std::move(*shown));
  auto events = kernel::read_stream_events(*deps_.reads, executor::task_stream(id), 1, 10'000);
  if (!events) return std::unexpected(Fail{"unavailable", events.error().message});
  auto task = executor::task_from_events(id, *events);
  if (!task && shown) return with_children(std::move(*shown));
  if (!task) return std::unexpected(Fail{"not_found", fmt::format("no task named '{}'", id)});
  return with_children(executor::task_to_json(*task, true));
}

}  // namespace wpm::gateway
