#include "agents/runtime/veth.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>

#include "schemas/assert.h"

namespace wpm::runtime {
namespace {

// ---- pure helpers -----------------------------------------------------------

uint64_t fnv1a64(uint64_t hash, std::string_view bytes) {
  for (unsigned char c : bytes) hash = (hash ^ c) * 0x100000001b3ULL;
  return hash;
}

std::string where_prefix(VethNamespace where) {
  return where == VethNamespace::kWpar ? "in the WPAR: " : "";
}

std::string route_destination(const VethOperation& op) {
  return op.prefix == 0 ? "default" : fmt::format("{}/{}", format_ipv4(op.address), op.prefix);
}

// ---- rtnetlink --------------------------------------------------------------

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }

 private:
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_;
};

// One rtnetlink request: the netlink header, the family header, attributes.
class Request {
 public:
  template <typename FamilyHeader>
  Request(uint16_t type, uint16_t flags, const FamilyHeader& family) {
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
    append(&h, sizeof h);
    append(&family, sizeof family);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    rtattr a{};
    a.rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    a.rta_type = type;
    append(&a, sizeof a);
    append(data, len);
  }
  void attr_string(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
  void attr_u32(uint16_t type, uint32_t v) { attr(type, &v, sizeof v); }
  void attr_ipv4(uint16_t type, uint32_t host_order) { attr_u32(type, htonl(host_order)); }
  // A nested attribute: begin() returns its offset, end() writes its length.
  size_t begin(uint16_t type) {
    size_t at = bytes_.size();
    attr(type, nullptr, 0);
    return at;
  }
  template <typename FamilyHeader>
  void raw(const FamilyHeader& h) {
    append(&h, sizeof h);
  }
  void end(size_t at) {
    auto len = static_cast<uint16_t>(bytes_.size() - at);
    std::memcpy(bytes_.data() + at, &len, sizeof len);  // rta_len is rtattr's first field
  }
  std::vector<uint8_t>& finish(uint32_t seq) {
    auto len = static_cast<uint32_t>(bytes_.size());
    std::memcpy(bytes_.data() + offsetof(nlmsghdr, nlmsg_len), &len, sizeof len);
    std::memcpy(bytes_.data() + offsetof(nlmsghdr, nlmsg_seq), &seq, sizeof seq);
    return bytes_;
  }

 private:
  void append(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
    bytes_.resize(RTA_ALIGN(bytes_.size()), 0);  // RTA_ALIGN == NLMSG_ALIGN == 4
  }
  std::vector<uint8_t> bytes_;
};

// errno of a failed request, local or from the kernel's answer.
using Errno = int;
template <typename T>
using NlResult = std::expected<T, Errno>;

constexpr int kAnswerTimeoutS = 5;
constexpr int kAnswerReadsMax = 64;  // replies plus the ack of one request

class Netlink {
 public:
  // An rtnetlink socket in the network namespace `netns_fd` refers to, or in
  // ours when it is -1. The namespace is entered by a short-lived thread, so
  // the calling thread never changes namespace; the socket stays bound to the
  // namespace it was created in.
  static NlResult<Netlink> open(int netns_fd) {
    int fd = -1;
    Errno err = 0;
    auto make = [&] {
      if (netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) != 0) {
        err = errno;
        return;
      }
      fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
      if (fd < 0) err = errno;
    };
    if (netns_fd < 0) {
      make();
    } else {
      std::thread(make).join();
    }
    if (fd < 0) return std::unexpected(err);
    UniqueFd owned(fd);
    timeval tv{kAnswerTimeoutS, 0};
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
      return std::unexpected(errno);
    return Netlink(std::move(owned));
  }

