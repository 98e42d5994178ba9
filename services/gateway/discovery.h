#pragma once
// Prometheus file-based service discovery (deploy/prometheus.yml): wpmd
// writes two target files in its discovery directory (default
// DATA/prometheus), `wpmd.json` (its own /metrics) and `agents.json` (every
// registered system whose agent has said, in its metrics reports, on which
// port its /metrics listens), each target labelled with its system. Files
// are replaced atomically, and only when their content changes, so
// Prometheus re-reads them only then.
//
// The target lists are pure functions of the registry and the ports; the
// writer is the only I/O.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "schemas/error.h"
#include "services/inventory/registry.h"

namespace wpm::gateway {

struct ScrapeTarget {
  std::string address;  // host:port ([v6]:port)
  std::map<std::string, std::string> labels;
  bool operator==(const ScrapeTarget&) const = default;
};

// host:port, with brackets around an IPv6 host.
std::string host_port(const std::string& host, uint16_t port);
// wpmd's own target from its metrics listen address (host:port as bound):
// a wildcard host (0.0.0.0, ::, empty) becomes loopback, where the
// Prometheus of the control-plane host reaches it.
ScrapeTarget wpmd_target(const std::string& listen_host, uint16_t port);
// One target per registered system whose agent said its metrics port, in
// system order, at the address the system registered from.
std::vector<ScrapeTarget> agent_targets(const inventory::Registry& registry,
                                        const std::map<std::string, uint16_t>& metrics_ports);
// The file_sd JSON of those targets: one group per target (its labels).
std::string file_sd_json(const std::vector<ScrapeTarget>& targets);

class DiscoveryFiles {
 public:
  explicit DiscoveryFiles(std::string dir) : dir_(std::move(dir)) {}
  // Writes DIR/NAME when `content` differs from what was last written
  // (DIR is made, mode 0755; the file 0644: addresses only, nothing secret).
  [[nodiscard]] Result<bool> write(const std::string& name, const std::string& content);
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::map<std::string, std::string> written_;
};

}  // namespace wpm::gateway
