#include "agents/agent/daemon.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "agents/agent/daemon_internal.h"
#include "agents/agent/forward.h"
#include "agents/agent/manager_link.h"
#include "agents/agent/operations.h"
#include "agents/agent/transfer.h"
#include "agents/profile/profile.h"
#include "agents/runtime/cgroups.h"
#include "agents/runtime/lifecycle.h"
#include "agents/runtime/supervisor.h"
#include "agents/runtime/wpar_files.h"
#include "bus/curve.h"
#include "bus/frame.h"
#include "bus/request_server.h"
#include "schemas/agent_protocol.h"
#include "wpm_version.h"

namespace wpm::agent {
namespace {

namespace fs = std::filesystem;
namespace ap = agentproto;
using namespace std::chrono_literals;

constexpr const char* kZapDomain = "agent-port";
// Heartbeats between two collections of the system profile (a minute at 5 s).
constexpr uint64_t kProfileEveryTicks = 12;


std::string pid_path(const std::string& data_dir) { return data_dir + "/agent.pid"; }

std::shared_ptr<spdlog::logger> make_logger(const DaemonOptions& o) {
  std::vector<spdlog::sink_ptr> sinks;
  const auto& l = o.config.logging;
  if (l.enabled) {
    std::error_code ec;
    fs::create_directories(o.paths.data_dir + "/logs", ec);
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          o.paths.data_dir + "/logs/agent.log", l.limit_bytes, l.count, !l.append));
    } catch (const spdlog::spdlog_ex& e) {
      std::fprintf(stderr, "wpm-agent: cannot open the log file: %s\n", e.what());
    }
  }
  if (o.foreground) {
    if (std::getenv("NO_COLOR") == nullptr && ::isatty(STDERR_FILENO)) {
      sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    } else {
      sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
    }
  }
  auto log = std::make_shared<spdlog::logger>("wpm-agent", sinks.begin(), sinks.end());
  log->set_level(spdlog::level::from_str(l.level));
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %n %v");
  log->flush_on(spdlog::level::info);
  return log;
}

// The WPARs this agent keeps, as the manager's listing shows them.
std::vector<ap::WparSummary> list_wpars(const AgentPaths& paths) {
  std::vector<ap::WparSummary> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(paths.wpars_root, ec)) {
    if (!entry.is_directory()) continue;
    runtime::WparFiles files(paths.wpars_root, entry.path().filename().string());
    auto spec = files.read_spec();
    if (!spec) continue;
    auto record = files.read_record();
    runtime::WparState state = record ? (record->ended ? runtime::WparState::kDefined : record->state)
                                      : runtime::WparState::kDefined;
    out.push_back({spec->name, spec->type == runtime::WparType::kSystem ? "system" : "application",
                   std::string(1, runtime::state_letter(state)),
                   read_epoch(paths.data_dir + "/placements", spec->name).value_or(0)});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

// Re-attaches to the WPARs left running and marks those whose supervisor died
// with the host or was killed: they are no longer active.
void reattach(const AgentPaths& paths, spdlog::logger& log) {
  std::error_code ec;
  size_t running = 0, lost = 0;
  for (const auto& entry : fs::directory_iterator(paths.wpars_root, ec)) {
    if (!entry.is_directory()) continue;
    runtime::WparFiles files(paths.wpars_root, entry.path().filename().string());
    auto record = files.read_record();
    if (!record || record->ended || record->state == runtime::WparState::kDefined) continue;
    if (runtime::supervisor_alive(record->supervisor_pid)) {
      ++running;
      continue;
    }
    ++lost;
    // What the lost supervisor held on the host: its network, and its
    // cgroups once nothing runs in them any more.
    if (auto cleaned = runtime::cleanup_lost_wpar(files); !cleaned) {
      log.warn("wpar_cleanup_failed wpar={} error=\"{}\"", entry.path().filename().string(),
               cleaned.error().message);
    } else if (*cleaned) {
      log.info("wpar_network_detached wpar={} reason=\"supervisor lost\"", entry.path().filename().string());
    }
    if (auto set = runtime::CgroupSet::open(runtime::CgroupLayout::detect(),
                                            paths.cgroup_of(entry.path().filename().string()));
        set && set->processes().value_or(std::vector<pid_t>{1}).empty()) {
      (void)set->remove();
    }
    (void)files.update_record([](runtime::WparRecord& r) {
      if (r.ended || r.state == runtime::WparState::kDefined || runtime::supervisor_alive(r.supervisor_pid)) {
        return false;
      }
      r.state = runtime::WparState::kBroken;
      r.error = "its supervisor is gone (killed, or the host restarted); remove or restart the WPAR";
      return true;
    });
    log.warn("wpar_supervisor_lost wpar={} pid={}", entry.path().filename().string(), record->supervisor_pid);
  }
  log.info("wpars_reattached running={} lost={}", running, lost);
}

}  // namespace

