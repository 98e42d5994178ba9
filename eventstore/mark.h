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
//   - written in the current boot, or synced before its reply: it is exactly
//     the highest acknowledged sequence (`exact`);
//   - written in an earlier boot without that sync: the machine went down
//     before the value may have reached the disk, so the value read is a lower
//     bound (later acknowledgements may be missing from it).
//
// Layout: two 4 KiB slots, written alternately. A slot holds magic, crc32c,
// sequence, flags and the boot id. Reading takes the highest valid slot, so a
// torn write of one slot leaves the other. Slots of the first format (magic,
// crc32c, sequence; always synced before the reply) are read as exact.
// Thread safety: one owner thread.

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
  // Opens (creating when missing) the file at `path`. `reading()` is empty for
  // a file that was just created.
  static Result<std::unique_ptr<AckMark>> open(const std::string& path, const BootId& boot);
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

  // Writes `sequence` into the next slot; with `sync`, also syncs it before
  // returning (the value is then exact across a power cut). An error is an I/O
  // error: the caller must not acknowledge and should abort (DESIGN.md §9).
  [[nodiscard]] Result<void> write(uint64_t sequence, bool sync);
  [[nodiscard]] Result<void> store(uint64_t sequence) { return write(sequence, true); }
  // Syncs the last written value; nothing to do when clean.
  [[nodiscard]] Result<void> sync();

 private:
  AckMark(int fd, std::string path, BootId boot, std::optional<MarkReading> value, uint64_t writes);
  int fd_;
  std::string path_;
  BootId boot_;
  std::optional<MarkReading> value_;
  uint64_t writes_;
  bool dirty_ = false;
};

}  // namespace wpm::eventstore
