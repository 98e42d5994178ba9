#include "agents/checkpoint/cooperative.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "agents/checkpoint/internal/fs_archive.h"
#include "agents/runtime/cgroups.h"
#include "agents/runtime/lifecycle.h"
#include "schemas/assert.h"
#include "schemas/hash.h"

namespace wpm::checkpoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using runtime::WparState;

std::unexpected<Failure> failure(int code, std::string message) {
  return std::unexpected(Failure{code, std::move(message)});
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Appends one line to mcr.log in the state directory (the seed's checkpoint log).
void mcr_log(const std::string& state_dir, const std::string& line) {
  std::ofstream out(state_dir + "/mcr.log", std::ios::app);
  out << now_ns() << ' ' << line << '\n';
}

// SHA-256 of a file, streamed.
Result<std::string> file_sha256(const fs::path& path, uint64_t* size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(ErrorCode::kIo, fmt::format("cannot read {}", path.string()));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  *size = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    auto n = static_cast<size_t>(in.gcount());
    h.update(buf.data(), n);
    *size += n;
  }
  return to_hex(h.final());
}

// The WPAR's cgroups as its supervisor made them; never re-created here (a
// WPAR whose workload ended has none).
Outcome<runtime::CgroupSet> wpar_cgroup(const std::string& relative) {
  auto set = runtime::CgroupSet::open(runtime::CgroupLayout::detect(), relative);
  if (!set) return failure(kExitInternal, fmt::format("the WPAR's cgroups are gone: {}", set.error().message));
  return std::move(*set);
}

// Sets the record's state unless the supervisor has recorded an end (or was
// replaced) meanwhile.
void set_state(const runtime::WparFiles& files, pid_t supervisor, WparState state) {
  (void)files.update_record([&](runtime::WparRecord& r) {
    if (r.ended || r.supervisor_pid != supervisor) return false;
    r.state = state;
    return true;
  });
}


// The cooperative step shared by freeze and checkpoint: an empty trigger
// directory, the checkpoint signal, the wait for `.complete`, then the freeze.
Outcome<void> trigger_and_freeze(const fs::path& trigger, pid_t workload, runtime::CgroupSet& set,
                                 const std::string& name, std::chrono::milliseconds timeout) {
  // Emptied in place, never replaced: a system WPAR sees this directory
  // through a bind mount that must keep pointing at it.
  std::error_code ec;
  fs::create_directories(trigger, ec);
  for (const auto& entry : fs::directory_iterator(trigger, ec)) {
    std::error_code ignored;
    fs::remove_all(entry.path(), ignored);
  }
  ::kill(workload, SIGUSR1);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!fs::exists(trigger / ".complete")) {  // bounded by the deadline
    if (std::chrono::steady_clock::now() >= deadline) {
      return failure(kExitTemporarilyNotCheckpointable,
                     fmt::format("the workload of WPAR {} did not complete its checkpoint within {} "
                                 "ms; it keeps running; run the command again",
                                 name, timeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (auto f = set.freeze_and_wait(std::chrono::seconds(10)); !f) {
    return failure(kExitInternal, fmt::format("cannot freeze WPAR {}: {}", name, f.error().message));
  }
  return {};
}

// Moves the workload's files into state_dir/state (copies them when the
// state file is on another file system); their manifest entries. The
// trigger directory is emptied before the next checkpoint anyway, and the
// workload is done with them once it wrote `.complete`.
Outcome<json> copy_workload_files(const fs::path& trigger, const fs::path& state_dir,
                                  CheckpointResult& result) {
  fs::path out = state_dir / "state";
  std::error_code ec;
  fs::create_directories(out, ec);
  json manifest_files = json::array();
  for (const auto& entry : fs::recursive_directory_iterator(trigger, ec)) {
    // Regular files only, never through a link: a workload must not make the
    // agent copy host files into the state file.
    if (entry.symlink_status().type() != fs::file_type::regular ||
        entry.path().filename() == ".complete") {
      continue;
    }
    fs::path rel = fs::relative(entry.path(), trigger);
    fs::create_directories((out / rel).parent_path(), ec);
    if (std::rename(entry.path().c_str(), (out / rel).c_str()) != 0) {
      ec.clear();
      fs::copy_file(entry.path(), out / rel, fs::copy_options::overwrite_existing, ec);
    }
    if (ec)
      return failure(kExitCannotWrite,
                     fmt::format("cannot write {}: {}", (out / rel).string(), ec.message()));
    uint64_t size = 0;
    auto sum = file_sha256(out / rel, &size);
    if (!sum) return failure(kExitInternal, sum.error().message);
    if (!fsync_path(out / rel, O_RDONLY))
      return failure(kExitCannotWrite, "cannot sync " + (out / rel).string());
    manifest_files.push_back({{"path", rel.string()}, {"bytes", size}, {"sha256", *sum}});
    ++result.files;
    result.bytes += size;
  }
  return manifest_files;
}

// A system WPAR's private file systems (all of fs/ but the overlay's work
// directory) into the state file directory, read while the WPAR is frozen so
// that they are quiescent; their manifest entry.
Outcome<json> archive_file_systems(const runtime::WparFiles& files, const fs::path& state_dir,
                                   CheckpointResult& result) {
  auto t0 = std::chrono::steady_clock::now();
  auto archived = write_fs_archive(files.dir() + "/fs", (state_dir / kFsArchiveName).string());
  if (!archived) return std::unexpected(archived.error());
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  mcr_log(state_dir.string(),
          fmt::format("checkpoint_filesystems entries={} skipped={} content_bytes={} "
                      "archive_bytes={} ms={}",
                      archived->entries, archived->skipped, archived->content_bytes,
                      archived->archive_bytes, ms.count()));
  result.fs_entries = archived->entries;
  result.fs_archive_bytes = archived->archive_bytes;
  return json{{"path", kFsArchiveName},     {"bytes", archived->archive_bytes},
              {"sha256", archived->sha256}, {"format", "pax"},
              {"compression", "zstd"},      {"contents", archived->roots}};
}

// Writes the state file: the workload's files, a system WPAR's file systems
// and the manifest that lists them with their SHA-256, written last.
Outcome<CheckpointResult> write_state_file(const fs::path& trigger, const fs::path& state_dir,
                                           const runtime::WparFiles& files,
                                           const runtime::WparSpec& spec) {
  CheckpointResult result;
  auto manifest_files = copy_workload_files(trigger, state_dir, result);
  if (!manifest_files) return std::unexpected(manifest_files.error());
  std::ifstream spec_in(files.spec_path());
  json manifest = {{"format", 1},
                   {"method", "cooperative"},
                   {"createdAtNs", now_ns()},
                   {"spec", json::parse(spec_in, nullptr, false)},
                   {"files", *manifest_files}};
  if (spec.type == runtime::WparType::kSystem) {
    auto archive = archive_file_systems(files, state_dir, result);
    if (!archive) return std::unexpected(archive.error());
    manifest["filesystems"] = *archive;
  }
  std::string tmp = (state_dir / "manifest.json.tmp").string();
  {
    std::ofstream m(tmp, std::ios::trunc);
    m << manifest.dump(2);
  }
  if (!fsync_path(tmp, O_RDONLY) || std::rename(tmp.c_str(), (state_dir / "manifest.json").c_str()) != 0 ||
      !fsync_path(state_dir, O_RDONLY | O_DIRECTORY)) {
    return failure(kExitCannotWrite, "cannot write the manifest in " + state_dir.string());
  }
  return result;
}

// A file of the state file against its manifest entry: 14 when it is
// missing, 25 (the seed's "corruption was detected in the state file") when
// it does not match (changed or damaged).
Outcome<void> verify_file(const fs::path& path, const json& entry) {
  uint64_t size = 0;
  auto sum = file_sha256(path, &size);
  if (!sum)
    return failure(kExitFileMissing, fmt::format("state file {} is missing", path.string()));
  if (*sum != entry.value("sha256", std::string()) || size != entry.value("bytes", uint64_t{0})) {
    return failure(kExitCorruptStateFile,
                   fmt::format("state file {} does not match its manifest (changed "
                               "or damaged); it is not restored",
                               path.string()));
  }
  return {};
}

// The archive's name from the manifest: a plain name in the state file directory.
std::optional<std::string> fs_archive_name(const json& manifest) {
  const json& f = manifest["filesystems"];
  std::string name = f.is_object() ? f.value("path", std::string()) : std::string();
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return std::nullopt;
  }
  return name;
}

// The manifest of the state file in `dir`, once every file it lists (the
// workload's and the file systems' archive) matches its size and SHA-256.
Outcome<json> verified_manifest(const std::string& dir) {
  fs::path state_dir(dir);
  std::ifstream in(state_dir / "manifest.json");
  if (!in) return failure(kExitFileMissing, fmt::format("no manifest.json in {}", dir));
  json manifest = json::parse(in, nullptr, false);
  if (manifest.is_discarded() || !manifest.contains("files") || !manifest["files"].is_array()) {
    return failure(kExitCorruptStateFile, fmt::format("{}/manifest.json is damaged", dir));
  }
  for (const auto& f : manifest["files"]) {
    auto ok = verify_file(state_dir / "state" / f.value("path", std::string()), f);
    if (!ok) return std::unexpected(ok.error());
  }
  if (manifest.contains("filesystems")) {
    auto name = fs_archive_name(manifest);
    if (!name)
      return failure(kExitCorruptStateFile, fmt::format("{}/manifest.json is damaged (filesystems)", dir));
    if (auto ok = verify_file(state_dir / *name, manifest["filesystems"]); !ok)
      return std::unexpected(ok.error());
  }
  return manifest;
}

// Replaces a system WPAR's private file systems with the state file's: the
// state file is the truth at restart, on this host as on another. A state
// file without them (written before they were saved) leaves fs/ as it is.
Outcome<void> restore_file_systems(const json& manifest, const runtime::WparSpec& spec,
                                   const runtime::WparFiles& files, const std::string& state_dir) {
  if (!manifest.contains("filesystems")) return {};
  if (spec.type != runtime::WparType::kSystem) {
    return failure(kExitInternal,
                   fmt::format("the state file in {} holds the file systems of a system "
                               "WPAR, but WPAR {} is an application WPAR; restart it "
                               "under another name",
                               state_dir, spec.name));
  }
  auto name = fs_archive_name(manifest);
  WPM_ASSERT(name.has_value(), "restore of an unverified manifest in {}", state_dir);
  auto t0 = std::chrono::steady_clock::now();
  std::string archive = (fs::path(state_dir) / *name).string();
  auto restored = restore_fs_archive(archive, files.dir() + "/fs");
  if (!restored) return std::unexpected(restored.error());
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  mcr_log(state_dir, fmt::format("restart_filesystems entries={} content_bytes={} ms={}",
                                 restored->entries, restored->content_bytes, ms.count()));
  return {};
}

// Where the restarted workload finds its state. An application WPAR sees the
// host's file systems: the state file itself. A system WPAR does not (the
// state file may be on another mount, which its overlay's lower layer does not
// show, or under a directory private to it): a copy in its trigger directory,
// which it sees at the same path, and which the next checkpoint empties.
Outcome<std::string> workload_restore_dir(const runtime::WparSpec& spec, const fs::path& trigger,
                                          const fs::path& state_dir) {
  if (spec.type != runtime::WparType::kSystem) return (state_dir / "state").string();
  fs::path copy = trigger / "restore";
  std::error_code ec;
  fs::create_directories(trigger, ec);
  for (const auto& entry :
       fs::directory_iterator(trigger, ec)) {  // emptied in place (a bind mount's source)
    std::error_code ignored;
    fs::remove_all(entry.path(), ignored);
  }
  fs::create_directories(copy, ec);
  if (!ec && fs::exists(state_dir / "state"))
    fs::copy(state_dir / "state", copy, fs::copy_options::recursive, ec);
  if (ec) {
    return failure(kExitInternal, fmt::format("cannot copy the workload's state into {}: {}",
                                              copy.string(), ec.message()));
  }
  return copy.string();
}

}  // namespace

std::string frozen_state_dir(const std::string& wpars_root, const std::string& name) {
  std::ifstream in(wpars_root + "/" + name + "/frozen_state_dir");
  std::string dir;
  std::getline(in, dir);
  return dir;
}

Outcome<void> freeze(const CheckpointRequest& r) {
  runtime::WparFiles files(r.wpars_root, r.name);
  auto spec = files.read_spec();
  auto record = files.read_record();
  if (!spec || !record) return failure(kExitUnknownWpar, fmt::format("unknown WPAR {}", r.name));
  WparState state = record->ended ? WparState::kDefined : record->state;
  auto decision = runtime::decide({state, spec->type, spec->checkpointable}, runtime::Operation::kFreeze);
  if (!decision) return failure(decision.error().exit_code, decision.error().message);
  if (!runtime::supervisor_alive(record->supervisor_pid)) {
    return failure(kExitInternal, fmt::format("the supervisor of WPAR {} is not running", r.name));
  }
  auto set = wpar_cgroup(r.cgroup_relative);
  if (!set) return std::unexpected(set.error());
  auto frozen = trigger_and_freeze(trigger_dir(r.wpars_root, r.name), record->workload_pid, *set,
                                   r.name, r.timeout);
  if (!frozen) return frozen;
  std::ofstream(files.dir() + "/frozen_state_dir") << r.state_dir << '\n';
  set_state(files, record->supervisor_pid, WparState::kFrozen);
  return {};
}

std::string trigger_dir(const std::string& wpars_root, const std::string& name) {
  return wpars_root + "/" + name + "/checkpoint";
}

Outcome<CheckpointResult> checkpoint(const CheckpointRequest& r) {
  runtime::WparFiles files(r.wpars_root, r.name);
  auto spec = files.read_spec();
  if (!spec) return failure(kExitUnknownWpar, fmt::format("unknown WPAR {}: {}", r.name, spec.error().message));
  auto record = files.read_record();
  if (!record) return failure(kExitUnknownWpar, fmt::format("WPAR {} has no status: {}", r.name, record.error().message));
  runtime::Operation op = r.after == After::kPause  ? runtime::Operation::kCheckpointPause
                          : r.after == After::kKill ? runtime::Operation::kCheckpointKill
                                                    : runtime::Operation::kCheckpoint;
  WparState state = record->ended ? WparState::kDefined : record->state;
  auto decision = runtime::decide({state, spec->type, spec->checkpointable}, op);
  if (!decision) return failure(decision.error().exit_code, decision.error().message);
  if (!runtime::supervisor_alive(record->supervisor_pid)) {
    return failure(kExitInternal, fmt::format("the supervisor of WPAR {} is not running", r.name));
  }
  // The state file directory: created if missing, empty otherwise (seed -d).
  std::error_code ec;
  fs::path state_dir(r.state_dir);
  if (state_dir.empty() || state_dir.is_relative()) {
    return failure(kExitBadStatePath, fmt::format("state file path '{}' must be absolute", r.state_dir));
  }
  fs::create_directories(state_dir, ec);
  if (ec) return failure(kExitBadStatePath, fmt::format("cannot create {}: {}", r.state_dir, ec.message()));
  // Empty, or holding only the mcr.log of an attempt to run again (exit 6).
  bool empty = true;
  for (const auto& e : fs::directory_iterator(state_dir, ec)) {
    if (e.path().filename() != "mcr.log") empty = false;
  }
  if (!empty) {
    return failure(kExitStateDirNotEmpty, fmt::format("state file directory {} is not empty; empty "
                                                      "it or choose another",
                                                      r.state_dir));
  }
  mcr_log(r.state_dir, fmt::format("checkpoint_start wpar={} pid={}", r.name, record->workload_pid));
  fs::path trigger = trigger_dir(r.wpars_root, r.name);
  auto set = wpar_cgroup(r.cgroup_relative);
  if (!set) return std::unexpected(set.error());
  // A frozen WPAR's state is already in the trigger directory: keep it.
  if (state != WparState::kFrozen) {
    auto frozen = trigger_and_freeze(trigger, record->workload_pid, *set, r.name, r.timeout);
    if (!frozen) {
      mcr_log(r.state_dir, "checkpoint_failed " + frozen.error().message);
      return std::unexpected(frozen.error());
    }
    // From here the workload is stopped (what a relocation's downtime is measured from).
    mcr_log(r.state_dir, "checkpoint_frozen");
  }
  auto written = write_state_file(trigger, state_dir, files, *spec);
  if (!written) {
    (void)set->thaw();
    mcr_log(r.state_dir, "checkpoint_failed " + written.error().message);
    return written;
  }
  switch (r.after) {
    case After::kContinue:
      // Record first, then thaw: the supervisor's end record comes after ours.
      set_state(files, record->supervisor_pid, WparState::kActive);
      (void)set->thaw();
      written->state_after = WparState::kActive;
      break;
    case After::kPause:
      set_state(files, record->supervisor_pid, WparState::kPaused);
      written->state_after = WparState::kPaused;
      break;
    case After::kKill:
      (void)runtime::stop_supervisor(*record, runtime::StopMode::kForced);  // it thaws to kill
      if (!runtime::wait_until_ended(files, std::chrono::seconds(10))) {
        return failure(kExitInternal, fmt::format("WPAR {} was checkpointed but did not stop", r.name));
      }
      written->state_after = WparState::kDefined;
      break;
  }
  mcr_log(r.state_dir, fmt::format("checkpoint_done files={} bytes={}", written->files, written->bytes));
  return written;
}

Outcome<runtime::WparRecord> restart(const RestartRequest& r) {
  runtime::WparFiles files(r.launch.wpars_root, r.launch.name);
  auto spec = files.read_spec();
  if (!spec) {
    // Not on this host (an arrival system): the state file carries the spec.
    std::ifstream in(fs::path(r.state_dir) / "manifest.json");
    json manifest = json::parse(in, nullptr, false);
    if (!manifest.is_discarded() && manifest.contains("spec") && manifest["spec"].is_object()) {
      json spec_json = manifest["spec"];
      spec_json["name"] = r.launch.name;
      (void)files.create_dir();
      std::ofstream(files.spec_path()) << spec_json.dump(2);
      spec = files.read_spec();
      if (spec) {
        spec->env["WPM_STATE_DIR"] = trigger_dir(r.launch.wpars_root, r.launch.name);
        (void)files.write_spec(*spec);
      }
    }
  }
  if (!spec) return failure(kExitUnknownWpar, fmt::format("unknown WPAR {}: {}", r.launch.name, spec.error().message));
  auto record = files.read_record();
  WparState state = (!record || record->ended) ? WparState::kDefined : record->state;
  auto decision = runtime::decide({state, spec->type, spec->checkpointable},
                                  r.pause ? runtime::Operation::kRestartPaused : runtime::Operation::kRestart);
  if (!decision) return failure(decision.error().exit_code, decision.error().message);
  // Verify the state file against its manifest before anything runs.
  auto manifest = verified_manifest(r.state_dir);
  if (!manifest) return std::unexpected(manifest.error());
  fs::path state_dir(r.state_dir);
  mcr_log(r.state_dir, fmt::format("restart_start wpar={}", r.launch.name));
  if (auto fs_restored = restore_file_systems(*manifest, *spec, files, r.state_dir); !fs_restored) {
    mcr_log(r.state_dir, "restart_failed " + fs_restored.error().message);
    return std::unexpected(fs_restored.error());
  }
  runtime::WparSpec restored = *spec;
  auto restore_dir =
      workload_restore_dir(*spec, trigger_dir(r.launch.wpars_root, r.launch.name), state_dir);
  if (!restore_dir) {
    mcr_log(r.state_dir, "restart_failed " + restore_dir.error().message);
    return std::unexpected(restore_dir.error());
  }
  restored.env["WPM_RESTORE_DIR"] = *restore_dir;
  if (auto w = files.write_spec(restored); !w) return failure(kExitInternal, w.error().message);
  auto started = runtime::start_supervisor(r.launch);
  restored.env.erase("WPM_RESTORE_DIR");  // later starts begin afresh
  (void)files.write_spec(restored);
  if (!started) return failure(kExitInternal, started.error().message);
  if (r.pause) {
    auto set = wpar_cgroup(r.launch.cgroup_relative);
    if (!set) return failure(kExitInternal, "restarted, but cannot pause the WPAR: " + set.error().message);
    if (auto f = set->freeze_and_wait(std::chrono::seconds(10)); !f) {
      return failure(kExitInternal, "restarted, but cannot pause the WPAR: " + f.error().message);
    }
    started->state = WparState::kPaused;
    set_state(files, started->supervisor_pid, WparState::kPaused);
  }
  mcr_log(r.state_dir, fmt::format("restart_done pid={}", started->workload_pid));
  return *started;
}

Outcome<void> verify_state_file(const std::string& dir) {
  auto manifest = verified_manifest(dir);
  if (!manifest) return std::unexpected(manifest.error());
  return {};
}

Outcome<void> resume(const std::string& wpars_root, const std::string& name,
                     const std::string& cgroup_relative) {
  runtime::WparFiles files(wpars_root, name);
  auto spec = files.read_spec();
  auto record = files.read_record();
  if (!spec || !record) return failure(kExitUnknownWpar, fmt::format("unknown WPAR {}", name));
  auto decision = runtime::decide({record->state, spec->type, spec->checkpointable},
                                  runtime::Operation::kResume);
  if (!decision) return failure(decision.error().exit_code, decision.error().message);
  auto set = wpar_cgroup(cgroup_relative);
  if (!set) return std::unexpected(set.error());
  set_state(files, record->supervisor_pid, WparState::kActive);
  if (auto t = set->thaw(); !t) return failure(kExitInternal, t.error().message);
  return {};
}

bool fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace wpm::checkpoint