  // Sends `req` and waits for its ack; returns the first reply message (empty
  // for requests that only get the ack).
  NlResult<std::vector<uint8_t>> transact(Request& req) {
    uint32_t seq = ++seq_;
    auto& bytes = req.finish(seq);
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(fd_.get(), bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                 sizeof kernel) < 0) {
      return std::unexpected(errno);
    }
    std::vector<uint8_t> reply;
    alignas(nlmsghdr) uint8_t buf[32768];  // more than one link's full description
    for (int reads = 0; reads < kAnswerReadsMax; ++reads) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return std::unexpected(errno == EAGAIN ? ETIMEDOUT : errno);
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_seq != seq) continue;  // a stale answer to an earlier, timed-out request
        if (h->nlmsg_type == NLMSG_ERROR) {
          const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
          if (e->error != 0) return std::unexpected(-e->error);
          return reply;
        }
        if (reply.empty())
          reply.assign(reinterpret_cast<uint8_t*>(h), reinterpret_cast<uint8_t*>(h) + h->nlmsg_len);
      }
    }
    return std::unexpected(EPROTO);
  }

  // The index of link `name` in this socket's namespace; ENODEV if none.
  NlResult<int> link_index(const std::string& name) {
    Request req(RTM_GETLINK, 0, ifinfomsg{});
    req.attr_string(IFLA_IFNAME, name);
    auto reply = transact(req);
    if (!reply) return std::unexpected(reply.error());
    if (reply->size() < NLMSG_LENGTH(sizeof(ifinfomsg))) return std::unexpected(EPROTO);
    ifinfomsg info{};
    std::memcpy(&info, reply->data() + NLMSG_HDRLEN, sizeof info);
    return info.ifi_index;
  }

 private:
  explicit Netlink(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
  uint32_t seq_ = 0;
};

NlResult<void> create_pair(Netlink& nl, const VethOperation& op, int wpar_netns_fd) {
  Request req(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, ifinfomsg{});
  req.attr_string(IFLA_IFNAME, op.ifname);
  size_t linkinfo = req.begin(IFLA_LINKINFO);
  req.attr_string(IFLA_INFO_KIND, "veth");
  size_t data = req.begin(IFLA_INFO_DATA);
  size_t peer = req.begin(VETH_INFO_PEER);
  req.raw(ifinfomsg{});
  req.attr_string(IFLA_IFNAME, op.peer_ifname);
  // The peer is born in the WPAR's namespace under its final name: nothing
  // named eth0 ever appears in the host's namespace.
  req.attr_u32(IFLA_NET_NS_FD, static_cast<uint32_t>(wpar_netns_fd));
  req.end(peer);
  req.end(data);
  req.end(linkinfo);
  auto r = nl.transact(req);
  if (!r) return std::unexpected(r.error());
  return {};
}

NlResult<void> apply_with_index(Netlink& nl, const VethOperation& op, int index) {
  using K = VethOperation::Kind;
  std::optional<Request> req;
  switch (op.kind) {
    case K::kLinkUp: {
      ifinfomsg m{};
      m.ifi_index = index;
      m.ifi_flags = IFF_UP;
      m.ifi_change = IFF_UP;
      req.emplace(RTM_NEWLINK, 0, m);
      break;
    }
    case K::kAddAddress: {
      ifaddrmsg m{AF_INET, static_cast<uint8_t>(op.prefix), 0, RT_SCOPE_UNIVERSE,
                  static_cast<uint32_t>(index)};
      req.emplace(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, m);
      req->attr_ipv4(IFA_LOCAL, op.address);
      req->attr_ipv4(IFA_ADDRESS, op.address);
      break;
    }
    case K::kAddRoute: {
      rtmsg m{};
      m.rtm_family = AF_INET;
      m.rtm_dst_len = static_cast<uint8_t>(op.prefix);
      m.rtm_table = RT_TABLE_MAIN;
      m.rtm_protocol = RTPROT_STATIC;
      m.rtm_scope = op.gateway != 0 ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
      m.rtm_type = RTN_UNICAST;
      // Exclusive: a route to the WPAR's address that already exists belongs
      // to someone else (another agent's WPAR); never take it over.
      req.emplace(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, m);
      if (op.prefix > 0) req->attr_ipv4(RTA_DST, op.address);
      if (op.gateway != 0) req->attr_ipv4(RTA_GATEWAY, op.gateway);
      if (op.source != 0) req->attr_ipv4(RTA_PREFSRC, op.source);
      req->attr_u32(RTA_OIF, static_cast<uint32_t>(index));
      break;
    }
    case K::kAddProxyNeighbour:
    case K::kDeleteProxyNeighbour: {
      ndmsg m{};
      m.ndm_family = AF_INET;
      m.ndm_ifindex = index;
      m.ndm_state = NUD_PERMANENT;
      m.ndm_flags = NTF_PROXY;
      bool add = op.kind == K::kAddProxyNeighbour;
      req.emplace(add ? RTM_NEWNEIGH : RTM_DELNEIGH, add ? NLM_F_CREATE | NLM_F_REPLACE : 0, m);
      req->attr_ipv4(NDA_DST, op.address);
      break;
    }
    case K::kDeleteLink: {
      ifinfomsg m{};
      m.ifi_index = index;
      req.emplace(RTM_DELLINK, 0, m);
      break;
    }
    case K::kCreatePair:
    case K::kEnableForwarding:
      break;
  }
  WPM_ASSERT(req.has_value(), "'{}' is not a link operation", describe(op));
  auto r = nl.transact(*req);
  if (!r) return std::unexpected(r.error());
  return {};
}

