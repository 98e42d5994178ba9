#include "agents/agent/metrics_collector.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "agents/runtime/cgroups.h"
#include "agents/runtime/wpar_files.h"

namespace wpm::agent {
namespace {

namespace fs = std::filesystem;
namespace ap = agentproto;

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<uint64_t> to_u64(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end == s.data()) return std::nullopt;
  return v;
}

// The value of `key` in a "key value [unit]" file (meminfo, vmstat).
std::optional<uint64_t> keyed(std::string_view text, std::string_view key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    std::string_view line = text.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    pos = eol == std::string_view::npos ? text.size() : eol + 1;
    if (!line.starts_with(key) || line.size() <= key.size()) continue;
    char after = line[key.size()];
    if (after != ' ' && after != ':' && after != '\t') continue;
    line.remove_prefix(key.size() + 1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    size_t digits = 0;
    while (digits < line.size() && std::isdigit(static_cast<unsigned char>(line[digits])) != 0) ++digits;
    return to_u64(line.substr(0, digits));
  }
  return std::nullopt;
}

uint64_t count_processes() {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const auto name = entry.path().filename().string();
    if (!name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) ++n;
  }
  return n;
}

// A counter's rate per second over `seconds`; nothing when it went backwards
// (a WPAR made again between two reports).
std::optional<double> rate(std::optional<uint64_t> before, std::optional<uint64_t> now, double seconds) {
  if (!before || !now || *now < *before || seconds <= 0) return std::nullopt;
  return static_cast<double>(*now - *before) / seconds;
}

}  // namespace

std::optional<std::pair<uint64_t, uint64_t>> parse_proc_stat(std::string_view text) {
  if (!text.starts_with("cpu ")) return std::nullopt;
  std::string_view line = text.substr(4, text.find('\n') == std::string_view::npos ? std::string_view::npos
                                                                                     : text.find('\n') - 4);
  std::vector<uint64_t> fields;
  std::istringstream in{std::string(line)};
  uint64_t v = 0;
  while (in >> v) fields.push_back(v);
  if (fields.size() < 5) return std::nullopt;
  // user nice system idle iowait irq softirq steal (guest time is inside user and nice).
  uint64_t total = 0;
  for (size_t i = 0; i < std::min<size_t>(fields.size(), 8); ++i) total += fields[i];
  return std::pair{total, fields[3] + fields[4]};
}

std::optional<std::pair<uint64_t, uint64_t>> parse_meminfo(std::string_view text) {
  auto total = keyed(text, "MemTotal");
  auto available = keyed(text, "MemAvailable");
  if (!total || !available || *total == 0) return std::nullopt;
  return std::pair{*total * 1024, *available * 1024};
}

std::optional<std::pair<double, uint64_t>> parse_loadavg(std::string_view text) {
  // "0.52 0.58 0.59 2/613 12345"
  std::istringstream in{std::string(text)};
  double load1 = 0, load5 = 0, load15 = 0;
  std::string tasks;
  if (!(in >> load1 >> load5 >> load15 >> tasks)) return std::nullopt;
  auto slash = tasks.find('/');
  if (slash == std::string::npos) return std::nullopt;
  auto threads = to_u64(std::string_view(tasks).substr(slash + 1));
  if (!threads) return std::nullopt;
  return std::pair{load1, *threads};
}

std::optional<uint64_t> parse_vmstat_pgfault(std::string_view text) { return keyed(text, "pgfault"); }

