#include "agents/runtime/wpar_files.h"

#include <fmt/format.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace wpm::runtime {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

Result<void> write_atomic(const std::string& path, const std::string& content) {
  // A unique temp file per writer: two processes may write the same file.
  std::string tmp = path + ".XXXXXX";
  int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return fail(ErrorCode::kIo, fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ok = (::close(fd) == 0) && ok;
  if (!ok) {
    ::unlink(tmp.c_str());
    return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot rename {}: {}", tmp, std::strerror(errno)));
  }
  return {};
}

Result<json> read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail(ErrorCode::kNotFound, fmt::format("cannot read {}", path));
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    return fail(ErrorCode::kCorruption, fmt::format("{} is not valid JSON: {}", path, e.what()));
  }
}

template <typename T>
void opt_to(json& j, const char* key, const std::optional<T>& v) {
  if (v) j[key] = *v;
}
template <typename T>
void opt_from(const json& j, const char* key, std::optional<T>& v) {
  if (j.contains(key) && !j[key].is_null()) v = j[key].get<T>();
}

WparState state_from(const std::string& s) {
  for (WparState st : {WparState::kDefined, WparState::kActive, WparState::kPaused,
                       WparState::kFrozen, WparState::kLoaded, WparState::kTransitional,
                       WparState::kBroken}) {
    if (s == state_name(st)) return st;
  }
  return WparState::kBroken;
}

json network_to_json(const VethPlan& p) {
  return {{"hostIfname", p.host_ifname},
          {"wparIfname", p.wpar_ifname},
          {"address", format_ipv4(p.address)},
          {"hostInterface", p.host_interface},
          {"hostAddress", format_ipv4(p.host_address)},
          {"gateway", format_ipv4(p.gateway)}};
}

// The record's network, if any; an error text when it is malformed.
std::optional<std::string> network_from(const json& j, WparRecord& r) {
  if (!j.contains("network") || j["network"].is_null()) return std::nullopt;
  const json& n = j["network"];
  VethPlan p;
  p.host_ifname = n.at("hostIfname").get<std::string>();
  p.wpar_ifname = n.value("wparIfname", std::string(kVethWparIfname));
  p.host_interface = n.at("hostInterface").get<std::string>();
  for (auto [key, out] :
       {std::pair{"address", &p.address}, std::pair{"hostAddress", &p.host_address},
        std::pair{"gateway", &p.gateway}}) {
    auto text = n.at(key).get<std::string>();
    auto a = parse_ipv4(text);
    if (!a) return fmt::format("network.{} '{}' is not an IPv4 address", key, text);
    *out = *a;
  }
  r.network = p;
  return std::nullopt;
}

}  // namespace

WparFiles::WparFiles(std::string root, std::string name) : dir_(root + "/" + name) {}

Result<void> WparFiles::create_dir() const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return fail(ErrorCode::kIo, fmt::format("cannot create {}: {}", dir_, ec.message()));
  return {};
}

json spec_to_json(const WparSpec& s) {
  json limits = json::object();
  opt_to(limits, "cpuShares", s.limits.cpu_shares);
  opt_to(limits, "cpuLimitPercent", s.limits.cpu_limit_percent);
  opt_to(limits, "memoryBytes", s.limits.memory_bytes);
  opt_to(limits, "maxProcesses", s.limits.max_processes);
  json j = {{"name", s.name},
            {"type", s.type == WparType::kSystem ? "system" : "application"},
            {"command", s.command},
            {"env", s.env},
            {"limits", limits},
            {"checkpointable", s.checkpointable},
            {"stopTimeoutSeconds", s.stop_timeout_s},
            {"hostname", s.hostname},
            {"address", s.address},
            {"privileged", s.privileged}};
  // null: the default set, resolved against the host the WPAR starts on.
  j["capabilities"] = s.capabilities ? json(*s.capabilities) : json(nullptr);
  return j;
}

json record_to_json(const WparRecord& r) {
  json j = {{"state", state_name(r.state)},
            {"stateLetter", std::string(1, state_letter(r.state))},
            {"supervisorPid", r.supervisor_pid},
            {"workloadPid", r.workload_pid},
            {"startedAtNs", r.started_at_ns},
            {"ended", r.ended},
            {"endedAtNs", r.ended_at_ns},
            {"error", r.error}};
  opt_to(j, "exitCode", r.exit_code);
  opt_to(j, "exitSignal", r.exit_signal);
  j["network"] = r.network ? network_to_json(*r.network) : json(nullptr);
  j["forwardingEnabled"] = r.forwarding_enabled;
  j["runningCapabilities"] = r.running_capabilities ? json(*r.running_capabilities) : json(nullptr);
  j["userNamespace"] = r.ids ? json{{"firstHostId", r.ids->first},
                                    {"count", r.ids->count},
                                    {"hostLayers", r.idmapped ? "idmapped" : "overflow"},
                                    {"note", r.ids_note}}
                             : json(nullptr);
  return j;
}

