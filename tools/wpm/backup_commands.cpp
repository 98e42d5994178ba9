#include "tools/wpm/backup_commands.h"

#include <fmt/format.h>

#include <filesystem>
#include <zmq.hpp>

#include "eventstore/backup.h"

namespace wpm::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string default_dir(const GlobalOptions& g) { return g.data_dir + "/backups"; }

std::string absolute(const std::string& dir) {
  std::error_code ec;
  auto p = fs::absolute(dir, ec);
  return ec ? dir : p.lexically_normal().string();
}

std::string mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

json manifest_json(const eventstore::BackupManifest& m) {
  return {{"name", m.name}, {"path", m.path},   {"version", m.version},          {"createdNs", m.created_ns},
          {"head", m.head}, {"bytes", m.bytes}, {"files", m.files.size()}};
}

// The backup named NAME in DIR, or the one at PATH.
std::string locate(const std::string& what, const std::string& dir) {
  if (what.find('/') != std::string::npos) return what;
  return dir + "/" + what;
}

int cmd_create(const GlobalOptions& g, const std::string& dir) {
  auto options = client_options(g);
  if (!options) {
    print_error(options.error().message);
    return kExitFailed;
  }
  // The store answers when the backup is made: a long deadline, one attempt.
  options->timeout_ms = std::max(options->timeout_ms, 3'600'000);
  options->attempts = 1;
  zmq::context_t ctx(1);
  bus::StoreClient client(ctx, g.store, *options);
  if (g.format != Format::kJson && stderr_is_terminal()) std::fprintf(stderr, "making a backup…\n");
  auto made = client.backup(BackupRequest{dir.empty() ? "" : absolute(dir)});
  if (!made) {
    print_error(fmt::format("the backup failed: {}", made.error().message));
    return kExitFailed;
  }
  if (g.format == Format::kJson) {
    std::puts(json({{"name", made->name},
                    {"path", made->path},
                    {"head", made->head},
                    {"bytes", made->bytes},
                    {"files", made->files},
                    {"createdNs", made->created_ns}})
                  .dump(2)
                  .c_str());
  } else {
    std::printf("backup %s made: events 1..%llu, %u files, %s, in %s\n", made->name.c_str(),
                static_cast<unsigned long long>(made->head), made->files, mib(made->bytes).c_str(),
                made->path.c_str());
  }
  return kExitOk;
}

int cmd_list(const GlobalOptions& g, const std::string& dir) {
  auto all = eventstore::list_backups(dir);
  if (!all) {
    print_error(all.error().message);
    return kExitFailed;
  }
  if (g.format == Format::kJson) {
    json out = json::array();
    for (const auto& m : *all) out.push_back(manifest_json(m));
    std::puts(out.dump(2).c_str());
    return kExitOk;
  }
  if (all->empty()) {
    std::printf("no backups in %s (make one with `wpm backup create`; when wpmd's [backup] dir is elsewhere, give "
                "--dir)\n",
                dir.c_str());
    return kExitOk;
  }
  std::printf("%-28s %-21s %12s %6s %12s  %s\n", "NAME", "CREATED", "HEAD", "FILES", "SIZE", "VERSION");
  for (const auto& m : *all) {
    std::printf("%-28s %-21s %12llu %6zu %12s  %s\n", m.name.c_str(), format_time(m.created_ns).c_str(),
                static_cast<unsigned long long>(m.head), m.files.size(), mib(m.bytes).c_str(), m.version.c_str());
  }
  return kExitOk;
}

int cmd_verify(const GlobalOptions& g, const std::string& what, const std::string& dir) {
  std::string path = locate(what, dir);
  auto m = eventstore::read_backup(path);
  if (!m) {
    print_error(m.error().message);
    return m.error().code == ErrorCode::kNotFound ? kExitNotFound : kExitFailed;
  }
  if (auto files = eventstore::check_backup_files(*m); !files) {
    if (g.format == Format::kJson) {
      json j = manifest_json(*m);
      j.update({{"sound", false}, {"problem", files.error().message}});
      std::puts(j.dump(2).c_str());
    }
    print_error(fmt::format("backup broken: {}", files.error().message));
    return kExitFailed;
  }
  if (g.format != Format::kJson) {
    std::printf("files sound: %zu files, %s, as the manifest of %s says\n", m->files.size(), mib(m->bytes).c_str(),
                m->name.c_str());
  }
  json extra = manifest_json(*m);
  extra["backupFilesSound"] = true;
  return cmd_verify_offline(g, path, extra);
}

}  // namespace

void add_backup_commands(CLI::App& app, GlobalOptions& g, int& exit_code) {
  auto* backup = app.add_subcommand("backup", "online backups of wpmd's data directory (root on the manager)");
  backup->require_subcommand(1);
  static std::string create_dir, list_dir, verify_dir, name;

  auto* create = backup->add_subcommand(
      "create", "make a consistent backup while wpmd runs (default directory: wpmd's [backup] dir)");
  create->add_option("DIR", create_dir, "where to make it, on the manager (a directory is made in it, mode 0700)");
  create->callback([&] { exit_code = cmd_create(g, create_dir); });

  auto* list = backup->add_subcommand("list", "the finished backups in a directory, oldest first");
  list->add_option("--dir", list_dir, "the backup directory (default: DATA/backups)");
  list->callback([&] { exit_code = cmd_list(g, list_dir.empty() ? default_dir(g) : list_dir); });

  auto* verify = backup->add_subcommand(
      "verify", "check a backup: every file against its manifest, then its log's checksums and hash chain");
  verify->add_option("BACKUP", name, "a backup's name (in --dir) or its path")->required();
  verify->add_option("--dir", verify_dir, "the backup directory (default: DATA/backups)");
  verify->callback([&] { exit_code = cmd_verify(g, name, verify_dir.empty() ? default_dir(g) : verify_dir); });
}

}  // namespace wpm::cli
