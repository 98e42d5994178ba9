#include "agents/runtime/cgroups.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace wpm::runtime {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kCpuPeriodUs = 100'000;
// Controllers wpm uses; cpuacct only for usage on v1, devices only on v1
// (a v2 tree limits devices with a program attached to the group).
const std::vector<std::string> kControllers = {"cpu", "cpuacct", "memory", "pids", "freezer", "devices"};

Error io(const std::string& what, const std::string& path) {
  return Error{ErrorCode::kIo, fmt::format("{} {}: {}", what, path, std::strerror(errno))};
}

Result<void> write_file(const std::string& path, const std::string& value) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return std::unexpected(io("cannot open", path));
  bool ok = std::fputs(value.c_str(), f) >= 0;
  ok = (std::fclose(f) == 0) && ok;  // cgroup writes report errors at close
  if (!ok) return std::unexpected(io(fmt::format("cannot write '{}' to", value), path));
  return {};
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::unexpected(io("cannot read", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Result<uint64_t> read_u64(const std::string& path) {
  auto s = read_file(path);
  if (!s) return std::unexpected(s.error());
  if (*s == "max") return UINT64_MAX;
  return std::strtoull(s->c_str(), nullptr, 10);
}

// Looks up `key value` in a flat-keyed file such as cpu.stat.
Result<uint64_t> read_key(const std::string& path, const std::string& key) {
  auto s = read_file(path);
  if (!s) return std::unexpected(s.error());
  std::istringstream in(*s);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return fail(ErrorCode::kNotFound, fmt::format("no '{}' in {}", key, path));
}

}  // namespace

uint64_t shares_to_weight(uint64_t shares) {
  shares = std::clamp<uint64_t>(shares, 2, 262144);
  return 1 + ((shares - 2) * 9999) / 262142;
}

CgroupLayout CgroupLayout::from_profile(const profile::SystemProfile& p,
                                        std::optional<std::string> v2_mount) {
  CgroupLayout layout;
  for (const auto& c : p.cgroups) layout.controllers[c.name] = c;
  layout.v2_mount = std::move(v2_mount);
  return layout;
}

CgroupLayout CgroupLayout::detect() {
  profile::CollectOptions o;
  o.probe_criu = false;
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_profile(profile::collect_profile(o), profile::cgroup2_mount(ss.str()));
}

std::string CgroupSet::dir_for(const std::string& controller) const {
  auto it = layout_.controllers.find(controller);
  if (it == layout_.controllers.end()) {
    // A v2 tree freezes without a freezer controller, and limits devices
    // without a devices controller.
    if ((controller == "freezer" || controller == "devices") && layout_.v2_mount) {
      return *layout_.v2_mount + "/" + relative_;
    }
    return "";
  }
  return it->second.mount + "/" + relative_;
}

std::vector<std::string> CgroupSet::all_dirs() const {
  std::set<std::string> dirs;
  for (const auto& c : kControllers) {
    if (auto d = dir_for(c); !d.empty()) dirs.insert(d);
  }
  return {dirs.begin(), dirs.end()};
}

Result<CgroupSet> CgroupSet::create(const CgroupLayout& layout, const std::string& relative) {
  if (relative.empty() || relative.front() == '/' || relative.find("..") != std::string::npos) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("bad cgroup path '{}'", relative));
  }
  CgroupSet set(layout, relative);
  for (const auto& dir : set.all_dirs()) {
    bool v2 = layout.v2_mount && dir.starts_with(*layout.v2_mount + "/");
    if (v2) {
      // Enable the controllers v2 serves at every level above the group.
      std::string enable;
      for (const auto& [name, c] : layout.controllers) {
        if (c.version == 2 && (name == "cpu" || name == "memory" || name == "pids")) {
          enable += (enable.empty() ? "+" : " +") + name;
        }
      }
      fs::path level(*layout.v2_mount);
      for (const auto& part : fs::path(relative)) {
        if (!enable.empty()) (void)write_file(level / "cgroup.subtree_control", enable);
        level /= part;
        if (::mkdir(level.c_str(), 0755) != 0 && errno != EEXIST) {
          return std::unexpected(io("cannot create cgroup", level));
        }
      }
    } else {
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec) {
        return fail(ErrorCode::kIo, fmt::format("cannot create cgroup {}: {}", dir, ec.message()));
      }
    }
  }
  return set;
}

