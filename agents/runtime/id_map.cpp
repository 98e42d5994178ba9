#include "agents/runtime/id_map.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <ftw.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace wpm::runtime {
namespace {

namespace fs = std::filesystem;

Error io_error(const std::string& what) {
  return Error{ErrorCode::kIo, fmt::format("{}: {}", what, std::strerror(errno))};
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<void> write_text_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return std::unexpected(io_error("cannot open " + path));
  ssize_t n = ::write(fd, text.data(), text.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    errno = err;
    return std::unexpected(io_error("cannot write " + path));
  }
  return {};
}

IdRange range_of(uint32_t index) { return IdRange{kFirstWparId + index * kWparIdCount, kWparIdCount}; }

// The claim's owner, without the trailing newline.
std::string owner_of(const fs::path& claim) {
  std::string text = read_text(claim);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// The shift of one walk (nftw takes no context).
thread_local struct {
  uint32_t from, to, count;
  uint64_t changed;
  int error;
} shift_state;

int shift_one(const char* path, const struct stat* st, int, struct FTW*) {
  auto& s = shift_state;
  auto moved = [&](uint32_t id) -> uint32_t { return id >= s.from && id - s.from < s.count ? s.to + (id - s.from) : id; };
  uint32_t uid = moved(st->st_uid), gid = moved(st->st_gid);
  if (uid == st->st_uid && gid == st->st_gid) return 0;
  // lchown drops set-user-id and set-group-id bits; put them back.
  if (::lchown(path, uid, gid) != 0) {
    s.error = errno;
    return 1;
  }
  if (!S_ISLNK(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)) != 0) (void)::chmod(path, st->st_mode & 07777);
  ++s.changed;
  return 0;
}

}  // namespace

bool climb_to_namespace_root(const char* below) {
  if (::chroot(below) != 0) return false;
  for (int i = 0; i < 4096; ++i) {  // bounded: a path is never this deep
    struct stat here {}, up {};
    if (::stat(".", &here) != 0 || ::chdir("..") != 0 || ::stat(".", &up) != 0) break;
    if (here.st_dev == up.st_dev && here.st_ino == up.st_ino) break;
  }
  return ::chroot(".") == 0;
}

std::string id_registry_dir() {
  const char* env = std::getenv("WPM_ID_REGISTRY");
  return env != nullptr && *env != '\0' ? env : "/var/lib/wpm-ids";
}

Result<IdRange> claim_id_range(const std::string& registry, const std::string& owner) {
  std::error_code ec;
  fs::create_directories(registry, ec);
  if (ec) return fail(ErrorCode::kIo, fmt::format("cannot create the id registry {}: {}", registry, ec.message()));
  ::chmod(registry.c_str(), 0700);
  // One claim at a time on the host: agents with other data directories use the same registry.
  int lock = ::open(registry.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) {
    if (lock >= 0) ::close(lock);
    return std::unexpected(io_error("cannot lock the id registry " + registry));
  }
  struct Unlock {
    int fd;
    ~Unlock() { ::close(fd); }
  } unlock{lock};
  // Its own claim first; else the lowest index free, or held by a WPAR directory that is gone.
  std::vector<bool> used;
  std::optional<uint32_t> stale;
  for (const auto& entry : fs::directory_iterator(registry, ec)) {
    const std::string name = entry.path().filename();
    char* end = nullptr;
    unsigned long index = std::strtoul(name.c_str(), &end, 10);
    if (name.empty() || *end != '\0' || index >= kWparIdRanges) continue;
    std::string held_by = owner_of(entry.path());
    if (held_by == owner) return range_of(static_cast<uint32_t>(index));
    if (used.size() <= index) used.resize(index + 1, false);
    used[index] = true;
    if ((!stale || index < *stale) && (held_by.empty() || !fs::exists(held_by))) stale = static_cast<uint32_t>(index);
  }
  if (ec) return fail(ErrorCode::kIo, fmt::format("cannot read the id registry {}: {}", registry, ec.message()));
  uint32_t index = 0;
  while (index < used.size() && used[index]) ++index;
  if (stale && *stale < index) index = *stale;
  if (index >= kWparIdRanges) {
    return fail(ErrorCode::kUnavailable, fmt::format("every id range of the registry {} is taken ({} WPARs)",
                                                     registry, kWparIdRanges));
  }
  fs::path claim = fs::path(registry) / std::to_string(index);
  fs::path fresh = fs::path(registry) / fmt::format(".{}.new", index);
  int fd = ::open(fresh.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return std::unexpected(io_error("cannot write " + fresh.string()));
  std::string text = owner + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(fresh.c_str(), claim.c_str()) != 0) return std::unexpected(io_error("cannot claim " + claim.string()));
  return range_of(index);
}

Result<void> release_id_range(const std::string& registry, const std::string& owner) {
  std::error_code ec;
  int lock = ::open(registry.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock < 0) return {};  // no registry: nothing claimed
  ::flock(lock, LOCK_EX);
  struct Unlock {
    int fd;
    ~Unlock() { ::close(fd); }
  } unlock{lock};
  for (const auto& entry : fs::directory_iterator(registry, ec)) {
    if (!entry.path().filename().string().starts_with(".") && owner_of(entry.path()) == owner) {
      fs::remove(entry.path(), ec);
      if (ec) return fail(ErrorCode::kIo, fmt::format("cannot release {}: {}", entry.path().string(), ec.message()));
    }
  }
  return {};
}

