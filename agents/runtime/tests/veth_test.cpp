// The WPAR network: the pure plan, and attach/detach on real network
// namespaces (root). The real tests build a small topology on this machine:
//
//   client netns (c0 10.213.X.2/24) <-veth-> root netns (wpmt… 10.213.X.1/24, plays H)
//   root netns (wpm… 169.254.0.1/32) <-veth from attach_veth-> WPAR netns (eth0 10.213.X.50/32)
//
// and check that the client reaches a TCP listener in the WPAR through the
// host's proxy ARP and routing. Only addresses assigned here are used; every
// wait is bounded and teardown removes links, children and the forwarding
// change even when a test fails.

#include "agents/runtime/veth.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <thread>

#include "tests/support/netns_child.h"

#include "agents/runtime/supervisor.h"
#include "agents/runtime/wpar_files.h"

namespace wpm::runtime {
namespace {

using namespace std::chrono_literals;
using K = VethOperation::Kind;
using wpm::testing::hold_namespace;
using wpm::testing::NetnsChild;

const std::vector<HostInterface> kInterfaces = {{"eth0", *parse_cidr("192.168.5.10/24")},
                                                {"eth1", *parse_cidr("10.1.0.1/16")},
                                                {"eth2", *parse_cidr("10.1.7.1/24")}};

// ---- the plan (pure) --------------------------------------------------------

TEST(VethPlan, HostNameIsAtMost15CharactersStableAndPerAgent) {
  std::string name = veth_host_name("agent-with-a-rather-long-identifier", "web1");
  EXPECT_LE(name.size(), kIfnameMax);
  EXPECT_EQ(name.rfind("wpm", 0), 0u) << name;
  EXPECT_EQ(name, veth_host_name("agent-with-a-rather-long-identifier", "web1"));
  // Stable across builds and machines (FNV-1a, not std::hash): a restarted
  // agent finds what it made before.
  EXPECT_EQ(veth_host_name("node1", "web1"), "wpm66803da6edb1");
  EXPECT_NE(veth_host_name("node1", "web1"), veth_host_name("node2", "web1"));
  EXPECT_NE(veth_host_name("node1", "web1"), veth_host_name("node1", "web2"));
  EXPECT_NE(veth_host_name("ab", "c"), veth_host_name("a", "bc"));
}

TEST(VethPlan, UsesTheMostSpecificInterfaceHoldingTheAddress) {
  auto plan = plan_veth("node1", "web1", "10.1.7.20", "host1", kInterfaces, {});
  ASSERT_TRUE(plan.has_value()) << plan.error().message;
  EXPECT_EQ(*plan, (VethPlan{.host_ifname = veth_host_name("node1", "web1"),
                             .wpar_ifname = "eth0",
                             .address = *parse_ipv4("10.1.7.20"),
                             .host_interface = "eth2",
                             .host_address = *parse_ipv4("10.1.7.1"),
                             .gateway = kVethGateway}));
  EXPECT_EQ(plan_veth("node1", "web1", "10.1.9.20", "host1", kInterfaces, {})->host_interface,
            "eth1");
}

TEST(VethPlan, RefusesAnAddressOutsideEveryHostSubnet) {
  auto plan = plan_veth("node1", "web1", "10.9.9.9", "host1", kInterfaces, {});
  ASSERT_FALSE(plan.has_value());
  EXPECT_EQ(plan.error().exit_code, kExitFailed);
  EXPECT_NE(plan.error().message.find("address 10.9.9.9 is outside every subnet of host host1 "
                                      "(192.168.5.0/24 on eth0"),
            std::string::npos)
      << plan.error().message;
  EXPECT_NE(plan.error().message.find("choose an address in one of them"), std::string::npos);
}

TEST(VethPlan, RefusesAnAddressUsedByAnotherWparOnThisHost) {
  std::map<uint32_t, std::string> used = {{*parse_ipv4("192.168.5.20"), "db1"}};
  auto plan = plan_veth("node1", "web1", "192.168.5.20", "host1", kInterfaces, used);
  ASSERT_FALSE(plan.has_value());
  EXPECT_EQ(plan.error().exit_code, kExitFailed);
  EXPECT_EQ(
      plan.error().message,
      "address 192.168.5.20 is already used by WPAR db1 on host host1; choose another address "
      "in 192.168.5.0/24");
  EXPECT_TRUE(plan_veth("node1", "db1", "192.168.5.20", "host1", kInterfaces, used).has_value())
      << "a WPAR keeps its own address";
}

TEST(VethPlan, AttachConfiguresTheWparThenTheHostThenForwarding) {
  auto plan = *plan_veth("node1", "web1", "192.168.5.20", "host1", kInterfaces, {});
  std::vector<std::string> steps;
  for (const auto& op : attach_operations(plan)) steps.push_back(describe(op));
  const std::string h = plan.host_ifname;
  EXPECT_EQ(steps, (std::vector<std::string>{
                       "ip link add " + h + " type veth peer name eth0 netns WPAR",
                       "in the WPAR: ip link set lo up",
                       "in the WPAR: ip -4 addr add 192.168.5.20/32 dev eth0",
                       "in the WPAR: ip link set eth0 up",
                       "in the WPAR: ip -4 route add 169.254.0.1/32 dev eth0 scope link",
                       "in the WPAR: ip -4 route add default via 169.254.0.1 dev eth0",
                       "ip -4 addr add 169.254.0.1/32 dev " + h,
                       "ip link set " + h + " up",
                       "ip -4 route add 192.168.5.20/32 dev " + h + " scope link src 192.168.5.10",
                       "ip neigh replace proxy 192.168.5.20 dev eth0",
                       "sysctl -w net.ipv4.ip_forward=1",
                   }));
}

TEST(VethPlan, DetachRemovesTheHostEndAndTheProxyEntry) {
  auto plan = *plan_veth("node1", "web1", "192.168.5.20", "host1", kInterfaces, {});
  auto ops = detach_operations(plan);
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(describe(ops[0]), "ip link del " + plan.host_ifname);
  EXPECT_EQ(describe(ops[1]), "ip neigh del proxy 192.168.5.20 dev eth0");
}

// ---- helpers for the real tests ---------------------------------------------

struct RunResult {
  int code = -1;  // exit code; -1 when it did not end in time or did not exit
  std::string output;
};

// Runs argv (no shell) with stdout and stderr captured, for at most `timeout`.
RunResult run(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 10s) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return {};
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  RunResult result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{out[0], POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      ::kill(pid, SIGKILL);
      break;
    }
    char buf[4096];
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    result.output.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status)) result.code = WEXITSTATUS(status);
  return result;
}

