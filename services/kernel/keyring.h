#pragma once
// The store's keys and its allow-list of client keys, all under DATA/keys
// (mode 0700):
//
//   store.key, store.pub          the store's CURVE key pair (its endpoints)
//   admin.key, admin.pub          the local administrator's key (mode 0600):
//                                 `wpm` run as root on this host uses it
//   services/NAME.key, NAME.pub   a service's key (`wpmd keys add-service
//                                 NAME`), for that service run as its own
//                                 process; copy NAME.key to where it runs
//
// The allow-list is admin.pub plus services/*.pub; a key added while wpmd
// runs is admitted at its next handshake (the folder is read again when it
// changes). Removing a .pub file revokes that key for new connections.
//
// Thread safety: StoreKeyring::identify() may be called from any thread (the
// ZAP handler's); the free functions are for main() and tools.

#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "bus/curve.h"
#include "schemas/error.h"

namespace wpm::kernel {

struct StoreKeys {
  bus::CurveKeyPair store;
  bus::CurveKeyPair admin;
};

// Loads the store's and the administrator's key pairs from DATA/keys, making
// them at first start.
Result<StoreKeys> ensure_store_keys(const std::string& data_dir);

// Makes services/NAME.{key,pub} (NAME one of service_names()); refuses to
// replace an existing key unless `replace`. Returns the new pair.
enum class ReplaceKey { kNo, kYes };
Result<bus::CurveKeyPair> add_service_key(const std::string& data_dir, const std::string& name,
                                          ReplaceKey replace);

// Where `wpm` and remote services find what they need to reach a store: the
// request endpoint from DATA/endpoints, the store's public key, the admin key.
struct LocalStoreAccess {
  std::string request_endpoint;  // empty when wpmd never wrote DATA/endpoints
  std::string publish_endpoint;
  std::string store_public_key;
  bus::CurveKeyPair admin;
};
// Errors say what is missing and what to do (e.g. not root: permission denied).
Result<LocalStoreAccess> read_local_store_access(const std::string& data_dir);

class StoreKeyring {
 public:
  explicit StoreKeyring(std::string keys_dir);
  // The identity of `public_key` ("admin", "service:NAME"), or nothing when
  // it is not listed.
  std::optional<std::string> identify(const std::string& public_key);

 private:
  void reload_if_changed();
  std::string dir_;
  std::mutex mutex_;  // guards everything below
  std::map<std::string, std::string> identity_by_key_;
  std::filesystem::file_time_type admin_mtime_{};
  std::filesystem::file_time_type services_mtime_{};
  bool loaded_ = false;
};

}  // namespace wpm::kernel
