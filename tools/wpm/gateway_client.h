#pragma once
// wpm's client of the gateway (DESIGN.md §3, §8): where the gateway is
// (--gateway, WPM_GATEWAY, DATA/endpoints, else the default), which token to
// send (WPM_TOKEN, this user's login kept in the session file, else root's
// credential on the manager), and one request, one reply, with the command
// id kept across retries (a retried change is the same command) on one
// connection while replies come.
//
// Thread safety: one thread per Gateway; the free functions are reentrant.

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "tools/wpm/log_commands.h"

namespace wpm::cli {

inline constexpr const char* kDefaultGateway = "tcp://127.0.0.1:9520";  // DESIGN.md §3
inline constexpr int kGatewayProtocol = 1;

// The environment variable `name`, or empty.
std::string env(const char* name);
// The value of `key` in a file of KEY=VALUE lines (DATA/endpoints), or empty.
std::string key_value_in(const std::string& file, const std::string& key);
// Where a login is kept: $XDG_CONFIG_HOME/wpm/session.json (0600), one token per gateway.
std::string session_file();
nlohmann::json read_sessions();
bool write_sessions(const nlohmann::json& sessions);

// Prints the error of a failed gateway reply ("wpm: message [command id] (hint)")
// and returns its exit code (README "Exit codes").
int report(const nlohmann::json& reply);

// Runs one gateway command: on success prints its result whole with -o json
// (a large one as the text that came), else with `table`; on failure reports
// it. Returns the exit code.
int run_command(const GlobalOptions& g, const std::string& command, nlohmann::json args,
                const std::function<void(const nlohmann::json&)>& table);

class Gateway {
 public:
  // `stop`, when given, ends retries once it is set (Ctrl-C).
  explicit Gateway(const GlobalOptions& g, const std::atomic<bool>* stop = nullptr)
      : g_(g), stop_(stop) {}

  std::string endpoint() const;
  std::string token() const;
  // The reply as JSON (a local error in the gateway's shape when there is none).
  nlohmann::json call(const std::string& command, nlohmann::json args,
                      const std::string& token_override = "", bool no_token = false);
  // The reply's text as it came (a local error as JSON text).
  std::string call_text(const std::string& command, nlohmann::json args,
                        const std::string& token_override = "", bool no_token = false);
  // A failure found here, in the shape of the gateway's.
  static nlohmann::json local_error(const std::string& code, const std::string& message);

 private:
  int timeout_for(const std::string& command, const nlohmann::json& request) const;

  const GlobalOptions& g_;
  const std::atomic<bool>* stop_;
  zmq::context_t context_{1};
  std::optional<zmq::socket_t> socket_;  // after context_: closed before it
  std::string socket_endpoint_;
};

}  // namespace wpm::cli
