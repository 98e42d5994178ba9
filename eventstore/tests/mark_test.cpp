#include "eventstore/mark.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "eventstore/constants.h"
#include "schemas/hash.h"

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;

class AckMarkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "wpm-mark-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    path_ = dir_ + "/acknowledged";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::unique_ptr<AckMark> open_mark() {
    auto m = AckMark::open(path_, boot_);
    EXPECT_TRUE(m.has_value()) << m.error().message;
    return m ? std::move(*m) : nullptr;
  }

  std::string file_bytes() const {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // Which 4 KiB slot holds `value` (its 8 little-endian bytes), -1 when none.
  int slot_holding(uint64_t value) const {
    std::string bytes = file_bytes();
    std::string needle(reinterpret_cast<const char*>(&value), sizeof value);
    int found = -1;
    for (int i = 0; i < 2; ++i) {
      if (bytes.size() < (i + 1) * kMarkSlotBytes) break;
      std::string_view slot(bytes.data() + i * kMarkSlotBytes, kMarkSlotBytes);
      if (slot.find(needle) != std::string_view::npos) {
        EXPECT_EQ(found, -1) << "value " << value << " found in both slots";
        found = i;
      }
    }
    return found;
  }

  // Flips the bytes of `value` inside slot `slot`: the slot no longer checks.
  void corrupt_slot(int slot, uint64_t value) {
    std::string bytes = file_bytes();
    std::string needle(reinterpret_cast<const char*>(&value), sizeof value);
    size_t at = std::string_view(bytes.data() + slot * kMarkSlotBytes, kMarkSlotBytes).find(needle);
    ASSERT_NE(at, std::string_view::npos);
    at += slot * kMarkSlotBytes;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x01);
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good());
  }

  std::optional<MarkReading> read_mark(const BootId& boot) const {
    auto r = AckMark::read(path_, boot);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r ? *r : std::nullopt;
  }
  std::optional<uint64_t> read_value() const {
    auto r = read_mark(boot_);
    return r ? std::optional<uint64_t>(r->sequence) : std::nullopt;
  }

  std::string dir_;
  std::string path_;
  BootId boot_ = boot_id_from_text("this boot");
};

// Distinctive values so that their bytes are found only where they were stored.
constexpr uint64_t kFirst = 0x0101'2020'3030'4001;
constexpr uint64_t kSecond = 0x0101'2020'3030'4002;
constexpr uint64_t kThird = 0x0101'2020'3030'4003;

TEST_F(AckMarkTest, NewFileHasNoValue) {
  auto mark = open_mark();
  ASSERT_NE(mark, nullptr);
  EXPECT_FALSE(mark->value().has_value());
  EXPECT_TRUE(fs::exists(path_));
  EXPECT_GE(fs::file_size(path_), 2 * kMarkSlotBytes) << "both slots are reserved at creation";
  mark.reset();
  auto reopened = open_mark();
  ASSERT_NE(reopened, nullptr);
  EXPECT_FALSE(reopened->value().has_value()) << "an all-zero file holds no value";
}

TEST_F(AckMarkTest, StoredValueSurvivesReopen) {
  {
    auto mark = open_mark();
    ASSERT_NE(mark, nullptr);
    ASSERT_TRUE(mark->store(7).has_value());
    EXPECT_EQ(mark->value(), 7u);
  }
  auto mark = open_mark();
  ASSERT_NE(mark, nullptr);
  EXPECT_EQ(mark->value(), 7u);
  EXPECT_EQ(read_value(), std::optional<uint64_t>(7));
}

TEST_F(AckMarkTest, ZeroIsAValueNotAbsence) {
  {
    auto mark = open_mark();
    ASSERT_TRUE(mark->store(0).has_value());
  }
  auto mark = open_mark();
  EXPECT_EQ(mark->value(), std::optional<uint64_t>(0));
}

TEST_F(AckMarkTest, SuccessiveStoresAlternateSlots) {
  auto mark = open_mark();
  ASSERT_TRUE(mark->store(kFirst).has_value());
  ASSERT_TRUE(mark->store(kSecond).has_value());
  int first = slot_holding(kFirst);
  int second = slot_holding(kSecond);
  ASSERT_NE(first, -1);
  ASSERT_NE(second, -1);
  EXPECT_NE(first, second);
  ASSERT_TRUE(mark->store(kThird).has_value());
  EXPECT_EQ(slot_holding(kThird), first) << "the third write replaces the oldest value";
  EXPECT_EQ(slot_holding(kSecond), second);
}