namespace detail {

Result<void> Daemon::open_local_socket() {
  std::string path = socket_path(o_.paths.data_dir);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("the data directory path is too long for a socket: {}", path));
  }
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ::unlink(path.c_str());  // a stale socket of a dead daemon (we hold the pid lock)
  local_fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  mode_t old = ::umask(0077);  // root only, from birth
  int rc = ::bind(local_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0 || ::listen(local_fd_, 16) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot listen on {}: {}", path, std::strerror(errno)));
  }
  ::chmod(path.c_str(), 0600);
  return {};
}

void Daemon::refresh_registration() {
  std::string path = o_.paths.data_dir + "/registration.json";
  std::error_code ec;
  auto mtime = fs::last_write_time(path, ec);
  if (ec) {
    if (registration_) log_->warn("registration_removed standalone=true");
    std::lock_guard lock(registration_mutex_);
    registration_.reset();
    session_.reset();
    status_.system_id.clear();
    status_.manager.clear();
    metrics_->registered.Set(0);
    return;
  }
  if (registration_ && mtime == registration_mtime_) return;
  auto r = read_registration(o_.paths.data_dir);
  if (!r || !*r) {
    if (!r) log_->error("registration_unreadable error=\"{}\"", r.error().message);
    return;
  }
  registration_mtime_ = mtime;
  {
    std::lock_guard lock(registration_mutex_);
    registration_ = **r;
  }
  session_ = std::make_unique<ManagerSession>(context_, tcp_endpoint(registration_->manager_host,
                                                                      registration_->channel_port),
                                              keys_, registration_->manager_public_key);
  started_sent_ = false;
  status_.system_id = registration_->system_id;
  status_.manager = tcp_endpoint(registration_->manager_host, registration_->public_port);
  metrics_->registered.Set(1);
  log_->info("registration_loaded system={} manager={} manager_key={}", registration_->system_id,
             session_->endpoint(), registration_->manager_fingerprint);
}

// The profile, collected again now and then; CRIU's probe is kept from the
// start (it takes seconds and changes only with packages).
void Daemon::recollect_profile() {
  profile::CollectOptions collect;
  collect.probe_criu = false;
  auto fresh = profile::collect_profile(collect);
  fresh.agent_version = kVersion;
  fresh.checkpointers = profile_.checkpointers;
  overrides_.apply(fresh);
  if (fresh == profile_) return;
  log_->info("profile_changed kernel={} memory_bytes={} cpu_cores={}", fresh.kernel_version, fresh.memory_bytes,
             fresh.cpu_cores);
  profile_ = std::move(fresh);
  profile_sent_ = false;
}

void Daemon::tick() {
  refresh_registration();
  if (++ticks_ % kProfileEveryTicks == 0) recollect_profile();
  metrics_->uptime.Set(static_cast<double>(now_ns() - started_ns_) / 1e9);
  // One read of the WPARs' records per tick, for the gauges and the manager.
  auto wpars = list_wpars(o_.paths);
  update_wpar_gauges(wpars);
  if (session_) {
    uint32_t active = static_cast<uint32_t>(std::count_if(wpars.begin(), wpars.end(), [](const auto& w) {
      return w.state == "A";
    }));
    ap::ManagerRequest request;
    if (!started_sent_) {
      request.body = ap::Started{kVersion, profile_, static_cast<uint32_t>(wpars.size()), bound_port_};
    } else if (!profile_sent_) {
      request.body = ap::ProfileReport{profile_};
    } else {
      ap::Heartbeat beat{now_ns(), static_cast<uint32_t>(wpars.size()), active};
      std::ifstream loadavg("/proc/loadavg");
      if (!(loadavg >> beat.load1)) beat.load1 = 0;
      long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
      beat.cpus = static_cast<uint16_t>(std::clamp<long>(cpus, 0, 65535));
      beat.agent_port = bound_port_;
      request.body = beat;
    }
    auto reply = session_->call(request, kManagerTimeout);
    if (reply) note_reply(*reply);
    if (!reply) {
      status_.last_error = fmt::format(
          "the manager did not answer ({}): it is down or unreachable, or it no longer admits this agent's key "
          "(then run wpm-agent configure --force)",
          reply.error().message);
      metrics_->errors.Increment();
      log_->warn("manager_unreachable endpoint={} error=\"{}\"", session_->endpoint(), reply.error().message);
    } else if (const auto* e = std::get_if<ap::ProtocolError>(&reply->body)) {
      status_.last_error = describe(*e);
      metrics_->errors.Increment();
      log_->error("manager_refused error=\"{}\"", describe(*e));
    } else {
      if (!started_sent_) log_->info("manager_reached system={} reported=started", status_.system_id);
      started_sent_ = true;
      profile_sent_ = true;
      status_.last_contact_ns = now_ns();
      status_.last_error.clear();
      metrics_->last_contact.Set(static_cast<double>(status_.last_contact_ns) / 1e9);
    }
  }
  (void)write_status(o_.paths.data_dir, status_);
}

