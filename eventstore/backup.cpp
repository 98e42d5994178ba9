#include "eventstore/backup.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "eventstore/mark.h"
#include "eventstore/store.h"
#include "schemas/hash.h"

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kManifest = "manifest.json";
constexpr const char* kPartialPrefix = ".partial-";

// Files a read-only open of the backup's log may add (RocksDB's info log and
// lock, wpmd's lock): neither listed nor counted as additions.
bool transient(const fs::path& p) {
  std::string name = p.filename().string();
  return name == "LOG" || name.starts_with("LOG.old.") || name == "LOCK" || name == "wpmd.lock";
}

std::unexpected<Error> io(const std::string& what, const std::error_code& ec) {
  return std::unexpected(Error{ErrorCode::kIo, fmt::format("{}: {}", what, ec.message())});
}

// The file's SHA-256 and size; with `sync`, also synced to disk (a backup's
// files before its manifest says it is whole).
Result<std::string> file_sha256(const fs::path& path, uint64_t& bytes, bool sync = false) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(ErrorCode::kIo, fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  bytes = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return fail(ErrorCode::kIo, fmt::format("cannot read {}: {}", path.string(), std::strerror(err)));
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
    bytes += static_cast<uint64_t>(n);
  }
  if (sync && ::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return fail(ErrorCode::kIo, fmt::format("cannot sync {}: {}", path.string(), std::strerror(err)));
  }
  ::close(fd);
  return to_hex(h.final());
}

// Every regular file under `root` (relative paths, sorted), transient ones left out.
Result<std::vector<std::string>> files_under(const fs::path& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file() || transient(it->path())) continue;
    out.push_back(fs::relative(it->path(), root).string());
  }
  if (ec) return io(fmt::format("cannot list {}", root.string()), ec);
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> sync_path(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    return fail(ErrorCode::kIo, fmt::format("cannot sync {}: {}", path.string(), std::strerror(err)));
  }
  ::close(fd);
  return {};
}

// Syncs `root` and every directory under it (their entries: the files' names).
Result<void> sync_directories(const fs::path& root) {
  if (auto r = sync_path(root, true); !r) return r;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_directory()) continue;
    if (auto r = sync_path(it->path(), true); !r) return r;
  }
  if (ec) return io(fmt::format("cannot list {}", root.string()), ec);
  return {};
}

// One backup at a time in this process (the schedule and `wpm backup
// create`), and pruning never while one is made.
std::mutex& backup_mutex() {
  static std::mutex m;
  return m;
}

// A directory for backups: made 0700 when new; an existing one is used only
// when no one but its owner may write in it (the keys go there).
Result<void> prepare_backups_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) return io(fmt::format("cannot make the backup directory {}", dir), ec);
    fs::permissions(dir, fs::perms::owner_all, ec);
    if (ec) return io(fmt::format("cannot make {} private (mode 0700)", dir), ec);
    return {};
  }
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("{} is not a directory", dir));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 || st.st_uid != ::geteuid()) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} may be written by others (mode {:o}, owner uid {}); backups hold the manager's keys: "
                            "choose a directory only this user may write in (e.g. one made with mode 0700)",
                            dir, st.st_mode & 07777, st.st_uid));
  }
  return {};
}

json to_json(const BackupManifest& m) {
  json files = json::array();
  for (const auto& f : m.files) files.push_back({{"path", f.path}, {"bytes", f.bytes}, {"sha256", f.sha256}});
  return {{"format", "wpm-backup 1"}, {"name", m.name},   {"version", m.version}, {"createdNs", m.created_ns},
          {"head", m.head},           {"bytes", m.bytes}, {"files", files}};
}

