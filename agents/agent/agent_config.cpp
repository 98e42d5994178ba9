#include "agents/agent/agent_config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace wpm::agent {
namespace {

Result<void> unknown_keys(const toml::table& table, const std::set<std::string>& known, const std::string& where,
                          const std::string& origin) {
  for (const auto& [key, value] : table) {
    (void)value;
    if (!known.contains(std::string(key.str()))) {
      return fail(ErrorCode::kInvalidRequest, fmt::format("{}: unknown key '{}{}'; known keys: {}", origin, where,
                                                          key.str(), fmt::join(known, ", ")));
    }
  }
  return {};
}

Result<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail(ErrorCode::kNotFound, fmt::format("cannot read {}", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Result<void> parse_profile_overrides(const toml::table& t, const std::string& origin, ProfileOverrides& o) {
  if (auto r = unknown_keys(t,
                            {"distribution", "distribution_version", "kernel_version", "base_system_version",
                             "glibc_version", "architecture", "isa_level", "agent_version", "cpu_flags", "cpu_mhz",
                             "memory_bytes", "memory_protection_keys", "ntp"},
                            "profile.", origin);
      !r) {
    return r;
  }
  auto wrong = [&](const char* key, const char* expected) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("{}: key 'profile.{}' must be {}", origin, key, expected));
  };
  for (auto [key, field] : std::initializer_list<std::pair<const char*, std::optional<std::string>*>>{
           {"distribution", &o.distribution},
           {"distribution_version", &o.distribution_version},
           {"kernel_version", &o.kernel_version},
           {"base_system_version", &o.base_system_version},
           {"glibc_version", &o.glibc_version},
           {"architecture", &o.architecture},
           {"isa_level", &o.isa_level},
           {"agent_version", &o.agent_version}}) {
    if (const auto* n = t.get(key)) {
      auto v = n->value<std::string>();
      if (!v || v->empty() || v->size() > 128) return wrong(key, "a text of 1 to 128 characters");
      *field = *v;
    }
  }
  if (const auto* n = t.get("cpu_flags")) {
    const auto* list = n->as_array();
    if (list == nullptr || list->size() > 1024) return wrong("cpu_flags", "a list of flag names");
    std::vector<std::string> flags;
    for (const auto& f : *list) {
      auto v = f.value<std::string>();
      if (!v) return wrong("cpu_flags", "a list of flag names");
      flags.push_back(*v);
    }
    std::sort(flags.begin(), flags.end());
    o.cpu_flags = flags;
  }
  if (const auto* n = t.get("cpu_mhz")) {
    auto v = n->value<double>();
    if (!v || *v <= 0) return wrong("cpu_mhz", "a positive number");
    o.cpu_mhz = *v;
  }
  if (const auto* n = t.get("memory_bytes")) {
    auto v = n->value<int64_t>();
    if (!v || *v <= 0) return wrong("memory_bytes", "a positive number of bytes");
    o.memory_bytes = static_cast<uint64_t>(*v);
  }
  if (const auto* n = t.get("memory_protection_keys")) {
    auto v = n->value<bool>();
    if (!v) return wrong("memory_protection_keys", "true or false");
    o.memory_protection_keys = *v;
  }
  if (const auto* n = t.get("ntp")) {
    auto v = n->value<bool>();
    if (!v) return wrong("ntp", "true or false");
    o.ntp = *v;
  }
  return {};
}

}  // namespace

bool ProfileOverrides::empty() const {
  profile::SystemProfile probe;
  apply(probe);
  return probe.overridden_facts.empty();
}

void ProfileOverrides::apply(profile::SystemProfile& p) const {
  std::vector<std::string> names;
  auto set = [&](const auto& from, auto& to, const char* name) {
    if (from) {
      to = *from;
      names.emplace_back(name);
    }
  };
  set(distribution, p.distribution, "distribution");
  set(distribution_version, p.distribution_version, "distributionVersion");
  set(kernel_version, p.kernel_version, "kernelVersion");
  set(base_system_version, p.base_system_version, "baseSystemVersion");
  set(glibc_version, p.glibc_version, "glibcVersion");
  set(architecture, p.architecture, "architecture");
  set(isa_level, p.isa_level, "isaLevel");
  set(agent_version, p.agent_version, "agentVersion");
  set(cpu_flags, p.cpu_flags, "cpuFlags");
  set(cpu_mhz, p.cpu_mhz, "cpuMhz");
  set(memory_bytes, p.memory_bytes, "memoryBytes");
  set(memory_protection_keys, p.memory_protection_keys, "memoryProtectionKeys");
  if (ntp) {
    p.ntp_synchronized = *ntp;
    names.emplace_back("ntp");
  }
  p.overridden_facts = std::move(names);
}