Result<CgroupSet> CgroupSet::open(const CgroupLayout& layout, const std::string& relative) {
  CgroupSet set(layout, relative);
  for (const auto& dir : set.all_dirs()) {
    if (!fs::exists(dir)) return fail(ErrorCode::kNotFound, fmt::format("no cgroup {}", dir));
  }
  return set;
}

Result<void> CgroupSet::add_process(pid_t pid) {
  for (const auto& dir : all_dirs()) {
    if (auto r = write_file(dir + "/cgroup.procs", std::to_string(pid)); !r) return r;
  }
  return {};
}

Result<std::vector<pid_t>> CgroupSet::processes() const {
  std::string dir = dir_for("pids");
  if (dir.empty()) dir = all_dirs().empty() ? "" : all_dirs().front();
  auto s = read_file(dir + "/cgroup.procs");
  if (!s) return std::unexpected(s.error());
  std::vector<pid_t> out;
  std::istringstream in(*s);
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

Result<void> CgroupSet::apply(const ResourceLimits& l) {
  auto version = [&](const char* c) {
    auto it = layout_.controllers.find(c);
    return it == layout_.controllers.end() ? 0 : it->second.version;
  };
  std::string cpu = dir_for("cpu");
  if (l.cpu_shares && !cpu.empty()) {
    auto r = version("cpu") == 1 ? write_file(cpu + "/cpu.shares", std::to_string(*l.cpu_shares))
                                 : write_file(cpu + "/cpu.weight",
                                              std::to_string(shares_to_weight(*l.cpu_shares)));
    if (!r) return r;
  }
  if (l.cpu_limit_percent && !cpu.empty()) {
    uint64_t quota = kCpuPeriodUs * *l.cpu_limit_percent / 100;
    if (version("cpu") == 1) {
      if (auto r = write_file(cpu + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUs)); !r) return r;
      if (auto r = write_file(cpu + "/cpu.cfs_quota_us", std::to_string(quota)); !r) return r;
    } else if (auto r = write_file(cpu + "/cpu.max", fmt::format("{} {}", quota, kCpuPeriodUs)); !r) {
      return r;
    }
  }
  if (std::string mem = dir_for("memory"); l.memory_bytes && !mem.empty()) {
    auto r = write_file(mem + (version("memory") == 1 ? "/memory.limit_in_bytes" : "/memory.max"),
                        std::to_string(*l.memory_bytes));
    if (!r) return r;
  }
  if (std::string pids = dir_for("pids"); l.max_processes && !pids.empty()) {
    if (auto r = write_file(pids + "/pids.max", std::to_string(*l.max_processes)); !r) return r;
  }
  return {};
}

Result<void> CgroupSet::apply_exactly(const ResourceLimits& l) {
  if (auto r = apply(l); !r) return r;
  auto v1 = [&](const char* c) {
    auto it = layout_.controllers.find(c);
    return it != layout_.controllers.end() && it->second.version == 1;
  };
  if (std::string cpu = dir_for("cpu"); !cpu.empty()) {
    if (!l.cpu_shares) {
      auto r = v1("cpu") ? write_file(cpu + "/cpu.shares", "1024") : write_file(cpu + "/cpu.weight", "100");
      if (!r) return r;
    }
    if (!l.cpu_limit_percent) {
      auto r = v1("cpu") ? write_file(cpu + "/cpu.cfs_quota_us", "-1")
                         : write_file(cpu + "/cpu.max", fmt::format("max {}", kCpuPeriodUs));
      if (!r) return r;
    }
  }
  if (std::string mem = dir_for("memory"); !l.memory_bytes && !mem.empty()) {
    auto r = v1("memory") ? write_file(mem + "/memory.limit_in_bytes", "-1") : write_file(mem + "/memory.max", "max");
    if (!r) return r;
  }
  if (std::string pids = dir_for("pids"); !l.max_processes && !pids.empty()) {
    if (auto r = write_file(pids + "/pids.max", "max"); !r) return r;
  }
  return {};
}

