#include "agents/checkpoint/internal/fs_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "agents/runtime/id_map.h"
#include "schemas/assert.h"
#include "schemas/hash.h"

namespace wpm::checkpoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Bytes read or written per libarchive block.
constexpr size_t kBlockBytes = 1 << 20;
// The child's report is one JSON line; anything longer is not ours.
constexpr size_t kReportBytesMax = 64 * 1024;
// Staging and leftover directories inside fs/ during a restore.
constexpr char kStagingDir[] = ".restore";
constexpr char kReplacedDir[] = ".replaced";

std::unexpected<Failure> failure(int code, std::string message) {
  return std::unexpected(Failure{code, std::move(message)});
}

// A name of fs/ that the archive may hold at its top: a plain name, neither
// the overlay's work directory nor a restore's own.
bool archivable_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name != kOverlayWorkDir && name != kStagingDir && name != kReplacedDir && name != kOwnerRangeFile;
}

// What fs/ holds that is archived, sorted.
Outcome<std::vector<std::string>> archived_roots(const fs::path& fs_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs_dir, ec)) {
    std::string name = e.path().filename();
    if (archivable_name(name)) out.push_back(name);
  }
  if (ec) {
    return failure(kExitInternal, fmt::format("cannot list {}: {}", fs_dir.string(), ec.message()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct ArchiveReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
struct ResolverFree {
  void operator()(archive_entry_linkresolver* r) const { archive_entry_linkresolver_free(r); }
};
using Reader = std::unique_ptr<archive, ArchiveReadFree>;
using Writer = std::unique_ptr<archive, ArchiveWriteFree>;
using Entry = std::unique_ptr<archive_entry, EntryFree>;
using Resolver = std::unique_ptr<archive_entry_linkresolver, ResolverFree>;

std::string why(archive* a) {
  const char* s = archive_error_string(a);
  return s != nullptr ? s : "unknown libarchive error";
}

std::string path_of(archive_entry* e) {
  const char* p = archive_entry_pathname(e);
  return p != nullptr ? p : "";
}

bool write_all(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// --- The child process --------------------------------------------------

json to_json(const Outcome<FsArchive>& r) {
  if (!r) return {{"ok", false}, {"code", r.error().exit_code}, {"message", r.error().message}};
  return {{"ok", true},
          {"entries", r->entries},
          {"skipped", r->skipped},
          {"contentBytes", r->content_bytes},
          {"archiveBytes", r->archive_bytes},
          {"sha256", r->sha256},
          {"roots", r->roots}};
}

Outcome<FsArchive> from_json(const std::string& report) {
  json j = json::parse(report, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return failure(kExitInternal, "the archive helper process ended without a report");
  }
  if (!j.value("ok", false)) {
    return failure(j.value("code", kExitInternal), j.value("message", std::string("no reason")));
  }
  return FsArchive{
      j.value("entries", uint64_t{0}),      j.value("skipped", uint64_t{0}),
      j.value("contentBytes", uint64_t{0}), j.value("archiveBytes", uint64_t{0}),
      j.value("sha256", std::string()),     j.value("roots", std::vector<std::string>{})};
}

// Runs `work` in a child process (see the header for why) and returns what it
// reported. The child only calls libarchive, malloc and write(2).
Outcome<FsArchive> in_child(const std::function<Outcome<FsArchive>()>& work) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return failure(kExitInternal, fmt::format("pipe: {}", std::strerror(errno)));
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return failure(kExitInternal,
                   fmt::format("cannot fork the archive helper: {}", std::strerror(err)));
  }
  if (pid == 0) {
    ::close(fds[0]);
    std::string report = to_json(work()).dump();
    ::_exit(write_all(fds[1], report.data(), report.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  std::string report;
  char buf[4096];
  while (report.size() < kReportBytesMax) {  // bounded by the report's size
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    report.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    return failure(kExitInternal, fmt::format("the archive helper process was killed by signal {}",
                                              WTERMSIG(status)));
  }
  return from_json(report);
}

// --- Checkpoint: the file systems into the archive ----------------------

// The archive's file: every block written is also hashed and counted.
struct Sink {
  int fd = -1;
  Sha256 sha;
  uint64_t bytes = 0;
};

la_ssize_t sink_write(archive* a, void* data, const void* buffer, size_t size) {
  auto* sink = static_cast<Sink*>(data);
  if (!write_all(sink->fd, buffer, size)) {
    archive_set_error(a, errno, "write: %s", std::strerror(errno));
    return -1;
  }
  sink->sha.update(buffer, size);
  sink->bytes += size;
  return static_cast<la_ssize_t>(size);
}

// What the archive keeps: everything but sockets and device nodes, except the
// overlay's whiteouts (character devices 0/0).
bool archived(archive_entry* e) {
  switch (archive_entry_filetype(e)) {
    case AE_IFREG:
    case AE_IFDIR:
    case AE_IFLNK:
    case AE_IFIFO:
      return true;
    case AE_IFCHR:
      return archive_entry_rdev(e) == 0;
    default:
      return false;
  }
}

// Copies a regular file's data from the disk reader into the archive. Holes
// come as gaps between blocks: the pax writer drops the zeros written for
// them (the file's sparse map is in its header), as bsdtar does.
Outcome<uint64_t> copy_data(archive* disk, archive* out, const std::string& path) {
  static const std::vector<char> zeros(kBlockBytes, 0);
  const void* block = nullptr;
  size_t size = 0;
  la_int64_t offset = 0;
  int64_t done = 0;
  int r;
  while ((r = archive_read_data_block(disk, &block, &size, &offset)) == ARCHIVE_OK) {
    while (done < offset) {  // bounded by the gap
      size_t n = static_cast<size_t>(std::min<int64_t>(offset - done, kBlockBytes));
      if (archive_write_data(out, zeros.data(), n) != static_cast<la_ssize_t>(n)) {
        return failure(kExitCannotWrite, fmt::format("cannot write the archive: {}", why(out)));
      }
      done += static_cast<int64_t>(n);
    }
    if (size > 0 && archive_write_data(out, block, size) != static_cast<la_ssize_t>(size)) {
      return failure(kExitCannotWrite, fmt::format("cannot write the archive: {}", why(out)));
    }
    done = offset + static_cast<int64_t>(size);
  }
  if (r != ARCHIVE_EOF) {
    return failure(kExitInternal, fmt::format("cannot read {}: {}", path, why(disk)));
  }
  return static_cast<uint64_t>(done);
}

// Adds one directory tree of fs/ (its relative name: the working directory is fs/).
// `owners`: the range of host ids the files are owned by (a WPAR in its own
// user namespace): the archive records the WPAR's own ids (host id - first),
// so that a restore in another range owns them there.
Outcome<void> add_tree(archive* out, archive_entry_linkresolver* links, const char* root,
                       const std::optional<runtime::IdRange>& owners, FsArchive& result) {
  Reader disk(archive_read_disk_new());
  WPM_ASSERT(disk != nullptr, "archive_read_disk_new");
  // Never through a link, never into another mount, no ext2-style flags (an
  // immutable file in the upper layer would make the next restore fail).
  archive_read_disk_set_symlink_physical(disk.get());
  archive_read_disk_set_behavior(disk.get(),
                                 ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS | ARCHIVE_READDISK_NO_FFLAGS);
  if (archive_read_disk_open(disk.get(), root) != ARCHIVE_OK) {
    return failure(kExitInternal, fmt::format("cannot read {}: {}", root, why(disk.get())));
  }
  Entry entry(archive_entry_new());
  for (;;) {  // bounded by the tree and kFsArchiveEntriesMax
    archive_entry_clear(entry.get());
    int r = archive_read_next_header2(disk.get(), entry.get());
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) {
      return failure(kExitInternal,
                     fmt::format("cannot read {}: {}", path_of(entry.get()), why(disk.get())));
    }
    archive_read_disk_descend(disk.get());
    if (!archived(entry.get())) {
      ++result.skipped;
      continue;
    }
    if (++result.entries > kFsArchiveEntriesMax) {
      return failure(kExitInternal, fmt::format("the file systems hold more than {} entries",
                                                kFsArchiveEntriesMax));
    }
    if (archive_entry_filetype(entry.get()) != AE_IFREG) archive_entry_set_size(entry.get(), 0);
    if (owners) {
      auto uid = static_cast<uint32_t>(archive_entry_uid(entry.get()));
      auto gid = static_cast<uint32_t>(archive_entry_gid(entry.get()));
      // An id outside the range (a host-owned copy-up where the host's layers
      // show the overflow id) is the overflow id inside, and stays it.
      constexpr uint32_t kOverflowId = 65534;
      archive_entry_set_uid(entry.get(), owners->contains(uid) ? uid - owners->first : kOverflowId);
      archive_entry_set_gid(entry.get(), owners->contains(gid) ? gid - owners->first : kOverflowId);
    }
    archive_entry* e = entry.get();
    archive_entry* spare = nullptr;
    archive_entry_linkify(links, &e, &spare);  // tar strategy: e stays ours, spare stays null
    WPM_ASSERT(e == entry.get() && spare == nullptr, "unexpected link resolver strategy");
    if (archive_write_header(out, e) != ARCHIVE_OK) {
      return failure(kExitCannotWrite,
                     fmt::format("cannot add {} to the archive: {}", path_of(e), why(out)));
    }
    bool has_data = archive_entry_filetype(e) == AE_IFREG && archive_entry_hardlink(e) == nullptr;
    if (has_data) {
      auto copied = copy_data(disk.get(), out, path_of(e));
      if (!copied) return std::unexpected(copied.error());
      result.content_bytes += *copied;
    }
    if (archive_write_finish_entry(out) != ARCHIVE_OK) {
      return failure(kExitCannotWrite,
                     fmt::format("cannot add {} to the archive: {}", path_of(e), why(out)));
    }
  }
  return {};
}

Outcome<FsArchive> write_archive_here(const std::string& fs_dir, int fd) {
  if (::chdir(fs_dir.c_str()) != 0) {
    return failure(kExitInternal, fmt::format("cannot enter {}: {}", fs_dir, std::strerror(errno)));
  }
  Writer out(archive_write_new());
  WPM_ASSERT(out != nullptr, "archive_write_new");
  std::string level = fmt::format("zstd:compression-level={}", kFsArchiveZstdLevel);
  if (archive_write_set_format_pax(out.get()) != ARCHIVE_OK ||
      archive_write_add_filter_zstd(out.get()) != ARCHIVE_OK ||
      archive_write_set_options(out.get(), level.c_str()) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(out.get(), 1) != ARCHIVE_OK) {
    return failure(kExitInternal, fmt::format("cannot set up the archive: {}", why(out.get())));
  }
  Sink sink{fd};
  if (archive_write_open2(out.get(), &sink, nullptr, sink_write, nullptr, nullptr) != ARCHIVE_OK) {
    return failure(kExitCannotWrite, fmt::format("cannot write the archive: {}", why(out.get())));
  }
  Resolver links(archive_entry_linkresolver_new());
  archive_entry_linkresolver_set_strategy(links.get(), archive_format(out.get()));
  auto roots = archived_roots(".");
  if (!roots) return std::unexpected(roots.error());
  auto owners = runtime::read_owner_range(".");
  if (!owners) return failure(kExitInternal, owners.error().message);
  FsArchive result;
  result.roots = *roots;
  for (const std::string& root : *roots) {
    if (auto added = add_tree(out.get(), links.get(), root.c_str(), *owners, result); !added) {
      return std::unexpected(added.error());
    }
  }
  if (archive_write_close(out.get()) != ARCHIVE_OK) {
    return failure(kExitCannotWrite, fmt::format("cannot write the archive: {}", why(out.get())));
  }
  if (::fsync(fd) != 0)
    return failure(kExitCannotWrite,
                   fmt::format("cannot sync the archive: {}", std::strerror(errno)));
  result.archive_bytes = sink.bytes;
  result.sha256 = to_hex(sink.sha.final());
  return result;
}

// --- Restart: the archive into fs/ --------------------------------------

// An entry's path, or a hard link's target: relative, without "..", under a
// directory of fs/ that the archive may hold.
bool inside_archived_fs(const char* path) {
  if (path == nullptr) return true;
  std::string_view p(path);
  if (!archivable_name(p.substr(0, p.find('/')))) return false;
  for (size_t at = 0; at != std::string_view::npos;) {  // bounded by the path's length
    size_t next = p.find('/', at);
    if (p.substr(at, next == std::string_view::npos ? next : next - at) == "..") return false;
    at = next == std::string_view::npos ? next : next + 1;
  }
  return true;
}

Outcome<void> check_entry(archive_entry* e) {
  if (!inside_archived_fs(archive_entry_pathname(e)) ||
      !inside_archived_fs(archive_entry_hardlink(e))) {
    const char* link = archive_entry_hardlink(e);
    return failure(
        kExitInternal,
        fmt::format("the archive holds '{}'{}, outside the file systems of a WPAR "
                    "(or in the overlay's work directory); it is not restored",
                    path_of(e), link != nullptr ? fmt::format(" (a link to '{}')", link) : ""));
  }
  auto type = archive_entry_filetype(e);
  // A hard link (its type is not always set) names an entry already checked.
  bool allowed = archive_entry_hardlink(e) != nullptr || type == AE_IFREG || type == AE_IFDIR ||
                 type == AE_IFLNK || type == AE_IFIFO ||
                 (type == AE_IFCHR && archive_entry_rdev(e) == 0);
  if (!allowed) {
    return failure(kExitInternal, fmt::format("the archive holds the device node or socket '{}'; "
                                              "a WPAR's file systems never do; it is not restored",
                                              path_of(e)));
  }
  return {};
}

Outcome<FsArchive> extract_here(const std::string& staging, int archive_fd) {
  if (::chdir(staging.c_str()) != 0) {
    return failure(kExitInternal,
                   fmt::format("cannot enter {}: {}", staging, std::strerror(errno)));
  }
  Reader in(archive_read_new());
  Writer disk(archive_write_disk_new());
  WPM_ASSERT(in != nullptr && disk != nullptr, "archive_read_new");
  archive_read_support_format_tar(in.get());
  archive_read_support_filter_zstd(in.get());
  // Owners by number (the WPAR's own /etc/passwd is in its root, not the host's).
  archive_write_disk_set_options(
      disk.get(), ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
                      ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_XATTR |
                      ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                      ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS);
  if (archive_read_open_fd(in.get(), archive_fd, kBlockBytes) != ARCHIVE_OK) {
    return failure(kExitInternal, fmt::format("cannot read the archive: {}", why(in.get())));
  }
  FsArchive result;
  archive_entry* e = nullptr;
  for (;;) {  // bounded by the archive and kFsArchiveEntriesMax
    int r = archive_read_next_header(in.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK)
      return failure(kExitInternal, fmt::format("the archive is damaged: {}", why(in.get())));
    if (auto ok = check_entry(e); !ok) return std::unexpected(ok.error());
    if (++result.entries > kFsArchiveEntriesMax) {
      return failure(kExitInternal,
                     fmt::format("the archive holds more than {} entries", kFsArchiveEntriesMax));
    }
    if (archive_write_header(disk.get(), e) != ARCHIVE_OK) {
      return failure(kExitInternal,
                     fmt::format("cannot restore {}: {}", path_of(e), why(disk.get())));
    }
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while ((r = archive_read_data_block(in.get(), &block, &size, &offset)) == ARCHIVE_OK) {
      if (archive_write_data_block(disk.get(), block, size, offset) != ARCHIVE_OK) {
        return failure(kExitInternal,
                       fmt::format("cannot restore {}: {}", path_of(e), why(disk.get())));
      }
      result.content_bytes += size;
    }
    if (r != ARCHIVE_EOF)
      return failure(kExitInternal, fmt::format("the archive is damaged: {}", why(in.get())));
    if (archive_write_finish_entry(disk.get()) != ARCHIVE_OK) {
      return failure(kExitInternal,
                     fmt::format("cannot restore {}: {}", path_of(e), why(disk.get())));
    }
  }
  // Directory modes and times are set last, here.
  if (archive_write_close(disk.get()) != ARCHIVE_OK) {
    return failure(kExitInternal,
                   fmt::format("cannot restore the file systems: {}", why(disk.get())));
  }
  result.archive_bytes = static_cast<uint64_t>(archive_filter_bytes(in.get(), -1));
  return result;
}

// Moves what fs/ holds aside and the restored directories from staging into
// fs/, then removes the old ones and the overlay's work directory.
Outcome<void> swap_in(const fs::path& fs_dir, const fs::path& staging) {
  fs::path replaced = fs_dir / kReplacedDir;
  std::error_code ec;
  fs::create_directories(replaced, ec);
  if (ec)
    return failure(kExitInternal,
                   fmt::format("cannot create {}: {}", replaced.string(), ec.message()));
  auto move = [&](const fs::path& from, const fs::path& to) -> Outcome<void> {
    std::error_code rename_ec;
    fs::rename(from, to, rename_ec);
    if (rename_ec) {
      return failure(kExitInternal, fmt::format("cannot move {} to {}: {}", from.string(),
                                                to.string(), rename_ec.message()));
    }
    return {};
  };
  // The archive holds the WPAR's own ids: the files are no longer owned by
  // a range (the next start shifts them into this host's). First, so that a
  // crash half-way never leaves restored files under an old range's name.
  fs::remove(fs_dir / kOwnerRangeFile, ec);
  if (ec) return failure(kExitInternal, fmt::format("cannot remove {}: {}", (fs_dir / kOwnerRangeFile).string(), ec.message()));
  auto old_entries = archived_roots(fs_dir);
  auto new_entries = archived_roots(staging);
  if (!old_entries) return std::unexpected(old_entries.error());
  if (!new_entries) return std::unexpected(new_entries.error());
  for (const auto& name : *old_entries) {
    if (auto m = move(fs_dir / name, replaced / name); !m) return m;
  }
  for (const auto& name : *new_entries) {
    if (auto m = move(staging / name, fs_dir / name); !m) return m;
  }
  for (const fs::path& gone : {replaced, staging, fs_dir / kOverlayWorkDir}) {
    fs::remove_all(gone, ec);
    if (ec)
      return failure(kExitInternal,
                     fmt::format("cannot remove {}: {}", gone.string(), ec.message()));
  }
  return {};
}

}  // namespace

Outcome<FsArchive> write_fs_archive(const std::string& fs_dir, const std::string& archive_path) {
  int fd = ::open(archive_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return failure(kExitCannotWrite,
                   fmt::format("cannot create {}: {}", archive_path, std::strerror(errno)));
  }
  auto written = in_child([&] { return write_archive_here(fs_dir, fd); });
  ::close(fd);
  if (!written) ::unlink(archive_path.c_str());
  return written;
}

Outcome<FsArchive> restore_fs_archive(const std::string& archive_path, const std::string& fs_dir) {
  int fd = ::open(archive_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return failure(kExitFileMissing,
                   fmt::format("cannot read {}: {}", archive_path, std::strerror(errno)));
  }
  fs::path staging = fs::path(fs_dir) / kStagingDir;
  std::error_code ec;
  // A new host: fs/ is the WPAR's alone (mode 0700, as system_fs.h makes it).
  if (fs::create_directories(fs_dir, ec)) fs::permissions(fs_dir, fs::perms::owner_all, ec);
  fs::remove_all(staging, ec);  // a restore that died half-way
  fs::remove_all(fs::path(fs_dir) / kReplacedDir, ec);
  fs::create_directories(staging, ec);
  if (!ec) fs::permissions(staging, fs::perms::owner_all, ec);
  if (ec) {
    ::close(fd);
    return failure(kExitInternal,
                   fmt::format("cannot create {}: {}", staging.string(), ec.message()));
  }
  auto restored = in_child([&] { return extract_here(staging.string(), fd); });
  ::close(fd);
  if (restored) {
    if (auto swapped = swap_in(fs_dir, staging); !swapped) return std::unexpected(swapped.error());
  } else {
    fs::remove_all(staging, ec);  // fs/ stays as it was
  }
  return restored;
}

}  // namespace wpm::checkpoint
