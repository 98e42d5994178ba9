#pragma once
// The file systems of a system WPAR (DESIGN.md §5 "System WPAR file
// systems"), as data: which mounts, device nodes, links and files make its
// root, in order. Pure: the caller lists the host's top-level entries and
// runs the plan inside the WPAR's new mount namespace (system_wpar.h), so
// nothing here touches the host and the plan is testable without root.
//
// A system WPAR's directory (DATA/wpars/NAME) holds:
//   rootfs/     the mount point of its root (empty on the host)
//   fs/upper, fs/work   the overlay's upper and work directories: every write
//               to /, /etc, /var, … lands in fs/upper and survives stop/start
//   fs/tmp, fs/home, fs/var, fs/root   its /tmp, /home, /var and /root
//               (private: they start empty and survive stop/start)
// fs/ is mode 0700, so that host users never reach what the WPAR's root
// puts there (a set-uid shell in its /tmp, say).
// `rmwpar -p` keeps fs/ (the WPAR's file systems) and removes the rest.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wpm::runtime {

// One top-level entry of the host's root directory.
struct HostRootEntry {
  enum class Kind : uint8_t { kDirectory, kSymlink, kOther };
  std::string name;
  Kind kind = Kind::kDirectory;
  bool operator==(const HostRootEntry&) const = default;
};

struct SystemFsInput {
  std::string wpar_dir;  // DATA/wpars/NAME (absolute)
  std::string hostname;  // written to /etc/hostname and /etc/hosts
  std::vector<HostRootEntry> host_root;
  // A host directory bound read-write at the same path inside the WPAR
  // (the checkpoint trigger directory); empty: none.
  std::string shared_dir;
  // A host directory bound read-only at the same path inside (the state a
  // restarted WPAR restores from); empty: none.
  std::string restore_dir;
  // Host directories hidden under an empty read-only tmpfs (the agent's data
  // directory: every WPAR's files and the agent's keys). Those under a
  // private directory (/tmp, /home, /var, /root) are hidden already.
  std::vector<std::string> masked_dirs;
  // The first start of this WPAR: its /etc gets the host's secrets removed
  // (shadow files with locked passwords, no SSH host keys, no TLS private
  // keys, no wpm configuration). Later starts keep what the WPAR changed.
  bool first_start = false;
  std::string sanitized_shadow;   // the host's /etc/shadow with every password locked
  std::string sanitized_gshadow;  // the same for /etc/gshadow
  // In its own user namespace (id_map.h): the host id of its root user, which
  // owns its tmpfs /run; nullopt: the host's ids.
  std::optional<uint32_t> root_id;
  // The host's layers (its root as the overlay's lower layer, the read-only
  // system directories) are idmapped copies, so their files appear inside
  // with their real owners; false: the host's own mounts, whose files appear
  // inside a user namespace as owned by the overflow id.
  bool idmapped = false;
  bool operator==(const SystemFsInput&) const = default;
};

struct MountStep {
  enum class Kind : uint8_t {
    kMount,    // mount(source, target, fstype, flags, data)
    kBind,     // bind `source` on `target` (recursive); read-only when flags has MS_RDONLY
    kDevice,   // character device `target` (mode, major, minor)
    kSymlink,  // `target` -> `source`
    kFile,     // `target` holds `source` (written, replacing what was there)
    kRemove,   // `target` and everything below it removed (a whiteout in the overlay)
    // An idmapped, read-only copy of the host mount `source` (with those
    // below it) on `target`, with `flags` (MS_NOSUID, MS_NODEV) besides.
    kIdmappedBind,
  };
  Kind kind = Kind::kMount;
  std::string source;
  std::string target;  // absolute, under the WPAR's root before pivot_root
  std::string fstype;
  uint64_t flags = 0;  // MS_* flags
  std::string data;
  uint32_t mode = 0;
  uint32_t major = 0;
  uint32_t minor = 0;
  // Skipped when `source` does not exist (a kernel without it).
  bool if_present = false;
  bool operator==(const MountStep&) const = default;
};

// Where a system WPAR's files live, under its directory.
struct SystemFsPaths {
  // lower: where an idmapped copy of the host's root is mounted (in the
  // init's mount namespace only) to be the overlay's lower layer.
  std::string fs, rootfs, upper, work, tmp, home, var, root, lower;
  static SystemFsPaths of(const std::string& wpar_dir);
};

// Host system directories bound read-only into every system WPAR: /usr and
// /opt, and /bin, /sbin and /lib* where they are directories of their own
// (not symlinks into /usr, as on merged-/usr systems).
std::vector<std::string> read_only_host_dirs(const std::vector<HostRootEntry>& host_root);

// The steps that build a system WPAR's root at SystemFsPaths::rootfs: the
// overlay root (lower: the host's root file system, read-only; upper under the
// WPAR's directory), read-only binds of the host system directories, private
// /tmp and /home, its own /proc (with /proc/sys and /proc/sysrq-trigger
// read-only), a read-only /sys, a minimal /dev (null, zero, full, random,
// urandom, tty, devpts with ptmx, shm, mqueue), a tmpfs /run, and its own
// /etc/hostname and /etc/hosts.
std::vector<MountStep> system_wpar_mounts(const SystemFsInput& input);

// /etc/hosts of a WPAR named `hostname`.
std::string hosts_file(const std::string& hostname);

// shadow(5) or gshadow(5) text with every password field locked ("*"), so a
// WPAR never sees the host's password hashes.
std::string lock_passwords(std::string_view shadow);

}  // namespace wpm::runtime
