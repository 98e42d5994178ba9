#include "tools/wpm/fleet_commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pwd.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <thread>

#include "tools/wpm/gateway_client.h"
#include "tools/wpm/metrics_commands.h"
#include "tools/wpm/policy_commands.h"
#include "tools/wpm/task_commands.h"

namespace wpm::cli {
namespace {

using nlohmann::json;
std::atomic<bool> g_stop{false};
void on_stop(int) { g_stop.store(true); }

std::string current_user() {
  if (const passwd* pw = ::getpwuid(::getuid())) return pw->pw_name;
  return env("USER");
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {  // bounded: each round moves past a comma
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string format_ns(int64_t ns) { return ns > 0 ? format_time(ns) : "-"; }

void print_json(const json& j) { std::puts(j.dump(2).c_str()); }

void print_fields(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [k, v] : rows) width = std::max(width, k.size());
  for (const auto& [k, v] : rows) std::printf("%-*s  %s\n", static_cast<int>(width + 1), (k + ":").c_str(), v.c_str());
}

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  if (v.is_array()) {
    std::vector<std::string> parts;
    for (const auto& x : v) parts.push_back(text_of(x));
    return fmt::format("{}", fmt::join(parts, ","));
  }
  return v.dump();
}

void print_decision(const json& r) {
  std::printf("done [command %s]", r.value("command", "").c_str());
  if (!r["events"].empty()) {
    std::vector<std::string> written;
    for (const auto& e : r["events"]) written.push_back(fmt::format("{} {}", e["type"].get<std::string>(), e["stream"].get<std::string>()));
    std::printf(": %s", fmt::format("{}", fmt::join(written, ", ")).c_str());
  } else {
    std::printf(": nothing to change");
  }
  std::printf("\n");
}

// A profile's network interfaces on one line: "eth0 up 10.0.0.5/24; eth1 down".
std::string interfaces_text(const json& interfaces) {
  std::vector<std::string> parts;
  for (const auto& n : interfaces) {
    std::vector<std::string> addresses;
    for (const auto& a : n["addresses"]) addresses.push_back(text_of(a));
    parts.push_back(fmt::format("{} {}{}{}", text_of(n["name"]), n.value("up", false) ? "up" : "down",
                                addresses.empty() ? "" : " ", fmt::join(addresses, " ")));
  }
  return parts.empty() ? "none" : fmt::format("{}", fmt::join(parts, "; "));
}

// The WPAR definition flags shared by create and modify.
struct WparFlags {
  std::string type, command, trigger, trigger_command, address, capabilities, group, from;
  bool checkpoint = false, no_checkpoint = false, privileged = false, no_privileged = false;
  std::optional<uint32_t> cpu_shares, cpu_limit, procs;
  std::optional<uint64_t> memory;

