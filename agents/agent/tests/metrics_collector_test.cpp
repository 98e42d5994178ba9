#include "agents/agent/metrics_collector.h"

#include <gtest/gtest.h>

#include "agents/agent/agent_config.h"

namespace wpm::agent {
namespace {

namespace ap = agentproto;

TEST(MetricsCollector, ParsesTheKernelsFiles) {
  auto cpu = parse_proc_stat("cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 1 2 3 4 5 6 7 8\n");
  ASSERT_TRUE(cpu);
  EXPECT_EQ(cpu->first, 990u);  // user..steal; guest is inside user
  EXPECT_EQ(cpu->second, 820u);  // idle + iowait
  EXPECT_FALSE(parse_proc_stat("intr 1 2 3\n"));
  EXPECT_FALSE(parse_proc_stat("cpu  1 2\n"));

  auto mem = parse_meminfo("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n");
  ASSERT_TRUE(mem);
  EXPECT_EQ(mem->first, 16'000'000ull * 1024);
  EXPECT_EQ(mem->second, 4'000'000ull * 1024);
  EXPECT_FALSE(parse_meminfo("MemTotal: 100 kB\n"));

  auto load = parse_loadavg("0.52 0.58 0.59 2/613 12345\n");
  ASSERT_TRUE(load);
  EXPECT_DOUBLE_EQ(load->first, 0.52);
  EXPECT_EQ(load->second, 613u);
  EXPECT_FALSE(parse_loadavg("garbage"));

  // pgfault, not pgfault_something or pgmajfault.
  EXPECT_EQ(parse_vmstat_pgfault("pgmajfault 5\npgfault_x 9\npgfault 1234\n"), 1234u);
  EXPECT_FALSE(parse_vmstat_pgfault("pgmajfault 5\n"));
}

MetricsSnapshot snapshot(int64_t t_s, uint64_t total, uint64_t idle, std::vector<WparCounters> wpars) {
  MetricsSnapshot s;
  s.monotonic_ns = t_s * 1'000'000'000;
  s.cpus = 4;
  s.host = HostCounters{total, idle, 8ull << 30, 6ull << 30, 1.5, 200, 900, 5000};
  s.wpars = std::move(wpars);
  return s;
}

TEST(MetricsCollector, AReportIsTheDifferenceOfTwoSnapshots) {
  // 10 s on 4 CPUs = 40 CPU-seconds of capacity; web used 10 s of CPU: 25 %.
  auto before = snapshot(100, 1000, 500, {{"web", 5'000'000'000ull, 1ull << 30, 3, 7, 100}});
  auto now = snapshot(110, 2000, 1250, {{"new", 1'000'000'000ull, 2ull << 30, 1, 1, 10},
                                        {"web", 15'000'000'000ull, 2ull << 30, 4, 9, 600}});
  now.host.page_faults = 6000;
  auto r = make_report(before, now, false);
  EXPECT_EQ(r.interval_ms, 10'000u);
  EXPECT_EQ(r.host_scope, "host");
  EXPECT_FLOAT_EQ(r.host.cpu_percent, 25.0f);  // 1000 ticks, 750 idle
  EXPECT_FLOAT_EQ(r.host.memory_percent, 25.0f);
  EXPECT_FLOAT_EQ(r.host.page_faults_per_s, 100.0f);
  EXPECT_EQ(r.host.processes, 200u);
  ASSERT_EQ(r.wpars.size(), 2u);
  const auto& fresh = r.wpars[0];
  EXPECT_EQ(fresh.name, "new");
  // No earlier counters: no CPU share and no rate yet, the rest is there.
  EXPECT_EQ(fresh.metrics.present & ap::kMetricCpuBit, 0);
  EXPECT_EQ(fresh.metrics.present & ap::kMetricPageFaultsBit, 0);
  EXPECT_FLOAT_EQ(fresh.metrics.memory_percent, 25.0f);
  const auto& web = r.wpars[1];
  EXPECT_FLOAT_EQ(web.metrics.cpu_percent, 25.0f);
  EXPECT_FLOAT_EQ(web.metrics.memory_percent, 25.0f);
  EXPECT_FLOAT_EQ(web.metrics.page_faults_per_s, 50.0f);
  EXPECT_EQ(web.metrics.processes, 4u);
  EXPECT_EQ(web.metrics.threads, 9u);
  EXPECT_EQ(web.metrics.present, ap::kMetricCpuBit | ap::kMetricMemoryBit | ap::kMetricProcessesBit |
                                     ap::kMetricThreadsBit | ap::kMetricPageFaultsBit);
}

TEST(MetricsCollector, HostScopeWparsReportsTheSumOfTheWpars) {
  auto before = snapshot(0, 0, 0, {{"a", 0, 0, 1, 1, 0}, {"b", 0, 0, 1, 1, 0}});
  auto now = snapshot(10, 1000, 100, {{"a", 20'000'000'000ull, 1ull << 30, 2, 3, 0},
                                      {"b", 4'000'000'000ull, 1ull << 30, 1, 1, 0}});
  auto r = make_report(before, now, true);
  EXPECT_EQ(r.host_scope, "wpars");
  EXPECT_FLOAT_EQ(r.host.cpu_percent, 60.0f);  // 50 % + 10 %, not the host's 90 %
  EXPECT_FLOAT_EQ(r.host.memory_percent, 25.0f);
  EXPECT_EQ(r.host.processes, 3u);
  EXPECT_EQ(r.host.threads, 4u);
  EXPECT_EQ(r.host.present & ap::kMetricLoadBit, 0);
}

TEST(MetricsCollector, ACounterThatWentBackwardsGivesNoRate) {
  auto before = snapshot(0, 0, 0, {{"web", 9'000'000'000ull, 0, 1, 1, 500}});
  auto now = snapshot(10, 1000, 100, {{"web", 1'000'000'000ull, 0, 1, 1, 10}});  // made again in between
  auto r = make_report(before, now, false);
  EXPECT_EQ(r.wpars[0].metrics.present & (ap::kMetricCpuBit | ap::kMetricPageFaultsBit), 0);
}

TEST(MetricsCollector, HostScopeIsReadFromAgentToml) {
  auto c = parse_agent_config("[metrics]\nhost_scope = \"wpars\"\n", "agent.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->metrics_host_scope, "wpars");
  EXPECT_EQ(parse_agent_config("", "agent.toml")->metrics_host_scope, "host");
  auto bad = parse_agent_config("[metrics]\nhost_scope = \"all\"\n", "agent.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("metrics.host_scope"), std::string::npos);
}

}  // namespace
}  // namespace wpm::agent
