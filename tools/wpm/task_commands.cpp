#include "tools/wpm/task_commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "tools/wpm/gateway_client.h"
#include "tools/wpm/output.h"

namespace wpm::cli {
namespace {

using nlohmann::json;
std::atomic<bool> g_stop{false};
void on_stop(int) { g_stop.store(true); }

constexpr auto kPollInterval = std::chrono::milliseconds(200);

std::string text_of(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

std::string time_of(const json& j, const char* key) {
  int64_t ns = j.value(key, int64_t{0});
  return ns > 0 ? format_time(ns) : "-";
}

// One operation in one line: "web1.1 deploy on node1: ok (exit 0, state D)".
std::string operation_line(const json& op) {
  std::string line = fmt::format("{} {} on {}", text_of(op, "id"), text_of(op, "action"), text_of(op, "system"));
  if (op.value("attempt", 1) > 1) line += fmt::format(" (attempt {})", op.value("attempt", 1));
  if (!op.value("finished", false)) return line + ": running";
  line += fmt::format(": {} (exit {}", text_of(op, "outcome"), op.value("exitCode", 0));
  if (!text_of(op, "wparState").empty()) line += ", state " + text_of(op, "wparState");
  line += ")";
  if (!text_of(op, "error").empty()) line += ": " + text_of(op, "error");
  return line;
}

void print_task(const json& t) {
  std::printf("task:      %s\n", text_of(t, "id").c_str());
  std::printf("kind:      %s %s%s\n", text_of(t, "kind").c_str(), text_of(t, "wpar").c_str(),
              text_of(t, "system").empty() ? "" : (" on " + text_of(t, "system")).c_str());
  std::printf("state:     %s\n", text_of(t, "state").c_str());
  std::printf("user:      %s\n", text_of(t, "user").c_str());
  std::printf("created:   %s\n", time_of(t, "createdNs").c_str());
  std::printf("finished:  %s\n", time_of(t, "finishedNs").c_str());
  if (int64_t expires = t["options"].value("approvalExpiresNs", int64_t{0}); expires != 0) {
    std::printf("approval:  %s\n", text_of(t, "approvedBy").empty()
                                       ? ("waited for until " + format_time(expires)).c_str()
                                       : ("by " + text_of(t, "approvedBy") + " at " + time_of(t, "approvedNs")).c_str());
  }
  if (std::string why = t["options"].value("reason", ""); !why.empty()) std::printf("why:       %s\n", why.c_str());
  if (!text_of(t, "error").empty()) std::printf("error:     %s\n", text_of(t, "error").c_str());
  if (!text_of(t, "recovery").empty()) std::printf("recovery:  %s\n", text_of(t, "recovery").c_str());
  if (t.contains("children")) {
    std::printf("relocations:\n");
    for (const auto& c : t["children"]) {
      std::printf("  %-28s %-16s -> %-12s %-10s %s\n", text_of(c, "id").c_str(), text_of(c, "wpar").c_str(),
                  text_of(c, "to").c_str(), text_of(c, "state").c_str(), text_of(c, "error").c_str());
    }
  }
  std::printf("operations:%s\n", t["operations"].empty() ? " none" : "");
  for (const auto& op : t["operations"]) {
    std::printf("  %s\n", operation_line(op).c_str());
    std::string output = text_of(op, "output");
    if (!output.empty()) {
      while (!output.empty() && output.back() == '\n') output.pop_back();
      size_t start = 0;
      while (start < output.size()) {  // bounded: each turn prints one line
        size_t end = output.find('\n', start);
        std::printf("    | %s\n", output.substr(start, end == std::string::npos ? std::string::npos : end - start).c_str());
        if (end == std::string::npos) break;
        start = end + 1;
      }
    }
  }
}

// Waits for a task to end, with progress on a terminal; its exit code.
int wait_task(const GlobalOptions& g, const std::string& id, int64_t timeout_s) {
  std::signal(SIGINT, on_stop);
  std::signal(SIGTERM, on_stop);
  Gateway gateway(g, &g_stop);
  const bool progress = ::isatty(STDERR_FILENO) != 0 && g.format != Format::kJson;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::vector<std::string> shown;  // one line per operation, as last printed
  while (true) {  // until the task ends, Ctrl-C, or --timeout
    json reply = gateway.call("task.show", {{"id", id}});
    if (!reply.value("ok", false)) return report(reply);
    const json& t = reply["result"];
    if (progress && t.contains("children")) {  // an evacuation: one line per relocation as it changes
      const auto& children = t["children"];
      for (size_t i = 0; i < children.size(); ++i) {
        std::string line = fmt::format("{} {} -> {}: {}", text_of(children[i], "id"), text_of(children[i], "wpar"),
                                       text_of(children[i], "to"), text_of(children[i], "state"));
        if (i >= shown.size()) shown.emplace_back();
        if (shown[i] != line) {
          std::fprintf(stderr, "  [%zu/%zu] %s\n", i + 1, t["options"].value("plan", json::array()).size(), line.c_str());
          shown[i] = line;
        }
      }
    } else if (progress) {
      const auto& ops = t["operations"];
      for (size_t i = 0; i < ops.size(); ++i) {
        std::string line = operation_line(ops[i]);
        if (i >= shown.size()) shown.emplace_back();
        if (shown[i] != line) {
          std::fprintf(stderr, "  %s\n", line.c_str());
          shown[i] = line;
        }
      }
    }
    if (text_of(t, "state") == "waiting" && progress && shown.empty()) {
      std::fprintf(stderr, "  waiting for approval (wpm task approve %s)\n", id.c_str());
      shown.emplace_back();
    }
    if (text_of(t, "state") != "running" && text_of(t, "state") != "waiting") {
      if (g.format == Format::kJson) {
        std::puts(t.dump(2).c_str());
      } else if (text_of(t, "state") == "succeeded") {
        std::printf("task %s succeeded: %s %s%s\n", text_of(t, "id").c_str(), text_of(t, "kind").c_str(), text_of(t, "wpar").c_str(),
                    text_of(t, "system").empty() ? "" : (" on " + text_of(t, "system")).c_str());
      } else {
        print_error(fmt::format("task {} {}: {}", id, text_of(t, "state"), text_of(t, "error")));
        if (!text_of(t, "recovery").empty()) std::fprintf(stderr, "recovery: %s\n", text_of(t, "recovery").c_str());
        std::fprintf(stderr, "details: wpm task show %s\n", id.c_str());
      }
      return text_of(t, "state") == "succeeded" ? kExitOk : kExitFailed;
    }
    if (g_stop.load()) {
      print_error(fmt::format("stopped waiting; task {} goes on (wpm task wait {})", id, id));
      return kExitFailed;
    }
    if (timeout_s > 0 && std::chrono::steady_clock::now() >= deadline) {
      print_error(fmt::format("task {} is still {} after {} s (wpm task wait {})", id,
                              text_of(t, "state") == "waiting" ? "waiting for approval" : "running", timeout_s, id));
      return kExitFailed;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace

// Sends a lifecycle command; waits for its task unless told not to.
int run_task_command(const GlobalOptions& g, const std::string& command, const json& args, bool no_wait) {
  Gateway gateway(g);
  json reply = gateway.call(command, args);
  if (!reply.value("ok", false)) return report(reply);
  const json& r = reply["result"];
  if (r.contains("warning")) std::fprintf(stderr, "wpm: warning: %s\n", text_of(r, "warning").c_str());
  std::string task = text_of(r, "task");
  if (task.empty()) {  // nothing to run (never for these commands)
    if (g.format == Format::kJson) std::puts(r.dump(2).c_str());
    return kExitOk;
  }
  if (args.contains("approval")) {  // it waits for someone's approval: not for this command
    if (g.format == Format::kJson) {
      std::puts(json{{"task", task}, {"state", "waiting"}}.dump(2).c_str());
    } else {
      std::printf("task %s waits for approval (wpm task approve %s, or wpm task cancel %s)\n", task.c_str(),
                  task.c_str(), task.c_str());
    }
    return kExitOk;
  }
  if (no_wait) {
    if (g.format == Format::kJson) {
      std::puts(json{{"task", task}}.dump(2).c_str());
    } else {
      std::puts(task.c_str());
    }
    return kExitOk;
  }
  if (::isatty(STDERR_FILENO) != 0 && g.format != Format::kJson) {
    std::fprintf(stderr, "task %s: %s\n", task.c_str(), command.c_str());
  }
  return wait_task(g, task, 0);
}


void add_lifecycle_commands(CLI::App& app, CLI::App& wpar, GlobalOptions& g, int& exit_code) {
  // Options live as long as the app: CLI11 writes into them while parsing.
  static std::string name, system, state, wpar_filter, id;
  static bool no_wait = false, start = false, force = false, keep_definition = false, preserve_fs = false;
  static size_t limit = 50;
  static int64_t timeout_s = 0;
  auto add_wait = [](CLI::App* c) {
    c->add_flag("--no-wait", no_wait, "print the task id and return at once (follow it with wpm task wait ID)");
  };

  auto* deploy = wpar.add_subcommand("deploy", "deploy a WPAR on a system (a task; an application WPAR starts)");
  deploy->add_option("NAME", name, "the WPAR (any unique prefix)")->required();
  deploy->add_option("--system", system, "the system to deploy on (any unique prefix)")->required();
  deploy->add_flag("--start", start, "start a system WPAR once deployed");
  add_wait(deploy);
  deploy->callback([&] {
    json a = {{"name", name}, {"system", system}};
    if (start) a["start"] = true;
    exit_code = run_task_command(g, "wpar.deploy", a, no_wait);
  });
  struct Simple {
    const char* verb;
    const char* help;
  };
  for (const Simple& s : {Simple{"start", "start a deployed system WPAR (Defined → Active)"},
                          Simple{"pause", "checkpoint a running WPAR and keep it paused (checkpoint enabled only)"},
                          Simple{"resume", "resume a paused or frozen WPAR"},
                          Simple{"freeze", "freeze a running WPAR's processes (checkpoint enabled only)"},
                          Simple{"kill", "end the processes of a paused or frozen WPAR"}}) {
    auto* c = wpar.add_subcommand(s.verb, s.help);
    c->add_option("NAME", name, "the WPAR (any unique prefix)")->required();
    add_wait(c);
    std::string command = std::string("wpar.") + s.verb;
    c->callback([&, command] { exit_code = run_task_command(g, command, {{"name", name}}, no_wait); });
  }
  auto* stop = wpar.add_subcommand("stop", "stop a running WPAR (graceful; --force at once)");
  stop->add_option("NAME", name, "the WPAR (any unique prefix)")->required();
  stop->add_flag("--force", force, "end its processes at once (also a paused, frozen or broken WPAR)");
  add_wait(stop);
  stop->callback([&] {
    json a = {{"name", name}};
    if (force) a["force"] = true;
    exit_code = run_task_command(g, "wpar.stop", a, no_wait);
  });
  auto* remove = wpar.add_subcommand(
      "remove", "remove a WPAR from its system (stopped first) and its definition; an undeployed one: the definition");
  remove->add_option("NAME", name, "the WPAR (any unique prefix)")->required();
  remove->add_flag("--keep-definition", keep_definition, "keep the definition (the WPAR becomes Undeployed)");
  remove->add_flag("--preserve-fs", preserve_fs, "keep a system WPAR's file systems on its system");
  add_wait(remove);
  remove->callback([&] {
    json a = {{"name", name}};
    if (keep_definition) a["keepDefinition"] = true;
    if (preserve_fs) a["preserveFs"] = true;
    exit_code = run_task_command(g, "wpar.remove", a, no_wait);
  });

  static std::string to;
  static bool dry_run = false;
  static std::string approval;
  auto add_approval = [](CLI::App* c) {
    c->add_option("--approval", approval,
                  "do not start it until someone approves it (wpm task approve ID) within this time (1m to 7d, e.g. "
                  "30m); it ends cancelled after it");
  };
  auto* relocate = wpar.add_subcommand(
      "relocate", "move a running WPAR to another system by checkpoint and restart (a task; back where it was when "
                  "a step fails)");
  relocate->add_option("NAME", name, "the WPAR (any unique prefix)")->required();
  relocate->add_option("--to", to, "the arrival system (any unique prefix; see wpm wpar candidates NAME)")->required();
  relocate->add_flag("--force", force, "also to a system that failed compatibility tests (never a Pending one)");
  relocate->add_flag("--dry-run", dry_run, "check it and print the steps; change nothing");
  add_wait(relocate);
  add_approval(relocate);
  relocate->callback([&] {
    json a = {{"name", name}, {"to", to}};
    if (force) a["force"] = true;
    if (!approval.empty() && !dry_run) a["approval"] = approval;
    if (!approval.empty() && dry_run) std::fprintf(stderr, "wpm: note: --approval applies to the relocation itself, not to --dry-run\n");
    if (!dry_run) {
      exit_code = run_task_command(g, "wpar.relocate", a, no_wait);
      return;
    }
    exit_code = run_command(g, "wpar.relocate-check", a, [](const json& r) {
      std::printf("relocation of %s from %s to %s would be accepted (compatibility: %s)\n", text_of(r, "wpar").c_str(),
                  text_of(r, "departure").c_str(), text_of(r, "arrival").c_str(), text_of(r, "compatibility").c_str());
      if (!text_of(r, "warning").empty()) std::printf("warning: %s\n", text_of(r, "warning").c_str());
      int n = 0;
      for (const auto& s : r.value("steps", json::array())) std::printf("  %d. %s\n", ++n, s.get<std::string>().c_str());
      std::printf("nothing was changed (--dry-run)\n");
    });
  });
  auto* candidates = wpar.add_subcommand(
      "candidates", "systems a deployed WPAR could move to, best first (compatible, then least loaded)");
  candidates->add_option("NAME", name, "the WPAR (any unique prefix)")->required();
  candidates->callback([&] {
    exit_code = run_command(g, "wpar.candidates", {{"name", name}}, [](const json& r) {
      std::printf("%-16s %-20s %-13s %-11s %6s %6s  %s\n", "SYSTEM", "HOSTNAME", "COMPATIBILITY", "STATE", "LOAD",
                  "WPARS", "ELIGIBLE");
      for (const auto& c : r.value("candidates", json::array())) {
        std::string load = c["load"].is_number() ? fmt::format("{:.2f}", c["load"].get<double>()) : "-";
        std::string eligible = c.value("eligible", false) ? "yes" : "no: " + text_of(c, "reason");
        std::printf("%-16s %-20s %-13s %-11s %6s %6zu  %s\n", text_of(c, "system").c_str(),
                    text_of(c, "hostname").c_str(), text_of(c, "compatibility").c_str(), text_of(c, "state").c_str(),
                    load.c_str(), c.value("wpars", size_t{0}), eligible.c_str());
      }
    });
  });

  static bool evacuate_dry_run = false;
  auto* evacuate = app.get_subcommand("system")->add_subcommand(
      "evacuate", "relocate every mobile WPAR of a system to the best candidates, one after another (a task with a "
                  "relocation per WPAR); says what cannot move and why");
  evacuate->add_option("NAME", name, "the system (any unique prefix)")->required();
  evacuate->add_flag("--dry-run", evacuate_dry_run, "print the plan; change nothing");
  add_wait(evacuate);
  add_approval(evacuate);
  evacuate->callback([&] {
    if (!evacuate_dry_run) {
      json a = {{"name", name}};
      if (!approval.empty()) a["approval"] = approval;
      exit_code = run_task_command(g, "system.evacuate", a, no_wait);
      return;
    }
    exit_code = run_command(g, "system.evacuate-check", {{"name", name}}, [](const json& r) {
      std::printf("evacuation of %s would move %zu WPAR(s):\n", text_of(r, "system").c_str(), r["moves"].size());
      for (const auto& m : r["moves"]) std::printf("  %-20s -> %s\n", text_of(m, "wpar").c_str(), text_of(m, "to").c_str());
      if (!r["skipped"].empty()) std::printf("and leave %zu where it is:\n", r["skipped"].size());
      for (const auto& s : r["skipped"]) {
        std::printf("  %-20s %s\n", text_of(s, "wpar").c_str(), text_of(s, "reason").c_str());
      }
      std::printf("nothing was changed (--dry-run)\n");
    });
  });

  auto* dead = app.get_subcommand("system")->add_subcommand(
      "mark-dead", "confirm that an Offline system is gone: its WPARs are taken off it (Undeployed, deployable "
                   "elsewhere); a copy it still runs when it comes back is stopped there");
  dead->add_option("NAME", name, "the system (any unique prefix)")->required();
  dead->callback([&] { exit_code = run_task_command(g, "system.mark-dead", {{"name", name}}, false); });

  auto* task = app.add_subcommand("task", "the executor's tasks: lifecycle commands and their operations");
  task->require_subcommand(1);
  auto* list = task->add_subcommand("list", "recent tasks, newest first");
  list->add_option("--state", state, "only waiting (for approval), running, succeeded, failed or cancelled tasks")
      ->check(CLI::IsMember({"waiting", "running", "succeeded", "failed", "cancelled"}));
  list->add_option("--wpar", wpar_filter, "only tasks of this WPAR");
  list->add_option("--limit", limit, "at most this many (default 50)");
  list->callback([&] {
    json a = {{"limit", limit}};
    if (!state.empty()) a["state"] = state;
    if (!wpar_filter.empty()) a["wpar"] = wpar_filter;
    exit_code = run_command(g, "task.list", a, [](const json& r) {
      std::printf("%-26s %-8s %-20s %-16s %-10s %-20s %s\n", "ID", "KIND", "WPAR", "SYSTEM", "STATE", "CREATED",
                  "ERROR");
      for (const auto& t : r) {
        std::printf("%-26s %-8s %-20s %-16s %-10s %-20s %s\n", text_of(t, "id").c_str(), text_of(t, "kind").c_str(),
                    text_of(t, "wpar").c_str(), text_of(t, "system").empty() ? "-" : text_of(t, "system").c_str(),
                    text_of(t, "state").c_str(), time_of(t, "createdNs").c_str(), text_of(t, "error").c_str());
      }
    });
  });
  auto* show = task->add_subcommand("show", "one task with its operations, their outputs and errors");
  show->add_option("ID", id, "the task (any unique prefix)")->required();
  show->callback([&] { exit_code = run_command(g, "task.show", {{"id", id}}, print_task); });
  auto* wait = task->add_subcommand("wait", "wait for a task to end (exit 0 when it succeeded, 1 otherwise)");
  wait->add_option("ID", id, "the task (any unique prefix)")->required();
  wait->add_option("--timeout", timeout_s, "give up waiting after this many seconds (default: never)");
  wait->callback([&] { exit_code = wait_task(g, id, timeout_s); });
  auto* approve = task->add_subcommand("approve", "approve a task that waits for it (a relocation or an evacuation "
                                                  "asked for with --approval): it starts now");
  approve->add_option("ID", id, "the task (any unique prefix)")->required();
  approve->callback([&] {
    exit_code = run_command(g, "task.approve", {{"task", id}}, [](const json& r) {
      std::string task = id;  // the whole id, from the event the approval wrote on its stream
      for (const auto& e : r.value("events", json::array())) {
        if (text_of(e, "stream").starts_with("task/")) task = text_of(e, "stream").substr(5);
      }
      std::printf("approved task %s [command %s]; follow it with wpm task wait %s\n", task.c_str(),
                  text_of(r, "command").c_str(), task.c_str());
    });
  });
  auto* cancel = task->add_subcommand("cancel", "cancel a running or waiting task: no further operation starts");
  cancel->add_option("ID", id, "the task (any unique prefix)")->required();
  cancel->callback([&] {
    exit_code = run_command(g, "task.cancel", {{"task", id}}, [](const json& r) {
      std::printf("cancelled task %s [command %s]\n", id.c_str(), text_of(r, "command").c_str());
    });
  });
}

}  // namespace wpm::cli
