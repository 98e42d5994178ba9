#pragma once
// The executor's pure model under test: an inventory and an executor state
// folded from the same events, a command decided and folded, a task's next
// step, and an operation answered (model_test.cpp, relocation_test.cpp).

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>

#include "services/executor/model.h"

namespace wpm::kernel {
inline void PrintTo(const Rejection& r, std::ostream* os) { *os << rejection_code_name(r.code) << ": " << r.message; }
}  // namespace wpm::kernel

namespace wpm::executor::test_support {

using nlohmann::json;
using kernel::RejectionCode;

constexpr int64_t kSecond = 1'000'000'000;

class ExecutorModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two systems, one WPAR of each kind, undeployed.
    for (const char* id : {"node1", "node2"}) {
      SystemRegistered r;
      r.system_id = id;
      r.hostname = id;
      r.address = "127.0.0.1";
      r.public_key = std::string(39, 'k') + id[4];
      r.profile.network_interfaces = {{"eth0", {std::string(id) == "node1" ? "10.1.0.2/24" : "10.2.0.2/24"}, true}};
      r.profile.capabilities = {"chown", "kill", "net_raw"};  // as libcap-ng names them
      fold_inventory("registry", r);
    }
    define("web1", "system", true);
    define("app1", "application", false);
  }

  template <typename P>
  void fold_inventory(const std::string& stream, P payload) {
    Event e;
    e.sequence = ++sequence_;
    e.stream_id = stream;
    e.stream_version = ++versions_[stream];
    e.timestamp_ns = now_;
    e.payload = std::move(payload);
    inv_ = inventory::evolve(std::move(inv_), e);
    state_ = evolve(std::move(state_), e);
  }

  void define(const std::string& name, const std::string& type, bool checkpointable, std::string address = "") {
    WparDefinition w;
    w.name = name;
    w.type = type;
    w.command = "sleep 100";
    w.checkpointable = checkpointable;
    w.group = "default";
    w.address = std::move(address);
    fold_inventory("wpar/" + name, WparDefined{w, true});
  }

  // Decides and folds a command; the rejection when refused.
  std::optional<kernel::Rejection> run(const std::string& id, const std::string& name, const json& args,
                                       std::string* warning = nullptr) {
    auto command = parse_command(name, args);
    if (!command) return command.error();
    kernel::Context context{now_, "user:alice", kernel::CommandId(id), id};
    auto decided = decide(state_, inv_, *command, context);
    if (!decided) return decided.error();
    if (warning != nullptr) *warning = decided->warning;
    for (auto& c : decided->changes) fold_inventory(c.stream, c.payload);
    return std::nullopt;
  }

  Step step(const std::string& task) { return next_step(state_, state_.tasks.at(task), inv_, now_); }

  // Runs the task's next operation with the agent's answer.
  void answer(const std::string& task, int exit_code, const std::string& wpar_state, bool refused = false) {
    Step s = step(task);
    auto* start = std::get_if<Start>(&s);
    ASSERT_NE(start, nullptr) << "the task starts an operation";
    fold_inventory(task_stream(task), start->event);
    OperationFinished f{start->event.operation_id, start->event.attempt,
                        refused ? "refused" : exit_code == 0 ? "ok" : "failed", exit_code, "", exit_code ? "boom" : "",
                        wpar_state};
    fold_inventory(task_stream(task), f);
  }

  // Ends the task as next_step says; its TaskFinished.
  TaskFinished finish(const std::string& task) {
    Step s = step(task);
    auto* f = std::get_if<Finish>(&s);
    EXPECT_NE(f, nullptr) << "the task ends";
    if (f == nullptr) return {};
    if (f->placed) fold_inventory(placement_stream(f->placed->wpar), *f->placed);
    if (f->defined) fold_inventory("wpar/" + f->defined->wpar.name, *f->defined);
    fold_inventory(task_stream(task), f->event);
    return f->event;
  }

  std::string letter(const std::string& wpar) { return inventory::wpar_state_letter(inv_.wpars.at(wpar).wpar); }

  inventory::Inventory inv_;
  Executor state_;
  int64_t now_ = 1000 * kSecond;
  uint64_t sequence_ = 0;
  std::map<std::string, uint64_t> versions_;
};

}  // namespace wpm::executor::test_support
