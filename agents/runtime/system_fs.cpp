#include "agents/runtime/system_fs.h"

#include <fmt/format.h>
#include <sys/mount.h>

#include <algorithm>

namespace wpm::runtime {
namespace {

using Kind = MountStep::Kind;

// Small tmpfs sizes: /dev holds only nodes and links; /dev/shm and /run are
// bounded so a WPAR cannot fill the host's memory through them (the memory
// cgroup limits the rest).
constexpr char kDevTmpfsOptions[] = "mode=755,size=64k";
constexpr char kShmOptions[] = "mode=1777,size=65536k";
constexpr char kRunOptions[] = "mode=755,size=65536k";
constexpr char kMaskOptions[] = "mode=755,size=16k";

MountStep mount(std::string source, std::string target, std::string fstype, uint64_t flags,
                std::string data = {}) {
  return MountStep{Kind::kMount, std::move(source), std::move(target), std::move(fstype),
                   flags,        std::move(data)};
}

MountStep bind(std::string source, std::string target, uint64_t flags) {
  return MountStep{Kind::kBind, std::move(source), std::move(target), {}, flags};
}

void add_dev(std::vector<MountStep>& out, const std::string& root, std::optional<uint32_t> root_id) {
  out.push_back(
      mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, kDevTmpfsOptions));
  struct Node {
    const char* name;
    uint32_t major, minor;
  };
  for (const Node& n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7},
                        Node{"random", 1, 8}, Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    out.push_back(
        MountStep{Kind::kDevice, {}, root + "/dev/" + n.name, {}, 0, {}, 0666, n.major, n.minor});
  }
  // gid 5 is the tty group on Debian and most distributions (devpts default).
  out.push_back(mount("devpts", root + "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                      fmt::format("newinstance,ptmxmode=0666,mode=0620,gid={}", root_id.value_or(0) + 5)));
  out.push_back(
      mount("shm", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, kShmOptions));
  out.push_back(mount("mqueue", root + "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC));
  for (const auto& [link, to] :
       {std::pair{"ptmx", "pts/ptmx"}, std::pair{"fd", "/proc/self/fd"},
        std::pair{"stdin", "/proc/self/fd/0"}, std::pair{"stdout", "/proc/self/fd/1"},
        std::pair{"stderr", "/proc/self/fd/2"}}) {
    out.push_back(MountStep{Kind::kSymlink, to, root + "/dev/" + link});
  }
  // Nothing more is made in /dev: the nodes above are the WPAR's devices.
  out.push_back(mount("", root + "/dev", "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_STRICTATIME,
                      kDevTmpfsOptions));
}

bool under(const std::string& path, const std::string& dir) {
  return path == dir || path.starts_with(dir + "/");
}

}  // namespace

SystemFsPaths SystemFsPaths::of(const std::string& d) {
  return SystemFsPaths{d + "/fs",     d + "/rootfs",  d + "/fs/upper", d + "/fs/work", d + "/fs/tmp",
                       d + "/fs/home", d + "/fs/var",   d + "/fs/root",  d + "/lower"};
}

std::string lock_passwords(std::string_view shadow) {
  std::string out;
  size_t start = 0;
  while (start < shadow.size()) {
    size_t end = shadow.find('\n', start);
    std::string_view line = shadow.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    size_t first = line.find(':');
    if (first == std::string_view::npos) {
      out.append(line);
    } else {
      size_t second = line.find(':', first + 1);
      out.append(line.substr(0, first + 1));
      out.push_back('*');
      if (second != std::string_view::npos) out.append(line.substr(second));
    }
    out.push_back('\n');
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

std::vector<std::string> read_only_host_dirs(const std::vector<HostRootEntry>& host_root) {
  std::vector<std::string> out;
  for (const auto& e : host_root) {
    bool system = e.name == "usr" || e.name == "opt" || e.name == "bin" || e.name == "sbin" ||
                  e.name.starts_with("lib");
    if (system && e.kind == HostRootEntry::Kind::kDirectory) out.push_back("/" + e.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string hosts_file(const std::string& hostname) {
  return fmt::format(
      "127.0.0.1\tlocalhost\n127.0.1.1\t{}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
      "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
      hostname);
}

std::vector<MountStep> system_wpar_mounts(const SystemFsInput& in) {
  const SystemFsPaths p = SystemFsPaths::of(in.wpar_dir);
  const std::string& r = p.rootfs;
  std::vector<MountStep> out;
  // The lower layer is the host's root file system alone (overlayfs does not
  // follow the mounts below it), never written: writes go to the upper layer.
  // nodev: no device node the WPAR makes on its file systems opens a device.
  // Idmapped, the lower layer is a copy of the host's root whose files show
  // their owners in the WPAR's range (its own mount alone, as overlayfs reads it).
  if (in.idmapped) out.push_back(MountStep{Kind::kIdmappedBind, "/", p.lower, {}, MS_NODEV});
  out.push_back(mount("overlay", r, "overlay", MS_NODEV,
                      fmt::format("lowerdir={},upperdir={},workdir={}", in.idmapped ? p.lower : "/", p.upper,
                                  p.work)));
  for (const auto& dir : read_only_host_dirs(in.host_root)) {
    if (in.idmapped) {
      out.push_back(MountStep{Kind::kIdmappedBind, dir, r + dir, {}, MS_NOSUID | MS_NODEV});
    } else {
      out.push_back(bind(dir, r + dir, MS_RDONLY | MS_NOSUID | MS_NODEV));
    }
  }
  out.push_back(bind(p.tmp, r + "/tmp", MS_NOSUID | MS_NODEV));
  out.push_back(bind(p.home, r + "/home", MS_NOSUID | MS_NODEV));
  out.push_back(bind(p.var, r + "/var", MS_NODEV));
  out.push_back(bind(p.root, r + "/root", MS_NODEV));
  // Host directories the WPAR must not read: an empty tmpfs over each, made
  // read-only once the shared directory (which may lie below) is bound.
  std::vector<std::string> masks;
  for (const auto& dir : in.masked_dirs) {
    bool hidden = false;
    for (const char* priv : {"/tmp", "/home", "/var", "/root"}) hidden = hidden || under(dir, priv);
    for (const auto& other : in.masked_dirs) hidden = hidden || (other != dir && under(dir, other));
    if (!hidden && dir.starts_with("/") && dir != "/" &&
        std::find(masks.begin(), masks.end(), dir) == masks.end()) {
      masks.push_back(dir);
    }
  }
  for (const auto& dir : masks) {
    out.push_back(mount("tmpfs", r + dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, kMaskOptions));
  }
  if (!in.shared_dir.empty())
    out.push_back(bind(in.shared_dir, r + in.shared_dir, MS_NOSUID | MS_NODEV));
  if (!in.restore_dir.empty())
    out.push_back(bind(in.restore_dir, r + in.restore_dir, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC));
  for (const auto& dir : masks) {
    out.push_back(mount("", r + dir, "", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, kMaskOptions));
  }
  out.push_back(mount("proc", r + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC));
  // As container runtimes do: sysctls and the sysrq trigger act on the whole host.
  out.push_back(
      bind(r + "/proc/sys", r + "/proc/sys", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC));
  MountStep sysrq = bind(r + "/proc/sysrq-trigger", r + "/proc/sysrq-trigger",
                         MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
  sysrq.if_present = true;  // absent without CONFIG_MAGIC_SYSRQ
  out.push_back(sysrq);
  out.push_back(mount("sysfs", r + "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC));
  add_dev(out, r, in.root_id);
  out.push_back(mount("tmpfs", r + "/run", "tmpfs", MS_NOSUID | MS_NODEV,
                      in.root_id ? fmt::format("{},uid={},gid={}", kRunOptions, *in.root_id, *in.root_id)
                                 : std::string(kRunOptions)));
  out.push_back(MountStep{Kind::kFile, in.hostname + "\n", r + "/etc/hostname"});
  out.push_back(MountStep{Kind::kFile, hosts_file(in.hostname), r + "/etc/hosts"});
  if (in.first_start) {
    // The host's secrets never reach the WPAR: the overlay records each
    // removal as a whiteout and each file as the WPAR's own.
    for (const char* secret : {"/etc/shadow-", "/etc/gshadow-", "/etc/ssl/private", "/etc/wpm",
                               "/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ecdsa_key",
                               "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_dsa_key"}) {
      out.push_back(MountStep{Kind::kRemove, {}, r + secret});
    }
    if (!in.sanitized_shadow.empty()) out.push_back(MountStep{Kind::kFile, in.sanitized_shadow, r + "/etc/shadow", {}, 0, {}, 0640});
    if (!in.sanitized_gshadow.empty()) out.push_back(MountStep{Kind::kFile, in.sanitized_gshadow, r + "/etc/gshadow", {}, 0, {}, 0640});
  }
  return out;
}

}  // namespace wpm::runtime
