// Prometheus and Grafana (README "Monitoring"): a real Prometheus server
// (Debian's `prometheus`) runs deploy/prometheus.yml against a running wpmd
// with an agent, discovering both through the files wpmd writes; then every
// panel of the dashboards in deploy/grafana/dashboards is evaluated through
// Prometheus' query API, with Grafana's variables substituted: each must
// parse and return series. promtool checks the configuration and every
// /metrics page.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <regex>

#include "tests/integration/fleet_fixture.h"

namespace wpm::testing {
namespace {

std::string url_encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

// A port free on loopback now (Prometheus needs one named).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// What Grafana substitutes before it sends a panel's query (the test
// scrapes every second: $__rate_interval is four scrape intervals at least).
std::string grafana_substitute(std::string expr) {
  static const std::vector<std::pair<std::regex, std::string>> kVariables = {
      {std::regex(R"(\$__rate_interval|\$\{__rate_interval\})"), "15s"},
      {std::regex(R"(\$__interval|\$\{__interval\})"), "5s"},
      {std::regex(R"(\$__range|\$\{__range\})"), "5m"},
      {std::regex(R"(\$\{?(system|group)\}?)"), ".*"},  // the variables' "All"
  };
  for (const auto& [re, value] : kVariables) expr = std::regex_replace(expr, re, value);
  return expr;
}

class Monitoring : public Fleet {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/prometheus", X_OK) != 0 || ::access("/usr/bin/promtool", X_OK) != 0) {
      GTEST_SKIP() << "needs Debian's prometheus package (deploy/install-deps.sh installs it)";
    }
    Fleet::SetUp();
  }
  void TearDown() override {
    if (prometheus_ > 0) {
      ::kill(prometheus_, SIGTERM);
      if (!wait_exit(prometheus_, 20s)) ::kill(prometheus_, SIGKILL), wait_exit(prometheus_, 5s);
    }
    Fleet::TearDown();
  }
  json query(const std::string& expr) {
    auto body = http_get(fmt::format("http://127.0.0.1:{}/api/v1/query?query={}", port_, url_encode(expr)));
    json r = json::parse(body, nullptr, false);
    return r.is_discarded() ? json{{"status", "no answer"}, {"data", {{"result", json::array()}}}} : r;
  }
  pid_t prometheus_ = -1;
  int port_ = 0;
};