void Daemon::update_wpar_gauges(const std::vector<ap::WparSummary>& wpars) {
  std::map<std::string, double> counts;
  for (char letter : std::string("DAPFLTB")) counts[std::string(1, letter)] = 0;
  for (const auto& w : wpars) counts[w.state] += 1;
  for (const auto& [state, n] : counts) {
    auto& g = state_gauges_[state];
    if (g == nullptr) g = &metrics_->wpars.Add({{"state", state}});
    g->Set(n);
  }
}

// One command from the manager, on a worker of the agent port's server. What
// touches the daemon's own state (the profile) is handed to the main loop.
std::optional<std::string> Daemon::serve_port(bus::ServerRequest& request) {
  ap::AgentReply reply;
  auto command = ap::decode_agent_command(request.body);
  if (!command) {
    metrics_->errors.Increment();
    log_->warn("agent_command_malformed error=\"{}\"", command.error().message);
    reply = ap::AgentReply{ap::peek_request_id(request.body),
                           ap::ProtocolError{ap::ErrorKind::kInvalidRequest, command.error().message}};
  } else if (command->protocol_version < kProtocolVersionMin) {
    reply = ap::AgentReply{command->request_id,
                           ap::ProtocolError{ap::ErrorKind::kInvalidRequest,
                                             fmt::format("the manager speaks wpm protocol {}; this agent needs {} or "
                                                         "later: upgrade wpmd",
                                                         command->protocol_version, kProtocolVersionMin)}};
  } else if (request.user_id != "manager") {
    // Another agent: a state file it was allowed to pull, and nothing else.
    const auto* fetch = std::get_if<ap::FetchState>(&command->body);
    const std::string key = request.user_id.starts_with("peer:") ? request.user_id.substr(5) : "";
    if (fetch == nullptr || !grants_.covers(key, fetch->wpar, fetch->state_id, wall_ns())) {
      log_->warn("peer_request_refused address={} key_fingerprint={}", request.peer_address,
                 bus::key_fingerprint(key));
      reply = ap::AgentReply{command->request_id,
                             ap::ProtocolError{ap::ErrorKind::kInvalidRequest,
                                               "this agent serves another agent only the state file the manager "
                                               "allowed it to take"}};
    } else if (auto data = serve_state(o_.paths.data_dir + "/state", *fetch); !data) {
      reply = ap::AgentReply{command->request_id, ap::ProtocolError{ap::ErrorKind::kNotFound, data.error()}};
    } else {
      reply = ap::AgentReply{command->request_id, std::move(*data)};
    }
  } else if (std::holds_alternative<ap::FetchState>(command->body)) {
    reply = ap::AgentReply{command->request_id,
                           ap::ProtocolError{ap::ErrorKind::kInvalidRequest, "state files go to agents, not to the "
                                                                             "manager"}};
  } else if (std::holds_alternative<ap::ListWpars>(command->body)) {
    reply = ap::AgentReply{command->request_id, list_wpars(o_.paths)};
  } else if (const auto* op = std::get_if<ap::Operation>(&command->body)) {
    auto result = handle_operation(*op);
    if (result.running && op->wait_ms > 0 &&
        hold_answer(request, command->request_id, op->operation_id,
                    std::min(std::chrono::milliseconds(op->wait_ms), kHoldMax))) {
      return std::nullopt;  // answered by answer_waiters()
    }
    reply = ap::AgentReply{command->request_id, std::move(result)};
  } else {
    if (std::holds_alternative<ap::RefreshProfile>(command->body)) {
      log_->info("profile_refresh_requested by=manager");
      refresh_requested_ = true;
      uint64_t one = 1;
      (void)!::write(wake_fd_, &one, sizeof one);
    }
    std::string system_id;
    {
      std::lock_guard lock(registration_mutex_);
      if (registration_) system_id = registration_->system_id;
    }
    reply = ap::AgentReply{command->request_id, ap::Pong{system_id, kVersion}};
  }
  return ap::encode(reply);
}

