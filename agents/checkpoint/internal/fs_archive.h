#pragma once
// The private file systems of a system WPAR in its state file (DESIGN.md §5,
// "The cooperative protocol" and "System WPAR file systems"): every directory
// of DATA/wpars/NAME/fs (system_fs.h: `upper`, the overlay's upper layer, and
// the private /tmp, /home, … bound into the WPAR) but the overlay's `work`
// directory, as one pax archive compressed with zstd. It keeps regular files
// (sparse ones stay sparse), directories, symlinks (as links, never followed),
// hard links, FIFOs, overlay whiteouts (character devices 0/0), extended
// attributes (trusted.overlay.opaque, …), ACLs, owners (by number), modes and
// times.
//
// Never: the overlay's `work` directory; sockets or device nodes other than
// whiteouts (skipped at checkpoint, refused at restart, since a device node in
// a WPAR's root could reach the host's devices); a path outside fs/ at
// restart (libarchive's secure extraction plus a check of every entry's
// path). File systems are read and written in a child process, since
// libarchive's disk reader and writer change the working directory and the
// umask, which belong to the whole process.
//
// Thread safety: none; the functions fork, so a caller with threads must not
// hold locks the child could need (the child uses only libarchive, malloc and
// its own pipe).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agents/checkpoint/cooperative.h"

namespace wpm::checkpoint {

// The archive's name in the state file directory, next to manifest.json.
inline constexpr char kFsArchiveName[] = "fs.tar.zst";
// The directory of fs/ never archived nor restored: the overlay's work
// directory, which belongs to one mount of one upper layer.
inline constexpr char kOverlayWorkDir[] = "work";
// fs/ids, the range of host ids the files are owned by (agents/runtime/id_map.h):
// never archived; the archive holds the WPAR's own ids instead.
inline constexpr char kOwnerRangeFile[] = "ids";
// zstd level 1: about as fast as the disk on incompressible data, and most of
// level 3's ratio on text (see agents/README.md for the figures).
inline constexpr int kFsArchiveZstdLevel = 1;
// A bound on the entries of one archive (the loops over the file tree).
inline constexpr uint64_t kFsArchiveEntriesMax = 64'000'000;

struct FsArchive {
  uint64_t entries = 0;            // everything archived or restored
  uint64_t skipped = 0;            // sockets and device nodes left out (checkpoint)
  uint64_t content_bytes = 0;      // the regular files' bytes
  uint64_t archive_bytes = 0;      // the archive's size
  std::string sha256;              // the archive's SHA-256 (checkpoint)
  std::vector<std::string> roots;  // what of fs/ was archived: upper, tmp, … (checkpoint)
  bool operator==(const FsArchive&) const = default;
};

// Writes what fs_dir holds but `work` into a new file `archive_path`, synced. Failures: 22 when the
// archive cannot be written, 4 when the file systems cannot be read; the partial archive is
// removed.
Outcome<FsArchive> write_fs_archive(const std::string& fs_dir, const std::string& archive_path);

// Replaces what fs_dir holds with the archive's (fs_dir is made,
// mode 0700, when missing) and removes the overlay's work directory. The archive is extracted
// beside them (fs_dir/.restore) first, so a refused or damaged archive leaves fs_dir as it was. The
// WPAR must not run. Failures: 14 when the archive is missing, 4 otherwise.
Outcome<FsArchive> restore_fs_archive(const std::string& archive_path, const std::string& fs_dir);

}  // namespace wpm::checkpoint
