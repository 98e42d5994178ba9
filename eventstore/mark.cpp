#include "eventstore/mark.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "eventstore/constants.h"
#include "schemas/hash.h"

namespace wpm::eventstore {
namespace {

struct Slot {
  uint32_t magic;
  uint32_t crc;  // over `sequence`
  uint64_t sequence;
};

std::optional<uint64_t> parse_slot(const char* p) {
  Slot s;
  std::memcpy(&s, p, sizeof s);
  if (s.magic != kMarkMagic || s.crc != crc32c(&s.sequence, sizeof s.sequence)) return std::nullopt;
  return s.sequence;
}

Error io_error(const std::string& what, const std::string& path) {
  return Error{ErrorCode::kIo, fmt::format("{} {}: {}", what, path, std::strerror(errno))};
}

// Returns the highest valid slot and which slot holds it.
Result<std::pair<std::optional<uint64_t>, int>> read_slots(int fd, const std::string& path) {
  std::string buf(2 * kMarkSlotBytes, '\0');
  ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
  if (n < 0) return std::unexpected(io_error("cannot read", path));
  std::optional<uint64_t> best;
  int slot = -1;
  for (int i = 0; i < 2; ++i) {
    if (static_cast<size_t>(n) < i * kMarkSlotBytes + sizeof(Slot)) break;
    auto v = parse_slot(buf.data() + i * kMarkSlotBytes);
    if (v && (!best || *v > *best)) {
      best = v;
      slot = i;
    }
  }
  return std::make_pair(best, slot);
}

}  // namespace

Result<std::unique_ptr<AckMark>> AckMark::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return std::unexpected(io_error("cannot open", path));
  auto slots = read_slots(fd, path);
  if (!slots) {
    ::close(fd);
    return std::unexpected(slots.error());
  }
  // Reserve both slots now, so that later writes never allocate (a full disk
  // must not be able to fail the mark).
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size < static_cast<off_t>(2 * kMarkSlotBytes)) {
    std::string zeros(2 * kMarkSlotBytes, '\0');
    if (::pwrite(fd, zeros.data(), zeros.size(), 0) != static_cast<ssize_t>(zeros.size()) ||
        ::fsync(fd) != 0) {
      Error e = io_error("cannot initialise", path);
      ::close(fd);
      return std::unexpected(e);
    }
    // The new file's directory entry must be durable too, or a power cut could
    // lose the file while the log survives.
    std::string dir = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
    int dir_fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0 || ::fsync(dir_fd) != 0) {
      Error e = io_error("cannot sync the directory of", path);
      if (dir_fd >= 0) ::close(dir_fd);
      ::close(fd);
      return std::unexpected(e);
    }
    ::close(dir_fd);
  }
  auto [value, slot] = *slots;
  // Next write goes to the slot not holding the current value.
  return std::unique_ptr<AckMark>(new AckMark(fd, path, value, slot == 0 ? 1 : 0));
}

Result<std::optional<uint64_t>> AckMark::read(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<uint64_t>{};
    return std::unexpected(io_error("cannot open", path));
  }
  auto slots = read_slots(fd, path);
  ::close(fd);
  if (!slots) return std::unexpected(slots.error());
  return slots->first;
}

AckMark::AckMark(int fd, std::string path, std::optional<uint64_t> value, uint64_t writes)
    : fd_(fd), path_(std::move(path)), value_(value), writes_(writes) {}

AckMark::~AckMark() { ::close(fd_); }

Result<void> AckMark::store(uint64_t sequence) {
  Slot s{kMarkMagic, crc32c(&sequence, sizeof sequence), sequence};
  off_t offset = static_cast<off_t>((writes_ % 2) * kMarkSlotBytes);
  if (::pwrite(fd_, &s, sizeof s, offset) != static_cast<ssize_t>(sizeof s)) {
    return std::unexpected(io_error("cannot write", path_));
  }
  if (::fdatasync(fd_) != 0) return std::unexpected(io_error("cannot sync", path_));
  ++writes_;
  value_ = sequence;
  return {};
}

}  // namespace wpm::eventstore
