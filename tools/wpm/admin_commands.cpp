#include "tools/wpm/admin_commands.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

#include "eventstore/store.h"

namespace wpm::cli {
namespace {

// Rebuilds every structure derived from the log (stream index, idempotency
// keys, counters; snapshots are dropped and made again by the services at
// their next start) from the log itself.
int cmd_rebuild(const GlobalOptions& g, const std::string& data_dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(data_dir + "/log", ec)) {
    print_error(fmt::format("no event log in {} (expected {}/log); give wpmd's data directory with --data",
                            data_dir, data_dir));
    return kExitNotFound;
  }
  auto log = spdlog::get("wpm");
  eventstore::StoreOptions o;
  o.data_dir = data_dir;
  o.open_verify_tail_events = 0;
  {
    auto store = eventstore::Store::open(o, log);
    if (!store) {
      if (store.error().code == ErrorCode::kUnavailable) {
        print_error(store.error().message + "; a rebuild needs wpmd stopped (systemctl stop wpmd)");
        return kExitFailed;
      }
      print_error(store.error().message);
      return store.error().code == ErrorCode::kNotFound ? kExitNotFound : kExitFailed;
    }
    if (auto r = (*store)->drop_derived(); !r) {
      print_error(r.error().message);
      return kExitFailed;
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  auto store = eventstore::Store::open(o, log);  // the open rebuilds what was dropped
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!store) {
    print_error("the rebuild failed: " + store.error().message);
    return kExitFailed;
  }
  uint64_t head = (*store)->head();
  double rate = seconds > 0 ? static_cast<double>(head) / seconds : 0;
  if (g.format == Format::kJson) {
    nlohmann::json j = {{"dataDir", data_dir}, {"events", head}, {"seconds", seconds}, {"eventsPerSecond", rate},
                        {"rebuilt", {"streamIndex", "idempotencyKeys", "counters"}},
                        {"dropped", {"snapshots"}}};
    std::puts(j.dump(2).c_str());
  } else {
    std::printf("rebuilt the stream index, idempotency keys and counters of %s from %llu events in %.2f s "
                "(%.0f events/s); snapshots were dropped and are made again when wpmd starts\n",
                data_dir.c_str(), static_cast<unsigned long long>(head), seconds, rate);
  }
  return kExitOk;
}

}  // namespace

void add_admin_commands(CLI::App& app, GlobalOptions& g, int& exit_code) {
  auto* admin = app.add_subcommand("admin", "repair a data directory (wpmd stopped)");
  admin->require_subcommand(1);
  auto* rebuild = admin->add_subcommand(
      "rebuild", "rebuild the stream index, idempotency keys, counters and snapshots from the log");
  static std::string dir;
  rebuild->add_option("--data", dir, "the data directory (wpmd must be stopped)")->required();
  rebuild->callback([&] { exit_code = cmd_rebuild(g, dir); });
}

}  // namespace wpm::cli
