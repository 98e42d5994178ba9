#include "agents/runtime/system_wpar.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/close_range.h>
#include <linux/magic.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <utility>
#include <optional>

#include "agents/profile/profile.h"
#include "agents/runtime/capabilities.h"
#include "agents/runtime/id_map.h"
#include "agents/runtime/seccomp.h"
#include "agents/runtime/system_fs.h"
#include "schemas/assert.h"

namespace wpm::runtime {
namespace {

namespace fs = std::filesystem;

constexpr unsigned long kNamespaces =
    CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET;
// The namespaces clogin joins, in order: the mount namespace last, since its
// /proc is no longer the host's once entered (all are opened before).
constexpr const char* kLoginNamespaces[] = {"ipc", "uts", "net", "mnt"};
// An application WPAR's (not privileged): the host's network and host name.
constexpr const char* kAppLoginNamespaces[] = {"ipc", "mnt"};
constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// The init's descriptors: the supervisor's go-ahead, the report pipe, the
// signalfd and the console are renumbered to these before anything else.
constexpr int kFdFirstFree = 3;
constexpr int kFdParkedMin = 64;  // above every descriptor the supervisor holds

std::string errno_text(const std::string& what) {
  return fmt::format("{}: {}", what, std::strerror(errno));
}

void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

std::vector<HostRootEntry> list_host_root() {
  std::vector<HostRootEntry> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/", ec)) {
    auto st = e.symlink_status(ec);
    auto kind = fs::is_symlink(st)     ? HostRootEntry::Kind::kSymlink
                : fs::is_directory(st) ? HostRootEntry::Kind::kDirectory
                                       : HostRootEntry::Kind::kOther;
    out.push_back(HostRootEntry{e.path().filename(), kind});
  }
  return out;
}

// Makes the WPAR's directories; returns whether this is its first start
// (no upper layer yet).
Result<bool> prepare_dirs(const std::string& wpar_dir) {
  const SystemFsPaths p = SystemFsPaths::of(wpar_dir);
  std::error_code ec;
  const bool first = !fs::exists(p.upper, ec);
  const bool new_var = !fs::exists(p.var, ec);
  for (const auto& d : {p.rootfs, p.upper, p.work, p.tmp, p.home, p.var, p.root, p.lower}) {
    fs::create_directories(d, ec);
    if (ec) return fail(ErrorCode::kIo, fmt::format("cannot create {}: {}", d, ec.message()));
  }
  struct statfs st {};
  if (::statfs(p.fs.c_str(), &st) == 0 && st.f_type == OVERLAYFS_SUPER_MAGIC) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} lies on an overlay file system, which cannot hold a system WPAR's own "
                            "overlay layer; put the agent's data directory (--data) on ext4, xfs, btrfs or tmpfs",
                            p.fs));
  }
  // Host users never reach below fs/ (a set-uid file the WPAR's root made).
  if (::chmod(p.fs.c_str(), 0700) != 0 || ::chmod(p.root.c_str(), 0700) != 0 ||
      ::chmod(p.tmp.c_str(), 01777) != 0) {
    return fail(ErrorCode::kIo, errno_text("cannot set the modes under " + p.fs));
  }
  if (new_var) {
    // A private /var starts as a skeleton: the host's is not the WPAR's business.
    for (const char* d : {"tmp", "log", "lib", "cache", "spool", "mail", "opt", "local", "backups"}) {
      fs::create_directories(p.var + "/" + d, ec);
    }
    ::chmod((p.var + "/tmp").c_str(), 01777);
    fs::create_symlink("/run", p.var + "/run", ec);
    fs::create_symlink("/run/lock", p.var + "/lock", ec);
  }
  return first;
}

// ---- running the plan without ever leaving the WPAR's root -----------------------
//
// Every target lies under the WPAR's root, whose contents its root user
// controls (the overlay's upper layer): a link there must never make the
// init, which still sees the host and holds every capability, write, create
// or mount outside it. Paths are resolved with openat2(RESOLVE_IN_ROOT), so
// links resolve as they would inside the WPAR; creation happens relative to
// the resolved parent; mounts go on /proc/self/fd/N of the resolved target.

int open_in_root(int root_fd, const std::string& rel, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, root_fd, rel.empty() ? "." : rel.c_str(), &how, sizeof how));
}

std::string fd_path(int fd) { return fmt::format("/proc/self/fd/{}", fd); }

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// The directory `rel` under the root, made (0755) where missing.
Result<int> make_dirs_in_root(int root_fd, const std::string& rel) {
  std::string prefix;
  size_t start = 0;
  int fd = open_in_root(root_fd, "", O_PATH | O_DIRECTORY);
  while (start <= rel.size()) {
    size_t slash = rel.find('/', start);
    std::string part = rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    start = slash == std::string::npos ? rel.size() + 1 : slash + 1;
    if (part.empty()) continue;
    prefix += (prefix.empty() ? "" : "/") + part;
    int next = open_in_root(root_fd, prefix, O_PATH | O_DIRECTORY);
    if (next < 0 && errno == ENOENT) {
      if (::mkdirat(fd, part.c_str(), 0755) != 0 && errno != EEXIST) {
        int err = errno;
        ::close(fd);
        errno = err;
        return fail(ErrorCode::kIo, errno_text("cannot create /" + prefix + " in the WPAR"));
      }
      next = open_in_root(root_fd, prefix, O_PATH | O_DIRECTORY);
    }
    ::close(fd);
    if (next < 0) return fail(ErrorCode::kIo, errno_text("/" + prefix + " in the WPAR is not a directory"));
    fd = next;
  }
  return fd;
}

