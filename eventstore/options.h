#pragma once
// Options of the event store, parsed once in main() from flags and the
// configuration file (STYLE.md §5).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace rocksdb {
class FileSystem;
}

namespace wpm::eventstore {

struct StoreOptions {
  // Directory holding the database (`log/`), the acknowledged-sequence mark
  // (`acknowledged`) and the lock file (`wpmd.lock`). Default: none (required).
  std::string data_dir;
  // How long an append's idempotency key is remembered after its commit; a
  // re-send within the window returns the original sequences. Keys older than
  // this are dropped at compaction. Default: 24 h.
  uint32_t idempotency_window_s = 24 * 3600;
  // Largest number of events committed in one batch (one WAL sync). Requests
  // past it wait for the next batch. Default: 65536.
  size_t batch_events_max = 65'536;
  // Read replies: at most this many events and about this many bytes per page.
  // Default: 4096 events, 4 MiB.
  uint32_t read_page_events_max = 4096;
  size_t read_page_bytes_max = 4u << 20;
  // RocksDB memtable size of the log column family. Default: 64 MiB.
  size_t write_buffer_bytes = 64u << 20;
  // Records re-verified (checksum and chain) at open, counted from the head.
  // Default: 1000.
  uint64_t open_verify_tail_events = 1000;
  // Open the database read-only (offline tools). Default: false.
  bool read_only = false;
  // Offline tools only: open even when the WAL has a corrupt record in the
  // middle, skipping what cannot be read, so that the damage can be reported.
  // Default: false.
  bool salvage = false;
  // Longest time the acknowledged-sequence mark stays written but not synced
  // (eventstore/mark.h). Each batch writes the mark before its reply; a crash
  // of wpmd loses nothing of it, a crash of the machine within this window may
  // leave the mark on disk behind the last acknowledgements, and open then
  // keeps the records above it instead of checking them against it. 0 syncs
  // the mark before every reply: exact after a power cut too, at the cost of a
  // second disk flush per batch. Default: 5 ms.
  uint32_t mark_sync_interval_ms = 5;
  // Run RocksDB's compaction threads at the lowest CPU priority (nice 19), so
  // that on a small machine they do not delay the wake-ups an acknowledgement
  // waits for. It applies to the whole process (RocksDB's default
  // environment), so only the process that owns the store sets it: wpmd does.
  // Flushes keep their priority: writers stall when they fall behind.
  // Default: false.
  bool low_priority_compactions = false;
  // A batch of at least this many bytes starts its WAL sync on a helper thread
  // as soon as RocksDB has appended it to the WAL, so that the memtable insert
  // runs during the sync (eventstore/wal_sync.h). Smaller batches sync on the
  // sequencer: for them the helper's wake-up costs more than the insert it
  // overlaps. 0: never. Default: 32 KiB (about 100 small events).
  size_t wal_early_sync_bytes = 32u << 10;
  // Crash tests only: kill the process (SIGKILL) at this named point of a
  // commit, so that a crash between two steps is deterministic (RocksDB's kill
  // points are the model). "after_wal_sync": the records are durable, the mark
  // is not written; "after_mark_write": acknowledged but not yet answered.
  // wpmd reads it from WPM_TEST_KILL_POINT. Default: empty (never).
  std::string kill_point;
  // Tests only: a stand-in for the kernel's boot id, so that a test can open
  // the store "after a reboot"; "unreadable" stands for a boot id that cannot
  // be read. Default: empty (the real boot id).
  std::string boot_id_for_test;
  // Tests only: the disk beneath the store, the early-sync wrapper and the
  // acknowledged-sequence mark (a simulated one that can lose power or fail a
  // sync: tests/support/fault_fs.h). Default: null, the real one.
  std::shared_ptr<rocksdb::FileSystem> file_system_for_test;
};

}  // namespace wpm::eventstore
