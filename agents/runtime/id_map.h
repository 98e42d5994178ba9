#pragma once
// The host ids of a system WPAR in its own user namespace (DESIGN.md §5
// "Privileges"; agents/README.md "User namespaces"): each WPAR that is not
// privileged gets a range of 65,536 host user and group ids, claimed in a
// registry shared by every agent on the host, so that no two WPARs on a
// host ever share one. Its root user is the first id of the range: uid 0
// inside, an unprivileged id outside.
//
// The registry is a directory (default /var/lib/wpm-ids, or
// $WPM_ID_REGISTRY): a claim is a file named by the range's index, made with
// O_EXCL, holding the WPAR directory it belongs to. A claim whose WPAR
// directory is gone is taken over.
//
// The WPAR's private file systems (fs/) are owned by its range; fs/ids
// records which range they are owned by ("FIRST COUNT"; absent: the host's
// own ids, as before user namespaces or in a state file). A start in another
// range (a restore on another host, a WPAR that ran before user namespaces)
// shifts them first.
//
// The registry, shift and mapping functions act on files and processes;
// IdRange is a value. Thread safety: none needed beyond the file system's.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "schemas/error.h"

namespace wpm::runtime {

inline constexpr uint32_t kWparIdCount = 65536;
// The first host id handed to WPARs: above the ids of users, systemd's
// dynamic users and its container range's usual start.
inline constexpr uint32_t kFirstWparId = 0x40000000;
// How many ranges fit below the highest valid id (2^32 - 2).
inline constexpr uint32_t kWparIdRanges = (0xfffffffeu - kFirstWparId) / kWparIdCount;

struct IdRange {
  uint32_t first = 0;
  uint32_t count = kWparIdCount;
  // The host id of the WPAR's `id`.
  uint32_t host(uint32_t id) const { return first + id; }
  bool contains(uint32_t host_id) const { return host_id >= first && host_id - first < count; }
  bool operator==(const IdRange&) const = default;
};

// $WPM_ID_REGISTRY, else /var/lib/wpm-ids.
std::string id_registry_dir();

// The range claimed for `owner` (a WPAR's directory, absolute), claiming the
// lowest free one when it has none.
Result<IdRange> claim_id_range(const std::string& registry, const std::string& owner);
// Gives up `owner`'s claim; nothing when it has none.
Result<void> release_id_range(const std::string& registry, const std::string& owner);

// fs/ids of a WPAR's file systems: the range they are owned by; nullopt:
// the host's own ids.
Result<std::optional<IdRange>> read_owner_range(const std::string& fs_dir);
Result<void> write_owner_range(const std::string& fs_dir, const std::optional<IdRange>& range);

// Moves the ownership of `dir` and everything below it (never following a
// link or crossing into another mount) from one range to another: an id in
// [from, from + count) becomes to + (id - from); other ids stay. Returns how
// many entries changed.
Result<uint64_t> shift_ownership(const std::string& dir, uint32_t from, uint32_t to, uint32_t count);

// Writes `pid`'s uid_map and gid_map: the WPAR's ids 0..count-1 are the
// range's host ids. `pid` has just made its user namespace.
Result<void> write_id_maps(pid_t pid, const IdRange& range);

// No user namespace can be made inside `pid`'s (user.max_user_namespaces
// there set to 0), by a child that joins it.
Result<void> forbid_nested_user_namespaces(pid_t pid);

// A user namespace with the range mapped, held by a descriptor (for
// idmapped mounts). Made by a throwaway child, which leaves an agent's
// chroot first (the kernel refuses a new user namespace in a chroot).
Result<int> mapping_user_namespace(const IdRange& range);

// A detached copy of the mount at `path` (with the mounts below it when
// `recursive`), read-only, whose files appear with their owners shifted
// through `userns_fd`'s mapping: on-disk id N shows as host id first + N.
// EINVAL from the kernel means the file system cannot be idmapped (overlayfs
// on this kernel): the caller falls back to the plain mount.
Result<int> idmapped_clone(const std::string& path, int userns_fd, bool recursive);

// Makes the root of the caller's mount namespace its root directory, out of
// any chroot: chroots into `below` (a directory under the current root)
// while the working directory stays where it is (above it), walks up until
// ".." goes nowhere and chroots there. Outside a chroot it ends at "/".
bool climb_to_namespace_root(const char* below);

// Attaches a detached mount (idmapped_clone) at `target`.
Result<void> attach_mount(int tree, const std::string& target);

}  // namespace wpm::runtime