TEST_F(AckMarkTest, CorruptNewestSlotFallsBackToPreviousValue) {
  {
    auto mark = open_mark();
    ASSERT_TRUE(mark->store(kFirst).has_value());
    ASSERT_TRUE(mark->store(kSecond).has_value());
  }
  int newest = slot_holding(kSecond);
  ASSERT_NE(newest, -1);
  corrupt_slot(newest, kSecond);

  EXPECT_EQ(read_value(), std::optional<uint64_t>(kFirst));
  auto mark = open_mark();
  ASSERT_NE(mark, nullptr);
  EXPECT_EQ(mark->value(), kFirst);
}

TEST_F(AckMarkTest, AlternationContinuesAcrossReopen) {
  {
    auto mark = open_mark();
    ASSERT_TRUE(mark->store(kFirst).has_value());
    ASSERT_TRUE(mark->store(kSecond).has_value());
  }
  int second = slot_holding(kSecond);
  {
    auto mark = open_mark();
    ASSERT_EQ(mark->value(), kSecond);
    ASSERT_TRUE(mark->store(kThird).has_value());
  }
  EXPECT_NE(slot_holding(kThird), second) << "a write after reopen must not overwrite the newest slot";
  EXPECT_EQ(slot_holding(kSecond), second);
  // A torn write of the newest slot now falls back to the value before it.
  corrupt_slot(slot_holding(kThird), kThird);
  auto mark = open_mark();
  EXPECT_EQ(mark->value(), kSecond);
}

TEST_F(AckMarkTest, WriteAfterTornSlotGoesToTheTornSlot) {
  {
    auto mark = open_mark();
    ASSERT_TRUE(mark->store(kFirst).has_value());
    ASSERT_TRUE(mark->store(kSecond).has_value());
  }
  int torn = slot_holding(kSecond);
  corrupt_slot(torn, kSecond);
  {
    auto mark = open_mark();
    ASSERT_EQ(mark->value(), kFirst);
    ASSERT_TRUE(mark->store(kThird).has_value());
  }
  EXPECT_EQ(slot_holding(kThird), torn) << "the only valid slot must be kept";
  // Tearing this write too must still leave the last good value.
  corrupt_slot(torn, kThird);
  auto mark = open_mark();
  EXPECT_EQ(mark->value(), kFirst);
}

TEST_F(AckMarkTest, BothSlotsCorruptGiveNoValue) {
  {
    auto mark = open_mark();
    ASSERT_TRUE(mark->store(kFirst).has_value());
    ASSERT_TRUE(mark->store(kSecond).has_value());
  }
  corrupt_slot(slot_holding(kFirst), kFirst);
  corrupt_slot(slot_holding(kSecond), kSecond);
  EXPECT_FALSE(read_value().has_value());
  auto mark = open_mark();
  ASSERT_NE(mark, nullptr);
  EXPECT_FALSE(mark->value().has_value());
}

TEST_F(AckMarkTest, ReadOfMissingFileIsEmptyAndCreatesNothing) {
  EXPECT_FALSE(read_value().has_value());
  EXPECT_FALSE(fs::exists(path_));
}

TEST_F(AckMarkTest, OpenInMissingDirectoryIsAnIoError) {
  auto m = AckMark::open(dir_ + "/no/such/dir/acknowledged", boot_);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code, ErrorCode::kIo);
}

// A value written without a sync is exact while the machine keeps running (the
// page cache outlives wpmd) and only a lower bound after a reboot.
TEST_F(AckMarkTest, UnsyncedValueIsExactInItsBootAndALowerBoundAfterAReboot) {
  {
    auto mark = open_mark();
    ASSERT_TRUE(mark->reset(0, false).has_value());
    ASSERT_TRUE(mark->write(kFirst, false).has_value());
    EXPECT_TRUE(mark->dirty());
  }
  EXPECT_EQ(read_mark(boot_), (MarkReading{kFirst, true}));
  EXPECT_EQ(read_mark(boot_id_from_text("the next boot")), (MarkReading{kFirst, false}));
  // A later sync does not change what the slot says: it was not synced before its reply.
  {
    auto mark = open_mark();
    ASSERT_TRUE(mark->reset(kFirst, false).has_value());
    ASSERT_TRUE(mark->write(kSecond, false).has_value());
    ASSERT_TRUE(mark->sync().has_value());
    EXPECT_FALSE(mark->dirty());
  }
  EXPECT_EQ(read_mark(boot_id_from_text("the next boot")), (MarkReading{kSecond, false}));
}