bool is_delete(VethOperation::Kind kind) {
  return kind == VethOperation::Kind::kDeleteLink ||
         kind == VethOperation::Kind::kDeleteProxyNeighbour;
}

// Runs one netlink operation. Deletes treat "already gone" as done.
NlResult<void> apply(Netlink& nl, const VethOperation& op, int wpar_netns_fd) {
  if (op.kind == VethOperation::Kind::kCreatePair) return create_pair(nl, op, wpar_netns_fd);
  auto index = nl.link_index(op.ifname);
  if (!index) {
    if (is_delete(op.kind) && index.error() == ENODEV) return {};
    return std::unexpected(index.error());
  }
  auto r = apply_with_index(nl, op, *index);
  if (!r && is_delete(op.kind) && (r.error() == ENODEV || r.error() == ENOENT)) return {};
  return r;
}

// ---- sysctl and namespaces --------------------------------------------------

constexpr char kIpForward[] = "/proc/sys/net/ipv4/ip_forward";

// Turns IPv4 forwarding on; true when it was off.
NlResult<bool> enable_forwarding() {
  UniqueFd fd(::open(kIpForward, O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) return std::unexpected(errno);
  char c = 0;
  if (::read(fd.get(), &c, 1) != 1) return std::unexpected(errno);
  if (c == '1') return false;
  if (::pwrite(fd.get(), "1\n", 2, 0) != 2) return std::unexpected(errno);
  return true;
}

std::string hint(const VethOperation& op, Errno err, const VethPlan& plan) {
  using K = VethOperation::Kind;
  if (err == EPERM || err == EACCES)
    return "the agent needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)";
  if (op.kind == K::kCreatePair && err == EEXIST) {
    return fmt::format(
        "a link named {} or {} in the WPAR already exists; detach the WPAR's network "
        "(or remove the stale link) first",
        op.ifname, op.peer_ifname);
  }
  if (op.kind == K::kAddRoute && op.where == VethNamespace::kHost && err == EEXIST) {
    return fmt::format(
        "this host already routes {} elsewhere (another agent's WPAR?); remove that "
        "route or choose another address",
        format_ipv4(plan.address));
  }
  if (err == ENODEV)
    return fmt::format("interface {} is gone; plan the WPAR's network again", op.ifname);
  if (err == ETIMEDOUT) return "the kernel did not answer; retry";
  return "check the host's network configuration and retry";
}

Error operation_error(const VethPlan& plan, const VethOperation& op, Errno err) {
  ErrorCode code = err == EEXIST ? ErrorCode::kInvalidRequest : ErrorCode::kIo;
  return Error{code, fmt::format("network of WPAR address {}: '{}' failed: {}; {}",
                                 format_ipv4(plan.address), describe(op), std::strerror(err),
                                 hint(op, err, plan))};
}

Result<UniqueFd> open_wpar_netns(pid_t pid) {
  std::string path = fmt::format("/proc/{}/ns/net", pid);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    int err = errno;
    return fail(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                fmt::format("cannot open the network namespace of process {} ({}: {}); is the WPAR "
                            "running?",
                            pid, path, std::strerror(err)));
  }
  struct stat ours {
  }, theirs{};
  if (::stat("/proc/self/ns/net", &ours) != 0 || ::fstat(fd.get(), &theirs) != 0) {
    return fail(ErrorCode::kIo,
                fmt::format("cannot compare network namespaces: {}", std::strerror(errno)));
  }
  if (ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino) {
    return fail(
        ErrorCode::kInvalidRequest,
        fmt::format("process {} shares the host's network namespace; a WPAR with an address "
                    "needs its own (start it in a new network namespace)",
                    pid));
  }
  return fd;
}

}  // namespace

// ---- planning (pure) --------------------------------------------------------

std::string veth_host_name(std::string_view agent_id, std::string_view wpar) {
  uint64_t h = fnv1a64(0xcbf29ce484222325ULL, agent_id);
  h = fnv1a64(h, std::string_view("\0", 1));  // ("ab","c") and ("a","bc") differ
  h = fnv1a64(h, wpar);
  auto name = fmt::format("wpm{:012x}", h & 0xFFFF'FFFF'FFFFULL);
  static_assert(3 + 12 <= kIfnameMax);
  return name;
}