TEST_F(Monitoring, PrometheusDiscoversWpmdAndAgentsAndEveryDashboardPanelReturnsSeries) {
  const std::string deploy = std::string(WPM_SOURCE_DIR) + "/deploy";
  auto checked = run({"/usr/bin/promtool", "check", "config", deploy + "/prometheus.yml"});
  EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err;

  ASSERT_EQ(as_root({"settings", "set", "metrics.interval", "1s"}).exit_code, 0);
  ASSERT_EQ(as_root({"settings", "set", "policy.interval", "1s"}).exit_code, 0);
  std::string data = configure_agent();
  ASSERT_EQ(start_agent(data).exit_code, 0);
  // A WPAR in a group with a policy: the group's gauges, an agent command,
  // and the agent's per-WPAR series.
  ASSERT_EQ(as_root({"group", "create", "web"}).exit_code, 0);
  ASSERT_EQ(as_root({"wpar", "create", "app1", "--type", "application", "--group", "web", "--command",
                     "/bin/sleep 600"})
                .exit_code,
            0);
  ASSERT_TRUE(wait_until([&] { return json::parse(as_root({"-o", "json", "system", "list"}).out, nullptr, false)
                                          .size() == 1; },
                         20s, 200ms));
  std::string system = json::parse(as_root({"-o", "json", "system", "list"}).out)[0].value("name", "");
  auto deployed = as_root({"wpar", "deploy", "app1", "--system", system});
  if (deployed.exit_code != 0) GTEST_SKIP() << "this host cannot run an application WPAR: " << deployed.err;
  ASSERT_EQ(as_root({"group", "policy", "set", "web", "--enabled", "true", "--automation", "recommend", "--period",
                     "10s"})
                .exit_code,
            0);

  // wpmd's discovery files name itself and the agent (after its first report).
  std::string sd = wpmd_->data_dir() + "/prometheus";
  ASSERT_TRUE(wait_until([&] { return read_file(sd + "/agents.json").find(system) != std::string::npos; }, 30s,
                         200ms))
      << read_file(sd + "/agents.json");
  json agents = json::parse(read_file(sd + "/agents.json"));
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_EQ(agents[0]["labels"]["system"], system);
  std::string agent_metrics = read_key_values(data + "/endpoints")["metrics"];
  EXPECT_NE(agent_metrics.find(agents[0]["targets"][0].get<std::string>()), std::string::npos)
      << agents.dump() << " vs " << agent_metrics;
  json self = json::parse(read_file(sd + "/wpmd.json"));
  EXPECT_NE(wpmd_->metrics().find(self[0]["targets"][0].get<std::string>()), std::string::npos) << self.dump();

  // Every /metrics page passes promtool.
  for (const auto& url : {wpmd_->metrics(), agent_metrics}) {
    std::string page = dir_ / "page.txt";
    std::ofstream(page) << http_get(url);
    auto lint = run({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + quote(page)});
    EXPECT_EQ(lint.exit_code, 0) << url << ": " << lint.out << lint.err;
  }

  // deploy/prometheus.yml as shipped, with this wpmd's discovery directory
  // and a scrape every second.
  std::string config = read_file(deploy + "/prometheus.yml");
  config = std::regex_replace(config, std::regex("/var/lib/wpm/prometheus"), sd);
  config = std::regex_replace(config, std::regex("scrape_interval: 10s"), "scrape_interval: 1s");
  config = std::regex_replace(config, std::regex("scrape_timeout: 5s"), "scrape_timeout: 1s");
  std::ofstream(dir_ / "prometheus.yml") << config;
  port_ = free_port();
  prometheus_ = spawn({"/usr/bin/prometheus", "--config.file=" + (dir_ / "prometheus.yml"),
                       "--storage.tsdb.path=" + (dir_ / "tsdb"), fmt::format("--web.listen-address=127.0.0.1:{}", port_),
                       "--log.level=warn"},
                      dir_ / "prometheus.out", dir_ / "prometheus.err");
  ASSERT_GT(prometheus_, 0);
  auto up = [&](const std::string& job) {
    json r = query(fmt::format("up{{job=\"{}\"}} == 1", job));
    return r.value("status", "") == "success" && !r["data"]["result"].empty();
  };
  ASSERT_TRUE(wait_until([&] { return up("wpmd") && up("wpm-agent"); }, 60s, 500ms))
      << read_file(dir_ / "prometheus.err");
  // A few scrapes, so that rates have two points; and a policy pass.
  ASSERT_TRUE(wait_until([&] { return !query("wpm_group_state_percent")["data"]["result"].empty() &&
                                      !query("wpm_wpar_cpu_percent")["data"]["result"].empty(); },
                         30s, 500ms))
      << query("wpm_group_state_percent").dump();
  std::this_thread::sleep_for(5s);

  // The agent's series carry its system label (from the discovery file).
  json wpar_cpu = query("wpm_wpar_cpu_percent{wpar=\"app1\"}");
  ASSERT_EQ(wpar_cpu["data"]["result"].size(), 1u) << wpar_cpu.dump();
  EXPECT_EQ(wpar_cpu["data"]["result"][0]["metric"]["system"], system);

  // Every panel of every dashboard, through the query API.
  size_t panels = 0, expressions = 0;
  std::set<std::string> uids;
  for (const auto& entry : fs::directory_iterator(deploy + "/grafana/dashboards")) {
    json dashboard = json::parse(read_file(entry.path()), nullptr, false);
    ASSERT_FALSE(dashboard.is_discarded()) << entry.path();
    EXPECT_TRUE(uids.insert(dashboard.value("uid", "")).second) << "a dashboard's uid twice: " << entry.path();
    for (const auto& panel : dashboard["panels"]) {
      ++panels;
      EXPECT_EQ(panel["datasource"]["uid"], "wpm-prometheus") << panel.dump();
      ASSERT_FALSE(panel["targets"].empty()) << panel.dump();
      for (const auto& target : panel["targets"]) {
        ++expressions;
        std::string expr = grafana_substitute(target["expr"]);
        json r = query(expr);
        EXPECT_EQ(r.value("status", ""), "success")
            << entry.path().filename() << " \"" << panel["title"] << "\": " << expr << " -> " << r.dump();
        EXPECT_FALSE(r["data"]["result"].empty())
            << entry.path().filename() << " \"" << panel["title"] << "\": " << expr << " returned no series";
      }
    }
    // The variables' own queries (label_values) name series that exist.
    for (const auto& v : dashboard["templating"]["list"]) {
      std::smatch m;
      std::string q = v["query"]["query"];
      ASSERT_TRUE(std::regex_match(q, m, std::regex(R"(label_values\((\w+), (\w+)\))"))) << q;
      json r = query(fmt::format("count by ({}) ({})", m[2].str(), m[1].str()));
      EXPECT_FALSE(r["data"]["result"].empty()) << q;
    }
  }
  EXPECT_EQ(uids.size(), 3u);
  EXPECT_GE(panels, 15u);
  EXPECT_GE(expressions, panels);
  // The provisioned data source has the uid the panels name.
  EXPECT_NE(read_file(deploy + "/grafana/provisioning/datasources/wpm.yaml").find("uid: wpm-prometheus"),
            std::string::npos);

  run({bin("wpm-agent"), "--data", data, "stopwpar", "-F", "app1"}, 60s);
  run({bin("wpm-agent"), "--data", data, "rmwpar", "app1"}, 60s);
}

}  // namespace
}  // namespace wpm::testing