std::string map_log_level(std::string_view level) {
  static const std::map<std::string, std::string> kLevels = {
      {"error", "error"}, {"severe", "error"}, {"warning", "warn"}, {"warn", "warn"},   {"info", "info"},
      {"verbose", "debug"}, {"fine", "debug"}, {"debug", "debug"},  {"finer", "trace"}, {"finest", "trace"},
      {"trace", "trace"},   {"off", "off"},    {"critical", "critical"}};
  std::string lower;
  for (char c : level) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  auto it = kLevels.find(lower);
  return it == kLevels.end() ? "" : it->second;
}

Result<AgentConfig> parse_agent_config(std::string_view text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("cannot read {}: {} (line {})", origin, e.description(), e.source().begin.line));
  }
  AgentConfig c;
  if (auto r = unknown_keys(root, {"agent", "log", "profile", "metrics"}, "", origin); !r) return std::unexpected(r.error());
  auto wrong = [&](const std::string& key, const char* expected) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("{}: key '{}' must be {}", origin, key, expected));
  };
  if (const auto* agent = root["agent"].as_table()) {
    if (auto r = unknown_keys(*agent, {"endpoint", "metrics_listen", "heartbeat_s", "wpar_root", "cgroup_root",
                                            "idmap_host_layers"},
                              "agent.", origin);
        !r) {
      return std::unexpected(r.error());
    }
    if (const auto* n = agent->get("endpoint")) {
      auto v = n->value<std::string>();
      if (!v || !v->starts_with("tcp://")) return wrong("agent.endpoint", "a tcp:// endpoint");
      c.agent_endpoint = *v;
    }
    if (const auto* n = agent->get("metrics_listen")) {
      auto v = n->value<std::string>();
      if (!v) return wrong("agent.metrics_listen", "host:port");
      c.metrics_listen = *v;
    }
    if (const auto* n = agent->get("wpar_root")) {
      auto v = n->value<std::string>();
      if (!v || !v->starts_with("/")) return wrong("agent.wpar_root", "an absolute directory");
      c.wpar_root = *v;
    }
    if (const auto* n = agent->get("cgroup_root")) {
      auto v = n->value<std::string>();
      if (!v || v->empty() || v->starts_with("/") || v->find("..") != std::string::npos) {
        return wrong("agent.cgroup_root", "a relative cgroup path such as \"wpm/node1\"");
      }
      c.cgroup_root = *v;
    }
    if (const auto* n = agent->get("idmap_host_layers")) {
      auto v = n->value<bool>();
      if (!v) return wrong("agent.idmap_host_layers", "true or false");
      c.idmap_host_layers = *v;
    }
    if (const auto* n = agent->get("heartbeat_s")) {
      auto v = n->value<int64_t>();
      if (!v || *v < 1 || *v > 3600) return wrong("agent.heartbeat_s", "1..3600");
      c.heartbeat_s = static_cast<uint32_t>(*v);
    }
  }
  if (const auto* log = root["log"].as_table()) {
    if (auto r = unknown_keys(*log, {"enabled", "append", "count", "level", "limit"}, "log.", origin); !r) {
      return std::unexpected(r.error());
    }
    if (const auto* n = log->get("enabled")) {
      auto v = n->value<bool>();
      if (!v) return wrong("log.enabled", "true or false");
      c.logging.enabled = *v;
    }
    if (const auto* n = log->get("append")) {
      auto v = n->value<bool>();
      if (!v) return wrong("log.append", "true or false");
      c.logging.append = *v;
    }
    if (const auto* n = log->get("count")) {
      auto v = n->value<int64_t>();
      if (!v || *v < 1 || *v > 100) return wrong("log.count", "1..100");
      c.logging.count = static_cast<uint32_t>(*v);
    }
    if (const auto* n = log->get("level")) {
      auto v = n->value<std::string>();
      std::string mapped = v ? map_log_level(*v) : "";
      if (mapped.empty()) return wrong("log.level", "one of ERROR, WARNING, INFO, VERBOSE, FINE, FINER, FINEST");
      c.logging.level = mapped;
    }
    if (const auto* n = log->get("limit")) {
      auto v = n->value<int64_t>();
      if (!v || *v < 4096) return wrong("log.limit", "a size in bytes of at least 4096");
      c.logging.limit_bytes = static_cast<uint64_t>(*v);
    }
  }
  if (const auto* metrics = root["metrics"].as_table()) {
    if (auto r = unknown_keys(*metrics, {"host_scope"}, "metrics.", origin); !r) return std::unexpected(r.error());
    if (const auto* n = metrics->get("host_scope")) {
      auto v = n->value<std::string>();
      if (!v || (*v != "host" && *v != "wpars")) return wrong("metrics.host_scope", "\"host\" or \"wpars\"");
      c.metrics_host_scope = *v;
    }
  }
  if (const auto* table = root["profile"].as_table()) {
    if (auto r = parse_profile_overrides(*table, origin, c.profile); !r) return std::unexpected(r.error());
  }
  return c;
}

