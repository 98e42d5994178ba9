#pragma once
// The fixtures of the fleet suites (fleet_test.cpp, lifecycle_test.cpp):
// Fleet runs a real wpmd with PAM and a registration password, and makes
// Linux users and agents; FleetOnThreeHosts adds three hosts as network
// namespaces on one bridge, each for a real wpm-agent.

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/process.h"

namespace wpm::testing {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using nlohmann::json;

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

class Fleet : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: it makes Linux users to log in through PAM";
    start_wpmd({});
  }
  void start_wpmd(const std::vector<std::string>& extra_args) {
    Wpmd::Options o;
    o.data_dir = dir_ / "wpmd";
    o.env = {{"WPM_TEST_PROBE_INTERVAL_MS", "500"}};
    o.extra_args = {"--pam-config-dir", std::string(WPM_SOURCE_DIR) + "/deploy/pam", "--registration-password-file",
                    dir_ / "password"};
    o.extra_args.insert(o.extra_args.end(), extra_args.begin(), extra_args.end());
    std::ofstream(dir_ / "password") << "fleet-registration-pw\n";
    wpmd_ = std::make_unique<Wpmd>(o);
    ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
    fs::create_directories(dir_ / "nodata");
  }
  void TearDown() override {
    for (const auto& data : agents_) run({bin("wpm-agent"), "--data", data, "stop"});
    for (const auto& u : users_) run({"/usr/sbin/userdel", u});
    for (const auto& g : groups_) run({"/usr/sbin/groupdel", g});
  }

  // A Linux user with a password; its name is unique to this run.
  std::string make_user(const std::string& suffix, const std::string& group = "") {
    std::string name = fmt::format("wpmt{}{}", ::getpid() % 100000, suffix);
    std::vector<std::string> argv = {"/usr/sbin/useradd", "-M", "-s", "/usr/sbin/nologin"};
    if (!group.empty()) argv.insert(argv.end(), {"-G", group});
    argv.push_back(name);
    auto made = run(argv);
    EXPECT_EQ(made.exit_code, 0) << made.err;
    users_.push_back(name);
    auto pw = run({"/bin/sh", "-c", "echo " + quote(name + ":pw-" + name) + " | /usr/sbin/chpasswd"});
    EXPECT_EQ(pw.exit_code, 0) << pw.err;
    return name;
  }
  std::string make_group(const std::string& suffix) {
    std::string name = fmt::format("wpmg{}{}", ::getpid() % 100000, suffix);
    EXPECT_EQ(run({"/usr/sbin/groupadd", name}).exit_code, 0);
    groups_.push_back(name);
    return name;
  }

  // `wpm` as root on the manager (the root credential in DATA/keys).
  RunResult as_root(std::vector<std::string> args) {
    std::vector<std::string> argv = {bin("wpm"), "--data", wpmd_->data_dir()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, 60s);
  }
  // `wpm` as `user`: its own login (kept under its own config directory),
  // no access to the data directory.
  RunResult as(const std::string& user, std::vector<std::string> args) {
    std::vector<std::string> argv = {bin("wpm"), "--data", dir_ / "nodata", "--gateway", wpmd_->gateway()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, 60s, {{"XDG_CONFIG_HOME", dir_ / ("config-" + user)}});
  }
  RunResult login(const std::string& user, const std::string& password) {
    std::string cmd = fmt::format("printf '%s\\n' {} | {} --data {} --gateway {} login --user {} --password-stdin",
                                  quote(password), bin("wpm"), quote(dir_ / "nodata"), wpmd_->gateway(), user);
    return run({"/bin/sh", "-c", cmd}, 60s, {{"XDG_CONFIG_HOME", dir_ / ("config-" + user)}});
  }

  std::string port_of(const std::string& endpoint) { return endpoint.substr(endpoint.rfind(':') + 1); }

  // An agent in DIR/agent, registered with the password; returns its data directory.
  std::string configure_agent() {
    std::string data = dir_ / "agent";
    auto configured = run({bin("wpm-agent"), "--data", data, "configure", "--manager", "127.0.0.1", "--pubport",
                           port_of(wpmd_->agent_public()), "--agentport", "0", "--password-file", dir_ / "password"},
                          30s);
    EXPECT_EQ(configured.exit_code, 0) << configured.err;
    agents_.push_back(data);
    return data;
  }
  RunResult start_agent(const std::string& data) {
    return run({bin("wpm-agent"), "--data", data, "start", "--agent-endpoint", "tcp://127.0.0.1:0", "--metrics-listen",
                "127.0.0.1:0"},
               30s);
  }

  TempDir dir_{"wpm-fleet"};
  std::unique_ptr<Wpmd> wpmd_;
  std::vector<std::string> users_, groups_, agents_;
};