Result<std::optional<uint64_t>> CgroupSet::memory_usage() const {
  std::string mem = dir_for("memory");
  if (mem.empty()) return std::optional<uint64_t>{};
  auto it = layout_.controllers.find("memory");
  bool v1 = it != layout_.controllers.end() && it->second.version == 1;
  auto v = read_u64(mem + (v1 ? "/memory.usage_in_bytes" : "/memory.current"));
  if (!v) return std::unexpected(v.error());
  return std::optional<uint64_t>(*v);
}

Result<ResourceLimits> CgroupSet::read_limits() const {
  ResourceLimits l;
  auto version = [&](const char* c) {
    auto it = layout_.controllers.find(c);
    return it == layout_.controllers.end() ? 0 : it->second.version;
  };
  if (std::string cpu = dir_for("cpu"); !cpu.empty()) {
    if (version("cpu") == 1) {
      auto shares = read_u64(cpu + "/cpu.shares");
      auto quota = read_file(cpu + "/cpu.cfs_quota_us");
      auto period = read_u64(cpu + "/cpu.cfs_period_us");
      if (!shares || !quota || !period) return fail(ErrorCode::kIo, "cannot read cpu limits of " + cpu);
      l.cpu_shares = *shares;
      int64_t q = std::strtoll(quota->c_str(), nullptr, 10);
      if (q > 0 && *period > 0) l.cpu_limit_percent = static_cast<uint32_t>(q * 100 / *period);
    } else {
      auto max = read_file(cpu + "/cpu.max");
      if (!max) return std::unexpected(max.error());
      std::istringstream in(*max);
      std::string q;
      uint64_t period = 0;
      in >> q >> period;
      if (q != "max" && period > 0) {
        l.cpu_limit_percent = static_cast<uint32_t>(std::strtoull(q.c_str(), nullptr, 10) * 100 / period);
      }
    }
  }
  if (std::string mem = dir_for("memory"); !mem.empty()) {
    auto v = read_u64(mem + (version("memory") == 1 ? "/memory.limit_in_bytes" : "/memory.max"));
    if (!v) return std::unexpected(v.error());
    // v1 reports "no limit" as a huge page-aligned number.
    if (*v < (uint64_t{1} << 62)) l.memory_bytes = *v;
  }
  if (std::string pids = dir_for("pids"); !pids.empty()) {
    auto v = read_u64(pids + "/pids.max");
    if (!v) return std::unexpected(v.error());
    if (*v != UINT64_MAX) l.max_processes = *v;
  }
  return l;
}

Result<void> CgroupSet::freeze() {
  auto it = layout_.controllers.find("freezer");
  if (it != layout_.controllers.end() && it->second.version == 1) {
    return write_file(dir_for("freezer") + "/freezer.state", "FROZEN");
  }
  return write_file(dir_for("freezer") + "/cgroup.freeze", "1");
}

Result<void> CgroupSet::thaw() {
  auto it = layout_.controllers.find("freezer");
  if (it != layout_.controllers.end() && it->second.version == 1) {
    return write_file(dir_for("freezer") + "/freezer.state", "THAWED");
  }
  return write_file(dir_for("freezer") + "/cgroup.freeze", "0");
}

Result<bool> CgroupSet::frozen() const {
  auto it = layout_.controllers.find("freezer");
  if (it != layout_.controllers.end() && it->second.version == 1) {
    auto s = read_file(dir_for("freezer") + "/freezer.state");
    if (!s) return std::unexpected(s.error());
    return *s == "FROZEN";
  }
  auto v = read_key(dir_for("freezer") + "/cgroup.events", "frozen");
  if (!v) return std::unexpected(v.error());
  return *v == 1;
}