Result<std::optional<IdRange>> read_owner_range(const std::string& fs_dir) {
  fs::path path = fs::path(fs_dir) / "ids";
  if (!fs::exists(path)) return std::optional<IdRange>{};
  std::istringstream in(read_text(path));
  IdRange r;
  if (!(in >> r.first >> r.count) || r.count == 0) {
    return fail(ErrorCode::kCorruption, fmt::format("{} does not hold 'FIRST COUNT'", path.string()));
  }
  return std::optional<IdRange>{r};
}

Result<void> write_owner_range(const std::string& fs_dir, const std::optional<IdRange>& range) {
  fs::path path = fs::path(fs_dir) / "ids";
  std::error_code ec;
  if (!range) {
    fs::remove(path, ec);
    if (ec) return fail(ErrorCode::kIo, fmt::format("cannot remove {}: {}", path.string(), ec.message()));
    return {};
  }
  // Synced, renamed, and the directory synced: a power cut leaves the old
  // record or the new one, never an empty file that stops the WPAR.
  fs::path tmp = path.string() + ".new";
  std::string text = fmt::format("{} {}\n", range->first, range->count);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return std::unexpected(io_error("cannot write " + tmp.string()));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) return std::unexpected(io_error("cannot write " + path.string()));
  int dir = ::open(fs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
  return {};
}

Result<uint64_t> shift_ownership(const std::string& dir, uint32_t from, uint32_t to, uint32_t count) {
  if (from == to) return uint64_t{0};
  shift_state = {from, to, count, 0, 0};
  int r = ::nftw(dir.c_str(), shift_one, 64, FTW_PHYS | FTW_MOUNT);
  if (r != 0) {
    errno = shift_state.error != 0 ? shift_state.error : errno;
    return std::unexpected(io_error(fmt::format("cannot move the ownership of {} to ids from {}", dir, to)));
  }
  return shift_state.changed;
}

Result<void> write_id_maps(pid_t pid, const IdRange& range) {
  std::string map = fmt::format("0 {} {}\n", range.first, range.count);
  if (auto r = write_text_file(fmt::format("/proc/{}/uid_map", pid), map); !r) return r;
  return write_text_file(fmt::format("/proc/{}/gid_map", pid), map);
}

Result<void> forbid_nested_user_namespaces(pid_t pid) {
  int ns = ::open(fmt::format("/proc/{}/ns/user", pid).c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) return std::unexpected(io_error(fmt::format("cannot open the user namespace of pid {}", pid)));
  pid_t child = ::fork();
  if (child < 0) {
    ::close(ns);
    return std::unexpected(io_error("fork"));
  }
  if (child == 0) {
    // Its own limits are what a process of the namespace reads and writes there.
    if (::setns(ns, CLONE_NEWUSER) != 0) ::_exit(1);
    int fd = ::open("/proc/sys/user/max_user_namespaces", O_WRONLY | O_CLOEXEC);
    ::_exit(fd >= 0 && ::write(fd, "0\n", 2) == 2 ? 0 : 2);
  }
  ::close(ns);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot forbid new user namespaces in the WPAR ({})",
                                            WIFEXITED(status) && WEXITSTATUS(status) == 1
                                                ? "cannot join its user namespace"
                                                : "cannot write its user.max_user_namespaces"));
  }
  return {};
}

Result<int> mapping_user_namespace(const IdRange& range) {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return std::unexpected(io_error("pipe"));
  pid_t child = ::fork();
  if (child < 0) return std::unexpected(io_error("fork"));
  if (child == 0) {
    // Makes the namespace, says so, and waits to be killed. The kernel
    // refuses a user namespace to a process in a chroot; in a private mount
    // namespace this throwaway process first climbs out of an agent's chroot
    // (chroot into a directory below while the working directory stays
    // above, walk up until ".." goes nowhere).
    if (::unshare(CLONE_NEWNS) == 0 && ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
        ::chdir("/") == 0) {
      for (const char* below : {"/proc", "/dev", "/tmp", "/usr"}) {
        if (climb_to_namespace_root(below)) break;
      }
    }
    char r = ::unshare(CLONE_NEWUSER) == 0 ? 'u' : 'e';
    (void)::write(ready[1], &r, 1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char r = 0;
  ssize_t n = ::read(ready[0], &r, 1);
  ::close(ready[0]);
  auto reap = [&] {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  };
  if (n != 1 || r != 'u') {
    reap();
    return fail(ErrorCode::kIo, "the kernel refuses a new user namespace here (an agent in a chroot?)");
  }
  auto mapped = write_id_maps(child, range);
  int fd = mapped ? ::open(fmt::format("/proc/{}/ns/user", child).c_str(), O_RDONLY | O_CLOEXEC) : -1;
  int err = errno;
  reap();
  if (!mapped) return std::unexpected(mapped.error());
  if (fd < 0) {
    errno = err;
    return std::unexpected(io_error("cannot open the mapping's user namespace"));
  }
  return fd;
}

Result<int> idmapped_clone(const std::string& path, int userns_fd, bool recursive) {
  int tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, path.c_str(),
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0)));
  if (tree < 0) return std::unexpected(io_error("cannot copy the mount at " + path));
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY;
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  if (::syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr, sizeof attr) != 0) {
    int err = errno;
    ::close(tree);
    errno = err;
    return std::unexpected(io_error("cannot idmap the mount at " + path));
  }
  return tree;
}

Result<void> attach_mount(int tree, const std::string& target) {
  if (::syscall(SYS_move_mount, tree, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return std::unexpected(io_error("cannot attach a mount at " + target));
  }
  return {};
}

}  // namespace wpm::runtime