  void add(CLI::App* c, bool create) {
    if (create) {
      c->add_option("--type", type, "system or application (default system)")->check(CLI::IsMember({"system", "application"}));
      c->add_option("--from", from, "copy the definition of this WPAR (a template), then apply the other flags");
    }
    c->add_option("--command", command, "what an application WPAR runs (or a system WPAR's init)");
    c->add_flag("--checkpoint", checkpoint, "enable checkpointing (relocation by checkpoint and restart)");
    if (!create) c->add_flag("--no-checkpoint", no_checkpoint, "disable checkpointing");
    c->add_option("--trigger", trigger, "the signal that asks the workload to checkpoint (default SIGUSR1)");
    c->add_option("--trigger-command", trigger_command, "a command run inside the WPAR to trigger a checkpoint");
    c->add_option("--cpu-shares", cpu_shares, "relative CPU weight");
    c->add_option("--cpu-limit", cpu_limit, "CPU limit, percent of one host (1-100)");
    c->add_option("--memory", memory, "memory limit, bytes");
    c->add_option("--procs", procs, "most processes at once");
    c->add_option("--address", address, "network address, e.g. 10.0.0.5/24");
    c->add_option("--capabilities", capabilities, "capability set: names (cap_a,cap_b), edits (+cap_a,-cap_b), none or all");
    c->add_option("--group", group, "the WPAR group (default: default)");
    c->add_flag("--privileged", privileged,
                "run without the system call filter, no_new_privs and the device limit (WPARAdministrator only; "
                "agents/README.md)");
    if (!create) c->add_flag("--no-privileged", no_privileged, "run under the system call filter and device limit again");
  }
  json args() const {
    json a = json::object();
    auto set = [&](const char* k, const std::string& v) {
      if (!v.empty()) a[k] = v;
    };
    set("type", type);
    set("command", command);
    set("trigger", trigger);
    set("triggerCommand", trigger_command);
    set("address", address);
    set("capabilities", capabilities);
    set("group", group);
    set("from", from);
    if (checkpoint) a["checkpoint"] = true;
    if (no_checkpoint) a["checkpoint"] = false;
    if (privileged) a["privileged"] = true;
    if (no_privileged) a["privileged"] = false;
    if (cpu_shares) a["cpuShares"] = *cpu_shares;
    if (cpu_limit) a["cpuLimit"] = *cpu_limit;
    if (memory) a["memory"] = *memory;
    if (procs) a["procs"] = *procs;
    return a;
  }
};

// ---- login ------------------------------------------------------------------

std::string read_password(bool from_stdin) {
  std::string password;
  if (from_stdin || ::isatty(STDIN_FILENO) == 0) {
    std::getline(std::cin, password);
    if (!password.empty() && password.back() == '\r') password.pop_back();
    return password;
  }
  std::fprintf(stderr, "Password: ");
  termios old{};
  ::tcgetattr(STDIN_FILENO, &old);
  termios quiet = old;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  std::getline(std::cin, password);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
  std::fprintf(stderr, "\n");
  return password;
}

int cmd_login(const GlobalOptions& g, std::string user, bool password_stdin) {
  if (user.empty()) user = current_user();
  std::string password = read_password(password_stdin);
  if (password.empty()) {
    print_error("no password given (type it, or pipe it with --password-stdin)");
    return kExitUsage;
  }
  Gateway gateway(g);
  json reply = gateway.call("login", {{"user", user}, {"password", password}}, "", true);
  std::fill(password.begin(), password.end(), '\0');
  if (!reply.value("ok", false)) return report(reply);
  json sessions = read_sessions();
  sessions[gateway.endpoint()] = reply["result"]["token"];
  if (!write_sessions(sessions)) {
    print_error(fmt::format("logged in, but cannot keep the login in {}", session_file()));
    return kExitFailed;
  }
  json result = reply["result"];
  result.erase("token");
  if (g.format == Format::kJson) {
    print_json(result);
  } else {
    std::printf("logged in as %s (roles: %s) until %s\n", user.c_str(),
                result["roles"].empty() ? "none" : text_of(result["roles"]).c_str(),
                format_ns(result.value("expiresNs", int64_t{0})).c_str());
  }
  return kExitOk;
}

int cmd_logout(const GlobalOptions& g) {
  Gateway gateway(g);
  json sessions = read_sessions();
  std::string ep = gateway.endpoint();
  if (!sessions.contains(ep)) {
    print_error(fmt::format("not logged in to {}", ep));
    return kExitFailed;
  }
  json reply = gateway.call("logout", json::object(), sessions[ep].get<std::string>());
  // Forgotten here only once the gateway revoked it (or no longer knew it):
  // a token that may still work is not dropped silently.
  if (!reply.value("ok", false) && reply["error"].value("code", "") != "unauthenticated") return report(reply);
  sessions.erase(ep);
  write_sessions(sessions);
  if (g.format == Format::kJson) {
    print_json({{"loggedOut", true}});
  } else {
    std::puts("logged out");
  }
  return kExitOk;
}

// ---- events -------------------------------------------------------------------

constexpr uint64_t kWatchPageMax = 5000;
constexpr auto kWatchGather = std::chrono::milliseconds(25);

int cmd_watch(const GlobalOptions& g, uint64_t from, const std::vector<std::string>& types, uint64_t count) {
  std::signal(SIGINT, on_stop);
  std::signal(SIGTERM, on_stop);
  Gateway gateway(g, &g_stop);
  if (from == 0) {
    // From now on: start after the current head.
    json head = gateway.call("events.read", {{"from", UINT64_MAX / 2}, {"max", 1}});
    if (!head.value("ok", false)) return report(head);
    from = head["result"].value("head", uint64_t{0}) + 1;
  }
  uint64_t printed = 0;
  // Prints one event (its JSON line as the gateway wrote it); true when --count is reached.
  auto print = [&](std::string_view line, const json* parsed) {
    if (g.format == Format::kJson) {
      std::fwrite(line.data(), 1, line.size(), stdout);
      std::fputc('\n', stdout);
    } else {
      json own;
      if (parsed == nullptr) own = json::parse(line, nullptr, false);
      const json& e = parsed != nullptr ? *parsed : own;
      if (e.is_object()) {
        std::printf("%-10llu %-24s %-22s %-32s %s\n", static_cast<unsigned long long>(e.value("sequence", uint64_t{0})),
                    format_time(e.value("timestampNs", int64_t{0})).c_str(), e.value("type", "").c_str(),
                    e.value("streamId", "").c_str(), e.value("actor", "").c_str());
      }
    }
    return count > 0 && ++printed >= count;
  };
  while (!g_stop.load()) {  // until interrupted, or --count events
    // "lines": the events follow the reply's JSON, one line each, printed as they came.
    json args = {{"from", from}, {"waitMs", 5000}, {"max", kWatchPageMax}, {"lines", true}};
    if (!types.empty()) args["types"] = types;
    std::string text = gateway.call_text("events.read", args);
    size_t newline = text.find('\n');
    json reply = json::parse(std::string_view(text).substr(0, newline), nullptr, false);
    if (!reply.is_object()) reply = Gateway::local_error("internal", "the gateway's reply is not JSON");
    if (!reply.value("ok", false)) {
      if (g_stop.load()) break;
      return report(reply);
    }
    const json& r = reply["result"];
    if (r.contains("lines")) {
      std::string_view rest = newline == std::string::npos ? std::string_view() : std::string_view(text).substr(newline + 1);
      while (!rest.empty()) {  // bounded: each turn takes one line off `rest`
        size_t end = rest.find('\n');
        if (print(rest.substr(0, end), nullptr)) return kExitOk;
        rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
      }
    } else {
      for (const auto& e : r["events"]) {  // a gateway from before "lines"
        if (print(e.dump(), &e)) return kExitOk;
      }
    }
    if (r.value("heartbeat", false) && g.format == Format::kJson) {
      // A silent stream is told from a dead one.
      std::puts(json{{"heartbeat", {{"head", r["head"]}, {"next", r["next"]}}}}.dump().c_str());
    }
    std::fflush(stdout);
    uint64_t next = r.value("next", from);
    // Caught up with the head: let events gather for a moment before asking
    // again, so a busy log costs one request per pause rather than one per
    // commit. Behind it, ask again at once.
    if (next > from && next > r.value("head", uint64_t{0})) std::this_thread::sleep_for(kWatchGather);
    from = next;
  }
  return kExitOk;
}

}  // namespace

void add_fleet_commands(CLI::App& app, GlobalOptions& g, int& exit_code) {
  // Options live as long as the app: CLI11 writes into them while parsing.
  static std::string user, name, name2, key, value, description, state, system, group, role, users, groups, tests,
      query, query_name;
  static bool password_stdin = false;
  static std::vector<std::string> names, types;
  static WparFlags create_flags, modify_flags;
  static uint64_t from = 0, count = 0;
  static size_t limit = 50;

  auto* login = app.add_subcommand("login", "log in to the gateway as a local Linux user (PAM)");
  login->add_option("--user", user, "the user (default: you)");
  login->add_flag("--password-stdin", password_stdin, "read the password from standard input");
  login->callback([&] { exit_code = cmd_login(g, user, password_stdin); });
  app.add_subcommand("logout", "end this login")->callback([&] { exit_code = cmd_logout(g); });
  app.add_subcommand("whoami", "who you are to the gateway, and your roles")->callback([&] {
    exit_code = run_command(g, "whoami", json::object(), [](const json& r) {
      print_fields({{"user", text_of(r["user"])},
                    {"roles", r["roles"].empty() ? "none" : text_of(r["roles"])},
                    {"groups", text_of(r["groups"])},
                    {"credential", text_of(r["credential"])}});
    });
  });

  // ---- system
  auto* sys = app.add_subcommand("system", "managed systems");
  sys->require_subcommand(1);
  sys->add_subcommand("list", "list the managed systems and their states")->callback([&] {
    exit_code = run_command(g, "system.list", json::object(), [](const json& r) {
      std::printf("%-20s %-12s %-16s %-12s %-24s %-12s %-36s %s\n", "NAME", "STATE", "ADDRESS", "DISTRIBUTION",
                  "KERNEL", "DOMAIN", "PROFILE", "WPARS");
      for (const auto& s : r) {
        std::printf("%-20s %-12s %-16s %-12s %-24s %-12s %-36s %s\n", text_of(s["name"]).c_str(),
                    text_of(s["state"]).c_str(), text_of(s["address"]).c_str(), text_of(s["distribution"]).c_str(),
                    text_of(s["kernel"]).c_str(), s.value("domain", "-").c_str(), s.value("profileName", "-").c_str(),
                    text_of(s["wpars"]).c_str());
      }
    });
  });
  auto* sys_show = sys->add_subcommand("show", "one system: state, profile, WPARs");
  sys_show->add_option("NAME", name, "the system (any unique prefix)")->required();
  sys_show->callback([&] {
    exit_code = run_command(g, "system.show", {{"name", name}}, [](const json& s) {
      const json& p = s["profile"];
      print_fields({{"name", text_of(s["name"])},
                    {"state", fmt::format("{} ({}, since {})", text_of(s["state"]), text_of(s["stateReason"]),
                                          format_ns(s.value("stateSinceNs", int64_t{0})))},
                    {"hostname", text_of(s["hostname"])},
                    {"address", fmt::format("{} (agent port {})", text_of(s["address"]), text_of(s["agentPort"]))},
                    {"os", fmt::format("{} {} {}", text_of(p["distribution"]), text_of(p["distributionVersion"]),
                                       text_of(p["architecture"]))},
                    {"kernel", text_of(p["kernelVersion"])},
                    {"glibc", text_of(p["glibcVersion"])},
                    {"cpu", fmt::format("{} × {}", text_of(p["cpuCores"]), text_of(p["cpuModel"]))},
                    {"memory", text_of(p["memoryBytes"])},
                    {"domain", s.value("domain", "-")},
                    {"profile", s.value("profileName", "-")},
                    {"subnets", p.value("subnets", json::array()).empty() ? "none" : text_of(p["subnets"])},
                    {"interfaces", interfaces_text(p.value("networkInterfaces", json::array()))},
                    {"overridden facts", s["overriddenFacts"].empty() ? "none" : text_of(s["overriddenFacts"])},
                    {"metrics", s.value("metricsHostScope", json()).is_string() && s["metricsHostScope"] == "wpars"
                                    ? "host figures are the sum of its WPARs' (agent.toml [metrics] host_scope = "
                                      "\"wpars\": labs only)"
                                    : "the host's own"},
                    {"wpars", s["wparNames"].empty() ? "none" : text_of(s["wparNames"])}});
    });
  });
  add_metrics_command(*sys, "system", g, exit_code);
  sys->add_subcommand("discover", "ask every registered agent again for its WPARs and reconcile (hand-made WPARs appear "
                                  "as discovered)")
      ->callback([&] { exit_code = run_command(g, "system.discover", json::object(), print_decision); });
  auto* token = sys->add_subcommand("token", "join tokens: register an agent without the registration password");
  token->require_subcommand(1);
  static std::string ttl;
  auto* token_create = token->add_subcommand(
      "create", "make a single-use join token for `wpm-agent configure --token T` (shown once; expires)");
  token_create->add_option("--ttl", ttl, "how long it stays valid: 1m to 7d (default 1h)");
  token_create->callback([&] {
    json a = json::object();
    if (!ttl.empty()) a["ttl"] = ttl;
    exit_code = run_command(g, "system.token-create", a, [](const json& r) {
      std::printf("%s\n", r.value("token", "").c_str());
      std::fprintf(stderr, "single use, valid until %s: on the host run wpm-agent configure --manager HOST --token "
                           "THE-TOKEN\n",
                   format_ns(r.value("expiresNs", int64_t{0})).c_str());
    });
  });
  auto* sys_domain = sys->add_subcommand("set-domain", "tag a system with a relocation domain");
  sys_domain->add_option("NAME", name, "the system (any unique prefix)")->required();
  sys_domain->add_option("DOMAIN", name2, "the relocation domain (`wpm domain list`)")->required();
  sys_domain->callback(
      [&] { exit_code = run_command(g, "system.set-domain", {{"name", name}, {"domain", name2}}, print_decision); });
  auto* sys_update = sys->add_subcommand(
      "update-profile", "ask a system's agent to send its profile again (a change re-runs the compatibility analysis)");
  sys_update->add_option("NAME", name, "the system (any unique prefix)")->required();
  sys_update->callback([&] {
    exit_code = run_command(g, "system.update-profile", {{"name", name}}, [](const json& r) {
      std::printf("the agent is being asked for its profile [command %s]: a changed profile is recorded as "
                  "systemProfileChanged (wpm events watch --type systemProfileChanged) and shown by wpm system show\n",
                  r.value("command", "").c_str());
    });
  });
  auto* sys_remove = sys->add_subcommand(
      "remove", "remove a system: its key is revoked at once (with WPARs on it: say what becomes of them)");
  sys_remove->add_option("NAME", name, "the system (any unique prefix)")->required();
  static bool keep_wpars = false, remove_wpars = false;
  auto* keep = sys_remove->add_flag("--keep-wpars", keep_wpars,
                                    "leave its WPARs running on it, unmanaged; their definitions stay here, "
                                    "Undeployed (those discovered on it go)");
  sys_remove->add_flag("--remove-wpars", remove_wpars,
                       "remove its WPARs from it first, their definitions too (one task each, as wpm wpar remove)")
      ->excludes(keep);
  sys_remove->callback([&] {
    if (remove_wpars) {
      Gateway gateway(g);
      json listed = gateway.call("wpar.list", {{"system", name}});
      if (!listed.value("ok", false)) {
        exit_code = report(listed);
        return;
      }
      for (const auto& w : listed["result"]) {
        const std::string wpar = w.value("name", "");
        int rc = run_task_command(g, "wpar.remove", {{"name", wpar}}, false);
        if (rc != kExitOk) {
          print_error(fmt::format("WPAR {} was not removed, so system {} stays; see the task above, then run this "
                                  "again",
                                  wpar, name));
          exit_code = rc;
          return;
        }
      }
    }
    json a = {{"name", name}};
    if (keep_wpars) a["keepWpars"] = true;
    exit_code = run_command(g, "system.remove", a, print_decision);
  });

  // ---- domain
  auto* domain = app.add_subcommand("domain", "relocation domains: systems grouped by purpose; profiles never span two");
  domain->require_subcommand(1);
  domain->add_subcommand("list", "list the relocation domains with their systems and profiles")->callback([&] {
    exit_code = run_command(g, "domain.list", json::object(), [](const json& r) {
      std::printf("%-20s %-8s %-48s %s\n", "NAME", "SYSTEMS", "PROFILES", "DESCRIPTION");
      for (const auto& d : r) {
        std::vector<std::string> profiles;
        for (const auto& p : d["profiles"]) {
          profiles.push_back(fmt::format("{} ({})", text_of(p["name"]), p["systems"].size()));
        }
        std::printf("%-20s %-8s %-48s %s\n", text_of(d["name"]).c_str(), text_of(d["systems"]).c_str(),
                    profiles.empty() ? "-" : fmt::format("{}", fmt::join(profiles, ", ")).c_str(),
                    text_of(d["description"]).c_str());
      }
    });
  });
  auto* dcreate = domain->add_subcommand("create", "make a relocation domain");
  dcreate->add_option("NAME", name, "the domain's name")->required();
  dcreate->add_option("--description", description, "what its systems are for");
  dcreate->callback(
      [&] { exit_code = run_command(g, "domain.create", {{"name", name}, {"description", description}}, print_decision); });
  auto* dremove = domain->add_subcommand("remove", "remove an empty relocation domain (not default)");
  dremove->add_option("NAME", name, "the domain (any unique prefix)")->required();
  dremove->callback([&] { exit_code = run_command(g, "domain.remove", {{"name", name}}, print_decision); });

  // ---- wpar
  auto* wpar = app.add_subcommand("wpar", "WPAR definitions");
  wpar->require_subcommand(1);
  auto* create = wpar->add_subcommand("create", "define a WPAR (undeployed until the executor deploys it)");
  create->add_option("NAME", name, "the WPAR's name")->required();
  create_flags.add(create, true);
  create->callback([&] {
    json a = create_flags.args();
    a["name"] = name;
    exit_code = run_command(g, "wpar.create", a, print_decision);
  });
  auto* wlist = wpar->add_subcommand("list", "list WPARs with their state letters (U undeployed, D defined, A active, …)");
  wlist->add_option("--state", state, "only this state: a letter (A) or a name (Active)");
  wlist->add_option("--system", system, "only WPARs on this system");
  wlist->add_option("--group", group, "only WPARs in this group");
  wlist->callback([&] {
    json a = json::object();
    if (!state.empty()) a["state"] = state;
    if (!system.empty()) a["system"] = system;
    if (!group.empty()) a["group"] = group;
    exit_code = run_command(g, "wpar.list", a, [](const json& r) {
      std::printf("%-24s %-2s %-12s %-12s %-16s %-20s %s\n", "NAME", "ST", "TYPE", "STATE", "GROUP", "SYSTEM",
                  "CHECKPOINT");
      for (const auto& w : r) {
        std::printf("%-24s %-2s %-12s %-12s %-16s %-20s %s\n", text_of(w["name"]).c_str(), text_of(w["state"]).c_str(),
                    text_of(w["type"]).c_str(), text_of(w["stateName"]).c_str(), text_of(w["group"]).c_str(),
                    w["system"].get<std::string>().empty() ? "-" : text_of(w["system"]).c_str(),
                    w["checkpointable"].get<bool>() ? "yes" : "no");
      }
    });
  });
  auto* wshow = wpar->add_subcommand("show", "one WPAR's definition and state");
  wshow->add_option("NAME", name, "the WPAR (any unique prefix)")->required();
  wshow->callback([&] {
    exit_code = run_command(g, "wpar.show", {{"name", name}}, [](const json& w) {
      std::vector<std::pair<std::string, std::string>> rows;
      for (const auto& k : {"name", "type", "state", "stateName", "command", "checkpointable", "triggerSignal",
                            "triggerCommand", "cpuShares", "cpuLimitPercent", "memoryBytes", "processesMax", "address",
                            "capabilities", "privileged", "group", "system", "discovered"}) {
        rows.emplace_back(k, text_of(w[k]));
      }
      print_fields(rows);
    });
  });
  add_metrics_command(*wpar, "wpar", g, exit_code);
  auto* modify = wpar->add_subcommand(
      "modify",
      "change a WPAR's definition (a task); on a deployed WPAR only its capabilities, limits and group, applied on "
      "its system: limits at once, capabilities to processes started from then on");
  modify->add_option("NAME", name, "the WPAR (any unique prefix)")->required();
  modify_flags.add(modify, false);
  static bool modify_no_wait = false;
  modify->add_flag("--no-wait", modify_no_wait, "print the task id and return at once (follow it with wpm task wait ID)");
  modify->callback([&] {
    json a = modify_flags.args();
    a["name"] = name;
    exit_code = run_task_command(g, "wpar.modify", a, modify_no_wait);
  });
  add_lifecycle_commands(app, *wpar, g, exit_code);

  // ---- group
  auto* grp = app.add_subcommand("group", "WPAR groups");
  grp->require_subcommand(1);
  auto* gcreate = grp->add_subcommand("create", "make a WPAR group");
  gcreate->add_option("NAME", name, "the group's name")->required();
  gcreate->add_option("--description", description, "what the group is for");
  gcreate->callback([&] { exit_code = run_command(g, "group.create", {{"name", name}, {"description", description}}, print_decision); });
  grp->add_subcommand("list", "list the WPAR groups")->callback([&] {
    exit_code = run_command(g, "group.list", json::object(), [](const json& r) {
      std::printf("%-24s %-6s %s\n", "NAME", "WPARS", "DESCRIPTION");
      for (const auto& x : r) {
        std::printf("%-24s %-6s %s\n", text_of(x["name"]).c_str(), text_of(x["wpars"]).c_str(),
                    text_of(x["description"]).c_str());
      }
    });
  });
  auto* gshow = grp->add_subcommand("show", "one group and its WPARs");
  gshow->add_option("NAME", name, "the group (any unique prefix)")->required();
  gshow->callback([&] {
    exit_code = run_command(g, "group.show", {{"name", name}}, [](const json& x) {
      print_fields({{"name", text_of(x["name"])},
                    {"description", text_of(x["description"])},
                    {"wpars", x["wparNames"].empty() ? "none" : text_of(x["wparNames"])}});
    });
  });
  auto* gmodify = grp->add_subcommand("modify", "change a group's description");
  gmodify->add_option("NAME", name, "the group (any unique prefix)")->required();
  gmodify->add_option("--description", description, "what the group is for")->required();
  gmodify->callback([&] { exit_code = run_command(g, "group.modify", {{"name", name}, {"description", description}}, print_decision); });
  auto* gdelete = grp->add_subcommand("delete", "delete an empty group (not default)");
  gdelete->add_option("NAME", name, "the group (any unique prefix)")->required();
  gdelete->callback([&] { exit_code = run_command(g, "group.delete", {{"name", name}}, print_decision); });
  auto* gadd = grp->add_subcommand("add-wpar", "move WPARs into a group");
  gadd->add_option("GROUP", name, "the group")->required();
  gadd->add_option("WPAR", names, "the WPARs")->required();
  gadd->callback([&] { exit_code = run_command(g, "group.add-wpar", {{"name", name}, {"wpars", names}}, print_decision); });
  auto* gremove = grp->add_subcommand("remove-wpar", "move WPARs out of a group, back to default");
  gremove->add_option("GROUP", name, "the group")->required();
  gremove->add_option("WPAR", names, "the WPARs")->required();
  gremove->callback([&] { exit_code = run_command(g, "group.remove-wpar", {{"name", name}, {"wpars", names}}, print_decision); });
  add_policy_commands(*grp, g, exit_code, print_decision);
  add_simulate_command(app, g, exit_code);

  // ---- compat
  auto* compat = app.add_subcommand("compat", "compatibility between systems (relocation)");
  compat->require_subcommand(1);
  auto* cshow = compat->add_subcommand("show", "the compatibility of two systems, test by test");
  cshow->add_option("A", name, "the first system")->required();
  cshow->add_option("B", name2, "the second system")->required();
  cshow->add_option("--tests", tests, "optional tests to apply, comma-separated (the critical ones always apply)");
  cshow->callback([&] {
    json a = {{"a", name}, {"b", name2}};
    if (!tests.empty()) a["tests"] = split_list(tests);
    exit_code = run_command(g, "compat.show", a, [](const json& r) {
      std::printf("%s ↔ %s: %s\n", text_of(r["a"]).c_str(), text_of(r["b"]).c_str(), text_of(r["state"]).c_str());
      for (const auto& [label, dir] : {std::pair{"A → B", "departureToArrival"}, std::pair{"B → A", "arrivalToDeparture"}}) {
        if (!r.contains(dir)) continue;
        for (const auto& t : r[dir]) {
          if (t["passed"].get<bool>()) continue;
          std::printf("  %s %-22s %s: %s vs %s; %s\n", label, text_of(t["test"]).c_str(),
                      t["critical"].get<bool>() ? "critical" : "optional", text_of(t["departure"]).c_str(),
                      text_of(t["arrival"]).c_str(), text_of(t["remedy"]).c_str());
        }
      }
    });
  });
  auto* matrix = compat->add_subcommand("matrix", "the compatibility state of every pair of systems");
  matrix->add_option("--limit", limit, "at most this many systems (default 50)");
  matrix->callback([&] {
    exit_code = run_command(g, "compat.matrix", {{"limit", limit}}, [](const json& r) {
      std::printf("%-20s", "");
      for (const auto& s : r["systems"]) std::printf(" %-16.16s", text_of(s).c_str());
      std::printf("\n");
      for (const auto& row : r["rows"]) {
        std::printf("%-20.20s", text_of(row["system"]).c_str());
        for (const auto& s : r["systems"]) {
          std::string v = row["states"].contains(s.get<std::string>()) ? text_of(row["states"][s.get<std::string>()]) : "-";
          std::printf(" %-16.16s", v.c_str());
        }
        std::printf("\n");
      }
      if (r.value("truncated", false)) std::printf("(more systems: raise --limit)\n");
    });
  });

  // ---- role
  auto* roles = app.add_subcommand("role", "map roles to users and Linux groups (administrator)");
  roles->require_subcommand(1);
  for (const char* verb : {"add", "remove"}) {
    auto* c = roles->add_subcommand(verb, std::string(verb) + " users or groups to a role");
    c->add_option("--role", role, "administrator, WPARAdministrator, WPARUser or WPARMonitor")->required();
    c->add_option("--user", users, "users, comma-separated");
    c->add_option("--group", groups, "Linux groups, comma-separated");
    c->callback([&, verb] {
      exit_code = run_command(g, std::string("role.") + verb,
                      {{"role", role}, {"users", split_list(users)}, {"groups", split_list(groups)}}, print_decision);
    });
  }
  auto* purge = roles->add_subcommand("purge", "remove every user and group from a role");
  purge->add_option("--role", role, "the role")->required();
  purge->callback([&] { exit_code = run_command(g, "role.purge", {{"role", role}}, print_decision); });
  auto* rquery = roles->add_subcommand(
      "query", "getRoles | getRolesByUser U | getRolesByGroup G | getUsersByRole R | getGroupsByRole R");
  rquery->add_option("QUERY", query, "the query")->required();
  rquery->add_option("NAME", query_name, "the user, group or role it asks about");
  rquery->callback([&] {
    exit_code = run_command(g, "role.query", {{"query", query}, {"name", query_name}}, [](const json& r) {
      for (const auto& x : r) {
        if (x.is_object()) {
          std::printf("%-20s users: %s; groups: %s\n", text_of(x["role"]).c_str(), text_of(x["users"]).c_str(),
                      text_of(x["groups"]).c_str());
        } else {
          std::puts(text_of(x).c_str());
        }
      }
    });
  });

  // ---- settings
  auto* settings = app.add_subcommand("settings", "manager settings");
  settings->require_subcommand(1);
  settings->add_subcommand("show", "every setting with its value and default")->callback([&] {
    exit_code = run_command(g, "settings.show", json::object(), [](const json& r) {
      std::printf("%-24s %-28s %s\n", "KEY", "VALUE", "DEFAULT");
      for (const auto& s : r) {
        std::printf("%-24s %-28s %s\n", text_of(s["key"]).c_str(), text_of(s["value"]).c_str(),
                    text_of(s["default"]).c_str());
      }
    });
  });
  auto* set = settings->add_subcommand("set", "change a setting");
  set->add_option("KEY", key, "the setting")->required();
  set->add_option("VALUE", value, "its new value")->required();
  set->callback([&] { exit_code = run_command(g, "settings.set", {{"key", key}, {"value", value}}, print_decision); });

  // ---- events
  auto* events = app.add_subcommand("events", "the live event stream");
  events->require_subcommand(1);
  auto* watch = events->add_subcommand(
      "watch", "follow events as they are committed (NDJSON with -o json, with heartbeats); resumable with --from");
  watch->add_option("--from", from, "start at this sequence (default: from now on)");
  watch->add_option("--type", types, "only these event types (repeatable)");
  watch->add_option("--count", count, "stop after this many events");
  watch->callback([&] { exit_code = cmd_watch(g, from, types, count); });
}

}  // namespace wpm::cli