Result<void> CgroupSet::restrict_devices(const std::vector<DeviceRule>& allowed) {
  auto it = layout_.controllers.find("devices");
  std::string dir = dir_for("devices");
  if (dir.empty()) return fail(ErrorCode::kIo, "this host has neither a devices controller nor a cgroup v2 tree");
  if (it == layout_.controllers.end() || it->second.version != 1) return attach_device_program(dir, allowed);
  if (auto r = write_file(dir + "/devices.deny", "a"); !r) return r;
  for (const auto& rule : allowed) {
    if (auto r = write_file(dir + "/devices.allow", v1_rule_text(rule)); !r) return r;
  }
  return {};
}

Result<void> CgroupSet::freeze_and_wait(std::chrono::milliseconds timeout) {
  using clock = std::chrono::steady_clock;
  auto it = layout_.controllers.find("freezer");
  const bool v1 = it != layout_.controllers.end() && it->second.version == 1;
  auto refreeze_after = std::chrono::milliseconds(250);  // doubled each time: a slow freeze keeps its progress
  auto deadline = clock::now() + timeout;
  if (auto f = freeze(); !f) return f;
  auto frozen_at = clock::now();
  while (clock::now() < deadline) {
    auto done = frozen();
    if (!done) {
      (void)thaw();
      return std::unexpected(done.error());
    }
    if (*done) return {};
    if (v1 && clock::now() - frozen_at >= refreeze_after) {
      (void)thaw();
      if (auto f = freeze(); !f) return f;
      frozen_at = clock::now();
      refreeze_after *= 2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Which tasks held it up, before thawing lets them go: state and wait channel.
  std::string stuck;
  std::string dir = dir_for("freezer");
  if (auto tasks = read_file(dir + (fs::exists(dir + "/tasks") ? "/tasks" : "/cgroup.threads"))) {
    std::istringstream in(*tasks);
    pid_t tid;
    int listed = 0;
    while (in >> tid && listed < 8) {
      auto stat = read_file(fmt::format("/proc/{}/stat", tid));
      auto wchan = read_file(fmt::format("/proc/{}/wchan", tid));
      if (!stat) continue;
      auto close = stat->rfind(')');
      char state = close != std::string::npos && close + 2 < stat->size() ? (*stat)[close + 2] : '?';
      stuck += fmt::format("{}{} {} {}", listed == 0 ? "" : ", ", tid, state, wchan ? *wchan : "?");
      ++listed;
    }
  }
  (void)thaw();
  return fail(ErrorCode::kIo, fmt::format("the tasks of cgroup {} did not all freeze within {} ms (thawed again); "
                                          "tasks (pid, state, wait): {}",
                                          relative_, timeout.count(), stuck.empty() ? "none listed" : stuck));
}

Result<uint64_t> CgroupSet::cpu_usage_ns() const {
  if (std::string acct = dir_for("cpuacct"); !acct.empty()) {
    auto it = layout_.controllers.find("cpuacct");
    if (it->second.version == 1) return read_u64(acct + "/cpuacct.usage");
  }
  std::string cpu = dir_for("cpu");
  auto usec = read_key(cpu + "/cpu.stat", "usage_usec");
  if (!usec) return std::unexpected(usec.error());
  return *usec * 1000;
}

Result<std::optional<uint64_t>> CgroupSet::task_count() const {
  std::string pids = dir_for("pids");
  if (pids.empty()) return std::optional<uint64_t>();
  auto n = read_u64(pids + "/pids.current");
  if (!n) return std::unexpected(n.error());
  return std::optional<uint64_t>(*n);
}

Result<std::optional<uint64_t>> CgroupSet::page_faults() const {
  std::string mem = dir_for("memory");
  if (mem.empty()) return std::optional<uint64_t>();
  auto it = layout_.controllers.find("memory");
  // v1 counts the group's own faults in pgfault and its subtree's in total_pgfault.
  auto n = read_key(mem + "/memory.stat", it->second.version == 1 ? "total_pgfault" : "pgfault");
  if (!n) return std::unexpected(n.error());
  return std::optional<uint64_t>(*n);
}

Result<void> CgroupSet::remove() {
  for (const auto& dir : all_dirs()) {
    if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return std::unexpected(io("cannot remove cgroup", dir));
  }
  return {};
}

}  // namespace wpm::runtime
