#include "agents/agent/operations.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <spawn.h>
#include <sys/wait.h>

#include <chrono>

#include "agents/agent/agent_config.h"
#include "agents/agent/daemon.h"
#include "agents/runtime/lifecycle.h"
#include "agents/runtime/wpar_files.h"

namespace wpm::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::array<std::string_view, 12> kActions = {"deploy", "start",  "stop",   "forceStop", "pause",   "resume",
                                                        "freeze", "kill",   "remove", "receive",   "restore", "modify"};

}  // namespace

bool known_action(std::string_view action) {
  return std::find(kActions.begin(), kActions.end(), action) != kActions.end();
}

bool valid_operation_id(std::string_view id) {
  return !id.empty() && id.size() <= 100 && id.front() != '.' && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
  });
}

bool run_again_code(int exit_code) { return exit_code == 3 || exit_code == 5 || exit_code == 6 || exit_code == 17; }

bool places(std::string_view action) { return action == "deploy" || action == "receive" || action == "restore"; }

std::optional<std::string> placement_refusal(std::optional<uint64_t> held, uint64_t epoch, std::string_view action,
                                             bool exists, std::string_view wpar) {
  if (held && epoch < *held) {
    return fmt::format("placement epoch {} of WPAR {} is older than the {} this system holds: the WPAR was placed "
                       "again since, so this command is stale and is not run",
                       epoch, wpar, *held);
  }
  if (!places(action) && !exists) {
    return fmt::format("WPAR {} is not placed on this system", wpar);
  }
  return std::nullopt;
}

