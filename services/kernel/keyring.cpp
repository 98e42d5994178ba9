#include "services/kernel/keyring.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include "services/kernel/identity.h"
#include <fstream>

namespace wpm::kernel {
namespace {

namespace fs = std::filesystem;

std::string keys_dir(const std::string& data_dir) { return data_dir + "/keys"; }

fs::file_time_type mtime_of(const fs::path& path) {
  std::error_code ec;
  auto t = fs::last_write_time(path, ec);
  return ec ? fs::file_time_type{} : t;
}

}  // namespace

Result<StoreKeys> ensure_store_keys(const std::string& data_dir) {
  auto store = bus::load_or_create_curve_keys(keys_dir(data_dir), "store");
  if (!store) return std::unexpected(store.error());
  auto admin = bus::load_or_create_curve_keys(keys_dir(data_dir), "admin");
  if (!admin) return std::unexpected(admin.error());
  return StoreKeys{*store, *admin};
}

Result<bus::CurveKeyPair> add_service_key(const std::string& data_dir, const std::string& name,
                                          ReplaceKey replace) {
  if (!known_service(name)) {
    std::string names;
    for (auto n : service_names()) names += (names.empty() ? "" : ", ") + std::string(n);
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("'{}' is not a service; choose one of {}", name, names));
  }
  std::string dir = keys_dir(data_dir) + "/services";
  std::error_code ec;
  if (replace == ReplaceKey::kNo && fs::exists(dir + "/" + name + ".key", ec)) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("the service {} already has a key ({}/{}.key); add --replace to make a "
                            "new one (the old one stops working)",
                            name, dir, name));
  }
  fs::create_directories(keys_dir(data_dir), ec);
  ::chmod(keys_dir(data_dir).c_str(), 0700);
  auto keys = bus::generate_curve_keys();
  if (!keys) return keys;
  if (auto r = bus::store_curve_keys(dir, name, *keys); !r) return std::unexpected(r.error());
  return keys;
}

Result<LocalStoreAccess> read_local_store_access(const std::string& data_dir) {
  LocalStoreAccess access;
  auto admin = bus::load_curve_keys(keys_dir(data_dir), "admin");
  if (!admin) {
    if (admin.error().code == ErrorCode::kNotFound) {
      return fail(ErrorCode::kUnavailable,
                  fmt::format("no administrator key in {}/keys: is {} a wpmd data directory, and has "
                              "wpmd started there once? (set --data or WPM_DATA)",
                              data_dir, data_dir));
    }
    return fail(admin.error().code, admin.error().message + "; run wpm as root on the manager");
  }
  access.admin = *admin;
  auto store = bus::load_public_key(keys_dir(data_dir), "store");
  if (!store) return std::unexpected(store.error());
  access.store_public_key = *store;
  // The endpoints wpmd bound (absent before its first start: then the defaults).
  std::ifstream in(data_dir + "/endpoints");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("request=")) access.request_endpoint = line.substr(8);
    if (line.starts_with("publish=")) access.publish_endpoint = line.substr(8);
  }
  return access;
}

StoreKeyring::StoreKeyring(std::string keys_dir) : dir_(std::move(keys_dir)) {}

void StoreKeyring::reload_if_changed() {
  auto admin_mtime = mtime_of(dir_ + "/admin.pub");
  auto services_mtime = mtime_of(dir_ + "/services");
  if (loaded_ && admin_mtime == admin_mtime_ && services_mtime == services_mtime_) return;
  std::map<std::string, std::string> fresh;
  if (auto admin = bus::load_public_key(dir_, "admin")) fresh[*admin] = std::string(kAdminIdentity);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_ + "/services", ec)) {
    if (entry.path().extension() != ".pub") continue;
    std::string name = entry.path().stem().string();
    if (!known_service(name)) continue;
    if (auto key = bus::load_public_key(dir_ + "/services", name)) fresh[*key] = service_identity(name);
  }
  identity_by_key_ = std::move(fresh);
  admin_mtime_ = admin_mtime;
  services_mtime_ = services_mtime;
  loaded_ = true;
}

std::optional<std::string> StoreKeyring::identify(const std::string& public_key) {
  std::lock_guard lock(mutex_);
  reload_if_changed();
  auto it = identity_by_key_.find(public_key);
  if (it == identity_by_key_.end()) return std::nullopt;
  return it->second;
}

}  // namespace wpm::kernel
