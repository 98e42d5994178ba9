#pragma once
// The acknowledged-sequence mark: the highest sequence the store has
// acknowledged, kept in its own file beside the database (not in the WAL it
// guards, DESIGN.md §9). On open, a log that ends below the mark has lost
// acknowledged events.
//
// Each batch writes the mark after its WAL sync and before its reply. The
// write lands in the page cache at once, which outlives a crash of the process;
// the sync to disk may follow later (StoreOptions::mark_sync_interval_ms). So
// every value carries the boot it was written in and whether it was synced
// before its reply:
//   - written in the current boot, or flagged synced before its reply: it is
//     exactly the highest acknowledged sequence (`exact`);
//   - otherwise (an unsynced run of writes, read after a reboot): a lower
//     bound; acknowledgements written after the last sync may be missing.
// Only writes that are synced before their reply, and the final value of a
// clean stop, are flagged; an open that will write unsynced values first
// resets both slots to unflagged ones (see reset()).
//
// Layout: two 4 KiB slots. A slot holds magic, crc32c, sequence, flags and the
// boot id. Reading takes the highest valid slot. Unsynced writes all go to one
// slot; a sync moves the writes to the other, so one slot always holds a
// synced value and a torn write can only damage the slot being written. Slots
// of the first format (magic, crc32c, sequence; always synced before the
// reply) are read as exact.
// Thread safety: one owner thread.

#include <rocksdb/file_system.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "schemas/error.h"

namespace wpm::eventstore {

// The kernel's id of the running boot (/proc/sys/kernel/random/boot_id). All
// zero when it cannot be read: such a boot matches no other, values written in
// it count as exact only where they were synced before the reply.
using BootId = std::array<uint8_t, 16>;
BootId current_boot_id();
// A stand-in boot id derived from `text` (tests simulate a reboot with it).
BootId boot_id_from_text(const std::string& text);

struct MarkReading {
  uint64_t sequence = 0;
  // True: exactly the highest acknowledged sequence. False: a lower bound (see
  // above).
  bool exact = true;
  bool operator==(const MarkReading&) const = default;
};

class AckMark {
 public:
  // Opens (creating when missing) the file at `path`, through `fs` (the
  // store's; tests put a simulated disk there; null: the real one).
  // `reading()` is empty for a file that was just created.
  static Result<std::unique_ptr<AckMark>> open(const std::string& path, const BootId& boot,
                                               rocksdb::FileSystem* fs = nullptr);
  // Reads the mark without opening for write (offline tools). Empty: no file,
  // or no valid slot.
  static Result<std::optional<MarkReading>> read(const std::string& path, const BootId& boot);
  ~AckMark();
  AckMark(const AckMark&) = delete;
  AckMark& operator=(const AckMark&) = delete;

  std::optional<MarkReading> reading() const { return value_; }
  std::optional<uint64_t> value() const {
    return value_ ? std::optional<uint64_t>(value_->sequence) : std::nullopt;
  }
  // True when a written value has not been synced yet.
  bool dirty() const { return dirty_; }

  // Writes `sequence` into the working slot; with `sync`, also syncs it
  // before returning and flags it exact (synced before its reply). Without,
  // later writes replace it in the same slot until sync(): the other slot
  // keeps the last synced value, so a torn write never takes both. Unsynced
  // writes are allowed only after reset(…, false) (asserted). An error
  // is an I/O error: the caller must not acknowledge and should abort
  // (DESIGN.md §9).
  [[nodiscard]] Result<void> write(uint64_t sequence, bool sync);
  [[nodiscard]] Result<void> store(uint64_t sequence) { return write(sequence, true); }
  // Syncs the working slot, which then holds the synced value; writes move to
  // the other slot. Nothing to do when clean.
  [[nodiscard]] Result<void> sync();
  // Writes `sequence` into both slots, one at a time, each synced; `exact`
  // flags them synced before their reply. Before unsynced writes, an open
  // resets the file with exact = false: an exact slot left from an earlier
  // run would otherwise read as exact after a power cut that lost the newer,
  // unsynced values. A clean stop writes the final head with exact = true.
  [[nodiscard]] Result<void> reset(uint64_t sequence, bool exact);

 private:
  AckMark(std::unique_ptr<rocksdb::FSRandomRWFile> file, std::string path, BootId boot,
          std::optional<MarkReading> value, int working_slot);
  Result<void> put(int slot, uint64_t sequence, bool exact);
  std::unique_ptr<rocksdb::FSRandomRWFile> file_;
  std::string path_;
  BootId boot_;
  std::optional<MarkReading> value_;
  int working_slot_;  // 0 or 1: where the next write goes
  bool dirty_ = false;
  bool unsynced_allowed_ = false;  // reset(…, false) ran: no exact slot is left
};

}  // namespace wpm::eventstore