// Waits for `pid` to end, killing it after `timeout`; its exit code or -1.
int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return -1;
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

constexpr uint16_t kPort = 7000;

// The WPAR's workload: a TCP listener that answers each byte with byte + 1.
int listen_and_answer(int ready, int release) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(kPort);
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 8) != 0)
    return 92;
  char c = 1;
  if (::write(ready, &c, 1) != 1) return 91;
  for (int connections = 0; connections < 16; ++connections) {
    pollfd p[2] = {{s, POLLIN, 0}, {release, POLLIN, 0}};
    if (::poll(p, 2, 120'000) <= 0 || (p[1].revents != 0)) return 0;
    int conn = ::accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    pollfd in{conn, POLLIN, 0};
    char byte = 0;
    if (::poll(&in, 1, 5000) == 1 && ::read(conn, &byte, 1) == 1) {
      byte = static_cast<char>(byte + 1);
      (void)!::write(conn, &byte, 1);  // the client checks what arrives
    }
    ::close(conn);
  }
  return 0;
}

// From a child that enters `netns_path`: connects to address:kPort, sends 'a'
// and expects 'b'. 0 on success, otherwise which step failed.
enum ConnectOutcome {
  kConnected = 0,
  kNoSetns = 1,
  kConnectFailed = 3,
  kConnectTimeout = 4,
  kNoAnswer = 5
};
int connect_from(const std::string& netns_path, uint32_t address) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) ::_exit(kNoSetns);
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kPort);
    a.sin_addr.s_addr = htonl(address);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
      ::_exit(kConnectFailed);
    }
    pollfd p{s, POLLOUT, 0};
    if (::poll(&p, 1, 10'000) != 1) ::_exit(kConnectTimeout);  // proxy ARP answers within ~1 s
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) ::_exit(kConnectFailed);
    char c = 'a';
    if (::write(s, &c, 1) != 1) ::_exit(kNoAnswer);
    p = {s, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1 || ::read(s, &c, 1) != 1 || c != 'b') ::_exit(kNoAnswer);
    ::_exit(kConnected);
  }
  return wait_exit(pid, 20s);
}

