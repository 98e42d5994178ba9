#pragma once
// The acknowledged-sequence mark: the highest sequence the store has ever
// acknowledged, kept in its own file beside the database (not in the WAL it
// guards, DESIGN.md §9). It is written and synced after each batch's WAL sync
// and before the batch is acknowledged, so on open a log that ends below the
// mark has lost acknowledged events, and records above it were never
// acknowledged.
//
// Layout: two 4 KiB slots, written alternately; each holds magic, crc32c and
// the sequence. Reading takes the highest valid slot, so a torn write of one
// slot leaves the other. Thread safety: one owner thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "schemas/error.h"

namespace wpm::eventstore {

class AckMark {
 public:
  // Opens (creating when missing) the file at `path`. `value()` is empty for a
  // file that was just created.
  static Result<std::unique_ptr<AckMark>> open(const std::string& path);
  // Reads the mark without opening for write (offline tools). Empty: no file.
  static Result<std::optional<uint64_t>> read(const std::string& path);
  ~AckMark();
  AckMark(const AckMark&) = delete;
  AckMark& operator=(const AckMark&) = delete;

  std::optional<uint64_t> value() const { return value_; }

  // Writes and syncs `sequence`. An error here is a failed sync: the caller
  // must not acknowledge and should abort (DESIGN.md §9).
  [[nodiscard]] Result<void> store(uint64_t sequence);

 private:
  AckMark(int fd, std::string path, std::optional<uint64_t> value, uint64_t writes);
  int fd_;
  std::string path_;
  std::optional<uint64_t> value_;
  uint64_t writes_;
};

}  // namespace wpm::eventstore