std::string utc_name(int64_t now_ns) {
  std::time_t t = static_cast<std::time_t>(now_ns / 1'000'000'000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "wpm-%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

// Copies the keys, the format stamp and the registration hash of the data directory.
Result<void> copy_beside(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  for (const char* name : {"format", "registration.hash"}) {
    if (!fs::exists(from / name, ec)) continue;
    fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return io(fmt::format("cannot copy {}", (from / name).string()), ec);
  }
  if (fs::is_directory(from / "keys", ec)) {
    fs::copy(from / "keys", to / "keys", fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
    if (ec) return io(fmt::format("cannot copy {}", (from / "keys").string()), ec);
    fs::permissions(to / "keys", fs::perms::owner_all, ec);
  }
  return {};
}

}  // namespace

Result<BackupManifest> create_backup(const Store& store, const std::string& data_dir, const std::string& backups_dir,
                                     int64_t now_ns, const std::string& version) {
  std::unique_lock busy(backup_mutex(), std::try_to_lock);
  if (!busy.owns_lock()) {
    return fail(ErrorCode::kUnavailable, "a backup is being made already; retry when it ends (wpm backup list)");
  }
  std::error_code ec;
  if (auto r = prepare_backups_dir(backups_dir); !r) return std::unexpected(r.error());
  BackupManifest m;
  m.name = utc_name(now_ns);
  for (int n = 2; fs::exists(fs::path(backups_dir) / m.name, ec); ++n) m.name = fmt::format("{}-{}", utc_name(now_ns), n);
  m.version = version;
  m.created_ns = now_ns;
  fs::path tmp = fs::path(backups_dir) / (kPartialPrefix + m.name);
  // Made here, never one found there (a link someone left would take the keys elsewhere).
  if (::mkdir(tmp.c_str(), 0700) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot make {}: {}{}", tmp.string(), std::strerror(errno),
                                            errno == EEXIST ? " (left by an earlier backup: remove it)" : ""));
  }
  // A checkpoint shares its table files with the live database (hard links
  // on one file system): copied out of it, so that the backup is a copy of
  // its own, then dropped.
  fs::path staging = tmp / ".checkpoint";
  auto head = store.checkpoint(staging.string());
  if (!head) {
    fs::remove_all(tmp, ec);
    return std::unexpected(head.error());
  }
  m.head = *head;
  auto done = [&]() -> Result<void> {
    fs::create_directory(tmp / "log", ec);
    if (ec) return io(fmt::format("cannot make {}", (tmp / "log").string()), ec);
    for (const auto& entry : fs::directory_iterator(staging, ec)) {
      if (!entry.is_regular_file() || transient(entry.path())) continue;
      fs::copy_file(entry.path(), tmp / "log" / entry.path().filename(), ec);
      if (ec) return io(fmt::format("cannot copy {}", entry.path().string()), ec);
    }
    if (ec) return io(fmt::format("cannot list {}", staging.string()), ec);
    fs::remove_all(staging, ec);
    if (ec) return io(fmt::format("cannot remove {}", staging.string()), ec);
    if (auto r = copy_beside(data_dir, tmp); !r) return r;
    {
      auto mark = AckMark::open((tmp / "acknowledged").string(), current_boot_id());
      if (!mark) return std::unexpected(mark.error());
      if (auto r = (*mark)->reset(m.head, true); !r) return r;
    }
    auto files = files_under(tmp);
    if (!files) return std::unexpected(files.error());
    for (const auto& rel : *files) {
      BackupFile f{rel, 0, ""};
      auto digest = file_sha256(tmp / rel, f.bytes, true);
      if (!digest) return std::unexpected(digest.error());
      f.sha256 = *digest;
      m.bytes += f.bytes;
      m.files.push_back(std::move(f));
    }
    {
      std::ofstream out(tmp / kManifest, std::ios::trunc);
      out << to_json(m).dump(2) << "\n";
      out.flush();
      if (!out) return fail(ErrorCode::kIo, fmt::format("cannot write {}", (tmp / kManifest).string()));
    }
    if (auto r = sync_path(tmp / kManifest, false); !r) return r;
    if (auto r = sync_directories(tmp); !r) return r;
    fs::rename(tmp, fs::path(backups_dir) / m.name, ec);
    if (ec) return io(fmt::format("cannot rename {}", tmp.string()), ec);
    return sync_path(backups_dir, true);
  }();
  if (!done) {
    fs::remove_all(tmp, ec);
    return std::unexpected(done.error());
  }
  m.path = (fs::path(backups_dir) / m.name).string();
  return m;
}

Result<BackupManifest> read_backup(const std::string& path) {
  std::ifstream in(fs::path(path) / kManifest);
  if (!in) {
    return fail(ErrorCode::kNotFound,
                fmt::format("{} is not a finished backup (no {}); list them with `wpm backup list`", path, kManifest));
  }
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != "wpm-backup 1") {
    return fail(ErrorCode::kCorruption, fmt::format("{}/{} is not a wpm backup manifest", path, kManifest));
  }
  BackupManifest m;
  try {
    m.name = j.at("name").get<std::string>();
    m.version = j.at("version").get<std::string>();
    m.created_ns = j.at("createdNs").get<int64_t>();
    m.head = j.at("head").get<uint64_t>();
    m.bytes = j.at("bytes").get<uint64_t>();
    for (const auto& f : j.at("files")) {
      std::string rel = f.at("path").get<std::string>();
      if (rel.empty() || rel.front() == '/' || rel.find("..") != std::string::npos) {
        return fail(ErrorCode::kCorruption, fmt::format("{}/{} names a file outside it: {}", path, kManifest, rel));
      }
      m.files.push_back({rel, f.at("bytes").get<uint64_t>(), f.at("sha256").get<std::string>()});
    }
  } catch (const json::exception& e) {
    return fail(ErrorCode::kCorruption, fmt::format("{}/{} is damaged: {}", path, kManifest, e.what()));
  }
  m.path = path;
  return m;
}

Result<std::vector<BackupManifest>> list_backups(const std::string& backups_dir) {
  std::vector<BackupManifest> out;
  std::error_code ec;
  if (!fs::is_directory(backups_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(backups_dir, ec)) {
    std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !name.starts_with("wpm-")) continue;
    if (!fs::exists(entry.path() / kManifest)) continue;
    auto m = read_backup(entry.path().string());
    if (m) out.push_back(std::move(*m));
  }
  if (ec) return io(fmt::format("cannot list {}", backups_dir), ec);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.created_ns, a.name) < std::tie(b.created_ns, b.name);
  });
  return out;
}

