#pragma once
// What the agent reports every metrics interval (DESIGN.md §2; seed
// "Viewing performance metrics"): the host's CPU, memory, load, processes,
// threads and page faults from /proc, and each running WPAR's from its
// cgroups (per controller, v1 or v2) — CPU as a share of the whole host's
// capacity and memory as a share of the host's memory, so that the policy's
// effective utilisation compares like with like.
//
// Counters are read as snapshots; a report is the difference of two
// (make_report, pure). Thread safety: plain values and free functions;
// MetricsCollector belongs to one thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agents/agent/local_commands.h"
#include "schemas/agent_protocol.h"

namespace wpm::agent {

struct HostCounters {
  uint64_t cpu_total_ticks = 0;  // /proc/stat, all CPUs
  uint64_t cpu_idle_ticks = 0;   // idle + iowait
  uint64_t memory_total = 0;     // bytes
  uint64_t memory_available = 0;
  double load1 = 0;
  uint64_t processes = 0;
  uint64_t threads = 0;
  uint64_t page_faults = 0;      // /proc/vmstat pgfault, since boot
  bool operator==(const HostCounters&) const = default;
};

struct WparCounters {
  std::string name;
  std::optional<uint64_t> cpu_ns, memory_bytes, processes, tasks, page_faults;
  bool operator==(const WparCounters&) const = default;
};

struct MetricsSnapshot {
  int64_t monotonic_ns = 0;
  uint32_t cpus = 1;
  HostCounters host;
  std::vector<WparCounters> wpars;  // sorted by name
};

// Parsers of the kernel's files (nullopt when the text is not what they expect).
std::optional<std::pair<uint64_t, uint64_t>> parse_proc_stat(std::string_view text);  // total, idle ticks
std::optional<std::pair<uint64_t, uint64_t>> parse_meminfo(std::string_view text);    // total, available bytes
std::optional<std::pair<double, uint64_t>> parse_loadavg(std::string_view text);      // load1, threads
std::optional<uint64_t> parse_vmstat_pgfault(std::string_view text);

// The report for the span between two snapshots of the same host. Rates and
// CPU shares need both; a WPAR missing from `before` reports what needs no
// rate. host_scope_wpars: the host's CPU, memory, processes, threads and page
// faults are its WPARs' sums (several agents on one machine).
agentproto::MetricsReport make_report(const MetricsSnapshot& before, const MetricsSnapshot& now,
                                      bool host_scope_wpars);

// Reads a snapshot of this host and of the WPARs the agent runs.
MetricsSnapshot read_snapshot(const AgentPaths& paths, int64_t monotonic_ns);

class MetricsCollector {
 public:
  MetricsCollector(AgentPaths paths, bool host_scope_wpars)
      : paths_(std::move(paths)), host_scope_wpars_(host_scope_wpars) {}
  // A report for the span since the last call; nothing on the first call.
  std::optional<agentproto::MetricsReport> collect(int64_t monotonic_ns);

 private:
  AgentPaths paths_;
  bool host_scope_wpars_;
  std::optional<MetricsSnapshot> previous_;
};

}  // namespace wpm::agent