// The manager asked for the profile: collected again (with the [profile]
// table of agent.toml read again) and sent at once; the manager records it
// when it differs from the one on record.
void Daemon::refresh_profile() {
  if (auto config = load_agent_config(o_.paths.data_dir)) {
    overrides_ = config->profile;
  } else {
    log_->warn("profile_overrides_kept error=\"{}\" hint=\"fix agent.toml; the overrides read at start stay\"",
               config.error().message);
  }
  recollect_profile();
  profile_sent_ = false;
}

// A forwarded command (forward.h) with the client's stdin, stdout and stderr;
// answered with {"exit": N} when it ends.
void Daemon::on_local_client() {
  int client = ::accept4(local_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (client < 0) return;
  auto refuse = [&](int code, const std::string& why) {
    std::string m = nlohmann::json{{"exit", code}, {"error", why}}.dump(-1, ' ', false,
                                                                       nlohmann::json::error_handler_t::replace);
    (void)::send(client, m.data(), m.size(), MSG_NOSIGNAL);
    ::close(client);
  };
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(client, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != 0 && cred.uid != ::geteuid())) {
    log_->warn("local_client_refused uid={}", cred.uid);
    return refuse(1, "only root may use wpm-agent");
  }
  pollfd p{client, POLLIN, 0};
  if (::poll(&p, 1, 2000) <= 0) return refuse(1, "no command received");
  std::string buffer(kForwardBytesMax, '\0');
  alignas(cmsghdr) char control[CMSG_SPACE(16 * sizeof(int))];
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = ::recvmsg(client, &msg, MSG_CMSG_CLOEXEC);
  // Every descriptor received is ours to close, whatever the message says.
  std::vector<int> received;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      received.push_back(fd);
    }
  }
  auto close_fds = [&] {
    for (int fd : received) ::close(fd);
  };
  std::optional<ForwardRequest> request;
  if (n > 0 && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0) {
    request = decode_forward(std::string_view(buffer.data(), static_cast<size_t>(n)));
  }
  if (!request || received.size() != 3) {
    close_fds();
    return refuse(2, "malformed command for the agent daemon (expected a command with its standard streams)");
  }
  // Everything the child needs is made before fork: the daemon has threads.
  std::error_code ec;
  std::vector<std::string> argv = {fs::read_symlink("/proc/self/exe", ec).string(), "--data", o_.paths.data_dir};
  argv.insert(argv.end(), request->args.begin(), request->args.end());
  std::vector<std::string> env = request->env;
  env.push_back(std::string(kDirectEnv) + "=1");
  std::vector<char*> cargv, cenv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  const char* cwd = request->cwd.c_str();
  int fds[3] = {received[0], received[1], received[2]};
  pid_t child = ::fork();
  if (child == 0) {
    for (int i = 0; i < 3; ++i) ::dup2(fds[i], i);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // The command runs where its caller runs: relative paths mean the same.
    if (::chdir(cwd) != 0) ::_exit(126);
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  close_fds();
  if (child < 0) return refuse(1, fmt::format("cannot run the command: {}", std::strerror(errno)));
  std::string name = request->args.empty() ? "" : request->args.front();
  log_->info("local_command pid={} command={}", child, name);
  children_[child] = client;
}