std::string read_ip_forward() {
  std::ifstream in("/proc/sys/net/ipv4/ip_forward");
  std::string v;
  in >> v;
  return v;
}

bool link_exists(const std::string& name) { return ::if_nametoindex(name.c_str()) != 0; }

// ---- real namespaces --------------------------------------------------------

class VethNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    if (run({"ip", "-V"}).code != 0)
      GTEST_SKIP() << "needs ip(8) (iproute2) to build the test topology";
    static int counter = 0;
    ++counter;
    subnet_ = fmt::format("10.213.{}", 1 + ::getpid() % 250);
    h_ = fmt::format("wpmt{}x{}", ::getpid(), counter);
    agent_ = fmt::format("veth-test-{}-{}", ::getpid(), counter);
    saved_forward_ = read_ip_forward();

    client_.emplace(hold_namespace);
    ASSERT_TRUE(client_->ready()) << "client namespace did not start";
    std::string client_ns = client_->netns_path();
    for (const auto& cmd : std::vector<std::vector<std::string>>{
             {"ip", "link", "add", h_, "type", "veth", "peer", "name", "c0", "netns",
              std::to_string(client_->pid())},
             {"ip", "addr", "add", subnet_ + ".1/24", "dev", h_},
             {"ip", "link", "set", h_, "up"},
             {"nsenter", "--net=" + client_ns, "ip", "addr", "add", subnet_ + ".2/24", "dev", "c0"},
             {"nsenter", "--net=" + client_ns, "ip", "link", "set", "c0", "up"},
             {"nsenter", "--net=" + client_ns, "ip", "link", "set", "lo", "up"},
         }) {
      auto r = run(cmd);
      ASSERT_EQ(r.code, 0) << fmt::format("{}: {}", fmt::join(cmd, " "), r.output);
    }
    wpar_.emplace(listen_and_answer);
    ASSERT_TRUE(wpar_->ready()) << "WPAR namespace did not start";

    auto interfaces = host_interfaces();
    ASSERT_TRUE(interfaces.has_value()) << interfaces.error().message;
    auto plan = plan_veth(agent_, "web1", subnet_ + ".50", "testhost", *interfaces, {});
    ASSERT_TRUE(plan.has_value()) << plan.error().message;
    plan_ = *plan;
  }

  void TearDown() override {
    if (plan_) (void)detach_veth(*plan_);  // best effort: tests check detach themselves
    wpar_.reset();
    client_.reset();
    if (!h_.empty() && link_exists(h_)) (void)run({"ip", "link", "del", h_});
    if (!saved_forward_.empty() && read_ip_forward() != saved_forward_) {
      std::ofstream("/proc/sys/net/ipv4/ip_forward") << saved_forward_ << "\n";
    }
  }

  std::string in_wpar(const std::vector<std::string>& ip_args) {
    std::vector<std::string> cmd = {"nsenter", "--net=" + wpar_->netns_path(), "ip"};
    cmd.insert(cmd.end(), ip_args.begin(), ip_args.end());
    return run(cmd).output;
  }
  std::string proxy_entries() { return run({"ip", "neigh", "show", "proxy", "dev", h_}).output; }

  std::string subnet_, h_, agent_, saved_forward_;
  std::optional<NetnsChild> client_, wpar_;
  std::optional<VethPlan> plan_;
};

TEST_F(VethNetns, HostInterfacesListTheHostSubnetAndNoLoopback) {
  auto interfaces = host_interfaces();
  ASSERT_TRUE(interfaces.has_value()) << interfaces.error().message;
  bool found = false;
  for (const auto& i : *interfaces) {
    EXPECT_NE(i.name, "lo");
    if (i.name == h_) {
      found = true;
      EXPECT_EQ(i.net, (Ipv4Net{*parse_ipv4(subnet_ + ".1"), 24}));
    }
  }
  EXPECT_TRUE(found) << h_ << " missing";
  EXPECT_EQ(plan_->host_interface, h_);
}

