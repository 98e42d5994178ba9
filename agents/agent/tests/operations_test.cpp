#include "agents/agent/operations.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace wpm::agent {
namespace {

namespace fs = std::filesystem;

TEST(Operations, RunAgainCodesAreTheSeeds) {
  for (int code : {3, 5, 6, 17}) EXPECT_TRUE(run_again_code(code)) << code;
  for (int code : {0, 1, 2, 4, 14, 16, 19, 25}) EXPECT_FALSE(run_again_code(code)) << code;
}

TEST(Operations, OperationIdsAreFileNames) {
  EXPECT_TRUE(valid_operation_id("cmd-1.2"));
  EXPECT_FALSE(valid_operation_id(""));
  EXPECT_FALSE(valid_operation_id("../x"));
  EXPECT_FALSE(valid_operation_id(".hidden"));
  EXPECT_FALSE(valid_operation_id("a/b"));
  EXPECT_FALSE(valid_operation_id(std::string(101, 'a')));
}

TEST(Operations, PlacementEpochsFenceStaleCommands) {
  // An older epoch than the one held is refused, whatever the action.
  auto stale = placement_refusal(5, 4, "stop", true, "w1");
  ASSERT_TRUE(stale);
  EXPECT_NE(stale->find("older"), std::string::npos);
  EXPECT_TRUE(placement_refusal(5, 4, "deploy", false, "w1"));
  // The same or a newer epoch runs.
  EXPECT_FALSE(placement_refusal(5, 5, "stop", true, "w1"));
  EXPECT_FALSE(placement_refusal(5, 6, "deploy", false, "w1"));
  EXPECT_FALSE(placement_refusal(std::nullopt, 1, "deploy", false, "w1"));
  // Only a deploy may name a WPAR this system does not have.
  auto absent = placement_refusal(std::nullopt, 1, "start", false, "w1");
  ASSERT_TRUE(absent);
  EXPECT_NE(absent->find("not placed on this system"), std::string::npos);
}

TEST(Operations, ActionsBecomeTheLocalCommands) {
  OperationRecord op{"t1.1", 1, "w1", "stop"};
  EXPECT_EQ(*command_args(op, "/s"), (std::vector<std::string>{"stopwpar", "w1"}));
  op.action = "forceStop";
  EXPECT_EQ(*command_args(op, "/s"), (std::vector<std::string>{"stopwpar", "-F", "w1"}));
  op.action = "pause";
  EXPECT_EQ(*command_args(op, "/s"), (std::vector<std::string>{"chkptwpar", "-p", "-d", "/s/w1/t1.1", "w1"}));
  op.action = "remove";
  op.preserve_fs = true;
  EXPECT_EQ(*command_args(op, "/s"), (std::vector<std::string>{"rmwpar", "-p", "w1"}));
  op.action = "deploy";
  op.start_after = true;
  op.definition = R"({"name":"w1","type":"system","checkpointable":true,"address":"10.1.0.5/24","cpuShares":50,)"
                  R"("command":"sleep 100","capabilities":"+cap_sys_time"})";
  EXPECT_EQ(*command_args(op, "/s"),
            (std::vector<std::string>{"mkwpar", "-n", "w1", "-c", "--capabilities", "+cap_sys_time", "--address",
                                      "10.1.0.5", "--cpu-shares", "50", "-s", "--", "sleep", "100"}));
  op.definition = R"({"name":"w1","type":"application","command":"echo hi; sleep 1"})";
  EXPECT_EQ(*command_args(op, "/s"),
            (std::vector<std::string>{"wparexec", "-n", "w1", "--", "/bin/sh", "-c", "echo hi; sleep 1"}));
  op.definition = R"({"name":"w1","type":"application","command":"sleep 1","privileged":true})";
  EXPECT_EQ(*command_args(op, "/s"), (std::vector<std::string>{"wparexec", "-n", "w1", "--privileged", "--", "sleep", "1"}));
  op.definition = R"({"name":"w1","type":"application"})";
  EXPECT_FALSE(command_args(op, "/s")) << "an application WPAR needs a command";
  op.definition = "not json";
  EXPECT_FALSE(command_args(op, "/s"));
  // A change: the whole changeable part, so that running it twice is the same.
  op.action = "modify";
  op.definition = R"({"name":"w1","type":"system","capabilities":"cap_kill","memoryBytes":67108864})";
  EXPECT_EQ(*command_args(op, "/s"),
            (std::vector<std::string>{"chwpar", "--capabilities", "cap_kill", "--cpu-shares", "0", "--cpu-limit", "0",
                                      "--memory", "67108864", "--max-processes", "0", "w1"}));
  op.definition = R"({"name":"w1","type":"system"})";
  EXPECT_EQ((*command_args(op, "/s"))[2], "default");
  op.action = "explode";
  EXPECT_FALSE(command_args(op, "/s"));
}

TEST(Operations, JournalKeepsRecordsAndDropsTheOldestFinished) {
  fs::path dir = fs::temp_directory_path() / ("wpm-ops-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  OperationJournal journal(dir.string(), 3);
  for (int i = 0; i < 5; ++i) {
    OperationRecord r{"op" + std::to_string(i), 1, "w", "start"};
    r.done = i != 0;  // op0 still runs: never dropped
    r.finished_ns = 100 + i;
    r.output = "out\n";
    ASSERT_TRUE(journal.write(r));
  }
  auto back = journal.read("op3");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->output, "out\n");
  EXPECT_TRUE(back->done);
  journal.prune();
  EXPECT_TRUE(journal.read("op0")) << "a running operation is kept";
  EXPECT_FALSE(journal.read("op1"));
  EXPECT_FALSE(journal.read("op2"));
  EXPECT_TRUE(journal.read("op3"));
  EXPECT_TRUE(journal.read("op4"));
  ASSERT_EQ(journal.running().size(), 1u);
  EXPECT_EQ(journal.running().front().id, "op0");
  EXPECT_FALSE(journal.read("../op3")) << "ids are checked";
  fs::remove_all(dir);
}

// A reinstalled manager numbers its placements from 1 again: registered
// with another manager key, the agent forgets the old epochs (and only then).
TEST(Operations, PlacementEpochsAreForgottenWhenAnotherManagerIsAdopted) {
  fs::path dir = fs::temp_directory_path() / ("wpm-placements-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  ASSERT_TRUE(write_epoch(dir.string(), "w1", 7));
  // The first registration after an upgrade: the epochs were the same manager's.
  auto kept = adopt_placements(dir.string(), "keyA", "keyA");
  ASSERT_TRUE(kept);
  EXPECT_EQ(*kept, 0u);
  EXPECT_EQ(read_epoch(dir.string(), "w1"), 7u);
  ASSERT_TRUE(write_epoch(dir.string(), "w2", 3));
  EXPECT_EQ(*adopt_placements(dir.string(), "keyA", ""), 0u) << "the same manager again, its name kept";
  auto dropped = adopt_placements(dir.string(), "keyB", "keyA");
  ASSERT_TRUE(dropped);
  EXPECT_EQ(*dropped, 2u);
  EXPECT_FALSE(read_epoch(dir.string(), "w1"));
  EXPECT_FALSE(read_epoch(dir.string(), "w2"));
  ASSERT_TRUE(write_epoch(dir.string(), "w1", 1));
  EXPECT_EQ(*adopt_placements(dir.string(), "keyB", "keyB"), 0u);
  EXPECT_EQ(read_epoch(dir.string(), "w1"), 1u) << "the new manager's own";
  fs::remove_all(dir);
}

TEST(Operations, PlainCommandsRunAsTheyAreAndShellSyntaxUnderAShell) {
  EXPECT_EQ(command_words("/bin/counter --out /tmp/c  --interval-ms 50"),
            (std::vector<std::string>{"/bin/counter", "--out", "/tmp/c", "--interval-ms", "50"}));
  for (const char* shell : {"a; b", "a | b", "echo $HOME", "a && b", "x > f", "trap 'x' USR1", "a=1 b", "ls *"}) {
    EXPECT_EQ(command_words(shell), (std::vector<std::string>{"/bin/sh", "-c", shell})) << shell;
  }
}

TEST(Operations, ErrorTextDropsThePrefixes) {
  EXPECT_EQ(error_text("wpm-agent: unknown WPAR w\n"), "unknown WPAR w");
  EXPECT_EQ(error_text("note\nwpm-agent: failed\n\n"), "note\nfailed");
  EXPECT_EQ(error_text(""), "");
}

}  // namespace
}  // namespace wpm::agent