void Daemon::reap_children() {
  int status = 0;
  pid_t done;
  // Reaped under the lock that spawns runners: a pid freed here cannot be
  // given to a new runner before its old entry is marked.
  std::lock_guard ops_lock(ops_mutex_);
  while ((done = ::waitpid(-1, &status, WNOHANG)) > 0) {
    reaped_ = true;
    for (auto& [id, runner] : spawned_) {
      if (runner == done) runner = 0;  // an operation's runner ended (settle() reads it)
    }
    auto it = children_.find(done);
    if (it == children_.end()) continue;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::string m = nlohmann::json{{"exit", code}}.dump();
    (void)::send(it->second, m.data(), m.size(), MSG_NOSIGNAL);
    ::close(it->second);
    metrics_->operations.Add({{"result", code == 0 ? "ok" : "failed"}}).Increment();
    children_.erase(it);
  }
}

int Daemon::run() {
  log_ = make_logger(o_);
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGCHLD, SIGHUP}) sigaddset(&signals, s);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    std::fprintf(stderr, "wpm-agent: signalfd: %s\n", std::strerror(errno));
    return 1;
  }

  auto keys = bus::load_or_create_curve_keys(o_.paths.data_dir + "/keys", "agent");
  if (!keys) {
    log_->error("agent_keys_failed error=\"{}\"", keys.error().message);
    std::fprintf(stderr, "wpm-agent: %s\n", keys.error().message.c_str());
    return 1;
  }
  keys_ = *keys;
  auto registry = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_unique<AgentMetrics>(*registry);
  registry_ = registry.get();
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(o_.config.metrics_listen, 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wpm-agent: cannot listen for metrics on %s: %s; set [agent] metrics_listen in %s/agent.toml "
                 "(port 0 picks one)\n", o_.config.metrics_listen.c_str(), e.what(), o_.paths.data_dir.c_str());
    return 1;
  }
  exposer->RegisterCollectable(registry);
  auto ports = exposer->GetListeningPorts();
  metrics_port_ = ports.empty() ? 0 : static_cast<uint16_t>(ports.front());
  std::string metrics_url = fmt::format("http://{}:{}/metrics",
                                        o_.config.metrics_listen.substr(0, o_.config.metrics_listen.rfind(':')),
                                        ports.empty() ? 0 : ports.front());

  // Only the pinned manager key may use the agent port.
  bus::ZapHandler zap(context_);
  zap.serve_domain(kZapDomain, [this](const std::string& address, const std::string& key) -> std::optional<std::string> {
    std::lock_guard lock(registration_mutex_);
    if (registration_ && key == registration_->manager_public_key) return "manager";
    // An arrival agent the manager named with a checkpoint, for its state file only.
    if (grants_.admits(key, wall_ns())) return "peer:" + key;
    log_->warn("agent_port_refused address={} key_fingerprint={}", address, bus::key_fingerprint(key));
    return std::nullopt;
  });
  metrics_->registered.Set(0);
  refresh_registration();
  std::string endpoint = o_.config.agent_endpoint;
  // Commands from the manager, on the one request/reply loop: two workers
  // (a WPAR list reads files), a short queue.
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  port_ = std::make_unique<bus::RequestServer>(
      context_, bus::RequestServerOptions{endpoint, 2, 64, static_cast<int64_t>(ap::kAgentFrameBytesMax), keys_,
                                          kZapDomain});
  if (auto r = port_->bind(); !r || wake_fd_ < 0) {
    std::fprintf(stderr, "wpm-agent: cannot listen on the agent port %s: %s; another program may use it: choose "
                 "another with [agent] endpoint in %s/agent.toml, or wpm-agent configure --agentport\n",
                 endpoint.c_str(), r ? "no eventfd" : r.error().message.c_str(), o_.paths.data_dir.c_str());
    return 1;
  }
  // The journal of the manager's operations, before the first one can come.
  journal_ = std::make_unique<OperationJournal>(o_.paths.data_dir + "/operations");
  // Operations whose runner went with the last daemon (a killed agent, a
  // host restart) are settled as interrupted now; the others still run.
  for (auto r : journal_->running()) {
    if (!settle(r) && !r.done) running_ops_[r.id] = r.wpar;
  }
  grants_.rebuild(journal_->records(), wall_ns());
  port_->start([this](bus::ServerRequest& r) { return serve_port(r); },
               [](const bus::ServerRequest& r, std::string_view why) {
                 return ap::encode(ap::AgentReply{ap::peek_request_id(r.body),
                                                  ap::ProtocolError{ap::ErrorKind::kUnavailable, std::string(why)}});
               });
  // Stopped before run()'s locals (the metrics registry, the ZAP handler)
  // go, on every way out.
  struct StopPort {
    Daemon& d;
    ~StopPort() {
      if (d.port_) d.port_->stop();
      d.port_.reset();
      if (d.wake_fd_ >= 0) ::close(d.wake_fd_);
      d.wake_fd_ = -1;
    }
  } stop_port{*this};
  std::string bound = port_->endpoint();
  bound_port_ = static_cast<uint16_t>(std::stoul(bound.substr(bound.rfind(':') + 1)));
  if (auto r = open_local_socket(); !r) {
    std::fprintf(stderr, "wpm-agent: %s\n", r.error().message.c_str());
    return 1;
  }
  profile::CollectOptions collect;
  profile_ = profile::collect_profile(collect);
  profile_.agent_version = kVersion;
  overrides_ = o_.config.profile;
  overrides_.apply(profile_);
  if (!profile_.overridden_facts.empty()) {
    log_->warn("profile_overridden facts={} source={}/agent.toml hint=\"for labs and tests only: the manager "
               "compares these values, not this host's\"",
               fmt::join(profile_.overridden_facts, ","), o_.paths.data_dir);
  }
  reattach(o_.paths, *log_);

  status_.pid = ::getpid();
  status_.started_at_ns = started_ns_;
  std::string endpoints = fmt::format("agent={}\nmetrics={}\nsocket={}\n", bound, metrics_url,
                                      socket_path(o_.paths.data_dir));
  if (auto r = write_file_atomic(o_.paths.data_dir + "/endpoints", endpoints, 0644); !r) {
    std::fprintf(stderr, "wpm-agent: %s\n", r.error().message.c_str());
    return 1;
  }
  log_->info("agent_ready version={} data={} agent_port={} metrics={} registered={} system={}", kVersion,
             o_.paths.data_dir, bound, metrics_url, registration_.has_value(), status_.system_id);
  if (o_.foreground) {
    std::printf("wpm-agent %s serving %s\n  agent port (CURVE): %s\n  metrics:            %s\n  local socket:       %s\n"
                "  manager:            %s\n",
                kVersion, o_.paths.data_dir.c_str(), bound.c_str(), metrics_url.c_str(),
                socket_path(o_.paths.data_dir).c_str(),
                registration_ ? status_.manager.c_str() : "none (standalone; run wpm-agent configure)");
    std::fflush(stdout);
  }

  collector_ = std::make_unique<MetricsCollector>(o_.paths, o_.config.metrics_host_scope == "wpars");
  if (o_.config.metrics_host_scope == "wpars") {
    log_->warn("metrics_host_scope scope=wpars hint=\"for labs and tests only: this host's CPU, memory and "
               "processes are reported as the sum of this agent's WPARs\"");
  }
  auto next_tick = std::chrono::steady_clock::now();
  next_metrics_ = next_tick;
  while (true) {
    auto now = std::chrono::steady_clock::now();
    if (now >= next_tick) {
      tick();
      next_tick = std::chrono::steady_clock::now() + std::chrono::seconds(o_.config.heartbeat_s);
    }
    if (std::chrono::steady_clock::now() >= next_metrics_) {
      // On the interval's grid, not after the report: the reports keep their pace.
      next_metrics_ += metrics_interval_;
      report_metrics();
      if (next_metrics_ < std::chrono::steady_clock::now()) next_metrics_ = std::chrono::steady_clock::now() + metrics_interval_;
    }
    auto wake_at = std::min(next_tick, next_metrics_);
    if (auto held = answer_waiters(false)) wake_at = std::min(wake_at, *held);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake_at - std::chrono::steady_clock::now());
    zmq::pollitem_t items[] = {{nullptr, wake_fd_, ZMQ_POLLIN, 0},
                               {nullptr, local_fd_, ZMQ_POLLIN, 0},
                               {nullptr, sfd, ZMQ_POLLIN, 0}};
    bus::poll(items, 3, std::max(wait, 0ms));
    if (items[0].revents & ZMQ_POLLIN) {
      uint64_t n = 0;
      (void)!::read(wake_fd_, &n, sizeof n);
      if (refresh_requested_.exchange(false)) {
        refresh_profile();
        next_tick = std::chrono::steady_clock::now();
      }
    }
    if (items[1].revents & ZMQ_POLLIN) on_local_client();
    if (items[2].revents & ZMQ_POLLIN) {
      signalfd_siginfo info{};
      bool stop = false;
      while (::read(sfd, &info, sizeof info) == sizeof info) {
        if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) stop = true;
        if (info.ssi_signo == SIGHUP) next_tick = std::chrono::steady_clock::now();  // re-read now
      }
      reap_children();
      if (stop) break;
    }
  }
  (void)answer_waiters(true);  // what is held is answered before the port closes
  log_->info("agent_stopping running_commands={}", children_.size());
  // WPARs keep running: they belong to their supervisors, not to the agent.
  ::unlink(socket_path(o_.paths.data_dir).c_str());
  for (auto& [pid, fd] : children_) ::close(fd);
  status_.pid = 0;
  (void)write_status(o_.paths.data_dir, status_);
  return 0;
}

}  // namespace detail