TEST_F(VethNetns, AClientOnTheHostSubnetReachesTheWparAddress) {
  auto attached = attach_veth(*plan_, wpar_->pid());
  ASSERT_TRUE(attached.has_value()) << attached.error().message;
  EXPECT_EQ(attached->forwarding_enabled, saved_forward_ == "0");
  EXPECT_EQ(read_ip_forward(), "1");
  EXPECT_TRUE(link_exists(plan_->host_ifname));
  EXPECT_NE(proxy_entries().find(subnet_ + ".50"), std::string::npos) << proxy_entries();
  EXPECT_NE(in_wpar({"-4", "addr", "show", "dev", "eth0"}).find(subnet_ + ".50/32"),
            std::string::npos);
  EXPECT_NE(in_wpar({"-4", "route"}).find("default via 169.254.0.1 dev eth0"), std::string::npos)
      << in_wpar({"-4", "route"});

  EXPECT_EQ(connect_from(client_->netns_path(), *parse_ipv4(subnet_ + ".50")), kConnected);
}

TEST_F(VethNetns, DetachRemovesTheHostEndRouteAndProxyEntryAndRepeatsHarmlessly) {
  auto attached = attach_veth(*plan_, wpar_->pid());
  ASSERT_TRUE(attached.has_value()) << attached.error().message;
  auto r = detach_veth(*plan_);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_FALSE(link_exists(plan_->host_ifname));
  EXPECT_EQ(proxy_entries().find(subnet_ + ".50"), std::string::npos) << proxy_entries();
  EXPECT_EQ(run({"ip", "-4", "route", "show", "exact", subnet_ + ".50/32"}).output, "");
  EXPECT_EQ(in_wpar({"link", "show", "eth0"}).find("eth0@"), std::string::npos)
      << "peer went with it";
  auto again = detach_veth(*plan_);
  EXPECT_TRUE(again.has_value()) << again.error().message;
}

TEST_F(VethNetns, AttachAfterDetachWorksAgain) {
  ASSERT_TRUE(attach_veth(*plan_, wpar_->pid()).has_value());
  ASSERT_TRUE(detach_veth(*plan_).has_value());
  auto attached = attach_veth(*plan_, wpar_->pid());
  ASSERT_TRUE(attached.has_value()) << attached.error().message;
  EXPECT_FALSE(attached->forwarding_enabled) << "already on from the first attach";
  EXPECT_EQ(connect_from(client_->netns_path(), *parse_ipv4(subnet_ + ".50")), kConnected);
}

TEST_F(VethNetns, AStaleHostEndIsReportedAndLeftForDetach) {
  // A crash left the host end (a veth: the kernel here may lack the dummy driver).
  auto stale =
      run({"ip", "link", "add", plan_->host_ifname, "type", "veth", "peer", "name", h_ + "s"});
  ASSERT_EQ(stale.code, 0) << stale.output;
  auto attached = attach_veth(*plan_, wpar_->pid());
  ASSERT_FALSE(attached.has_value());
  EXPECT_EQ(attached.error().code, ErrorCode::kInvalidRequest);
  EXPECT_NE(attached.error().message.find("detach the WPAR's network"), std::string::npos)
      << attached.error().message;
  EXPECT_TRUE(link_exists(plan_->host_ifname)) << "attach never removes a link it did not make";
  ASSERT_TRUE(detach_veth(*plan_).has_value());
  EXPECT_FALSE(link_exists(plan_->host_ifname));
}

TEST_F(VethNetns, AFailedAttachLeavesNothingBehind) {
  // Someone else already routes the address: the host route step fails after
  // the pair and the WPAR's side exist.
  ASSERT_EQ(run({"ip", "route", "add", subnet_ + ".50/32", "dev", h_}).code, 0);
  auto attached = attach_veth(*plan_, wpar_->pid());
  ASSERT_FALSE(attached.has_value());
  EXPECT_NE(attached.error().message.find("already routes " + subnet_ + ".50"), std::string::npos)
      << attached.error().message;
  EXPECT_FALSE(link_exists(plan_->host_ifname));
  EXPECT_EQ(in_wpar({"link", "show", "eth0"}).find("eth0@"), std::string::npos);
  EXPECT_EQ(proxy_entries().find(subnet_ + ".50"), std::string::npos);
}

