#pragma once
// Online backups of a data directory (README "Backup and restore").
//
// A backup is a directory BACKUPS/wpm-<UTC time>-<head>/, mode 0700 (it
// holds keys), laid out as a data directory: log/ (a consistent RocksDB
// checkpoint of every column family, taken while commits run), format,
// keys/, registration.hash, and an acknowledged-sequence mark at the last
// sequence the copy holds; and manifest.json, written last: the version,
// the time, that head, and every file's size and SHA-256. A directory
// without a manifest is an unfinished backup (`.partial` while it is made).
//
// Restoring copies a backup into an empty data directory and writes the
// mark at the restored log's head (synced: exact in this boot), so the store
// opens on it as on any log; what happened after the backup is gone from
// the log, and the agents are reconciled before the executor acts
// (docs/backup.md).
//
// Thread safety: free functions; create() may run while the store commits.

#include <cstdint>
#include <string>
#include <vector>

#include "schemas/error.h"

namespace wpm::eventstore {

class Store;

struct BackupFile {
  std::string path;  // relative to the backup
  uint64_t bytes = 0;
  std::string sha256;  // hex
  bool operator==(const BackupFile&) const = default;
};

struct BackupManifest {
  std::string name;  // the directory's name
  std::string path;  // where it is (not stored: filled in when read)
  std::string version;
  int64_t created_ns = 0;
  uint64_t head = 0;  // the last sequence the backup's log holds
  uint64_t bytes = 0;
  std::vector<BackupFile> files;
};

// Makes a backup of the store (open, running) and of its data directory's
// keys in `backups_dir` (made, mode 0700). `now_ns` names it.
[[nodiscard]] Result<BackupManifest> create_backup(const Store& store, const std::string& data_dir,
                                                   const std::string& backups_dir, int64_t now_ns,
                                                   const std::string& version);
// The finished backups in `backups_dir`, oldest first (none: empty).
[[nodiscard]] Result<std::vector<BackupManifest>> list_backups(const std::string& backups_dir);
// Reads one backup's manifest.
[[nodiscard]] Result<BackupManifest> read_backup(const std::string& path);
// Checks every file of the manifest (size and SHA-256) and that no file was
// added; the first problem, or nothing. The log's own hash chain is checked
// by opening it (wpm backup verify does both).
[[nodiscard]] Result<void> check_backup_files(const BackupManifest& manifest);
// Removes all but the newest `keep` finished backups (and unfinished ones
// older than the newest finished); how many went.
[[nodiscard]] Result<size_t> prune_backups(const std::string& backups_dir, size_t keep);
// Copies the backup at `path` into `data_dir`, which must hold no log, after
// checking its files; writes the mark at its head. The manifest.
[[nodiscard]] Result<BackupManifest> restore_backup(const std::string& path, const std::string& data_dir);

}  // namespace wpm::eventstore