std::string socket_path(const std::string& data_dir) { return data_dir + "/agent.sock"; }

// The pid file carries a POSIX write lock while the daemon lives: F_GETLK
// names its holder without taking any lock, so looking never disturbs a
// daemon that is starting.
int running_daemon_pid(const std::string& data_dir) {
  int fd = ::open(pid_path(data_dir).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  int pid = 0;
  if (::fcntl(fd, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK) pid = probe.l_pid > 0 ? probe.l_pid : -1;
  ::close(fd);
  return pid;
}

int run_daemon(const DaemonOptions& options) {
  std::error_code ec;
  fs::create_directories(options.paths.data_dir, ec);
  // One daemon per data directory. The lock goes with this process (never
  // inherited by the commands it runs); the file is never opened twice.
  int fd = ::open(pid_path(options.paths.data_dir).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "wpm-agent: cannot open %s: %s\n", pid_path(options.paths.data_dir).c_str(),
                 std::strerror(errno));
    return 1;
  }
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (::fcntl(fd, F_SETLK, &lock) != 0) {
    std::fprintf(stderr, "wpm-agent: another wpm-agent runs on %s (pid %d); stop it with wpm-agent stop\n",
                 options.paths.data_dir.c_str(), running_daemon_pid(options.paths.data_dir));
    ::close(fd);
    return 1;
  }
  std::string pid = fmt::format("{}\n", ::getpid());
  (void)!::ftruncate(fd, 0);
  (void)!::pwrite(fd, pid.data(), pid.size(), 0);
  detail::Daemon daemon(options);
  int rc = daemon.run();
  (void)!::ftruncate(fd, 0);
  ::close(fd);
  return rc;
}

std::optional<int> forward_to_daemon(const std::string& data_dir, const std::vector<std::string>& args) {
  std::string path = socket_path(data_dir);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return std::nullopt;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ForwardRequest request;
  std::error_code ec;
  request.cwd = fs::current_path(ec).string();
  if (ec || request.cwd.empty()) request.cwd = "/";
  request.args = args;
  for (char** e = environ; *e != nullptr; ++e) request.env.emplace_back(*e);
  std::string body = encode_forward(request);
  if (body.size() > kForwardBytesMax) return std::nullopt;  // too big for one message: run it here
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EACCES || err == EPERM) {
      std::fprintf(stderr, "wpm-agent: only root may use the agent on %s; run it as root\n", data_dir.c_str());
      return 1;
    }
    return std::nullopt;  // no daemon: the caller runs the command itself
  }
  int fds[3] = {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO};
  char control[CMSG_SPACE(sizeof fds)] = {};
  iovec iov{body.data(), body.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof fds);
  std::memcpy(CMSG_DATA(c), fds, sizeof fds);
  if (::sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) {
    ::close(fd);
    return std::nullopt;
  }
  // Interrupting this client leaves the command to finish in the daemon.
  char reply[4096];
  ssize_t n;
  do {
    n = ::recv(fd, reply, sizeof reply, 0);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) {
    std::fprintf(stderr, "wpm-agent: the agent daemon on %s stopped before the command ended; check with "
                 "wpm-agent lswpar\n", data_dir.c_str());
    return 1;
  }
  try {
    auto j = nlohmann::json::parse(std::string_view(reply, static_cast<size_t>(n)));
    if (j.contains("error")) std::fprintf(stderr, "wpm-agent: %s\n", j["error"].get<std::string>().c_str());
    return j.at("exit").get<int>();
  } catch (const std::exception&) {  // nlohmann: parse or type errors
    std::fprintf(stderr, "wpm-agent: unreadable answer from the agent daemon\n");
    return 1;
  }
}

}  // namespace wpm::agent