TEST_F(VethNetns, AttachIntoTheHostsOwnNamespaceIsRefused) {
  auto attached = attach_veth(*plan_, ::getpid());
  ASSERT_FALSE(attached.has_value());
  EXPECT_EQ(attached.error().code, ErrorCode::kInvalidRequest);
  EXPECT_NE(attached.error().message.find("shares the host's network namespace"), std::string::npos)
      << attached.error().message;
  EXPECT_FALSE(link_exists(plan_->host_ifname));
}

TEST_F(VethNetns, AttachToAProcessThatIsGoneSaysSo) {
  pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  ASSERT_EQ(wait_exit(gone, 5s), 0);
  auto attached = attach_veth(*plan_, gone);
  ASSERT_FALSE(attached.has_value());
  EXPECT_EQ(attached.error().code, ErrorCode::kNotFound);
  EXPECT_NE(attached.error().message.find("is the WPAR running?"), std::string::npos)
      << attached.error().message;
}

TEST(VethHost, DetachOfANetworkThatNeverExistedSucceeds) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (CAP_NET_ADMIN)";
  VethPlan plan{.host_ifname = veth_host_name("never", fmt::format("{}", ::getpid())),
                .address = *parse_ipv4("10.213.255.50"),
                .host_interface = "wpmt-missing",
                .host_address = *parse_ipv4("10.213.255.1")};
  auto r = detach_veth(plan);
  EXPECT_TRUE(r.has_value()) << r.error().message;
  r = detach_veth(plan);
  EXPECT_TRUE(r.has_value()) << r.error().message;
}

// ---- a WPAR's network through its files and its supervisor -------------------

// A pid that ran and is gone: a lost supervisor.
pid_t gone_pid() {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  wait_exit(pid, 5s);
  return pid;
}

class VethWpar : public VethNetns {
 protected:
  void SetUp() override {
    VethNetns::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    static int counter = 0;
    root_ = fmt::format("{}/veth-wpar-{}-{}", WPM_TEST_TMP_DIR, ::getpid(), ++counter);
    cgroup_ = fmt::format("wpm-test/veth-{}-{}", ::getpid(), counter);
    std::filesystem::create_directories(root_);
  }
  void TearDown() override {
    if (!root_.empty()) {
      if (auto r = files("web1").read_record(); r && supervisor_alive(r->supervisor_pid)) {
        ::kill(r->supervisor_pid, SIGQUIT);
        wait_until_ended(files("web1"), 10s);
      }
      std::error_code ec;
      std::filesystem::remove_all(root_, ec);
      auto parent = CgroupSet::create(CgroupLayout::detect(), "wpm-test");
      if (parent) (void)parent->remove();
    }
    VethNetns::TearDown();
  }
  WparFiles files(const std::string& name) const { return WparFiles(root_, name); }
  void define(const std::string& name, const std::string& address) {
    WparSpec spec;
    spec.name = name;
    spec.type = WparType::kSystem;
    spec.address = address;
    ASSERT_TRUE(files(name).create_dir().has_value());
    ASSERT_TRUE(files(name).write_spec(spec).has_value());
  }
  Result<WparRecord> start(const std::string& name) {
    return start_supervisor(SupervisorLaunch{WPM_SUPERVISOR, root_, name, cgroup_, 10s});
  }
  bool overlay() const {
    std::ifstream in("/proc/filesystems");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str().find("\toverlay\n") != std::string::npos;
  }

  std::string root_, cgroup_;
};

TEST_F(VethWpar, PlanRefusesTheAddressOfAnotherWparOfTheAgentNamingIt) {
  define("db1", subnet_ + ".50");
  WparSpec web1{.name = "web1", .type = WparType::kSystem, .address = subnet_ + ".50"};
  auto refused = plan_wpar_network(root_, web1);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().exit_code, kExitFailed);
  EXPECT_NE(refused.error().message.find("is already used by WPAR db1"), std::string::npos)
      << refused.error().message;
  web1.address = subnet_ + ".51";
  auto plan = plan_wpar_network(root_, web1);
  ASSERT_TRUE(plan.has_value()) << plan.error().message;
  EXPECT_EQ(plan->host_interface, h_);
  EXPECT_EQ(plan->host_ifname, veth_host_name(root_, "web1")) << "the agent is its WPAR root";
  WparSpec db1{.name = "db1", .type = WparType::kSystem, .address = subnet_ + ".50"};
  EXPECT_TRUE(plan_wpar_network(root_, db1).has_value()) << "its own address is no conflict";
}