std::expected<VethPlan, Refusal> plan_veth(std::string_view agent_id, const std::string& wpar,
                                           std::string_view address, const std::string& host,
                                           const std::vector<HostInterface>& interfaces,
                                           const std::map<uint32_t, std::string>& in_use) {
  if (auto refusal = check_wpar_address(address, wpar, host, interfaces, in_use)) {
    return std::unexpected(std::move(*refusal));
  }
  uint32_t a = *parse_ipv4(address);  // checked above
  // The most specific subnet holding the address, as the kernel would route.
  const HostInterface* home = nullptr;
  for (const auto& i : interfaces) {
    if (i.net.contains(a) && (home == nullptr || i.net.prefix > home->net.prefix)) home = &i;
  }
  WPM_ASSERT(home != nullptr, "check_wpar_address accepted {} outside every interface", address);
  VethPlan plan;
  plan.host_ifname = veth_host_name(agent_id, wpar);
  plan.address = a;
  plan.host_interface = home->name;
  plan.host_address = home->net.address;
  return plan;
}

std::vector<VethOperation> attach_operations(const VethPlan& p) {
  using K = VethOperation::Kind;
  constexpr auto kHost = VethNamespace::kHost;
  constexpr auto kWpar = VethNamespace::kWpar;
  return {
      {.kind = K::kCreatePair,
       .where = kHost,
       .ifname = p.host_ifname,
       .peer_ifname = p.wpar_ifname},
      {.kind = K::kLinkUp, .where = kWpar, .ifname = "lo"},
      {.kind = K::kAddAddress,
       .where = kWpar,
       .ifname = p.wpar_ifname,
       .address = p.address,
       .prefix = 32},
      {.kind = K::kLinkUp, .where = kWpar, .ifname = p.wpar_ifname},
      {.kind = K::kAddRoute,
       .where = kWpar,
       .ifname = p.wpar_ifname,
       .address = p.gateway,
       .prefix = 32},
      {.kind = K::kAddRoute,
       .where = kWpar,
       .ifname = p.wpar_ifname,
       .prefix = 0,
       .gateway = p.gateway},
      {.kind = K::kAddAddress,
       .where = kHost,
       .ifname = p.host_ifname,
       .address = p.gateway,
       .prefix = 32},
      {.kind = K::kLinkUp, .where = kHost, .ifname = p.host_ifname},
      {.kind = K::kAddRoute,
       .where = kHost,
       .ifname = p.host_ifname,
       .address = p.address,
       .prefix = 32,
       .source = p.host_address},
      {.kind = K::kAddProxyNeighbour,
       .where = kHost,
       .ifname = p.host_interface,
       .address = p.address},
      {.kind = K::kEnableForwarding, .where = kHost},
  };
}

std::vector<VethOperation> detach_operations(const VethPlan& p) {
  using K = VethOperation::Kind;
  return {
      {.kind = K::kDeleteLink, .where = VethNamespace::kHost, .ifname = p.host_ifname},
      {.kind = K::kDeleteProxyNeighbour,
       .where = VethNamespace::kHost,
       .ifname = p.host_interface,
       .address = p.address},
  };
}

std::string describe(const VethOperation& op) {
  using K = VethOperation::Kind;
  std::string cmd;
  switch (op.kind) {
    case K::kCreatePair:
      cmd = fmt::format("ip link add {} type veth peer name {} netns WPAR", op.ifname,
                        op.peer_ifname);
      break;
    case K::kLinkUp:
      cmd = fmt::format("ip link set {} up", op.ifname);
      break;
    case K::kAddAddress:
      cmd =
          fmt::format("ip -4 addr add {}/{} dev {}", format_ipv4(op.address), op.prefix, op.ifname);
      break;
    case K::kAddRoute:
      cmd = fmt::format("ip -4 route add {}{} dev {}{}{}", route_destination(op),
                        op.gateway != 0 ? " via " + format_ipv4(op.gateway) : "", op.ifname,
                        op.gateway == 0 ? " scope link" : "",
                        op.source != 0 ? " src " + format_ipv4(op.source) : "");
      break;
    case K::kAddProxyNeighbour:
      cmd = fmt::format("ip neigh replace proxy {} dev {}", format_ipv4(op.address), op.ifname);
      break;
    case K::kEnableForwarding:
      cmd = "sysctl -w net.ipv4.ip_forward=1";
      break;
    case K::kDeleteLink:
      cmd = fmt::format("ip link del {}", op.ifname);
      break;
    case K::kDeleteProxyNeighbour:
      cmd = fmt::format("ip neigh del proxy {} dev {}", format_ipv4(op.address), op.ifname);
      break;
  }
  return where_prefix(op.where) + cmd;
}

