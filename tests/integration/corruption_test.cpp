// Corruption: a byte flipped in the WAL, a byte flipped in a table file, and an
// event rewritten with valid RocksDB checksums (tampering).

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "tests/integration/helpers.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Largest file in `dir` whose name ends with `suffix`.
std::string largest_file(const std::string& dir, const std::string& suffix) {
  std::string best;
  uintmax_t best_size = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename();
    if (name.ends_with(suffix) && entry.file_size() > best_size) {
      best = entry.path();
      best_size = entry.file_size();
    }
  }
  return best;
}

void flip_byte(const std::string& path, uintmax_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open()) << path;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x40);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

void append_cli(const Wpmd& wpmd, int events, int batch) {
  auto r = wpm(wpmd, {"log", "append", "--synthetic", std::to_string(events), "--batch",
                      std::to_string(batch), "--payload-bytes", "64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST(Corruption, ByteFlippedInTheMiddleOfTheWalStopsWpmdNamingTheProblem) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  append_cli(wpmd, 4000, 100);
  // kill -9: nothing is flushed, every event lives in the WAL only.
  wpmd.kill(SIGKILL);
  std::string wal = largest_file(dir / "data/log", ".log");
  ASSERT_FALSE(wal.empty());
  uintmax_t size = fs::file_size(wal);
  ASSERT_GT(size, 100'000u);
  flip_byte(wal, size / 2);

  EXPECT_FALSE(wpmd.start()) << "wpmd must refuse a WAL with a corrupt record in the middle";
  EXPECT_EQ(wpmd.exit_code(), 1);
  std::string log = wpmd.log();
  EXPECT_NE(log.find("Corruption"), std::string::npos) << log;
  EXPECT_NE(log.find("wpm log verify --data"), std::string::npos) << log;

  // The offline check still works and names the first missing sequence.
  auto verify = run({bin("wpm"), "log", "verify", "--data", dir / "data"});
  EXPECT_EQ(verify.exit_code, 1) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("log broken: sequence "), std::string::npos) << verify.out;
  EXPECT_NE(verify.out.find("missing"), std::string::npos) << verify.out;
}

TEST(Corruption, ByteFlippedInATableFileIsNamedByOfflineVerify) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  append_cli(wpmd, 20000, 500);
  ASSERT_EQ(wpmd.stop(), 0) << "a clean stop flushes the log into table files";
  std::string sst = largest_file(dir / "data/log", ".sst");
  ASSERT_FALSE(sst.empty());
  uintmax_t size = fs::file_size(sst);
  ASSERT_GT(size, 500'000u);
  flip_byte(sst, size / 3);  // inside the data blocks (index and footer are at the end)

  auto verify = run({bin("wpm"), "log", "verify", "--data", dir / "data"});
  EXPECT_EQ(verify.exit_code, 1) << verify.out << verify.err;
  // The first bad sequence is somewhere in the middle, never 1 or past the end.
  auto at = verify.out.find("log broken: sequence ");
  ASSERT_NE(at, std::string::npos) << verify.out;
  uint64_t bad = std::stoull(verify.out.substr(at + std::string("log broken: sequence ").size()));
  EXPECT_GT(bad, 1000u) << verify.out;
  EXPECT_LT(bad, 20000u) << verify.out;
  EXPECT_NE(verify.err.find("log verification failed at sequence " + std::to_string(bad)),
            std::string::npos)
      << verify.err;
}

TEST(Corruption, TamperedEventBreaksTheChainAtThatSequence) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  append_cli(wpmd, 3000, 100);
  ASSERT_EQ(wpmd.stop(), 0);
  auto clean = run({bin("wpm"), "log", "verify", "--data", dir / "data"});
  ASSERT_EQ(clean.exit_code, 0) << clean.out << clean.err;

  auto tamper = run({bin("wpm-test-tamper"), "--data", dir / "data", "--sequence", "50"});
  ASSERT_EQ(tamper.exit_code, 0) << tamper.err;
  auto offline = run({bin("wpm"), "log", "verify", "--data", dir / "data"});
  EXPECT_EQ(offline.exit_code, 1);
  EXPECT_NE(offline.out.find("sequence 50: hash chain broken"), std::string::npos) << offline.out;

  // Online, through a running store (sequence 50 is outside the tail that
  // wpmd re-verifies at start).
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  auto online = wpm(wpmd, {"log", "verify"});
  EXPECT_EQ(online.exit_code, 1);
  EXPECT_NE(online.out.find("sequence 50: hash chain broken"), std::string::npos) << online.out;
  auto fetched = wpm(wpmd, {"log", "verify", "--fetch"});
  EXPECT_EQ(fetched.exit_code, 1);
  EXPECT_NE(fetched.out.find("sequence 50: hash chain broken"), std::string::npos) << fetched.out;
  ASSERT_EQ(wpmd.stop(), 0);

  // A forger who also recomputes the record's own chain hash breaks the next link.
  auto rechain = run({bin("wpm-test-tamper"), "--data", dir / "data", "--sequence", "70", "--rechain"});
  ASSERT_EQ(rechain.exit_code, 0) << rechain.err;
  // 50 is still reported first; repair is not the point, the chain is.
  auto again = run({bin("wpm"), "log", "verify", "--data", dir / "data", "-o", "json"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.out.find("\"sound\": false"), std::string::npos) << again.out;
}

TEST(Corruption, TamperedEventInTheTailStopsWpmdAtStart) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  append_cli(wpmd, 500, 100);
  ASSERT_EQ(wpmd.stop(), 0);
  auto rechain = run({bin("wpm-test-tamper"), "--data", dir / "data", "--sequence", "400",
                      "--rechain"});
  ASSERT_EQ(rechain.exit_code, 0) << rechain.err;
  EXPECT_FALSE(wpmd.start());
  EXPECT_NE(wpmd.log().find("sequence 401: hash chain broken"), std::string::npos) << wpmd.log();
}

TEST(Corruption, MissingAcknowledgedEventsStopWpmd) {
  TempDir dir;
  Wpmd wpmd(Wpmd::Options{dir / "data", {}});
  ASSERT_TRUE(wpmd.start()) << wpmd.log();
  append_cli(wpmd, 100, 10);
  ASSERT_EQ(wpmd.stop(), 0);
  // Losing the whole database while the mark survives: never a shorter log.
  fs::remove_all(dir / "data/log");
  EXPECT_FALSE(wpmd.start());
  EXPECT_NE(wpmd.log().find("acknowledged events are missing"), std::string::npos) << wpmd.log();
  EXPECT_NE(wpmd.log().find("first missing: 1"), std::string::npos) << wpmd.log();
}

}  // namespace
}  // namespace wpm::testing