TEST_F(VethWpar, CleanupOfALostWparDetachesWhatItsRecordNamesOnce) {
  ASSERT_TRUE(attach_veth(*plan_, wpar_->pid()).has_value());
  define("web1", subnet_ + ".50");
  WparRecord lost{.state = WparState::kActive, .supervisor_pid = gone_pid(), .network = *plan_};
  ASSERT_TRUE(files("web1").write_record(lost).has_value());
  auto cleaned = cleanup_lost_wpar(files("web1"));
  ASSERT_TRUE(cleaned.has_value()) << cleaned.error().message;
  EXPECT_TRUE(*cleaned);
  EXPECT_FALSE(link_exists(plan_->host_ifname));
  EXPECT_EQ(proxy_entries().find(subnet_ + ".50"), std::string::npos) << proxy_entries();
  auto record = files("web1").read_record();
  ASSERT_TRUE(record.has_value());
  EXPECT_FALSE(record->network.has_value());
  EXPECT_EQ(record->state, WparState::kActive) << "marking it lost is the agent's call";
  EXPECT_EQ(cleanup_lost_wpar(files("web1")), Result<bool>(false)) << "nothing left to detach";
  EXPECT_EQ(cleanup_lost_wpar(files("never-started")), Result<bool>(false));
}

TEST_F(VethWpar, ASystemWparGetsItsAddressAndLosesItWhenItsInitDies) {
  if (!overlay()) GTEST_SKIP() << "the kernel has no overlayfs";
  define("web1", subnet_ + ".60");
  auto started = start("web1");
  ASSERT_TRUE(started.has_value()) << started.error().message;
  ASSERT_TRUE(started->network.has_value());
  const VethPlan plan = *started->network;
  EXPECT_EQ(plan.address, *parse_ipv4(subnet_ + ".60"));
  EXPECT_EQ(plan.host_interface, h_);
  EXPECT_TRUE(link_exists(plan.host_ifname));
  EXPECT_NE(proxy_entries().find(subnet_ + ".60"), std::string::npos) << proxy_entries();
  auto inside = run({"nsenter", fmt::format("--net=/proc/{}/ns/net", started->workload_pid), "ip",
                     "-4", "addr", "show", "dev", "eth0"});
  EXPECT_NE(inside.output.find(subnet_ + ".60/32"), std::string::npos) << inside.output;

  // The init dies on its own: the supervisor detaches once its processes are gone.
  ASSERT_EQ(::kill(started->workload_pid, SIGKILL), 0);
  ASSERT_TRUE(wait_until_ended(files("web1"), 10s));
  auto record = files("web1").read_record();
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->state, WparState::kDefined);
  EXPECT_FALSE(record->network.has_value()) << record->error;
  EXPECT_FALSE(link_exists(plan.host_ifname));
  EXPECT_EQ(proxy_entries().find(subnet_ + ".60"), std::string::npos) << proxy_entries();
}

TEST_F(VethWpar, ASystemWparWhoseAttachFailsIsBrokenAndLeavesNoNetwork) {
  if (!overlay()) GTEST_SKIP() << "the kernel has no overlayfs";
  define("web1", subnet_ + ".50");
  // Someone else routes the address already: the attach fails half-way.
  ASSERT_EQ(run({"ip", "route", "add", subnet_ + ".50/32", "dev", h_}).code, 0);
  auto started = start("web1");
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find("cannot attach the network of address " + subnet_ + ".50"),
            std::string::npos)
      << started.error().message;
  auto record = files("web1").read_record();
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->state, WparState::kBroken);
  EXPECT_FALSE(record->network.has_value());
  EXPECT_FALSE(link_exists(veth_host_name(root_, "web1")));
  EXPECT_EQ(proxy_entries().find(subnet_ + ".50"), std::string::npos) << proxy_entries();
}

TEST_F(VethWpar, AStartWhoseAddressWasTakenMeanwhileIsRefusedBeforeAnythingIsMade) {
  define("web1", subnet_ + ".50");
  define("db1", subnet_ + ".50");  // as if written behind mkwpar's back
  auto started = start("web1");
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find("is already used by WPAR db1"), std::string::npos)
      << started.error().message;
  EXPECT_FALSE(link_exists(veth_host_name(root_, "web1")));
}

}  // namespace
}  // namespace wpm::runtime
