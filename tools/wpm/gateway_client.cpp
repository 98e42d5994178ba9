#include "tools/wpm/gateway_client.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "bus/curve.h"
#include "bus/frame.h"

namespace wpm::cli {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string home_dir() {
  std::string home = env("HOME");
  if (!home.empty()) return home;
  if (const passwd* pw = ::getpwuid(::getuid())) return pw->pw_dir;
  return "/";
}

std::string new_command_id() {
  uint8_t raw[12];
  RAND_bytes(raw, sizeof raw);
  std::string id;
  for (uint8_t b : raw) id += fmt::format("{:02x}", b);
  return id;
}

}  // namespace

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string key_value_in(const std::string& file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(key + "=")) return line.substr(key.size() + 1);
  }
  return "";
}

std::string session_file() {
  std::string base = env("XDG_CONFIG_HOME");
  if (base.empty()) base = home_dir() + "/.config";
  return base + "/wpm/session.json";
}

json read_sessions() {
  std::ifstream in(session_file());
  if (!in) return json::object();
  json j = json::parse(in, nullptr, false);
  return j.is_object() ? j : json::object();
}

bool write_sessions(const json& sessions) {
  std::string path = session_file();
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::string text = sessions.dump(2) + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok && std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string Gateway::endpoint() const {
  if (!g_.gateway.empty()) return g_.gateway;
  std::string in_file = key_value_in(g_.data_dir + "/endpoints", "gateway");
  return in_file.empty() ? kDefaultGateway : in_file;
}

std::string Gateway::token() const {
  if (std::string t = env("WPM_TOKEN"); !t.empty()) return t;
  json sessions = read_sessions();
  if (sessions.contains(endpoint()) && sessions[endpoint()].is_string())
    return sessions[endpoint()];
  std::ifstream in(g_.data_dir + "/keys/root.credential");
  std::string line;
  if (in && std::getline(in, line)) return line;
  return "";
}

json Gateway::call(const std::string& command, json args, const std::string& token_override,
                   bool no_token) {
  std::string text = call_text(command, std::move(args), token_override, no_token);
  json j = json::parse(text, nullptr, false);
  if (j.is_object()) return j;
  return local_error("internal", "the gateway's reply is not JSON");
}

std::string Gateway::call_text(const std::string& command, json args,
                               const std::string& token_override, bool no_token) {
  json request = {{"v", kGatewayProtocol},
                  {"command", command},
                  {"args", std::move(args)},
                  {"id", new_command_id()}};
  if (!no_token) {
    std::string t = token_override.empty() ? token() : token_override;
    if (!t.empty()) request["token"] = t;
  }
  std::string body = request.dump();
  std::string ep = endpoint();
  if (auto problem = bus::connect_endpoint_problem(ep); !problem.empty()) {
    return local_error("usage", "--gateway: " + problem).dump();
  }
  for (int attempt = 1; attempt <= g_.attempts; ++attempt) {
    // One connection for every call that gets its reply (an events watch
    // calls hundreds of times a second); a new one after a timeout, so a
    // late reply never answers the next request.
    if (!socket_ || socket_endpoint_ != ep) {
      socket_.emplace(context_, zmq::socket_type::dealer);
      socket_->set(zmq::sockopt::linger, 0);
      std::string key = !g_.gateway_key.empty()
                            ? g_.gateway_key
                            : key_value_in(g_.data_dir + "/endpoints", "gateway_key");
      if (!key.empty()) {
        auto mine = bus::generate_curve_keys();
        if (mine) bus::make_curve_client(*socket_, *mine, key);
      }
      socket_->connect(ep);
      socket_endpoint_ = ep;
    }
    zmq::socket_t& s = *socket_;
    s.set(zmq::sockopt::rcvtimeo, timeout_for(command, request));
    s.send(zmq::message_t(), zmq::send_flags::sndmore);
    s.send(zmq::buffer(body));
    zmq::message_t delimiter, reply;
    if (s.recv(delimiter) && delimiter.more() && s.recv(reply)) return reply.to_string();
    socket_.reset();
    if (stop_ != nullptr && stop_->load()) break;
  }
  return local_error("unavailable",
                     fmt::format("no reply from the gateway at {} after {} attempt(s); is wpmd "
                                 "running? (--gateway, WPM_GATEWAY or --data DIR name it)",
                                 ep, g_.attempts))
      .dump();
}

json Gateway::local_error(const std::string& code, const std::string& message) {
  return {{"ok", false}, {"error", {{"code", code}, {"message", message}}}};
}

namespace {

int exit_code_of(const std::string& code) {
  if (code == "not_found") return kExitNotFound;
  if (code == "invalid" || code == "usage") return kExitUsage;
  return kExitFailed;
}

std::string hint_for(const std::string& code) {
  if (code == "unauthenticated") return " (log in with `wpm login`)";
  if (code == "forbidden") return " (ask an administrator for a role: `wpm role add --role R --user U`)";
  return "";
}

}  // namespace

int report(const json& reply) {
  const json& e = reply["error"];
  std::string code = e.value("code", "internal");
  std::string message = e.value("message", "failed");
  if (e.contains("command")) message += fmt::format(" [command {}]", e["command"].get<std::string>());
  print_error(message + hint_for(code));
  return exit_code_of(code);
}

// Runs one gateway command and prints its result with `table` on success.
// A success comes as {"v":1,"ok":true,"result":…} with its members in that
// order, so -o json prints a large result's text as it came, unparsed.
int run_command(const GlobalOptions& g, const std::string& command, nlohmann::json args, const std::function<void(const nlohmann::json&)>& table) {
  static constexpr std::string_view kOkPrefix = R"({"v":1,"ok":true,"result":)";
  static constexpr size_t kPrettyBytesMax = 64 * 1024;
  Gateway gateway(g);
  std::string text = gateway.call_text(command, std::move(args));
  if (g.format == Format::kJson && text.starts_with(kOkPrefix) && text.ends_with('}') &&
      text.size() > kPrettyBytesMax) {
    std::fwrite(text.data() + kOkPrefix.size(), 1, text.size() - kOkPrefix.size() - 1, stdout);
    std::fputc('\n', stdout);
    return kExitOk;
  }
  json reply = json::parse(text, nullptr, false);
  if (!reply.is_object()) {
    print_error("the gateway's reply is not JSON");
    return kExitFailed;
  }
  if (!reply.value("ok", false)) return report(reply);
  if (g.format == Format::kJson) {
    std::puts(reply["result"].dump(2).c_str());
  } else {
    table(reply["result"]);
  }
  return kExitOk;
}

int Gateway::timeout_for(const std::string& command, const json& request) const {
  int wait = 0;
  if (command == "events.read") wait = request["args"].value("waitMs", 0);
  if (command == "login") wait = 10'000;  // PAM sleeps after a failure
  // A simulation folds the whole log and a period of history: it answers when done.
  if (command == "policy.simulate") wait = std::max(g_.timeout_ms, 600'000);
  // A change waits for its decision on the gateway (up to 10 s) before it answers.
  bool read = command == "events.read" || command.ends_with(".list") ||
              command.ends_with(".show") || command.ends_with(".matrix") ||
              command.ends_with(".query") || command.find('.') == std::string::npos;
  return g_.timeout_ms + wait + (read ? 0 : 10'000);
}

}  // namespace wpm::cli
