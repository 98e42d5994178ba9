#include "services/gateway/discovery.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace wpm::gateway {

std::string host_port(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos && host.front() != '[') return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

ScrapeTarget wpmd_target(const std::string& listen_host, uint16_t port) {
  std::string host = listen_host;
  if (host.empty() || host == "0.0.0.0" || host == "*") host = "127.0.0.1";
  if (host == "::" || host == "[::]") host = "::1";
  return ScrapeTarget{host_port(host, port), {}};
}

std::vector<ScrapeTarget> agent_targets(const inventory::Registry& registry,
                                        const std::map<std::string, uint16_t>& metrics_ports) {
  std::vector<ScrapeTarget> out;
  for (const auto& [id, system] : registry.systems()) {
    auto port = metrics_ports.find(id);
    if (port == metrics_ports.end() || port->second == 0 || system.address.empty()) continue;
    out.push_back(ScrapeTarget{host_port(system.address, port->second), {{"system", id}}});
  }
  return out;
}

std::string file_sd_json(const std::vector<ScrapeTarget>& targets) {
  auto groups = nlohmann::json::array();
  for (const auto& t : targets) {
    nlohmann::json group = {{"targets", {t.address}}, {"labels", nlohmann::json::object()}};
    for (const auto& [k, v] : t.labels) group["labels"][k] = v;
    groups.push_back(std::move(group));
  }
  return groups.dump(2) + "\n";
}

Result<bool> DiscoveryFiles::write(const std::string& name, const std::string& content) {
  auto known = written_.find(name);
  if (known != written_.end() && known->second == content) return false;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return fail(ErrorCode::kIo, fmt::format("cannot make the discovery directory {}: {}", dir_, ec.message()));
  std::string path = dir_ + "/" + name, tmp = path + ".tmp";
  bool ok = false;
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
    out.flush();
    ok = static_cast<bool>(out);
  }
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", path, std::strerror(err)));
  }
  written_[name] = content;
  return true;
}

}  // namespace wpm::gateway
