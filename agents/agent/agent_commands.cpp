#include "agents/agent/agent_commands.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <zmq.hpp>

#include "agents/agent/daemon.h"
#include "agents/agent/manager_link.h"
#include "agents/agent/operations.h"
#include "agents/profile/profile.h"
#include "bus/curve.h"
#include "bus/registration_proof.h"
#include "wpm_version.h"

namespace wpm::agent {
namespace {

namespace fs = std::filesystem;
namespace ap = agentproto;
using namespace std::chrono_literals;

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kNotRunning = 3;
constexpr auto kManagerTimeout = 5000ms;

int error(int code, const std::string& message) {
  std::fprintf(stderr, "wpm-agent: %s\n", message.c_str());
  return code;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_time(int64_t ns) {
  if (ns == 0) return "never";
  std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return fmt::format("{} ({} s ago)", buf, (now_ns() - ns) / 1'000'000'000);
}

// The password: --password-file, WPM_REGISTRATION_PASSWORD, or a prompt.
Result<std::string> read_password(const std::string& file) {
  std::string password;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in || !std::getline(in, password)) {
      return fail(ErrorCode::kNotFound, fmt::format("cannot read the password from {}", file));
    }
  } else if (const char* env = std::getenv("WPM_REGISTRATION_PASSWORD")) {
    password = env;
  } else if (::isatty(STDIN_FILENO)) {
    std::fprintf(stderr, "Registration password: ");
    termios old{};
    ::tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    std::getline(std::cin, password);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    std::fprintf(stderr, "\n");
  } else {
    return fail(ErrorCode::kInvalidRequest,
                "no registration password: give --password-file FILE or set WPM_REGISTRATION_PASSWORD");
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (password.empty()) return fail(ErrorCode::kInvalidRequest, "the registration password is empty");
  return password;
}

// Whether TCP `port` can be bound here (0: always). Our own daemon holding it is fine.
std::optional<std::string> port_taken(uint16_t port) {
  if (port == 0) return std::nullopt;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  bool busy = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0;
  int err = errno;
  ::close(fd);
  if (!busy) return std::nullopt;
  return std::string(std::strerror(err));
}

uint16_t port_of(const std::string& endpoint) {
  auto colon = endpoint.rfind(':');
  if (colon == std::string::npos) return 0;
  try {
    return static_cast<uint16_t>(std::stoi(endpoint.substr(colon + 1)));
  } catch (...) {
    return 0;
  }
}

std::map<std::string, std::string> read_endpoints(const std::string& data_dir) {
  std::map<std::string, std::string> kv;
  std::ifstream in(data_dir + "/endpoints");
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return kv;
}

struct ConfigureOptions {
  std::string manager;
  uint16_t pubport = 9513;
  uint16_t agentport = 9510;
  std::string manager_key;
  std::string password_file;
  std::string token;  // a join token in place of the password
  std::string hostname;
  bool force = false;
  bool agentport_given = false;
};

// Best effort: tells the old manager this agent leaves.
void unregister(zmq::context_t& context, const Registration& old, const bus::CurveKeyPair& keys) {
  ManagerSession session(context, tcp_endpoint(old.manager_host, old.channel_port), keys, old.manager_public_key);
  auto reply = session.call(ap::ManagerRequest{0, ap::Unregister{}}, kManagerTimeout);
  if (!reply) {
    std::fprintf(stderr, "wpm-agent: warning: could not unregister from %s (%s); remove system %s there by hand\n",
                 old.manager_host.c_str(), reply.error().message.c_str(), old.system_id.c_str());
  } else if (const auto* e = std::get_if<ap::ProtocolError>(&reply->body)) {
    std::fprintf(stderr, "wpm-agent: warning: %s refused to unregister %s: %s\n", old.manager_host.c_str(),
                 old.system_id.c_str(), describe(*e).c_str());
  } else {
    std::printf("unregistered %s from %s\n", old.system_id.c_str(), old.manager_host.c_str());
  }
}

int configure(const AgentPaths& paths, const ConfigureOptions& o, OutputFormat format) {
  auto existing = read_registration(paths.data_dir);
  if (existing && *existing && !o.force) {
    const auto& r = **existing;
    return error(kFailed, fmt::format("this agent is already registered with {} as {}; to register with another "
                                      "manager (or again), add --force",
                                      r.manager_host, r.system_id));
  }
  // The agent port: --agentport, else agent.toml's, else 9510; both given
  // and different is refused rather than registering a port nobody binds.
  uint16_t agentport = o.agentport_given ? o.agentport : 9510;
  if (auto config = load_agent_config(paths.data_dir); config && fs::exists(paths.data_dir + "/agent.toml")) {
    uint16_t configured = port_of(config->agent_endpoint);
    if (o.agentport_given && configured != o.agentport) {
      return error(kUsage, fmt::format("{}/agent.toml sets the agent port to {}, not {}; give --agentport {} or "
                                       "change [agent] endpoint there",
                                       paths.data_dir, configured, o.agentport, configured));
    }
    agentport = configured;
  }
  int daemon = running_daemon_pid(paths.data_dir);
  uint16_t own_port = daemon != 0 ? port_of(read_endpoints(paths.data_dir)["agent"]) : 0;
  if (daemon != 0 && agentport != 0 && own_port != agentport) {
    std::fprintf(stderr, "wpm-agent: note: the running agent listens on port %u; run wpm-agent restart so that it "
                 "listens on %u\n", own_port, agentport);
  } else if (agentport != own_port) {
    if (auto why = port_taken(agentport)) {
      return error(kFailed, fmt::format("the agent port {} is taken by another program ({}); choose another with "
                                        "--agentport",
                                        agentport, *why));
    }
  }
  Result<std::string> password = std::string();
  if (o.token.empty()) {
    password = read_password(o.password_file);
    if (!password) return error(kUsage, password.error().message);
  } else if (!o.token.starts_with("wpmj_")) {
    return error(kUsage, "a join token starts with wpmj_ (make one on the manager: wpm system token create)");
  }
  auto keys = bus::load_or_create_curve_keys(paths.data_dir + "/keys", "agent");
  if (!keys) return error(kFailed, keys.error().message);

  zmq::context_t context(1);
  auto key_reply = call_public(context, o.manager, o.pubport, ap::ManagerRequest{1, ap::GetManagerKey{}},
                               kManagerTimeout);
  if (!key_reply) {
    return error(kFailed, fmt::format("cannot reach the manager at {} ({}): is wpmd running there, and are the host "
                                      "name and --pubport right?",
                                      tcp_endpoint(o.manager, o.pubport), key_reply.error().message));
  }
  const auto* manager = std::get_if<ap::ManagerKey>(&key_reply->body);
  if (manager == nullptr || !bus::valid_curve_key(manager->public_key)) {
    return error(kFailed, fmt::format("{} did not answer with a manager key; is it a wpm manager's public port?",
                                      tcp_endpoint(o.manager, o.pubport)));
  }
  // The fingerprint is computed here, never taken from the answer.
  std::string fingerprint = bus::key_fingerprint(manager->public_key);
  if (!o.manager_key.empty() && !bus::fingerprint_matches(o.manager_key, fingerprint)) {
    return error(kFailed, fmt::format("the manager at {} has key {}, which does not match --manager-key {}; check "
                                      "the fingerprint with 'wpmd --show-key' on the manager (someone may be "
                                      "impersonating it)",
                                      o.manager, fingerprint, o.manager_key));
  }
  std::string proof;
  if (o.token.empty()) {
    if (manager->password_kdf.empty()) {
      return error(kFailed, fmt::format("the manager at {} accepts no registrations by password yet: on the "
                                        "manager, start wpmd with --registration-password-file FILE, or make a join "
                                        "token (wpm system token create) and give it with --token",
                                        o.manager));
    }
    auto kdf = bus::parse_kdf(manager->password_kdf);
    if (!kdf) return error(kFailed, "the manager sent unusable password parameters: " + kdf.error().message);
    auto secret = bus::derive_password_key(*password, *kdf);
    if (!secret) return error(kFailed, secret.error().message);
    std::string hostname_for_proof = o.hostname;
    if (hostname_for_proof.empty()) {
      char buf[256] = {};
      ::gethostname(buf, sizeof buf - 1);
      hostname_for_proof = buf;
    }
    proof = bus::registration_proof(*secret, manager->public_key, keys->public_key, hostname_for_proof);
  }

  std::string hostname = o.hostname;
  if (hostname.empty()) {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    hostname = buf;
  }
  auto profile = profile::collect_profile();
  profile.agent_version = kVersion;
  if (auto config = load_agent_config(paths.data_dir); config) config->profile.apply(profile);
  ap::Register reg{proof, hostname, agentport, profile, keys->public_key, o.token};
  // Over CURVE to the key just pinned: the proof never travels in clear, and
  // only the manager that holds that key can read it.
  ManagerSession registration(context, tcp_endpoint(o.manager, manager->agent_channel_port), *keys,
                              manager->public_key);
  auto reply = registration.call(ap::ManagerRequest{2, reg}, kManagerTimeout);
  if (!reply) {
    return error(kFailed, fmt::format("the manager did not answer the registration on its agent channel {}: {} (is "
                                      "port {} open between this host and the manager?)",
                                      registration.endpoint(), reply.error().message, manager->agent_channel_port));
  }
  if (const auto* e = std::get_if<ap::ProtocolError>(&reply->body)) {
    return error(kFailed, fmt::format("the manager refused the registration: {}", describe(*e)));
  }
  const auto* registered = std::get_if<ap::Registered>(&reply->body);
  if (registered == nullptr) return error(kFailed, "unexpected answer to the registration");
  Registration r{o.manager, o.pubport, manager->agent_channel_port, manager->public_key, fingerprint,
                 registered->system_id, now_ns()};
  if (auto w = write_registration(paths.data_dir, r); !w) return error(kFailed, w.error().message);
  // Placement epochs are the old manager's numbers: a new manager starts its
  // own. Registered already: a failure here is said, not a failed configure.
  auto dropped = adopt_placements(paths.data_dir + "/placements", r.manager_public_key,
                                  existing && *existing ? (**existing).manager_public_key : std::string());
  if (!dropped) {
    std::fprintf(stderr, "wpm-agent: warning: %s; remove the files in %s/placements if the new manager's commands "
                 "are refused as stale\n", dropped.error().message.c_str(), paths.data_dir.c_str());
  } else if (*dropped > 0 && format != OutputFormat::kJson) {
    std::printf("forgot the placement epochs of %zu WPAR(s) that the previous manager numbered\n", *dropped);
  }
  // Only now, with the new registration in place, leave the old manager (a
  // failed registration must not leave the agent registered nowhere). The
  // same manager and key: the registration was the same one, nothing to leave.
  if (o.force && existing && *existing) {
    const auto& old = **existing;
    if (old.manager_public_key != r.manager_public_key || old.system_id != r.system_id) {
      unregister(context, old, *keys);
    }
  }
  // The agent port the daemon binds, unless agent.toml says otherwise.
  auto config_text = fmt::format("# Written by wpm-agent configure; edit freely.\n[agent]\nendpoint = \"tcp://0.0.0.0:{}\"\n",
                                 agentport);
  if (!fs::exists(paths.data_dir + "/agent.toml")) {
    (void)write_file_atomic(paths.data_dir + "/agent.toml", config_text, 0644);
  }
  if (daemon > 0) ::kill(daemon, SIGHUP);  // the running daemon picks it up now
  if (format == OutputFormat::kJson) {
    std::printf("%s\n", nlohmann::json{{"systemId", r.system_id},
                                       {"manager", tcp_endpoint(r.manager_host, r.public_port)},
                                       {"managerKey", fingerprint},
                                       {"alreadyRegistered", registered->already_registered},
                                       {"placementEpochsForgotten", dropped ? *dropped : 0}}
                            .dump()
                            .c_str());
  } else {
    std::printf("registered with %s as %s\nmanager key %s%s\n", o.manager.c_str(), r.system_id.c_str(),
                fingerprint.c_str(),
                o.manager_key.empty() ? " (pinned; compare it with 'wpmd --show-key' on the manager)" : " (matches)");
  }
  return kOk;
}

int status(const AgentPaths& paths, OutputFormat format) {
  int pid = running_daemon_pid(paths.data_dir);
  auto registration = read_registration(paths.data_dir);
  auto st = read_status(paths.data_dir);
  std::optional<Registration> reg = registration ? *registration : std::nullopt;
  if (format == OutputFormat::kJson) {
    nlohmann::json j = {{"dataDir", paths.data_dir}, {"running", pid != 0}, {"pid", pid > 0 ? pid : 0},
                        {"registered", reg.has_value()}};
    if (reg) {
      j["manager"] = tcp_endpoint(reg->manager_host, reg->public_port);
      j["systemId"] = reg->system_id;
      j["managerKey"] = reg->manager_fingerprint;
      j["registeredAtNs"] = reg->registered_at_ns;
    }
    if (st && pid != 0) {
      j["startedAtNs"] = st->started_at_ns;
      j["lastContactNs"] = st->last_contact_ns;
      j["lastError"] = st->last_error;
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("agent:        %s\n", pid > 0 ? fmt::format("running (pid {})", pid).c_str()
                                       : pid < 0 ? "running" : "not running (start it with wpm-agent start)");
    std::printf("data:         %s\n", paths.data_dir.c_str());
    if (reg) {
      std::printf("registered:   yes, with %s as %s\n", tcp_endpoint(reg->manager_host, reg->public_port).c_str(),
                  reg->system_id.c_str());
      std::printf("manager key:  %s\n", reg->manager_fingerprint.c_str());
      if (pid != 0 && st) {
        std::printf("last contact: %s\n", format_time(st->last_contact_ns).c_str());
        if (!st->last_error.empty()) std::printf("last error:   %s\n", st->last_error.c_str());
      }
    } else {
      std::printf("registered:   no (standalone; register with wpm-agent configure --manager HOST)\n");
    }
  }
  return pid != 0 ? kOk : kNotRunning;
}

struct PortFlags {
  std::string agent_endpoint;
  std::string metrics_listen;
};

int start(const AgentPaths& paths, const PortFlags& ports) {
  if (int pid = running_daemon_pid(paths.data_dir); pid != 0) {
    std::printf("wpm-agent already runs on %s (pid %d)\n", paths.data_dir.c_str(), pid);
    return kOk;
  }
  std::error_code ec;
  fs::create_directories(paths.data_dir, ec);
  fs::remove(paths.data_dir + "/endpoints", ec);
  std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  std::string err_path = paths.data_dir + "/agent.stderr";
  pid_t child = ::fork();
  if (child < 0) return error(kFailed, fmt::format("fork: {}", std::strerror(errno)));
  if (child == 0) {
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    (void)!::chdir("/");  // never hold the caller's directory (or mount) busy
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(err >= 0 ? err : devnull, 2);
    std::vector<std::string> args = {self, "--data", paths.data_dir, "run", "--background"};
    if (!ports.agent_endpoint.empty()) args.insert(args.end(), {"--agent-endpoint", ports.agent_endpoint});
    if (!ports.metrics_listen.empty()) args.insert(args.end(), {"--metrics-listen", ports.metrics_listen});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::waitpid(child, nullptr, 0);
  // Ready when it wrote its endpoints; failed when it exited first.
  for (int i = 0; i < 300; ++i) {
    if (fs::exists(paths.data_dir + "/endpoints") && running_daemon_pid(paths.data_dir) != 0) {
      std::printf("wpm-agent started on %s (pid %d)\n", paths.data_dir.c_str(), running_daemon_pid(paths.data_dir));
      return kOk;
    }
    if (i > 5 && running_daemon_pid(paths.data_dir) == 0 && fs::file_size(err_path, ec) > 0) break;
    std::this_thread::sleep_for(50ms);
  }
  std::ifstream in(err_path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return error(kFailed, last.empty() ? fmt::format("the agent did not start within 15 s; see {}/logs/agent.log",
                                                   paths.data_dir)
                                     : (last.starts_with("wpm-agent: ") ? last.substr(11) : last));
}

int stop(const AgentPaths& paths) {
  int pid = running_daemon_pid(paths.data_dir);
  if (pid == 0) {
    std::printf("wpm-agent is not running on %s\n", paths.data_dir.c_str());
    return kOk;
  }
  if (pid < 0 || ::kill(pid, SIGTERM) != 0) {
    return error(kFailed, fmt::format("cannot signal the agent (pid {}): {}", pid, std::strerror(errno)));
  }
  for (int i = 0; i < 200; ++i) {
    if (running_daemon_pid(paths.data_dir) == 0) {
      std::printf("wpm-agent stopped (pid %d); its WPARs keep running\n", pid);
      return kOk;
    }
    std::this_thread::sleep_for(50ms);
  }
  return error(kFailed, fmt::format("the agent (pid {}) did not stop within 10 s; kill it with kill -9 {}", pid, pid));
}

}  // namespace

void add_daemon_commands(CLI::App& app, const AgentPaths& paths, OutputFormat& format, int& exit_code) {
  auto co = std::make_shared<ConfigureOptions>();
  auto* configure_cmd = app.add_subcommand("configure", "register this agent with a manager (CURVE keys, password)");
  configure_cmd->add_option("--manager", co->manager, "the manager's host name or address")->required();
  configure_cmd->add_option("--pubport", co->pubport, "the manager's public port (default 9513)");
  configure_cmd->add_option("--agentport", co->agentport, "this agent's port (default 9510; 0 = pick one)");
  configure_cmd->add_option("--manager-key", co->manager_key,
                            "the manager key's fingerprint (wpmd --show-key); refuse any other key");
  configure_cmd->add_option("--password-file", co->password_file,
                            "file holding the registration password (else WPM_REGISTRATION_PASSWORD, else a prompt)");
  configure_cmd->add_option("--token", co->token,
                            "a single-use join token from `wpm system token create`, in place of the password");
  configure_cmd->add_option("--hostname", co->hostname, "the name to register under (default: this host's name)");
  configure_cmd->add_flag("--force", co->force, "unregister from the current manager and register again");
  configure_cmd->callback([&, co, configure_cmd] {
    co->agentport_given = configure_cmd->count("--agentport") > 0;
    exit_code = configure(paths, *co, format);
  });

  auto background = std::make_shared<bool>(false);
  auto ports = std::make_shared<PortFlags>();
  auto port_flags = [ports](CLI::App* cmd) {
    cmd->add_option("--agent-endpoint", ports->agent_endpoint,
                    "agent port endpoint (default from agent.toml, else tcp://0.0.0.0:9510; port 0 = pick one)");
    cmd->add_option("--metrics-listen", ports->metrics_listen,
                    "/metrics address host:port (default from agent.toml, else 0.0.0.0:9511; port 0 = pick one)");
  };
  auto* run = app.add_subcommand("run", "run the agent in the foreground");
  run->add_flag("--background", *background, "log only to the log file (used by start)")->group("");
  port_flags(run);
  run->callback([&, background, ports] {
    auto config = load_agent_config(paths.data_dir);
    if (!config) {
      exit_code = error(kUsage, config.error().message);
      return;
    }
    if (!ports->agent_endpoint.empty()) config->agent_endpoint = ports->agent_endpoint;
    if (!ports->metrics_listen.empty()) config->metrics_listen = ports->metrics_listen;
    exit_code = run_daemon(DaemonOptions{paths, *config, !*background});
  });
  auto* start_cmd = app.add_subcommand("start", "start the agent in the background (pid file DATA/agent.pid)");
  port_flags(start_cmd);
  start_cmd->callback([&, ports] { exit_code = start(paths, *ports); });
  app.add_subcommand("stop", "stop the agent; its WPARs keep running")->callback([&] { exit_code = stop(paths); });
  app.add_subcommand("restart", "stop, then start the agent")->callback([&] {
    exit_code = stop(paths);
    if (exit_code == kOk) exit_code = start(paths, PortFlags{});
  });
  // The runner of one operation from the manager (operations.h); the daemon starts it.
  auto operation_id = std::make_shared<std::string>();
  auto* op_run = app.add_subcommand("operation-run", "run one journaled operation from the manager (internal)");
  op_run->group("");
  op_run->add_option("ID", *operation_id, "the operation id")->required();
  op_run->callback([&, operation_id] { exit_code = run_operation(paths, *operation_id); });
  app.add_subcommand("status", "whether the agent runs, is registered, and when it last reached its manager "
                               "(exit 3 when not running)")
      ->callback([&] { exit_code = status(paths, format); });
}

}  // namespace wpm::agent