TEST_F(AckMarkTest, ValueSyncedBeforeItsReplyIsExactInAnyBoot) {
  {
    auto mark = open_mark();
    ASSERT_TRUE(mark->reset(0, false).has_value());
    ASSERT_TRUE(mark->write(kFirst, false).has_value());
    ASSERT_TRUE(mark->store(kSecond).has_value());
    EXPECT_FALSE(mark->dirty());
  }
  EXPECT_EQ(read_mark(boot_id_from_text("the next boot")), (MarkReading{kSecond, true}));
}

TEST_F(AckMarkTest, UnknownBootIdMatchesNoBoot) {
  BootId unknown{};
  auto m = AckMark::open(path_, unknown);
  ASSERT_TRUE(m.has_value());
  ASSERT_TRUE((*m)->reset(0, false).has_value());
  ASSERT_TRUE((*m)->write(kFirst, false).has_value());
  m->reset();
  EXPECT_EQ(read_mark(unknown), (MarkReading{kFirst, false}))
      << "without a boot id an unsynced value can never be proven to be from this boot";
}

// Files of the first format (magic, crc, sequence; synced before each reply)
// stay readable, as exact values.
TEST_F(AckMarkTest, FirstFormatSlotIsReadAsExact) {
  std::string bytes(2 * kMarkSlotBytes, '\0');
  uint32_t magic = kMarkMagic;
  uint64_t sequence = kFirst;
  uint32_t crc = crc32c(&sequence, sizeof sequence);
  std::memcpy(bytes.data(), &magic, 4);
  std::memcpy(bytes.data() + 4, &crc, 4);
  std::memcpy(bytes.data() + 8, &sequence, 8);
  {
    std::ofstream out(path_, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  EXPECT_EQ(read_mark(boot_id_from_text("any boot")), (MarkReading{kFirst, true}));
  auto mark = open_mark();
  ASSERT_TRUE(mark->store(kSecond).has_value());
  EXPECT_EQ(slot_holding(kFirst), 0) << "the first-format value is kept in its slot";
  EXPECT_EQ(slot_holding(kSecond), 1);
}

// Unsynced writes replace each other in one slot; the other slot keeps the
// last synced value, so a torn write cannot take both.
TEST_F(AckMarkTest, UnsyncedWritesShareOneSlotUntilSynced) {
  auto mark = open_mark();
  ASSERT_TRUE(mark->reset(0, false).has_value());
  ASSERT_TRUE(mark->write(kFirst, false).has_value());
  ASSERT_TRUE(mark->sync().has_value());
  int synced = slot_holding(kFirst);
  ASSERT_NE(synced, -1);
  ASSERT_TRUE(mark->write(kSecond, false).has_value());
  int working = slot_holding(kSecond);
  ASSERT_NE(working, synced);
  ASSERT_TRUE(mark->write(kThird, false).has_value());
  EXPECT_EQ(slot_holding(kThird), working);
  EXPECT_EQ(slot_holding(kFirst), synced) << "the synced value is kept";
  ASSERT_TRUE(mark->sync().has_value());
  ASSERT_TRUE(mark->write(kFirst + 10, false).has_value());
  EXPECT_EQ(slot_holding(kFirst + 10), synced) << "after a sync, writes move to the other slot";
  EXPECT_EQ(slot_holding(kThird), working);
}

// An exact value left in one slot must not outlive a reset to unsynced
// writes: a power cut that loses those writes would otherwise bring back the
// old value as exact, and acknowledged records above it would be discarded.
TEST_F(AckMarkTest, ResetLeavesNoExactSlotBehind) {
  auto mark = open_mark();
  ASSERT_TRUE(mark->store(kFirst).has_value());
  ASSERT_TRUE(mark->reset(kFirst, false).has_value());
  ASSERT_TRUE(mark->write(kSecond, false).has_value());
  int lost = slot_holding(kSecond);
  ASSERT_NE(lost, -1);
  mark.reset();
  corrupt_slot(lost, kSecond);  // the unsynced write did not survive the power cut
  EXPECT_EQ(read_mark(boot_id_from_text("the next boot")), (MarkReading{kFirst, false}));
}

TEST(BootId, ParsesTheKernelsBootIdOrIsZero) {
  BootId id = current_boot_id();
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  if (!in) {
    EXPECT_EQ(id, BootId{});
    return;
  }
  EXPECT_NE(id, BootId{});
  EXPECT_EQ(id, current_boot_id()) << "stable within a boot";
  EXPECT_NE(boot_id_from_text("a"), boot_id_from_text("b"));
}

}  // namespace
}  // namespace wpm::eventstore