// Three hosts as network namespaces on one bridge (10.217.N.0/24; wpmd on
// the bridge's 10.217.N.1 in the root namespace, host I on 10.217.N.1I),
// each running a real wpm-agent on its own 10.217.N.1I:9510.
class FleetOnThreeHosts : public Fleet {
 protected:
  static constexpr const char* kIp = "/usr/sbin/ip";
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces, and Linux users for PAM";
    // A /24 no other run on this machine uses now: the first free one from
    // a place that depends on the process id.
    std::string in_use = run({kIp, "-o", "-4", "addr", "show"}).out;
    for (int k = 0; k < 200; ++k) {
      net_ = fmt::format("10.217.{}", (::getpid() + k) % 200 + 20);
      if (in_use.find(" " + net_ + ".") == std::string::npos) break;
    }
    bridge_ = fmt::format("wpmbr{}", ::getpid() % 100000);
    auto made = run({kIp, "link", "add", bridge_, "type", "bridge"});
    if (made.exit_code != 0) GTEST_SKIP() << "this kernel cannot make a bridge: " << made.err;
    bridge_made_ = true;
    ASSERT_EQ(run({kIp, "addr", "add", manager_address() + "/24", "dev", bridge_}).exit_code, 0);
    ASSERT_EQ(run({kIp, "link", "set", bridge_, "up"}).exit_code, 0);
    for (int i = 1; i <= 3; ++i) {
      std::string ns = netns(i), host_if = fmt::format("wpmv{}h{}", ::getpid() % 100000, i);
      // What an earlier test of this process left (a namespace a process still holds keeps its veth).
      run({kIp, "link", "del", host_if});
      run({kIp, "netns", "del", ns});
      ASSERT_EQ(run({kIp, "netns", "add", ns}).exit_code, 0);
      namespaces_.push_back(ns);
      ASSERT_EQ(run({kIp, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns}).exit_code, 0);
      ASSERT_EQ(run({kIp, "link", "set", host_if, "master", bridge_, "up"}).exit_code, 0);
      ASSERT_EQ(run({kIp, "-n", ns, "addr", "add", address(i) + "/24", "dev", "eth0"}).exit_code, 0);
      ASSERT_EQ(run({kIp, "-n", ns, "link", "set", "eth0", "up"}).exit_code, 0);
      ASSERT_EQ(run({kIp, "-n", ns, "link", "set", "lo", "up"}).exit_code, 0);
    }
    // The agents reach wpmd on the bridge only; operators on loopback.
    start_wpmd({"--agent-public-endpoint", fmt::format("tcp://{}:0", manager_address()), "--agent-channel-endpoint",
                fmt::format("tcp://{}:0", manager_address())});
  }
  void TearDown() override {
    // WPARs outlive their agents (and would keep a namespace alive): every
    // one left on a host goes first.
    for (size_t i = 1; i <= namespaces_.size(); ++i) {
      auto listed = run({bin("wpm-agent"), "--data", data(static_cast<int>(i)), "lswpar", "-o", "json"});
      json list = json::parse(listed.out, nullptr, false);
      if (!list.is_array()) continue;
      for (const auto& w : list) {
        std::string name = w.value("name", "");
        for (const char* cmd : {"killwpar", "stopwpar"}) {
          std::vector<std::string> argv = {bin("wpm-agent"), "--data", data(static_cast<int>(i)), cmd};
          if (std::string(cmd) == "stopwpar") argv.push_back("-F");
          argv.push_back(name);
          run(argv);
        }
        run({bin("wpm-agent"), "--data", data(static_cast<int>(i)), "rmwpar", name});
      }
    }
    Fleet::TearDown();
    for (const auto& ns : namespaces_) run({kIp, "netns", "del", ns});
    if (bridge_made_) run({kIp, "link", "del", bridge_});
  }
  std::string manager_address() const { return net_ + ".1"; }
  std::string address(int i) const { return fmt::format("{}.1{}", net_, i); }
  std::string netns(int i) const { return fmt::format("wpmt{}h{}", ::getpid() % 100000, i); }
  std::string host(int i) const { return fmt::format("h{}", i); }
  std::string data(int i) const { return dir_ / host(i); }
  // `argv` in host i's network namespace, and only there: `ip netns exec`
  // would also mount a sysfs of its own over /sys, hiding the host's cgroup
  // hierarchies from the agent (no freezer, no checkpoint).
  RunResult in_host(int i, std::vector<std::string> argv, std::chrono::milliseconds timeout = 60s) {
    argv.insert(argv.begin(), {"/usr/bin/nsenter", "--net=/run/netns/" + netns(i), "--"});
    return run(argv, timeout);
  }
  void write_agent_toml(int i, const std::string& profile_table) {
    fs::create_directories(data(i));
    std::ofstream(data(i) + "/agent.toml") << fmt::format(
        "[agent]\nendpoint = \"tcp://{}:9510\"\nheartbeat_s = 1\n{}", address(i), profile_table);
  }
  // Registers host i with a join token or, when `token` is empty, the password.
  RunResult configure(int i, const std::string& token) {
    std::vector<std::string> argv = {bin("wpm-agent"), "--data",     data(i),          "configure", "--manager",
                                     manager_address(), "--pubport", port_of(wpmd_->agent_public()), "--agentport",
                                     "9510",            "--hostname", host(i)};
    if (token.empty()) {
      argv.insert(argv.end(), {"--password-file", dir_ / "password"});
    } else {
      argv.insert(argv.end(), {"--token", token});
    }
    return in_host(i, argv, 30s);
  }
  json system(int i) {
    auto r = as_root({"-o", "json", "system", "show", host(i)});
    return r.exit_code == 0 ? json::parse(r.out) : json::object();
  }
  json compat(int a, int b) {
    auto r = as_root({"-o", "json", "compat", "show", host(a), host(b)});
    return r.exit_code == 0 ? json::parse(r.out) : json::object();
  }

  std::string net_, bridge_;
  bool bridge_made_ = false;
  std::vector<std::string> namespaces_;
};

}  // namespace wpm::testing