std::vector<std::string> command_words(const std::string& command) {
  // Anything a shell would read differently from plain words goes to one.
  if (command.find_first_of("\"'\\$`;&|<>(){}[]*?~#=!\n\t") != std::string::npos) {
    return {"/bin/sh", "-c", command};
  }
  std::vector<std::string> words;
  size_t start = 0;
  while (start < command.size()) {  // bounded: each turn moves past one word
    size_t begin = command.find_first_not_of(' ', start);
    if (begin == std::string::npos) break;
    size_t end = command.find(' ', begin);
    words.push_back(command.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    start = end == std::string::npos ? command.size() : end;
  }
  return words;
}

std::expected<std::vector<std::string>, std::string> command_args(const OperationRecord& op,
                                                                  const std::string& state_root) {
  const std::string& w = op.wpar;
  const std::string state_dir = state_root + "/" + w + "/" + op.id;
  if (op.action == "start") return std::vector<std::string>{"startwpar", w};
  if (op.action == "stop") return std::vector<std::string>{"stopwpar", w};
  if (op.action == "forceStop") return std::vector<std::string>{"stopwpar", "-F", w};
  if (op.action == "pause") return std::vector<std::string>{"chkptwpar", "-p", "-d", state_dir, w};
  if (op.action == "freeze") return std::vector<std::string>{"chkptwpar", "-f", "-d", state_dir, w};
  if (op.action == "resume") return std::vector<std::string>{"resumewpar", w};
  if (op.action == "kill") return std::vector<std::string>{"killwpar", w};
  if (op.action == "remove") {
    std::vector<std::string> args = {"rmwpar"};
    if (op.force) args.push_back("-F");
    if (op.preserve_fs) args.push_back("-p");
    args.push_back(w);
    return args;
  }
  if (op.action == "receive" || op.action == "restore") {
    if (!valid_operation_id(op.state_id)) return std::unexpected(fmt::format("'{}' is not a state file id", op.state_id));
    const std::string dir = state_root + "/" + w + "/" + op.state_id;
    if (op.action == "restore") return std::vector<std::string>{"restartwpar", "-d", dir, w};
    if (op.peer_endpoint.empty() || op.peer_key.empty()) {
      return std::unexpected("a receive needs the departure agent's endpoint and key");
    }
    return std::vector<std::string>{"receivestate", "--from", op.peer_endpoint, "--key", op.peer_key,
                                    "--state",      op.state_id, "-d", dir, w};
  }
  if (op.action != "deploy" && op.action != "modify") return std::unexpected(fmt::format("unknown action '{}'", op.action));
  json d = json::parse(op.definition, nullptr, false);
  if (!d.is_object()) return std::unexpected("the WPAR's definition is not a JSON object");
  auto text = [&](const char* key) {
    return d.contains(key) && d[key].is_string() ? d[key].get<std::string>() : std::string();
  };
  auto number = [&](const char* key) {
    return d.contains(key) && d[key].is_number_unsigned() ? d[key].get<uint64_t>() : uint64_t{0};
  };
  if (op.action == "modify") {
    // The whole changeable part of the definition, so that running it again
    // changes nothing more: an empty set is the default, a 0 lifts a limit.
    auto caps = text("capabilities");
    return std::vector<std::string>{"chwpar",
                                    "--capabilities",
                                    caps.empty() ? "default" : caps,
                                    "--cpu-shares",
                                    std::to_string(number("cpuShares")),
                                    "--cpu-limit",
                                    std::to_string(number("cpuLimitPercent")),
                                    "--memory",
                                    std::to_string(number("memoryBytes")),
                                    "--max-processes",
                                    std::to_string(number("processesMax")),
                                    w};
  }
  const bool system = text("type") != "application";
  const std::string command = text("command");
  if (!system && command.empty()) return std::unexpected("an application WPAR needs a command");
  std::vector<std::string> args = {system ? "mkwpar" : "wparexec", "-n", w};
  if (d.value("checkpointable", false)) args.push_back("-c");
  if (d.value("privileged", false)) args.push_back("--privileged");
  if (auto caps = text("capabilities"); !caps.empty()) args.insert(args.end(), {"--capabilities", caps});
  if (auto address = text("address"); system && !address.empty()) {
    // The host interface whose subnet holds it gives the prefix.
    args.insert(args.end(), {"--address", address.substr(0, address.find('/'))});
  }
  if (auto v = number("cpuShares")) args.insert(args.end(), {"--cpu-shares", std::to_string(v)});
  if (auto v = number("cpuLimitPercent")) args.insert(args.end(), {"--cpu-limit", std::to_string(v)});
  if (auto v = number("memoryBytes")) args.insert(args.end(), {"--memory", std::to_string(v)});
  if (auto v = number("processesMax")) args.insert(args.end(), {"--max-processes", std::to_string(v)});
  if (system && op.start_after) args.push_back("-s");
  if (!command.empty()) {
    args.push_back("--");
    auto words = command_words(command);
    args.insert(args.end(), words.begin(), words.end());
  }
  return args;
}

std::string record_to_json(const OperationRecord& r) {
  json j = {{"id", r.id},
            {"attempt", r.attempt},
            {"wpar", r.wpar},
            {"action", r.action},
            {"epoch", r.epoch},
            {"definition", r.definition},
            {"preserveFs", r.preserve_fs},
            {"startAfter", r.start_after},
            {"peerEndpoint", r.peer_endpoint},
            {"peerKey", r.peer_key},
            {"stateId", r.state_id},
            {"force", r.force},
            {"stateRoot", r.state_root},
            {"done", r.done},
            {"runnerPid", r.runner_pid},
            {"exitCode", r.exit_code},
            {"output", r.output},
            {"error", r.error},
            {"wparState", r.wpar_state},
            {"refused", r.refused},
            {"startedNs", r.started_ns},
            {"finishedNs", r.finished_ns}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::optional<OperationRecord> record_from_json(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  try {
    OperationRecord r;
    r.id = j.at("id").get<std::string>();
    r.attempt = j.at("attempt").get<uint32_t>();
    r.wpar = j.at("wpar").get<std::string>();
    r.action = j.at("action").get<std::string>();
    r.epoch = j.at("epoch").get<uint64_t>();
    r.definition = j.value("definition", "");
    r.preserve_fs = j.value("preserveFs", false);
    r.start_after = j.value("startAfter", false);
    r.peer_endpoint = j.value("peerEndpoint", "");
    r.peer_key = j.value("peerKey", "");
    r.state_id = j.value("stateId", "");
    r.force = j.value("force", false);
    r.state_root = j.value("stateRoot", "");
    r.done = j.at("done").get<bool>();
    r.runner_pid = j.value("runnerPid", 0);
    r.exit_code = j.value("exitCode", 0);
    r.output = j.value("output", "");
    r.error = j.value("error", "");
    r.wpar_state = j.value("wparState", "");
    r.refused = j.value("refused", false);
    r.started_ns = j.value("startedNs", int64_t{0});
    r.finished_ns = j.value("finishedNs", int64_t{0});
    return r;
  } catch (const std::exception&) {  // nlohmann: a member missing or of another type
    return std::nullopt;
  }
}

OperationJournal::OperationJournal(std::string dir, size_t keep) : dir_(std::move(dir)), keep_(keep) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  fs::permissions(dir_, fs::perms::owner_all, ec);
}

std::optional<OperationRecord> OperationJournal::read(const std::string& id) const {
  if (!valid_operation_id(id)) return std::nullopt;
  std::ifstream in(path(id));
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return record_from_json(text);
}

Result<void> OperationJournal::write(const OperationRecord& record) {
  if (!valid_operation_id(record.id)) {
    return fail(ErrorCode::kInvalidRequest, fmt::format("'{}' is not a valid operation id", record.id));
  }
  return write_file_atomic(path(record.id), record_to_json(record), 0600);
}

std::vector<OperationRecord> OperationJournal::running() const {
  std::vector<OperationRecord> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".json") continue;
    auto r = read(e.path().stem().string());
    if (r && !r->done) out.push_back(std::move(*r));
  }
  return out;
}