ap::MetricsReport make_report(const MetricsSnapshot& before, const MetricsSnapshot& now, bool host_scope_wpars) {
  ap::MetricsReport r;
  double seconds = static_cast<double>(now.monotonic_ns - before.monotonic_ns) / 1e9;
  r.interval_ms = static_cast<uint32_t>(std::clamp(seconds * 1000, 0.0, 4e9));
  r.host_scope = host_scope_wpars ? "wpars" : "host";
  const double capacity_ns = seconds * 1e9 * std::max<uint32_t>(now.cpus, 1);
  const double memory_total = static_cast<double>(now.host.memory_total);
  ap::MetricSet sum;
  for (const auto& w : now.wpars) {
    ap::MetricSet m;
    auto was = std::lower_bound(before.wpars.begin(), before.wpars.end(), w.name,
                                [](const WparCounters& c, const std::string& n) { return c.name < n; });
    const WparCounters* prior = was != before.wpars.end() && was->name == w.name ? &*was : nullptr;
    if (prior != nullptr && capacity_ns > 0) {
      if (auto cpu = rate(prior->cpu_ns, w.cpu_ns, 1.0)) {
        m.cpu_percent = static_cast<float>(std::min(100.0, *cpu / capacity_ns * 100));
        m.present |= ap::kMetricCpuBit;
      }
      if (auto faults = rate(prior->page_faults, w.page_faults, seconds)) {
        m.page_faults_per_s = static_cast<float>(*faults);
        m.present |= ap::kMetricPageFaultsBit;
      }
    }
    if (w.memory_bytes && memory_total > 0) {
      m.memory_percent = static_cast<float>(std::min(100.0, static_cast<double>(*w.memory_bytes) / memory_total * 100));
      m.present |= ap::kMetricMemoryBit;
    }
    if (w.processes) {
      m.processes = static_cast<uint32_t>(*w.processes);
      m.present |= ap::kMetricProcessesBit;
    }
    if (w.tasks) {
      m.threads = static_cast<uint32_t>(*w.tasks);
      m.present |= ap::kMetricThreadsBit;
    }
    sum.cpu_percent += m.cpu_percent;
    sum.memory_percent += m.memory_percent;
    sum.processes += m.processes;
    sum.threads += m.threads;
    sum.page_faults_per_s += m.page_faults_per_s;
    r.wpars.push_back({w.name, m});
  }
  if (host_scope_wpars) {
    sum.cpu_percent = std::min(sum.cpu_percent, 100.0f);
    sum.memory_percent = std::min(sum.memory_percent, 100.0f);
    sum.present = ap::kMetricCpuBit | ap::kMetricMemoryBit | ap::kMetricProcessesBit | ap::kMetricThreadsBit |
                  ap::kMetricPageFaultsBit;
    r.host = sum;
    return r;
  }
  auto& h = r.host;
  uint64_t total = now.host.cpu_total_ticks - std::min(now.host.cpu_total_ticks, before.host.cpu_total_ticks);
  uint64_t idle = now.host.cpu_idle_ticks - std::min(now.host.cpu_idle_ticks, before.host.cpu_idle_ticks);
  if (total > 0) {
    h.cpu_percent = static_cast<float>(static_cast<double>(total - std::min(idle, total)) / static_cast<double>(total) * 100);
    h.present |= ap::kMetricCpuBit;
  }
  if (now.host.memory_total > 0) {
    double used = static_cast<double>(now.host.memory_total - std::min(now.host.memory_available, now.host.memory_total));
    h.memory_percent = static_cast<float>(used / memory_total * 100);
    h.present |= ap::kMetricMemoryBit;
  }
  h.load1 = static_cast<float>(now.host.load1);
  h.processes = static_cast<uint32_t>(now.host.processes);
  h.threads = static_cast<uint32_t>(now.host.threads);
  h.present |= ap::kMetricLoadBit | ap::kMetricProcessesBit | ap::kMetricThreadsBit;
  if (auto faults = rate(before.host.page_faults, now.host.page_faults, seconds)) {
    h.page_faults_per_s = static_cast<float>(*faults);
    h.present |= ap::kMetricPageFaultsBit;
  }
  return r;
}

MetricsSnapshot read_snapshot(const AgentPaths& paths, int64_t monotonic_ns) {
  MetricsSnapshot s;
  s.monotonic_ns = monotonic_ns;
  s.cpus = static_cast<uint32_t>(std::max<long>(1, ::sysconf(_SC_NPROCESSORS_ONLN)));
  if (auto t = read_text("/proc/stat"); t) {
    if (auto cpu = parse_proc_stat(*t)) std::tie(s.host.cpu_total_ticks, s.host.cpu_idle_ticks) = *cpu;
  }
  if (auto t = read_text("/proc/meminfo"); t) {
    if (auto mem = parse_meminfo(*t)) std::tie(s.host.memory_total, s.host.memory_available) = *mem;
  }
  if (auto t = read_text("/proc/loadavg"); t) {
    if (auto load = parse_loadavg(*t)) std::tie(s.host.load1, s.host.threads) = *load;
  }
  if (auto t = read_text("/proc/vmstat"); t) s.host.page_faults = parse_vmstat_pgfault(*t).value_or(0);
  s.host.processes = count_processes();

  auto layout = runtime::CgroupLayout::detect();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(paths.wpars_root, ec)) {
    if (!entry.is_directory()) continue;
    std::string name = entry.path().filename().string();
    auto record = runtime::WparFiles(paths.wpars_root, name).read_record();
    if (!record || record->ended || record->state == runtime::WparState::kDefined) continue;
    auto set = runtime::CgroupSet::open(layout, paths.cgroup_of(name));
    if (!set) continue;  // gone between the two reads
    WparCounters c{name, {}, {}, {}, {}, {}};
    if (auto v = set->cpu_usage_ns()) c.cpu_ns = *v;
    if (auto v = set->memory_usage(); v && *v) c.memory_bytes = **v;
    if (auto v = set->processes()) c.processes = v->size();
    if (auto v = set->task_count(); v && *v) c.tasks = **v;
    if (auto v = set->page_faults(); v && *v) c.page_faults = **v;
    s.wpars.push_back(std::move(c));
  }
  std::sort(s.wpars.begin(), s.wpars.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return s;
}

std::optional<ap::MetricsReport> MetricsCollector::collect(int64_t monotonic_ns) {
  auto now = read_snapshot(paths_, monotonic_ns);
  std::optional<ap::MetricsReport> report;
  if (previous_) report = make_report(*previous_, now, host_scope_wpars_);
  previous_ = std::move(now);
  return report;
}

}  // namespace wpm::agent
