#pragma once
// Test support for cross-process suites: temporary directories, running the
// real binaries (wpmd, wpm) as child processes, waiting on conditions with
// deadlines, and a tiny HTTP GET for /metrics. Test code only.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bus/client.h"

namespace wpm::testing {

// Path of a binary built by this tree (build/bin/NAME).
std::string bin(const std::string& name);

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "wpm-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct RunResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out;
  std::string err;
};

// Runs a command to completion (killed after `timeout`), capturing its output.
RunResult run(const std::vector<std::string>& argv,
              std::chrono::milliseconds timeout = std::chrono::seconds(60),
              const std::map<std::string, std::string>& env = {});

// Starts a command in its own process group; output goes to files.
pid_t spawn(const std::vector<std::string>& argv, const std::string& stdout_path,
            const std::string& stderr_path, const std::map<std::string, std::string>& env = {});
// Waits for `pid` up to `timeout`; returns its exit code (128+N on signal N),
// or nullopt if it is still running.
std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout);

// Polls `condition` until true or the deadline; returns whether it became true.
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = std::chrono::milliseconds(10));

std::string read_file(const std::string& path);
// "key=value" lines.
std::map<std::string, std::string> read_key_values(const std::string& path);

// GET http://host:port/path; empty on failure.
std::string http_get(const std::string& url);
// The value of an unlabelled (or exactly labelled) sample in Prometheus text.
std::optional<double> metric_value(const std::string& exposition, const std::string& sample);

// A wpmd child process on loopback with every port picked by the kernel.
class Wpmd {
 public:
  struct Options {
    std::string data_dir;
    std::vector<std::string> extra_args;
    std::chrono::milliseconds start_timeout = std::chrono::seconds(20);
    std::map<std::string, std::string> env;
  };
  explicit Wpmd(Options options);
  ~Wpmd();  // SIGKILL if still running
  Wpmd(const Wpmd&) = delete;
  Wpmd& operator=(const Wpmd&) = delete;

  // Starts and waits for DIR/endpoints; false when it exited or timed out
  // (exit_code() and log() tell why).
  bool start();
  void kill(int signal);
  // Sends SIGTERM and waits; returns the exit code.
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Waits for it to end by itself (a kill point); its exit code, or none.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  std::optional<int> exit_code() const { return exit_code_; }
  bool running() const { return pid_ > 0 && !exit_code_; }
  Options& options() { return options_; }
  pid_t pid() const { return pid_; }
  std::string log() const;  // its stderr so far

  const std::string& request() const { return request_; }
  const std::string& publish() const { return publish_; }
  const std::string& metrics() const { return metrics_; }
  // Agent endpoints (tcp://127.0.0.1:PORT) and the manager key fingerprint.
  const std::string& agent_public() const { return agent_public_; }
  const std::string& agent_channel() const { return agent_channel_; }
  const std::string& manager_key() const { return manager_key_; }
  const std::string& gateway() const { return gateway_; }
  const std::string& data_dir() const { return options_.data_dir; }
  // A store client's options with the administrator's key of this wpmd
  // (DATA/keys/admin.key), as `wpm` run as root on the manager uses it.
  bus::ClientOptions client_options(int timeout_ms = bus::kRequestTimeoutMsDefault,
                                    int attempts = bus::kRequestAttemptsDefault) const;

 private:
  Options options_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string log_path_;
  std::string request_, publish_, metrics_;
  std::string agent_public_, agent_channel_, manager_key_, gateway_;
  int starts_ = 0;
};

// Runs `wpm --store <request> ARGS…` against `wpmd`.
RunResult wpm(const Wpmd& wpmd, const std::vector<std::string>& args,
              std::chrono::milliseconds timeout = std::chrono::seconds(120));

}  // namespace wpm::testing