// ---- the host ---------------------------------------------------------------

Result<std::vector<HostInterface>> host_interfaces() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    return fail(ErrorCode::kIo, fmt::format("getifaddrs: {}", std::strerror(errno)));
  }
  std::vector<HostInterface> out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_netmask == nullptr || i->ifa_addr->sa_family != AF_INET)
      continue;
    if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    sockaddr_in addr{}, mask{};
    std::memcpy(&addr, i->ifa_addr, sizeof addr);
    std::memcpy(&mask, i->ifa_netmask, sizeof mask);
    Ipv4Net net{ntohl(addr.sin_addr.s_addr), std::popcount(ntohl(mask.sin_addr.s_addr))};
    // Our own host ends carry only the gateway /32: never a home for a WPAR.
    if (net == Ipv4Net{kVethGateway, 32}) continue;
    out.push_back(HostInterface{i->ifa_name, net});
  }
  ::freeifaddrs(list);
  return out;
}

Result<VethAttachment> attach_veth(const VethPlan& plan, pid_t netns_pid) {
  auto netns = open_wpar_netns(netns_pid);
  if (!netns) return std::unexpected(netns.error());
  auto host = Netlink::open(-1);
  if (!host)
    return fail(ErrorCode::kIo, fmt::format("rtnetlink socket: {}", std::strerror(host.error())));
  auto wpar = Netlink::open(netns->get());
  if (!wpar) {
    return fail(ErrorCode::kIo,
                fmt::format("rtnetlink socket in the network namespace of process {}: {}",
                            netns_pid, std::strerror(wpar.error())));
  }
  VethAttachment attachment;
  using K = VethOperation::Kind;
  bool created = false;
  bool proxied = false;
  for (const auto& op : attach_operations(plan)) {
    NlResult<void> r;
    if (op.kind == K::kEnableForwarding) {
      auto changed = enable_forwarding();
      if (changed)
        attachment.forwarding_enabled = *changed;
      else
        r = std::unexpected(changed.error());
    } else {
      proxied = proxied || op.kind == K::kAddProxyNeighbour;
      r = apply(op.where == VethNamespace::kHost ? *host : *wpar, op, netns->get());
    }
    if (r) {
      created = created || op.kind == K::kCreatePair;
      continue;
    }
    Error error = operation_error(plan, op, r.error());
    // Undo only what this attach made: a link that existed before is not ours.
    if (created) {
      for (const auto& undo : detach_operations(plan)) {
        if (undo.kind == K::kDeleteProxyNeighbour && !proxied) continue;
        if (auto u = apply(*host, undo, -1); !u) {
          error.message += fmt::format("; undoing it failed too ('{}': {}), run detach",
                                       describe(undo), std::strerror(u.error()));
        }
      }
    }
    return std::unexpected(std::move(error));
  }
  // Strict reverse-path filtering on the host end: the host forwards only
  // what the WPAR sends from its own address (its /32 route points back
  // through this link), so its root cannot spoof others on the subnet.
  std::string rp_filter = fmt::format("/proc/sys/net/ipv4/conf/{}/rp_filter", plan.host_ifname);
  UniqueFd rp(::open(rp_filter.c_str(), O_WRONLY | O_CLOEXEC));
  if (rp.get() < 0 || ::write(rp.get(), "1\n", 2) != 2) {
    Error error{ErrorCode::kIo, fmt::format("network of WPAR address {}: cannot set {}: {}",
                                            format_ipv4(plan.address), rp_filter, std::strerror(errno))};
    (void)detach_veth(plan);
    return std::unexpected(std::move(error));
  }
  return attachment;
}

Result<void> detach_veth(const VethPlan& plan) {
  auto host = Netlink::open(-1);
  if (!host)
    return fail(ErrorCode::kIo, fmt::format("rtnetlink socket: {}", std::strerror(host.error())));
  for (const auto& op : detach_operations(plan)) {
    if (auto r = apply(*host, op, -1); !r)
      return std::unexpected(operation_error(plan, op, r.error()));
  }
  return {};
}

}  // namespace wpm::runtime