Result<void> WparFiles::write_spec(const WparSpec& s) const {
  std::string text;
  try {
    text = spec_to_json(s).dump(2);
  } catch (const nlohmann::json::type_error&) {  // text that is not UTF-8
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("the command, environment or hostname of WPAR {} is not valid UTF-8; give it as UTF-8 "
                            "text (wrap binary arguments in a script)",
                            s.name));
  }
  return write_atomic(spec_path(), text);
}

Result<WparSpec> WparFiles::read_spec() const {
  auto j = read_json(spec_path());
  if (!j) return std::unexpected(j.error());
  try {
    WparSpec s;
    s.name = j->at("name").get<std::string>();
    s.type = j->at("type").get<std::string>() == "system" ? WparType::kSystem : WparType::kApplication;
    s.command = j->at("command").get<std::vector<std::string>>();
    s.env = j->value("env", std::map<std::string, std::string>{});
    const json& l = j->at("limits");
    opt_from(l, "cpuShares", s.limits.cpu_shares);
    opt_from(l, "cpuLimitPercent", s.limits.cpu_limit_percent);
    opt_from(l, "memoryBytes", s.limits.memory_bytes);
    opt_from(l, "maxProcesses", s.limits.max_processes);
    s.checkpointable = j->value("checkpointable", false);
    s.stop_timeout_s = j->value("stopTimeoutSeconds", 10u);
    s.hostname = j->value("hostname", std::string());
    s.address = j->value("address", std::string());
    s.privileged = j->value("privileged", false);  // specs from before hardening: not privileged
    opt_from(*j, "capabilities", s.capabilities);
    return s;
  } catch (const json::exception& e) {
    return fail(ErrorCode::kCorruption, fmt::format("{}: {}", spec_path(), e.what()));
  }
}

Result<void> WparFiles::write_record(const WparRecord& r) const {
  std::string lock_path = dir_ + "/status.lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) ::flock(fd, LOCK_EX);
  auto out = write_record_unlocked(r);
  if (fd >= 0) ::close(fd);  // closing releases the lock
  return out;
}

Result<void> WparFiles::write_record_unlocked(const WparRecord& r) const {
  return write_atomic(record_path(), record_to_json(r).dump(2));
}

Result<WparRecord> WparFiles::read_record() const {
  auto j = read_json(record_path());
  if (!j) return std::unexpected(j.error());
  try {
    WparRecord r;
    r.state = state_from(j->at("state").get<std::string>());
    r.supervisor_pid = j->value("supervisorPid", 0);
    r.workload_pid = j->value("workloadPid", 0);
    r.started_at_ns = j->value("startedAtNs", int64_t{0});
    r.ended = j->value("ended", false);
    r.ended_at_ns = j->value("endedAtNs", int64_t{0});
    r.error = j->value("error", std::string());
    r.forwarding_enabled = j->value("forwardingEnabled", false);
    opt_from(*j, "exitCode", r.exit_code);
    opt_from(*j, "exitSignal", r.exit_signal);
    opt_from(*j, "runningCapabilities", r.running_capabilities);
    if (auto u = j->find("userNamespace"); u != j->end() && u->is_object()) {
      r.ids = IdRange{u->at("firstHostId").get<uint32_t>(), u->at("count").get<uint32_t>()};
      r.idmapped = u->value("hostLayers", std::string()) == "idmapped";
      r.ids_note = u->value("note", std::string());
    }
    if (auto bad = network_from(*j, r))
      return fail(ErrorCode::kCorruption, fmt::format("{}: {}", record_path(), *bad));
    return r;
  } catch (const json::exception& e) {
    return fail(ErrorCode::kCorruption, fmt::format("{}: {}", record_path(), e.what()));
  }
}

Result<bool> WparFiles::update_record(const std::function<bool(WparRecord&)>& change) const {
  // Read, change and write under one lock, so that the supervisor's record of
  // how the WPAR ended is never overwritten by an older view.
  std::string lock_path = dir_ + "/status.lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return fail(ErrorCode::kIo, fmt::format("cannot open {}: {}", lock_path, std::strerror(errno)));
  ::flock(fd, LOCK_EX);
  Result<bool> out = false;
  auto record = read_record();
  if (!record) {
    out = std::unexpected(record.error());
  } else if (change(*record)) {
    auto w = write_record_unlocked(*record);
    out = w ? Result<bool>(true) : Result<bool>(std::unexpected(w.error()));
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return out;
}

bool wait_until_ended(const WparFiles& files, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = files.read_record();
    if (r && (r->ended || r->state == WparState::kBroken)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

bool supervisor_alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid));
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return cmdline.find("wpm-wpar-supervisor") != std::string::npos;
}

}  // namespace wpm::runtime