Result<AgentConfig> load_agent_config(const std::string& data_dir) {
  std::string path = data_dir + "/agent.toml";
  auto text = read_text(path);
  if (!text) return AgentConfig{};
  return parse_agent_config(*text, path);
}

Result<void> write_file_atomic(const std::string& path, const std::string& content, unsigned mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  ::fchmod(fd, mode);
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", path, std::strerror(ok ? errno : saved)));
  }
  return {};
}

Result<std::optional<Registration>> read_registration(const std::string& data_dir) {
  std::string path = data_dir + "/registration.json";
  auto text = read_text(path);
  if (!text) return std::optional<Registration>{};
  try {
    auto j = nlohmann::json::parse(*text);
    Registration r;
    r.manager_host = j.at("managerHost").get<std::string>();
    r.public_port = j.at("publicPort").get<uint16_t>();
    r.channel_port = j.at("channelPort").get<uint16_t>();
    r.manager_public_key = j.at("managerPublicKey").get<std::string>();
    r.manager_fingerprint = j.at("managerFingerprint").get<std::string>();
    r.system_id = j.at("systemId").get<std::string>();
    r.registered_at_ns = j.at("registeredAtNs").get<int64_t>();
    return std::optional<Registration>{r};
  } catch (const std::exception& e) {
    return fail(ErrorCode::kCorruption,
                fmt::format("{} is unreadable ({}); run wpm-agent configure --force to register again", path,
                            e.what()));
  }
}

Result<void> write_registration(const std::string& data_dir, const Registration& r) {
  nlohmann::json j = {{"managerHost", r.manager_host},
                      {"publicPort", r.public_port},
                      {"channelPort", r.channel_port},
                      {"managerPublicKey", r.manager_public_key},
                      {"managerFingerprint", r.manager_fingerprint},
                      {"systemId", r.system_id},
                      {"registeredAtNs", r.registered_at_ns}};
  return write_file_atomic(data_dir + "/registration.json", j.dump(2) + "\n", 0600);
}

Result<void> remove_registration(const std::string& data_dir) {
  std::string path = data_dir + "/registration.json";
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return fail(ErrorCode::kIo, fmt::format("cannot remove {}: {}", path, std::strerror(errno)));
  }
  return {};
}

Result<void> write_status(const std::string& data_dir, const AgentStatus& s) {
  nlohmann::json j = {{"pid", s.pid},
                      {"startedAtNs", s.started_at_ns},
                      {"lastContactNs", s.last_contact_ns},
                      {"lastError", s.last_error},
                      {"systemId", s.system_id},
                      {"manager", s.manager}};
  return write_file_atomic(data_dir + "/status.json", j.dump(2) + "\n", 0644);
}

Result<AgentStatus> read_status(const std::string& data_dir) {
  std::string path = data_dir + "/status.json";
  auto text = read_text(path);
  if (!text) return std::unexpected(text.error());
  try {
    auto j = nlohmann::json::parse(*text);
    return AgentStatus{j.at("pid").get<int>(),
                       j.at("startedAtNs").get<int64_t>(),
                       j.at("lastContactNs").get<int64_t>(),
                       j.at("lastError").get<std::string>(),
                       j.at("systemId").get<std::string>(),
                       j.at("manager").get<std::string>()};
  } catch (const std::exception& e) {
    return fail(ErrorCode::kCorruption, fmt::format("{} is unreadable: {}", path, e.what()));
  }
}

}  // namespace wpm::agent
