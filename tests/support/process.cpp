#include "tests/support/process.h"

#include <algorithm>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace wpm::testing {
namespace fs = std::filesystem;

std::string bin(const std::string& name) { return std::string(WPM_BIN_DIR) + "/" + name; }

TempDir::TempDir(const std::string& prefix) {
  // Under the build tree: the same file system as real data, not a tmpfs /tmp.
  std::string base = std::string(WPM_TEST_TMP_DIR);
  fs::create_directories(base);
  std::string templ = base + "/" + prefix + ".XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  if (std::getenv("WPM_KEEP_TEST_DIRS") == nullptr) fs::remove_all(path_, ec);
}

namespace {
int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

pid_t fork_exec(const std::vector<std::string>& argv, int out_fd, int err_fd,
                const std::map<std::string, std::string>& env) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::setpgid(0, 0);
    // A test process that dies (an assertion in a thread aborts it) takes its
    // children along instead of leaving a wpmd behind. Children that
    // daemonise (wpm-agent start) are not affected: the flag is not inherited
    // by their own children. Threads that start children must outlive them.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s failed: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}
}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

RunResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
              const std::map<std::string, std::string>& env) {
  char out_path[] = "/tmp/wpm-run-out.XXXXXX";
  char err_path[] = "/tmp/wpm-run-err.XXXXXX";
  int out_fd = ::mkstemp(out_path);
  int err_fd = ::mkstemp(err_path);
  pid_t pid = fork_exec(argv, out_fd, err_fd, env);
  ::close(out_fd);
  ::close(err_fd);
  RunResult r;
  auto code = wait_exit(pid, timeout);
  if (!code) {
    ::kill(-pid, SIGKILL);
    code = wait_exit(pid, std::chrono::seconds(10));
  }
  r.exit_code = code.value_or(-1);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  ::unlink(out_path);
  ::unlink(err_path);
  return r;
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& stdout_path,
            const std::string& stderr_path, const std::map<std::string, std::string>& env) {
  int out_fd = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  int err_fd = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t pid = fork_exec(argv, out_fd, err_fd, env);
  ::close(out_fd);
  ::close(err_fd);
  return pid;
}

std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // Bounded by the deadline.
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return decode_status(status);
    if (r < 0) return std::nullopt;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(interval);
  }
  return condition();
}

std::map<std::string, std::string> read_key_values(const std::string& path) {
  std::map<std::string, std::string> out;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

std::string http_get(const std::string& url) {
  // http://host:port/path
  std::string rest = url.substr(std::string("http://").size());
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  auto colon = hostport.rfind(':');
  std::string host = hostport.substr(0, colon);
  int port = std::stoi(hostport.substr(colon + 1));
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + hostport + "\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return "";
  }
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  auto body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

std::optional<double> metric_value(const std::string& exposition, const std::string& sample) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(sample + " ")) return std::stod(line.substr(sample.size() + 1));
  }
  return std::nullopt;
}

Wpmd::Wpmd(Options options) : options_(std::move(options)) {
  log_path_ = options_.data_dir + ".wpmd.log";
}

Wpmd::~Wpmd() {
  if (running()) {
    ::kill(-pid_, SIGKILL);
    wait_exit(pid_, std::chrono::seconds(10));
  }
}

bool Wpmd::start() {
  std::error_code ec;
  fs::create_directories(options_.data_dir, ec);
  fs::remove(options_.data_dir + "/endpoints", ec);
  std::vector<std::string> argv = {bin("wpmd"), "--data", options_.data_dir};
  // Every port picked by the kernel, unless the test sets it.
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--store-endpoint", "tcp://127.0.0.1:0"},
           {"--publish-endpoint", "tcp://127.0.0.1:0"},
           {"--metrics-listen", "127.0.0.1:0"},
           {"--agent-public-endpoint", "tcp://127.0.0.1:0"},
           {"--agent-channel-endpoint", "tcp://127.0.0.1:0"},
           {"--gateway-endpoint", "tcp://127.0.0.1:0"}}) {
    if (std::find(options_.extra_args.begin(), options_.extra_args.end(), flag) == options_.extra_args.end()) {
      argv.insert(argv.end(), {flag, value});
    }
  }
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  exit_code_.reset();
  ++starts_;
  pid_ = spawn(argv, log_path_ + ".out", log_path_, options_.env);
  std::string endpoints = options_.data_dir + "/endpoints";
  bool up = wait_until(
      [&] {
        if (auto code = wait_exit(pid_, std::chrono::milliseconds(0))) {
          exit_code_ = code;
          return true;
        }
        return fs::exists(endpoints);
      },
      options_.start_timeout);
  if (!up || exit_code_) return false;
  auto kv = read_key_values(endpoints);
  request_ = kv["request"];
  publish_ = kv["publish"];
  metrics_ = kv["metrics"];
  agent_public_ = kv["agent_public"];
  agent_channel_ = kv["agent_channel"];
  manager_key_ = kv["manager_key"];
  gateway_ = kv["gateway"];
  return !request_.empty();
}

void Wpmd::kill(int signal) {
  if (!running()) return;
  ::kill(pid_, signal);
  if (signal == SIGKILL) exit_code_ = wait_exit(pid_, std::chrono::seconds(10));
}

std::optional<int> Wpmd::stop(std::chrono::milliseconds timeout) {
  if (!running()) return exit_code_;
  ::kill(pid_, SIGTERM);
  exit_code_ = wait_exit(pid_, timeout);
  return exit_code_;
}

std::optional<int> Wpmd::wait(std::chrono::milliseconds timeout) {
  if (!running()) return exit_code_;
  exit_code_ = wait_exit(pid_, timeout);
  return exit_code_;
}

std::string Wpmd::log() const { return read_file(log_path_); }

bus::ClientOptions Wpmd::client_options(int timeout_ms, int attempts) const {
  bus::ClientOptions o{timeout_ms, attempts, {}};
  std::string keys = options_.data_dir + "/keys";
  if (auto admin = bus::load_curve_keys(keys, "admin")) o.credentials.client_keys = *admin;
  if (auto store = bus::load_public_key(keys, "store")) o.credentials.store_public_key = *store;
  return o;
}

RunResult wpm(const Wpmd& wpmd, const std::vector<std::string>& args,
              std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {bin("wpm"), "--data", wpmd.data_dir(), "--store", wpmd.request()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, timeout);
}

}  // namespace wpm::testing
