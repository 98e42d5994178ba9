#include "eventstore/mark.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "eventstore/constants.h"
#include "schemas/assert.h"
#include "schemas/hash.h"

namespace wpm::eventstore {
namespace {

// First format: always synced before the reply, no boot id.
struct SlotV1 {
  uint32_t magic;  // kMarkMagic
  uint32_t crc;    // over `sequence`
  uint64_t sequence;
};

struct SlotV2 {
  uint32_t magic;  // kMarkMagicV2
  uint32_t crc;    // over every byte after this field
  uint64_t sequence;
  uint32_t flags;  // kSyncedBeforeReply
  uint32_t reserved;
  BootId boot;
};
static_assert(sizeof(SlotV2) == 40 && sizeof(SlotV2) <= kMarkSlotBytes);
constexpr uint32_t kSyncedBeforeReply = 1;
constexpr size_t kSlotCrcOffset = offsetof(SlotV2, sequence);

uint32_t slot_crc(const SlotV2& s) {
  return crc32c(reinterpret_cast<const char*>(&s) + kSlotCrcOffset, sizeof s - kSlotCrcOffset);
}

bool known(const BootId& boot) {
  return std::any_of(boot.begin(), boot.end(), [](uint8_t b) { return b != 0; });
}

std::optional<MarkReading> parse_slot(const char* p, const BootId& current) {
  uint32_t magic;
  std::memcpy(&magic, p, sizeof magic);
  if (magic == kMarkMagic) {
    SlotV1 s;
    std::memcpy(&s, p, sizeof s);
    if (s.crc != crc32c(&s.sequence, sizeof s.sequence)) return std::nullopt;
    return MarkReading{s.sequence, true};
  }
  if (magic == kMarkMagicV2) {
    SlotV2 s;
    std::memcpy(&s, p, sizeof s);
    if (s.crc != slot_crc(s)) return std::nullopt;
    bool same_boot = known(current) && s.boot == current;
    return MarkReading{s.sequence, same_boot || (s.flags & kSyncedBeforeReply) != 0};
  }
  return std::nullopt;
}

Error io_error(const std::string& what, const std::string& path) {
  return Error{ErrorCode::kIo, fmt::format("{} {}: {}", what, path, std::strerror(errno))};
}

Error rocks_io_error(const std::string& what, const std::string& path, const rocksdb::IOStatus& s) {
  return Error{ErrorCode::kIo, fmt::format("{} {}: {}", what, path, s.ToString())};
}

// Returns the highest valid slot and which slot holds it, from the file's
// first bytes. On equal sequences the exact reading wins.
std::pair<std::optional<MarkReading>, int> parse_slots(std::string_view buf, const BootId& boot) {
  std::optional<MarkReading> best;
  int slot = -1;
  for (int i = 0; i < 2; ++i) {
    if (buf.size() < i * kMarkSlotBytes + sizeof(SlotV2)) break;
    auto v = parse_slot(buf.data() + i * kMarkSlotBytes, boot);
    if (!v) continue;
    if (!best || v->sequence > best->sequence || (v->sequence == best->sequence && v->exact)) {
      best = v;
      slot = i;
    }
  }
  return std::make_pair(best, slot);
}

// Parses a boot id as the kernel writes it: 32 hex digits in dashed groups.
std::optional<BootId> parse_boot_id(std::string_view text) {
  std::string digits;
  for (char c : text) {
    if (c != '-' && c != '\n') digits += c;
  }
  auto bytes = from_hex(digits);
  if (!bytes || bytes->size() != BootId().size()) return std::nullopt;
  BootId id{};
  std::memcpy(id.data(), bytes->data(), id.size());
  return id;
}

}  // namespace

BootId current_boot_id() {
  int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return BootId{};
  char buf[64] = {};
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return BootId{};
  return parse_boot_id(std::string_view(buf, static_cast<size_t>(n))).value_or(BootId{});
}

BootId boot_id_from_text(const std::string& text) {
  Sha256Digest digest = sha256(text);
  BootId id{};
  std::memcpy(id.data(), digest.data(), id.size());
  return id;
}

Result<std::unique_ptr<AckMark>> AckMark::open(const std::string& path, const BootId& boot,
                                               rocksdb::FileSystem* fs) {
  if (fs == nullptr) fs = rocksdb::FileSystem::Default().get();
  const rocksdb::IOOptions io;
  std::unique_ptr<rocksdb::FSRandomRWFile> file;
  rocksdb::FileOptions file_options;
  file_options.use_direct_reads = file_options.use_direct_writes = false;
  if (fs->FileExists(path, io, nullptr).IsNotFound()) {
    // Made empty first: a file opened for random writes must exist.
    std::unique_ptr<rocksdb::FSWritableFile> made;
    auto s = fs->NewWritableFile(path, file_options, &made, nullptr);
    if (s.ok()) s = made->Close(io, nullptr);
    if (!s.ok()) return std::unexpected(rocks_io_error("cannot create", path, s));
  }
  if (auto s = fs->NewRandomRWFile(path, file_options, &file, nullptr); !s.ok()) {
    return std::unexpected(rocks_io_error("cannot open", path, s));
  }
  std::string scratch(2 * kMarkSlotBytes, '\0');
  rocksdb::Slice got;
  if (auto s = file->Read(0, scratch.size(), io, &got, scratch.data(), nullptr); !s.ok()) {
    return std::unexpected(rocks_io_error("cannot read", path, s));
  }
  auto [value, slot] = parse_slots(std::string_view(got.data(), got.size()), boot);
  // Reserve both slots now, so that later writes never allocate (a full disk
  // must not be able to fail the mark).
  if (got.size() < 2 * kMarkSlotBytes) {
    std::string zeros(2 * kMarkSlotBytes, '\0');
    if (auto s = file->Write(0, zeros, io, nullptr); !s.ok()) return std::unexpected(rocks_io_error("cannot initialise", path, s));
    if (auto s = file->Fsync(io, nullptr); !s.ok()) return std::unexpected(rocks_io_error("cannot initialise", path, s));
    // The new file's directory entry must be durable too, or a power cut could
    // lose the file while the log survives.
    std::string dir = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
    std::unique_ptr<rocksdb::FSDirectory> directory;
    auto s = fs->NewDirectory(dir.empty() ? "." : dir, io, &directory, nullptr);
    if (s.ok()) s = directory->Fsync(io, nullptr);
    if (!s.ok()) return std::unexpected(rocks_io_error("cannot sync the directory of", path, s));
  }
  // Writes go to the slot not holding the current value.
  return std::unique_ptr<AckMark>(new AckMark(std::move(file), path, boot, value, slot == 0 ? 1 : 0));
}

Result<std::optional<MarkReading>> AckMark::read(const std::string& path, const BootId& boot) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<MarkReading>{};
    return std::unexpected(io_error("cannot open", path));
  }
  std::string buf(2 * kMarkSlotBytes, '\0');
  ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
  Error e = io_error("cannot read", path);
  ::close(fd);
  if (n < 0) return std::unexpected(e);
  return parse_slots(std::string_view(buf.data(), static_cast<size_t>(n)), boot).first;
}