std::vector<OperationRecord> OperationJournal::records() const {
  std::vector<OperationRecord> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".json") continue;
    if (auto r = read(e.path().stem().string())) out.push_back(std::move(*r));
  }
  return out;
}

void OperationJournal::prune() {
  std::vector<std::pair<int64_t, std::string>> finished;
  std::error_code ec;
  size_t records = 0;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".json") continue;
    ++records;
    auto r = read(e.path().stem().string());
    if (r && r->done) finished.push_back({r->finished_ns, r->id});
  }
  if (records <= keep_) return;
  std::sort(finished.begin(), finished.end());
  // A result the manager may still ask for (within 10 minutes of its end) is kept.
  const int64_t recent = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count() -
                         600'000'000'000;
  size_t drop = std::min(records - keep_, finished.size());
  for (size_t i = 0; i < drop; ++i) {
    if (finished[i].first > recent) break;
    fs::remove(path(finished[i].second), ec);
    fs::remove(output_path(finished[i].second), ec);
    fs::remove(error_path(finished[i].second), ec);
  }
}

std::optional<uint64_t> read_epoch(const std::string& placements_dir, const std::string& wpar) {
  std::ifstream in(placements_dir + "/" + wpar);
  uint64_t epoch = 0;
  if (!(in >> epoch)) return std::nullopt;
  return epoch;
}

Result<void> write_epoch(const std::string& placements_dir, const std::string& wpar, uint64_t epoch) {
  std::error_code ec;
  fs::create_directories(placements_dir, ec);
  return write_file_atomic(placements_dir + "/" + wpar, fmt::format("{}\n", epoch), 0600);
}

Result<size_t> adopt_placements(const std::string& placements_dir, const std::string& manager_key,
                                const std::string& previous_key) {
  std::error_code ec;
  fs::create_directories(placements_dir, ec);
  if (ec) return fail(ErrorCode::kIo, fmt::format("cannot create {}: {}", placements_dir, ec.message()));
  std::string owner;
  {
    std::ifstream in(placements_dir + "/.manager");
    std::getline(in, owner);
  }
  if (owner.empty()) owner = previous_key;  // epochs written before the owner was named
  size_t dropped = 0;
  if (owner != manager_key) {
    for (const auto& e : fs::directory_iterator(placements_dir, ec)) {
      if (e.path().filename().string().starts_with(".")) continue;
      if (fs::remove(e.path(), ec)) ++dropped;
    }
  }
  if (auto w = write_file_atomic(placements_dir + "/.manager", manager_key + "\n", 0600); !w) {
    return std::unexpected(w.error());
  }
  return dropped;
}