std::pair<std::string, std::string> split_parent(const std::string& rel) {
  auto slash = rel.rfind('/');
  if (slash == std::string::npos) return {"", rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

// Removes `name` in `dir_fd` and everything below it, never following a link.
void remove_tree(int dir_fd, const std::string& name) {
  if (::unlinkat(dir_fd, name.c_str(), 0) == 0 || errno == ENOENT) return;
  int sub = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (sub < 0) return;
  DIR* d = ::fdopendir(sub);
  if (d == nullptr) {
    ::close(sub);
    return;
  }
  std::vector<std::string> children;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") children.push_back(n);
  }
  for (const auto& c : children) remove_tree(::dirfd(d), c);
  ::closedir(d);
  ::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR);
}

uint64_t mount_attributes(uint64_t flags) {
  uint64_t attr = 0;
  if (flags & MS_RDONLY) attr |= MOUNT_ATTR_RDONLY;
  if (flags & MS_NOSUID) attr |= MOUNT_ATTR_NOSUID;
  if (flags & MS_NODEV) attr |= MOUNT_ATTR_NODEV;
  if (flags & MS_NOEXEC) attr |= MOUNT_ATTR_NOEXEC;
  return attr;
}

// What a step needs beyond itself in a WPAR with its own user namespace.
struct StepContext {
  int userns_fd = -1;               // the mapping of idmapped copies
  int64_t root_id = -1;  // the host id of the WPAR's root, which owns the files the plan writes; -1: none
};