AckMark::AckMark(std::unique_ptr<rocksdb::FSRandomRWFile> file, std::string path, BootId boot,
                 std::optional<MarkReading> value, int working_slot)
    : file_(std::move(file)), path_(std::move(path)), boot_(boot), value_(value), working_slot_(working_slot) {}

AckMark::~AckMark() { (void)file_->Close(rocksdb::IOOptions(), nullptr); }

Result<void> AckMark::put(int slot, uint64_t sequence, bool exact) {
  SlotV2 s{};
  s.magic = kMarkMagicV2;
  s.sequence = sequence;
  s.flags = exact ? kSyncedBeforeReply : 0;
  s.boot = boot_;
  s.crc = slot_crc(s);
  uint64_t offset = static_cast<uint64_t>(slot) * kMarkSlotBytes;
  auto st = file_->Write(offset, rocksdb::Slice(reinterpret_cast<const char*>(&s), sizeof s), rocksdb::IOOptions(),
                         nullptr);
  if (!st.ok()) return std::unexpected(rocks_io_error("cannot write", path_, st));
  value_ = MarkReading{sequence, true};
  return {};
}

Result<void> AckMark::write(uint64_t sequence, bool sync) {
  WPM_ASSERT(sync || unsynced_allowed_, "unsynced mark writes need reset(sequence, false) first");
  if (auto r = put(working_slot_, sequence, sync); !r) return r;
  dirty_ = true;
  if (sync) return this->sync();
  return {};
}

Result<void> AckMark::sync() {
  if (!dirty_) return {};
  if (auto s = file_->Sync(rocksdb::IOOptions(), nullptr); !s.ok()) {
    return std::unexpected(rocks_io_error("cannot sync", path_, s));
  }
  dirty_ = false;
  working_slot_ = 1 - working_slot_;  // the synced value stays; the next writes go to the other slot
  return {};
}

Result<void> AckMark::reset(uint64_t sequence, bool exact) {
  unsynced_allowed_ = !exact;
  // One slot at a time, each synced: a power cut tears at most one of them.
  for (int i = 0; i < 2; ++i) {
    if (auto r = put(working_slot_, sequence, exact); !r) return r;
    dirty_ = true;
    if (auto r = sync(); !r) return r;
  }
  return {};
}

}  // namespace wpm::eventstore