Result<void> check_backup_files(const BackupManifest& manifest) {
  std::set<std::string> listed;
  for (const auto& f : manifest.files) {
    listed.insert(f.path);
    uint64_t bytes = 0;
    fs::path p = fs::path(manifest.path) / f.path;
    if (!fs::exists(p)) return fail(ErrorCode::kCorruption, fmt::format("{}: {} is missing", manifest.path, f.path));
    auto digest = file_sha256(p, bytes);
    if (!digest) return std::unexpected(digest.error());
    if (bytes != f.bytes || *digest != f.sha256) {
      return fail(ErrorCode::kCorruption, fmt::format("{}: {} differs from the manifest ({} bytes, expected {})",
                                                      manifest.path, f.path, bytes, f.bytes));
    }
  }
  auto present = files_under(manifest.path);
  if (!present) return std::unexpected(present.error());
  for (const auto& rel : *present) {
    if (rel != kManifest && !listed.contains(rel)) {
      return fail(ErrorCode::kCorruption, fmt::format("{}: {} is not in the manifest", manifest.path, rel));
    }
  }
  return {};
}

Result<size_t> prune_backups(const std::string& backups_dir, size_t keep) {
  std::unique_lock busy(backup_mutex(), std::try_to_lock);
  if (!busy.owns_lock()) return size_t{0};  // one is being made: the next pruning
  auto all = list_backups(backups_dir);
  if (!all) return std::unexpected(all.error());
  size_t removed = 0;
  std::error_code ec;
  for (size_t i = 0; i + keep < all->size(); ++i) {
    fs::remove_all((*all)[i].path, ec);
    if (ec) return io(fmt::format("cannot remove {}", (*all)[i].path), ec);
    ++removed;
  }
  // Unfinished ones (a backup cut short by a crash), when a finished one is newer.
  if (!all->empty()) {
    for (const auto& entry : fs::directory_iterator(backups_dir, ec)) {
      std::string name = entry.path().filename().string();
      if (name.starts_with(kPartialPrefix) && name.substr(std::strlen(kPartialPrefix)) < all->back().name) {
        fs::remove_all(entry.path(), ec);
      }
    }
  }
  return removed;
}

Result<BackupManifest> restore_backup(const std::string& path, const std::string& data_dir) {
  auto m = read_backup(path);
  if (!m) return m;
  if (auto r = check_backup_files(*m); !r) return std::unexpected(r.error());
  std::error_code ec;
  if (fs::exists(fs::path(data_dir) / "log", ec)) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} holds a log already; restore into an empty data directory (move this one aside "
                            "first: nothing was changed)",
                            data_dir));
  }
  fs::create_directories(data_dir, ec);
  if (ec) return io(fmt::format("cannot make {}", data_dir), ec);
  // Copied into a staging directory, synced, then moved in, the log last: a
  // restore cut short leaves no log (a second one may run), only the staging.
  const fs::path staging = fs::path(data_dir) / ".restoring";
  fs::remove_all(staging, ec);
  auto copied = [&]() -> Result<void> {
    for (const auto& f : m->files) {
      fs::path to = staging / f.path;
      fs::create_directories(to.parent_path(), ec);
      if (!ec) fs::copy_file(fs::path(path) / f.path, to, fs::copy_options::overwrite_existing, ec);
      if (ec) return io(fmt::format("cannot copy {} into {}", f.path, data_dir), ec);
      uint64_t bytes = 0;
      if (auto r = file_sha256(to, bytes, true); !r) return std::unexpected(r.error());
    }
    fs::permissions(staging / "keys", fs::perms::owner_all, ec);
    if (auto r = sync_directories(staging); !r) return r;
    std::vector<fs::path> entries;
    for (const auto& entry : fs::directory_iterator(staging, ec)) {
      if (entry.path().filename() != "log") entries.push_back(entry.path());
    }
    entries.push_back(staging / "log");
    for (const auto& from : entries) {
      // What an earlier restore cut short left (there is no log beside it).
      if (from.filename() != "log") fs::remove_all(fs::path(data_dir) / from.filename(), ec);
      fs::rename(from, fs::path(data_dir) / from.filename(), ec);
      if (ec) return io(fmt::format("cannot move {} into {}", from.filename().string(), data_dir), ec);
    }
    return sync_path(data_dir, true);
  }();
  if (!copied) {
    fs::remove_all(staging, ec);
    return std::unexpected(copied.error());
  }
  fs::remove_all(staging, ec);
  // The mark at the restored log's head, synced: exact in this boot.
  auto mark = AckMark::open((fs::path(data_dir) / "acknowledged").string(), current_boot_id());
  if (!mark) return std::unexpected(mark.error());
  if (auto r = (*mark)->reset(m->head, true); !r) return std::unexpected(r.error());
  return m;
}

}  // namespace wpm::eventstore