// An idmapped copy of the host mount `source` on the directory `target_fd`.
// `recursive`: with the mounts below it (a host system directory); the
// overlay's lower layer is the host root's own mount alone, as overlayfs reads it.
Result<void> attach_idmapped(const MountStep& s, int target_fd, const StepContext& ctx, bool recursive) {
  auto tree = idmapped_clone(s.source, ctx.userns_fd, recursive);
  if (!tree) return std::unexpected(tree.error());
  Fd tree_fd(*tree);
  mount_attr attr{};
  attr.attr_set = mount_attributes(s.flags);
  if (attr.attr_set != 0 &&
      ::syscall(SYS_mount_setattr, tree_fd.fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0) {
    return fail(ErrorCode::kIo, errno_text("cannot set the flags of the idmapped copy of " + s.source));
  }
  if (::syscall(SYS_move_mount, tree_fd.fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
    return fail(ErrorCode::kIo, errno_text("cannot mount the idmapped copy of " + s.source));
  }
  return {};
}

Result<void> run_step(const MountStep& s, const std::string& rootfs, int root_fd, const StepContext& ctx) {
  const bool in_root = s.target.starts_with(rootfs + "/");
  if (s.kind == MountStep::Kind::kIdmappedBind && !in_root) {
    // The overlay's lower layer: a directory of ours, outside the root.
    Fd target(::open(s.target.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (target.fd < 0) return fail(ErrorCode::kIo, errno_text("cannot open " + s.target));
    return attach_idmapped(s, target.fd, ctx, false);
  }
  if (root_fd < 0 || !in_root) {
    // The root itself (the overlay, mounted first): a directory of ours.
    if (::mount(s.source.c_str(), s.target.c_str(), s.fstype.c_str(), s.flags,
                s.data.empty() ? nullptr : s.data.c_str()) != 0) {
      return fail(ErrorCode::kIo, errno_text(fmt::format("cannot mount {} ({}) on {}", s.source, s.fstype, s.target)));
    }
    return {};
  }
  const std::string rel = s.target.substr(rootfs.size() + 1);
  const std::string shown = "/" + rel;
  std::string source = s.source;
  std::optional<Fd> source_fd;
  if (s.kind == MountStep::Kind::kBind && source.starts_with(rootfs + "/")) {
    source_fd.emplace(open_in_root(root_fd, source.substr(rootfs.size() + 1), O_PATH));
    if (source_fd->fd < 0) {
      if (s.if_present && errno == ENOENT) return {};
      return fail(ErrorCode::kIo, errno_text("cannot open " + source.substr(rootfs.size())));
    }
    source = fd_path(source_fd->fd);
  } else if (s.if_present) {
    std::error_code ec;
    if (!fs::exists(s.source, ec)) return {};
  }
  auto [parent_rel, name] = split_parent(rel);
  switch (s.kind) {
    case MountStep::Kind::kIdmappedBind: {
      auto dir = make_dirs_in_root(root_fd, rel);
      if (!dir) return std::unexpected(dir.error());
      Fd target(*dir);
      return attach_idmapped(s, target.fd, ctx, true);
    }
    case MountStep::Kind::kMount:
    case MountStep::Kind::kBind: {
      struct stat st {};
      bool file_bind = s.kind == MountStep::Kind::kBind && ::stat(source.c_str(), &st) == 0 && !S_ISDIR(st.st_mode);
      bool remount = (s.flags & MS_REMOUNT) != 0;
      if (!remount) {
        if (file_bind) {
          auto parent = make_dirs_in_root(root_fd, parent_rel);
          if (!parent) return std::unexpected(parent.error());
          Fd pf(*parent);
          int f = ::openat(pf.fd, name.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
          if (f >= 0) ::close(f);
        } else {
          auto dir = make_dirs_in_root(root_fd, rel);
          if (!dir) return std::unexpected(dir.error());
          ::close(*dir);
        }
      }
      Fd target(open_in_root(root_fd, rel, O_PATH | (file_bind ? 0 : O_DIRECTORY)));
      if (target.fd < 0) return fail(ErrorCode::kIo, errno_text("cannot open " + shown + " in the WPAR"));
      if (s.kind == MountStep::Kind::kMount) {
        if (::mount(s.source.c_str(), fd_path(target.fd).c_str(), s.fstype.c_str(), s.flags,
                    s.data.empty() ? nullptr : s.data.c_str()) != 0) {
          return fail(ErrorCode::kIo, errno_text(fmt::format("cannot mount {} ({}) on {}", s.source, s.fstype, shown)));
        }
        return {};
      }
      if (::mount(source.c_str(), fd_path(target.fd).c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
        return fail(ErrorCode::kIo, errno_text(fmt::format("cannot bind {} on {}", s.source, shown)));
      }
      if (s.flags == 0) return {};
      // The flags apply to the bind and every mount below it (a separate
      // /usr/local stays read-only too).
      Fd bound(open_in_root(root_fd, rel, O_PATH));
      mount_attr attr{};
      attr.attr_set = mount_attributes(s.flags);
      if (bound.fd < 0 || ::syscall(SYS_mount_setattr, bound.fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr,
                                    sizeof attr) != 0) {
        return fail(ErrorCode::kIo, errno_text(fmt::format("cannot set the flags of {}", shown)));
      }
      return {};
    }
    case MountStep::Kind::kDevice:
    case MountStep::Kind::kSymlink:
    case MountStep::Kind::kFile:
    case MountStep::Kind::kRemove: {
      auto parent = s.kind == MountStep::Kind::kRemove ? [&]() -> Result<int> {
        int fd = open_in_root(root_fd, parent_rel, O_PATH | O_DIRECTORY);
        if (fd < 0) return fail(ErrorCode::kNotFound, "absent");
        return fd;
      }()
                                                       : make_dirs_in_root(root_fd, parent_rel);
      if (!parent) {
        if (s.kind == MountStep::Kind::kRemove) return {};  // nothing to remove
        return std::unexpected(parent.error());
      }
      Fd pf(*parent);
      if (s.kind == MountStep::Kind::kRemove) {
        // remove_tree needs a readable directory descriptor.
        Fd dir(::openat(pf.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (dir.fd >= 0) remove_tree(dir.fd, name);
        return {};
      }
      // Whatever is there (a link the WPAR planted, an old node) goes first.
      if (::unlinkat(pf.fd, name.c_str(), 0) != 0 && errno != ENOENT) {
        return fail(ErrorCode::kIo, errno_text("cannot replace " + shown + " in the WPAR"));
      }
      if (s.kind == MountStep::Kind::kDevice) {
        if (::mknodat(pf.fd, name.c_str(), S_IFCHR | s.mode, makedev(s.major, s.minor)) != 0 ||
            ::fchmodat(pf.fd, name.c_str(), s.mode, 0) != 0) {
          return fail(ErrorCode::kIo, errno_text("cannot create device " + shown));
        }
      } else if (s.kind == MountStep::Kind::kSymlink) {
        if (::symlinkat(s.source.c_str(), pf.fd, name.c_str()) != 0) {
          return fail(ErrorCode::kIo, errno_text("cannot create link " + shown));
        }
      } else {
        int fd = ::openat(pf.fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          s.mode != 0 ? s.mode : 0644);
        if (fd < 0) return fail(ErrorCode::kIo, errno_text("cannot write " + shown));
        write_all(fd, s.source);
        // The WPAR's root owns what the plan writes for it (its /etc/hostname, …).
        bool owned = ctx.root_id < 0 || ::fchown(fd, static_cast<uid_t>(ctx.root_id), static_cast<gid_t>(ctx.root_id)) == 0;
        ::close(fd);
        if (!owned) return fail(ErrorCode::kIo, errno_text("cannot give " + shown + " to the WPAR's root"));
      }
      return {};
    }
  }
  return {};
}

// The WPAR's loopback, down in a new network namespace, comes up (a WPAR
// without a network still talks to itself over 127.0.0.1).
Result<void> loopback_up() {
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return fail(ErrorCode::kIo, errno_text("socket"));
  ifreq req{};
  std::strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = ::ioctl(sock, SIOCGIFFLAGS, &req) == 0;
  req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP);
  ok = ok && ::ioctl(sock, SIOCSIFFLAGS, &req) == 0;
  int err = errno;
  ::close(sock);
  if (!ok) return fail(ErrorCode::kIo, fmt::format("cannot bring lo up: {}", std::strerror(err)));
  return {};
}

Result<void> pivot_into(const std::string& root) {
  // pivot_root replaces the caller's root directory. When the agent runs in a
  // chroot, that is not the mount namespace's root: the WPAR's root would
  // hang below the host's, and clogin (setns puts it at the namespace's
  // root) would land on the host. So the init first climbs to the real root
  // of its own (private) mount namespace: chroot into the new root while the
  // working directory stays outside it, walk up until ".." goes nowhere, and
  // make that the root. Outside a chroot this ends where it starts.
  int new_root = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (new_root < 0) return fail(ErrorCode::kIo, errno_text("cannot open " + root));
  Fd new_root_fd(new_root);
  if (::chdir("/") != 0 || !climb_to_namespace_root(root.c_str()))
    return fail(ErrorCode::kIo, errno_text("cannot find the mount namespace's root"));
  if (::fchdir(new_root_fd.fd) != 0) return fail(ErrorCode::kIo, errno_text("cannot enter " + root));
  // pivot_root(".", ".") stacks the old root on the new one; detaching it
  // leaves the WPAR's root alone (the runc way, no put_old directory).
  if (::syscall(SYS_pivot_root, ".", ".") != 0)
    return fail(ErrorCode::kIo, errno_text("pivot_root into " + root));
  if (::umount2(".", MNT_DETACH) != 0)
    return fail(ErrorCode::kIo, errno_text("cannot detach the host's root"));
  if (::chdir("/") != 0) return fail(ErrorCode::kIo, errno_text("cannot enter the new root"));
  return {};
}

std::vector<std::string> environment(const std::map<std::string, std::string>& extra,
                                     const char* term) {
  std::map<std::string, std::string> env = {
      {"PATH", kDefaultPath}, {"HOME", "/root"}, {"container", "wpm"}};
  if (term != nullptr) env["TERM"] = term;
  for (const auto& [k, v] : extra) env[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Everything the cloned init needs, prepared before the clone.
struct InitArgs {
  std::vector<MountStep> plan;
  std::string rootfs;
  std::string hostname;
  std::vector<std::string> capabilities;
  std::optional<SyscallFilter> filter;  // none: a privileged WPAR
  std::vector<std::string> command;
  std::vector<std::string> env;
  int go_fd = -1;
  int ready_fd = -1;
  int console_fd = -1;
  // Its own user namespace: its range, and (idmapped host layers) the
  // mapping's namespace for the copies; -1: the host's own mounts.
  std::optional<IdRange> ids;
  int userns_fd = -1;
};

// Starts the command (the init's child) and returns its pid, or why not.
Result<pid_t> start_command(InitArgs& a) {
  int exec_pipe[2];
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) return fail(ErrorCode::kIo, errno_text("pipe"));
  pid_t pid = ::fork();
  if (pid < 0) return fail(ErrorCode::kIo, errno_text("fork"));
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setsid();
    auto argv = pointers(a.command);
    auto envp = pointers(a.env);
    ::execvpe(argv[0], argv.data(), envp.data());
    int err = errno;
    (void)::write(exec_pipe[1], &err, sizeof err);
    ::_exit(127);
  }
  ::close(exec_pipe[1]);
  int err = 0;
  ssize_t got = ::read(exec_pipe[0], &err, sizeof err);
  ::close(exec_pipe[0]);
  if (got == sizeof err) {
    ::waitpid(pid, nullptr, 0);
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("cannot run '{}' in the WPAR: {}", a.command[0], std::strerror(err)));
  }
  return pid;
}

// The init's life after start: reap, pass the stop on, exit when it is done.
[[noreturn]] void init_loop(int signal_fd, pid_t command) {
  bool stopping = false;
  for (;;) {  // infinite by design: ends with _exit once stopped and childless
    signalfd_siginfo info{};
    if (::read(signal_fd, &info, sizeof info) != sizeof info) continue;
    if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT || info.ssi_signo == SIGHUP) {
      stopping = true;
      ::kill(-1, SIGTERM);  // every process of the WPAR but the init
    } else if (info.ssi_signo == SIGUSR1 && command > 0) {
      ::kill(command, SIGUSR1);
    }
    pid_t done;
    while ((done = ::waitpid(-1, nullptr, WNOHANG)) > 0) {
      if (done == command) command = 0;
    }
    if (stopping && done < 0 && errno == ECHILD) ::_exit(0);
  }
}

// Renumbers the init's descriptors to 3.. and closes every other one (the
// supervisor's signalfd, its report pipe to the agent, …).
void keep_only(std::initializer_list<int*> wanted) {
  std::vector<int*> fds;
  for (int* fd : wanted) {
    if (*fd >= 0) fds.push_back(fd);  // -1: none to keep
  }
  for (int* fd : fds) *fd = ::fcntl(*fd, F_DUPFD_CLOEXEC, kFdParkedMin);
  ::close_range(kFdFirstFree, kFdParkedMin - 1, 0);
  int next = kFdFirstFree;
  for (int* fd : fds) {
    ::dup3(*fd, next, O_CLOEXEC);
    *fd = next++;
  }
  ::close_range(static_cast<unsigned>(next), ~0U, 0);
}

// Past its root's building, the init enters its own user namespace: the
// supervisor writes the maps meanwhile, then it becomes the WPAR's root
// (uid and gid 0 inside, the range's first id outside). Its other
// namespaces stay owned by the host's: from here on nothing it does can
// mount, set the host name or change the network, even with capabilities.
void enter_user_namespace(InitArgs& a, const std::function<void(const std::string&)>& broken) {
  if (a.userns_fd >= 0) ::close(a.userns_fd);
  if (::unshare(CLONE_NEWUSER) != 0) broken(errno_text("cannot make the WPAR's user namespace"));
  write_all(a.ready_fd, "userns\n");
  char go = 0;
  if (::read(a.go_fd, &go, 1) != 1) ::_exit(1);  // the supervisor gave up
  if (::setresgid(0, 0, 0) != 0 || ::setgroups(0, nullptr) != 0 || ::setresuid(0, 0, 0) != 0) {
    broken(errno_text("cannot become the WPAR's root user"));
  }
  // A change of ids clears both. A supervisor that died before the signal
  // was armed again has closed its end of the go pipe.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::prctl(PR_SET_DUMPABLE, 0);
  pollfd gone{a.go_fd, POLLIN, 0};
  if (::poll(&gone, 1, 0) > 0) ::_exit(1);
}

// The init, in the cloned child: PID 1 of the WPAR. Never returns.
[[noreturn]] void init_main(InitArgs a) {
  keep_only({&a.go_fd, &a.ready_fd, &a.console_fd, &a.userns_fd});
  auto broken = [&](const std::string& why) {
    write_all(a.ready_fd, "error " + why + "\n");
    ::_exit(1);
  };
  // It dies with its supervisor (which holds it, its network and its record),
  // and nothing in the WPAR may inspect it: it never execs, so /proc/1/exe
  // would be the host's supervisor binary.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::prctl(PR_SET_DUMPABLE, 0);
  char go = 0;
  if (::read(a.go_fd, &go, 1) != 1) ::_exit(1);  // the supervisor gave up
  ::prctl(PR_SET_NAME, "wpm-init");
  ::setsid();
  ::umask(022);
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    broken(errno_text("cannot make the mounts private"));
  int root_fd = -1;
  const StepContext context{a.userns_fd, a.ids ? static_cast<int64_t>(a.ids->first) : -1};
  for (const auto& step : a.plan) {
    if (auto r = run_step(step, a.rootfs, root_fd, context); !r) broken(r.error().message);
    if (root_fd < 0 && step.target == a.rootfs) {
      // The overlay is the root from now on; every later target lies in it.
      root_fd = ::open(a.rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (root_fd < 0) broken(errno_text("cannot open the WPAR's root"));
    }
  }
  ::close(root_fd);
  if (::sethostname(a.hostname.data(), a.hostname.size()) != 0)
    broken(errno_text("cannot set the hostname " + a.hostname));
  if (auto r = loopback_up(); !r) broken(r.error().message);
  if (auto r = pivot_into(a.rootfs); !r) broken(r.error().message);
  if (a.ids) enter_user_namespace(a, broken);
  ::close(a.go_fd);
  ::dup2(devnull, 0);
  ::dup2(a.console_fd, 1);
  ::dup2(a.console_fd, 2);
  ::close(devnull);
  ::close(a.console_fd);
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1}) sigaddset(&signals, s);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  int signal_fd = ::signalfd(-1, &signals, SFD_CLOEXEC);
  if (signal_fd < 0) broken(errno_text("signalfd"));
  // From here on the init and all it starts hold only the WPAR's capabilities,
  // under its system call filter.
  if (auto r = apply_capabilities(a.capabilities); !r) broken(r.error().message);
  if (a.filter) {
    if (auto r = a.filter->apply(); !r) broken(r.error().message);
  }
  pid_t command = 0;
  if (!a.command.empty()) {
    auto started = start_command(a);
    if (!started) broken(started.error().message);
    command = *started;
  }
  write_all(a.ready_fd, "ok\n");
  ::close(a.ready_fd);
  init_loop(signal_fd, command);
}

// The WPAR's file systems (and the checkpoint directory it shares) owned by
// its range: shifted from the range they were owned by (none: the host's ids,
// a new WPAR, one restored from a state file or run before user namespaces).
Result<void> own_file_systems(const SystemInitRequest& r, const IdRange& ids) {
  const SystemFsPaths p = SystemFsPaths::of(r.files->dir());
  auto owner = read_owner_range(p.fs);
  if (!owner) return std::unexpected(owner.error());
  if (*owner != ids) {
    // Host root walks a tree the WPAR's root writes into: never while a
    // process of an earlier run could still change it under the walk.
    if (auto left = r.cgroups->processes(); !left || !left->empty()) {
      return fail(ErrorCode::kUnavailable, "processes of an earlier run of the WPAR are still alive; stop it "
                                           "(`wpm-agent stopwpar -F`) and start it again");
    }
    uint32_t from = *owner ? (*owner)->first : 0;
    uint32_t count = *owner ? (*owner)->count : ids.count;
    if (auto moved = shift_ownership(p.fs, from, ids.first, std::min(count, ids.count)); !moved) {
      return std::unexpected(moved.error());
    }
    if (auto w = write_owner_range(p.fs, ids); !w) return w;
  }
  // fs/ itself stays the host root's (mode 0700: host users never reach below).
  if (::chown(p.fs.c_str(), 0, 0) != 0) return fail(ErrorCode::kIo, errno_text("cannot own " + p.fs));
  if (!r.shared_dir.empty() && ::chown(r.shared_dir.c_str(), ids.first, ids.first) != 0) {
    return fail(ErrorCode::kIo, errno_text("cannot give " + r.shared_dir + " to the WPAR's root"));
  }
  return {};
}

// The mapping's namespace when every host layer can be idmapped (the root's
// own mount and each read-only system directory with those below it);
// otherwise why not.
Result<int> idmappable_host_layers(const IdRange& ids, const std::vector<HostRootEntry>& host_root) {
  auto userns = mapping_user_namespace(ids);
  if (!userns) return std::unexpected(userns.error());
  std::vector<std::pair<std::string, bool>> layers = {{"/", false}};
  for (const auto& dir : read_only_host_dirs(host_root)) layers.emplace_back(dir, true);
  for (const auto& [path, recursive] : layers) {
    auto tree = idmapped_clone(path, *userns, recursive);
    if (!tree) {
      ::close(*userns);
      return std::unexpected(tree.error());
    }
    ::close(*tree);
  }
  return *userns;
}

// Reads the init's report: "ok", or "error WHY", or nothing when it died.
std::string read_report(int fd) {
  std::string line;
  char buf[512];
  for (int i = 0; i < 64 && line.find('\n') == std::string::npos; ++i) {  // bounded: 32 KiB
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  return line.substr(0, line.find('\n'));
}

}  // namespace

Result<void> can_idmap_host_layers() {
  auto userns = idmappable_host_layers(IdRange{kFirstWparId, kWparIdCount}, list_host_root());
  if (!userns) return std::unexpected(userns.error());
  ::close(*userns);
  return {};
}

std::string wpar_hostname(const WparSpec& spec) {
  return spec.hostname.empty() ? spec.name : spec.hostname;
}

Result<pid_t> start_system_init(const SystemInitRequest& r) {
  WPM_ASSERT(r.files != nullptr && r.spec != nullptr && r.cgroups != nullptr, "incomplete request");
  auto first_start = prepare_dirs(r.files->dir());
  if (!first_start) return std::unexpected(first_start.error());
  std::error_code ec;
  if (!r.shared_dir.empty() && !fs::create_directories(r.shared_dir, ec) && ec) {
    return fail(ErrorCode::kIo, fmt::format("cannot create {}: {}", r.shared_dir, ec.message()));
  }
  InitArgs a;
  SystemFsInput input{r.files->dir(), wpar_hostname(*r.spec), list_host_root(), r.shared_dir};
  Fd userns(-1);  // the mapping of idmapped copies, held until the init has its own
  if (r.ids) {
    auto owned = own_file_systems(r, *r.ids);
    if (!owned) return std::unexpected(owned.error());
    input.root_id = r.ids->first;
    a.ids = r.ids;
    UserNamespaceReport report;
    auto mapping = r.idmap_host_layers
                       ? idmappable_host_layers(*r.ids, input.host_root)
                       : Result<int>(fail(ErrorCode::kInvalidRequest, "turned off by [agent] idmap_host_layers = false"));
    if (mapping) {
      userns.fd = a.userns_fd = *mapping;
      input.idmapped = report.idmapped = true;
    } else {
      report.note = fmt::format("the host's files appear inside as owned by nobody (the overflow id) and are "
                                "read-only to the WPAR: {}", mapping.error().message);
    }
    if (r.user_namespace != nullptr) *r.user_namespace = report;
  }
  input.restore_dir = r.restore_dir;
  // The agent's data directory (DATA/wpars/NAME → DATA) holds every WPAR's
  // files and the agent's keys.
  input.masked_dirs = r.masked_dirs;
  if (input.masked_dirs.empty()) {
    input.masked_dirs = {fs::path(r.files->dir()).parent_path().parent_path().string()};
  }
  input.first_start = *first_start;
  if (input.first_start) {
    input.sanitized_shadow = lock_passwords(profile::read_text("/etc/shadow"));
    input.sanitized_gshadow = lock_passwords(profile::read_text("/etc/gshadow"));
  }
  a.plan = system_wpar_mounts(input);
  a.rootfs = SystemFsPaths::of(r.files->dir()).rootfs;
  a.hostname = wpar_hostname(*r.spec);
  a.capabilities = r.capabilities;
  if (!r.spec->privileged) {
    auto filter = SyscallFilter::wpar_default();
    if (!filter) return std::unexpected(filter.error());
    a.filter = std::move(*filter);
  }
  a.command = r.spec->command;
  a.env = environment(r.spec->env, nullptr);
  a.console_fd = r.console_fd;
  int go[2], ready[2];
  if (::pipe2(go, O_CLOEXEC) != 0) return fail(ErrorCode::kIo, errno_text("pipe"));
  if (::pipe2(ready, O_CLOEXEC) != 0) return fail(ErrorCode::kIo, errno_text("pipe"));
  // Like fork (the child runs on a copy of this stack), into new namespaces.
  pid_t pid = static_cast<pid_t>(
      ::syscall(SYS_clone, kNamespaces | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
  if (pid < 0) {
    return fail(ErrorCode::kIo, errno_text("cannot create the namespaces of the WPAR (clone)"));
  }
  if (pid == 0) {
    ::close(go[1]);
    ::close(ready[0]);
    a.go_fd = go[0];
    a.ready_fd = ready[1];
    init_main(std::move(a));
  }
  ::close(go[0]);
  ::close(ready[1]);
  bool attached = false;
  auto abandon = [&](const std::string& why) {
    ::close(go[1]);
    ::close(ready[0]);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    // The namespace dies with the init and takes the peer (and so the host
    // end) with it, but not the host interface's proxy entry.
    if (attached) {
      if (auto d = detach_veth(*r.network); !d)
        return fail(ErrorCode::kInternal, fmt::format("{}; {}", why, d.error().message));
    }
    return fail(ErrorCode::kInternal, why);
  };
  // The init joins the WPAR's cgroups before it runs anything.
  if (auto joined = r.cgroups->add_process(pid); !joined) return abandon(joined.error().message);
  // The WPAR's network (only `lo` until now), attached while its init waits.
  if (r.network != nullptr) {
    auto attachment = attach_veth(*r.network, pid);
    if (!attachment) {
      return abandon(fmt::format("cannot attach the network of address {}: {}",
                                 format_ipv4(r.network->address), attachment.error().message));
    }
    attached = true;
    if (r.on_network_attached) r.on_network_attached(*attachment);
  }
  if (::write(go[1], "g", 1) != 1) return abandon(errno_text("cannot start the WPAR's init"));
  std::string report = read_report(ready[0]);
  if (r.ids && report == "userns") {
    if (userns.fd >= 0) ::close(std::exchange(userns.fd, -1));
    if (auto m = write_id_maps(pid, *r.ids); !m) return abandon(m.error().message);
    if (auto c = forbid_nested_user_namespaces(pid); !c) return abandon(c.error().message);
    if (::write(go[1], "g", 1) != 1) return abandon(errno_text("cannot start the WPAR's init"));
    report = read_report(ready[0]);
  }
  if (report != "ok") {
    return abandon(report.starts_with("error ") ? report.substr(6)
                                                : "the WPAR's init ended before it reported");
  }
  ::close(go[1]);
  ::close(ready[0]);
  return pid;
}

Result<int> login(const LoginRequest& r) {
  const bool system = r.spec.type == WparType::kSystem;
  pid_t init = r.record.workload_pid;
  std::vector<int> ns_fds;
  int pid_ns = -1;
  int root_fd = -1;  // the init's root: entering its mount namespace alone would land at the namespace's
  int user_ns = -1;  // a system WPAR's own user namespace
  auto close_all = [&] {
    for (int fd : ns_fds) ::close(fd);
    if (pid_ns >= 0) ::close(pid_ns);
    if (user_ns >= 0) ::close(user_ns);
    if (root_fd >= 0) ::close(root_fd);
  };
  std::vector<const char*> namespaces;
  if (system) namespaces.assign(std::begin(kLoginNamespaces), std::end(kLoginNamespaces));
  if (!system && !r.spec.privileged) namespaces.assign(std::begin(kAppLoginNamespaces), std::end(kAppLoginNamespaces));
  if (!namespaces.empty()) {
    for (const char* ns : namespaces) {
      int fd = ::open(fmt::format("/proc/{}/ns/{}", init, ns).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        close_all();
        return fail(ErrorCode::kNotFound,
                    errno_text(fmt::format(
                        "cannot open the {} namespace of the WPAR's init (pid {})", ns, init)));
      }
      ns_fds.push_back(fd);
    }
    // The root the init sees (a chrooted agent's WPARs are rooted in its chroot).
    root_fd = ::open(fmt::format("/proc/{}/root", init).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
      close_all();
      return fail(ErrorCode::kNotFound, errno_text(fmt::format("cannot open the root of the WPAR's init (pid {})", init)));
    }
    // A system WPAR's own user namespace, entered last (once in it, the
    // others, owned by the host's, could no longer be joined).
    struct stat mine {}, its {};
    if (system && ::stat("/proc/self/ns/user", &mine) == 0 &&
        ::stat(fmt::format("/proc/{}/ns/user", init).c_str(), &its) == 0 && mine.st_ino != its.st_ino) {
      user_ns = ::open(fmt::format("/proc/{}/ns/user", init).c_str(), O_RDONLY | O_CLOEXEC);
      if (user_ns < 0) {
        close_all();
        return fail(ErrorCode::kNotFound, errno_text(fmt::format("cannot open the user namespace of the WPAR's init (pid {})", init)));
      }
    }
    pid_ns = ::open(fmt::format("/proc/{}/ns/pid", init).c_str(), O_RDONLY | O_CLOEXEC);
    // Only the children of this process enter the PID namespace.
    if (pid_ns < 0 || ::setns(pid_ns, CLONE_NEWPID) != 0) {
      close_all();
      return fail(ErrorCode::kIo,
                  errno_text(fmt::format("cannot enter the PID namespace of pid {}", init)));
    }
  }
  auto cgroups = CgroupSet::open(CgroupLayout::detect(), r.cgroup_relative);
  if (!cgroups) {
    close_all();
    return std::unexpected(cgroups.error());
  }
  std::vector<std::string> command =
      r.command.empty() ? std::vector<std::string>{"/bin/sh"} : r.command;
  auto env = environment(r.spec.env, std::getenv("TERM"));
  auto argv = pointers(command);
  auto envp = pointers(env);
  // An application WPAR keeps the host's files: a login there starts where its caller is.
  std::error_code cwd_error;
  std::string cwd = fs::current_path(cwd_error).string();
  std::optional<SyscallFilter> filter;  // what the WPAR's own processes run under
  if (!r.spec.privileged) {
    auto made = SyscallFilter::wpar_default();
    if (!made) {
      close_all();
      return std::unexpected(made.error());
    }
    filter = std::move(*made);
  }
  pid_t child = ::fork();
  if (child < 0) {
    close_all();
    return fail(ErrorCode::kIo, errno_text("fork"));
  }
  if (child == 0) {
    auto die = [](const std::string& why) {
      std::fprintf(stderr, "wpm-agent: clogin: %s\n", why.c_str());
      ::_exit(125);
    };
    // Until it execs, nothing in the WPAR may inspect this process (its
    // /proc/PID/exe is the host's wpm-agent), and none of the caller's
    // descriptors but stdio may follow it in.
    ::prctl(PR_SET_DUMPABLE, 0);
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    // Its pid as the WPAR sees it: the kernel reads cgroup.procs in the writer's namespace.
    if (auto j = cgroups->add_process(::getpid()); !j) die(j.error().message);
    for (size_t i = 0; i < ns_fds.size(); ++i) {
      if (::setns(ns_fds[i], 0) != 0)
        die(errno_text(fmt::format("cannot enter the {} namespace", namespaces[i])));
    }
    if (root_fd >= 0 && (::fchdir(root_fd) != 0 || ::chroot(".") != 0)) die(errno_text("cannot enter the WPAR's root"));
    if (system && ::chdir("/") != 0) die(errno_text("cannot enter /"));
    if (user_ns >= 0) {
      if (::setns(user_ns, CLONE_NEWUSER) != 0) die(errno_text("cannot enter the WPAR's user namespace"));
      if (::setresgid(0, 0, 0) != 0 || ::setgroups(0, nullptr) != 0 || ::setresuid(0, 0, 0) != 0) {
        die(errno_text("cannot become the WPAR's root user"));
      }
      ::prctl(PR_SET_DUMPABLE, 0);  // a change of ids resets it
    }
    if (!system && root_fd >= 0 && (cwd.empty() || ::chdir(cwd.c_str()) != 0)) (void)::chdir("/");
    if (auto c = apply_capabilities(r.capabilities); !c) die(c.error().message);
    if (filter) {
      if (auto f = filter->apply(); !f) die(f.error().message);
    }
    ::execvpe(argv[0], argv.data(), envp.data());
    int err = errno;
    std::fprintf(stderr, "wpm-agent: clogin: cannot run '%s': %s\n", argv[0], std::strerror(err));
    ::_exit(err == ENOENT ? 127 : 126);
  }
  close_all();
  // Like system(3): a ^C at the terminal is for the command, not for us.
  struct sigaction ignore {
  }, old_int{}, old_quit{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGINT, &ignore, &old_int);
  ::sigaction(SIGQUIT, &ignore, &old_quit);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGQUIT, &old_quit, nullptr);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

}  // namespace wpm::runtime
