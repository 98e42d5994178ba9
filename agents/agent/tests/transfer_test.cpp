// The departure's side of a state-file transfer (transfer.h): what a peer
// may read, and the grants that admit it.

#include "agents/agent/transfer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace wpm::agent {
namespace {

namespace fs = std::filesystem;
namespace ap = agentproto;

class ServeStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("wpm-transfer-test-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "w" / "t.1" / "state");
    std::ofstream(root_ / "w" / "t.1" / "manifest.json") << "{}";
    std::ofstream(root_ / "w" / "t.1" / "state" / "big") << std::string(ap::kStateChunkBytes + 10, 'x');
    std::ofstream(root_ / "secret") << "not yours";
    fs::create_directory_symlink(root_, root_ / "w" / "t.1" / "state" / "up");
    fs::create_symlink(root_ / "secret", root_ / "w" / "t.1" / "state" / "s");
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_;
};

TEST_F(ServeStateTest, ListsAndReadsRegularFilesInsideTheStateFileOnly) {
  auto listed = serve_state(root_, ap::FetchState{"w", "t.1", "", 0, 0});
  ASSERT_TRUE(listed) << listed.error();
  std::map<std::string, uint64_t> files;
  for (const auto& f : listed->files) files[f.path] = f.size;
  EXPECT_EQ(files, (std::map<std::string, uint64_t>{{"manifest.json", 2}, {"state/big", ap::kStateChunkBytes + 10}}))
      << "symbolic links are not listed";
  auto first = serve_state(root_, ap::FetchState{"w", "t.1", "state/big", 0, ap::kStateChunkBytes * 4});
  ASSERT_TRUE(first) << first.error();
  EXPECT_EQ(first->data.size(), ap::kStateChunkBytes) << "one part at most";
  EXPECT_EQ(first->size, ap::kStateChunkBytes + 10);
  auto last = serve_state(root_, ap::FetchState{"w", "t.1", "state/big", ap::kStateChunkBytes, ap::kStateChunkBytes});
  ASSERT_TRUE(last);
  EXPECT_EQ(last->data, std::string(10, 'x'));
  for (const char* bad : {"../../secret", "/etc/passwd", "state/up/secret", "state/s", "state//big", "./manifest.json"}) {
    EXPECT_FALSE(serve_state(root_, ap::FetchState{"w", "t.1", bad, 0, 10})) << bad;
  }
  EXPECT_FALSE(serve_state(root_, ap::FetchState{"w", "../w", "", 0, 0})) << "not a state id";
  EXPECT_FALSE(serve_state(root_, ap::FetchState{"w", "t.2", "", 0, 0})) << "no such state file";
}

TEST(StateGrants, AKeyReadsTheOneStateFileItWasGrantedUntilItExpires) {
  StateGrants g;
  g.allow("k1", StateGrant{"w", "t.1", 100});
  EXPECT_TRUE(g.admits("k1", 50));
  EXPECT_TRUE(g.covers("k1", "w", "t.1", 50));
  EXPECT_FALSE(g.covers("k1", "w", "t.2", 50));
  EXPECT_FALSE(g.covers("k2", "w", "t.1", 50));
  EXPECT_FALSE(g.admits("k1", 100)) << "expired";
  g.revoke_wpar("w");
  EXPECT_FALSE(g.admits("k1", 50));
  // Rebuilt from the journal: a relocation's checkpoint, not refused, not expired.
  OperationRecord pause;
  pause.id = "t.1";
  pause.wpar = "w";
  pause.action = "pause";
  pause.peer_key = "k3";
  pause.started_ns = 1000;
  OperationRecord refused = pause;
  refused.id = "t.9";
  refused.peer_key = "k4";
  refused.refused = true;
  g.rebuild({pause, refused}, 2000);
  EXPECT_TRUE(g.covers("k3", "w", "t.1", 2000));
  EXPECT_FALSE(g.admits("k4", 2000));
  EXPECT_FALSE(g.admits("k3", 1000 + kGrantLifetimeNs));
}

TEST(SafeRelativePath, OnlyPlainPathsInside) {
  EXPECT_TRUE(safe_relative_path("state/a/b"));
  EXPECT_TRUE(safe_relative_path("manifest.json"));
  for (const char* bad : {"", "/a", "a/../b", "..", "a//b", "a/", "./a"}) EXPECT_FALSE(safe_relative_path(bad)) << bad;
}

}  // namespace
}  // namespace wpm::agent