std::string read_tail(const std::string& path, size_t max) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  off_t size = ::lseek(fd, 0, SEEK_END);
  off_t from = size > static_cast<off_t>(max) ? size - static_cast<off_t>(max) : 0;
  std::string out(static_cast<size_t>(std::max<off_t>(size - from, 0)), '\0');
  ssize_t n = out.empty() ? 0 : ::pread(fd, out.data(), out.size(), from);
  ::close(fd);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

std::string error_text(std::string_view stderr_text) {
  std::string out;
  size_t start = 0;
  while (start < stderr_text.size()) {  // bounded: each turn takes one line
    size_t end = stderr_text.find('\n', start);
    std::string_view line = stderr_text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (line.starts_with("wpm-agent: ")) line.remove_prefix(11);
    if (!line.empty()) {
      if (!out.empty()) out += '\n';
      out += line;
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

std::string wpar_state_letter(const AgentPaths& paths, const std::string& wpar) {
  runtime::WparFiles files(paths.wpars_root, wpar);
  if (!files.read_spec()) return "";
  auto record = files.read_record();
  runtime::WparState state = record ? (record->ended ? runtime::WparState::kDefined : record->state)
                                    : runtime::WparState::kDefined;
  return std::string(1, runtime::state_letter(state));
}

namespace {
int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

int run_operation(const AgentPaths& paths, const std::string& id) {
  OperationJournal journal(paths.data_dir + "/operations");
  auto record = journal.read(id);
  if (!record) {
    std::fprintf(stderr, "wpm-agent: no operation %s in %s\n", id.c_str(), journal.dir().c_str());
    return 3;
  }
  if (record->done) return 0;
  record->runner_pid = ::getpid();
  if (auto w = journal.write(*record); !w) {
    std::fprintf(stderr, "wpm-agent: %s\n", w.error().message.c_str());
    return 1;
  }
  // A shared root is the mount point; the state files live in its
  // wpm-state/ directory, so nothing else there is ever touched.
  const std::string state_root =
      record->state_root.empty() ? paths.data_dir + "/state" : record->state_root + "/wpm-state";
  auto args = command_args(*record, state_root);
  std::error_code ec;
  if (record->action == "pause" || record->action == "freeze") {
    // Only the newest state file of a WPAR is kept.
    for (const auto& e : fs::directory_iterator(state_root + "/" + record->wpar, ec)) fs::remove_all(e.path(), ec);
  }
  int code = 1;
  std::string error;
  if (!args) {
    error = args.error();
  } else {
    std::error_code ec;
    std::vector<std::string> argv = {fs::read_symlink("/proc/self/exe", ec).string(), "--data", paths.data_dir};
    argv.insert(argv.end(), args->begin(), args->end());
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    env.push_back(std::string(kDirectEnv) + "=1");
    std::vector<char*> cargv, cenv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    for (auto& e : env) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, journal.output_path(id).c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_addopen(&actions, 2, journal.error_path(id).c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    pid_t child = 0;
    int rc = ::posix_spawn(&child, cargv[0], &actions, nullptr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      error = fmt::format("cannot run the command: {}", std::strerror(rc));
    } else {
      int status = 0;
      while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
      }
      code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      error = code == 0 ? "" : error_text(read_tail(journal.error_path(id), kOutputBytesMax));
      if (code != 0 && error.empty()) error = fmt::format("the command exited with code {}", code);
    }
  }
  record->output = read_tail(journal.output_path(id), kOutputBytesMax);
  record->error = error;
  record->exit_code = code;
  record->wpar_state = wpar_state_letter(paths, record->wpar);
  // A removal leaves no state file behind once the WPAR is gone (also when
  // it was not here: a relocation's clean-up of its arrival).
  if (record->action == "remove" && record->wpar_state.empty()) fs::remove_all(state_root + "/" + record->wpar, ec);
  record->done = true;
  record->finished_ns = wall_ns();
  fs::remove(journal.output_path(id), ec);
  fs::remove(journal.error_path(id), ec);
  if (auto w = journal.write(*record); !w) {
    std::fprintf(stderr, "wpm-agent: %s\n", w.error().message.c_str());
    return 1;
  }
  journal.prune();
  return 0;
}

}  // namespace wpm::agent
