#include "services/gateway/auth.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "schemas/hash.h"

namespace wpm::gateway {
namespace {

struct Conversation {
  const std::string* password;
};

// Answers every hidden prompt with the password and every other message
// with nothing. The replies are freed by PAM.
int converse(int count, const pam_message** messages, pam_response** responses, void* data) {
  if (count <= 0 || count > PAM_MAX_NUM_MSG) return PAM_CONV_ERR;
  auto* replies = static_cast<pam_response*>(std::calloc(static_cast<size_t>(count), sizeof(pam_response)));
  if (replies == nullptr) return PAM_BUF_ERR;
  const auto* conversation = static_cast<const Conversation*>(data);
  for (int i = 0; i < count; ++i) {
    // Only a hidden prompt gets the password; anything else gets nothing.
    if (messages[i]->msg_style == PAM_PROMPT_ECHO_OFF) {
      replies[i].resp = ::strdup(conversation->password->c_str());
      if (replies[i].resp == nullptr) {
        for (int j = 0; j < i; ++j) std::free(replies[j].resp);
        std::free(replies);
        return PAM_BUF_ERR;
      }
    }
  }
  *responses = replies;
  return PAM_SUCCESS;
}

}  // namespace

PamResult PamAuthenticator::authenticate(const std::string& user, const std::string& password) {
  {
    std::unique_lock lock(mutex_);
    if (running_ >= options_.concurrent && waiting_ >= options_.waiting_max) {
      return {PamOutcome::kBusy, "too many logins at once; try again in a moment"};
    }
    ++waiting_;
    cv_.wait(lock, [&] { return running_ < options_.concurrent; });
    --waiting_;
    ++running_;
  }
  Conversation conversation{&password};
  pam_conv conv{converse, &conversation};
  pam_handle_t* handle = nullptr;
  int rc = options_.config_dir.empty()
               ? ::pam_start(options_.service.c_str(), user.c_str(), &conv, &handle)
               : ::pam_start_confdir(options_.service.c_str(), user.c_str(), &conv, options_.config_dir.c_str(),
                                     &handle);
  PamResult result;
  if (rc != PAM_SUCCESS) {
    result = {PamOutcome::kError, fmt::format("PAM service '{}' cannot start: {}", options_.service,
                                              handle ? ::pam_strerror(handle, rc) : "pam_start failed")};
  } else {
    rc = ::pam_authenticate(handle, PAM_DISALLOW_NULL_AUTHTOK);
    if (rc == PAM_SUCCESS) rc = ::pam_acct_mgmt(handle, PAM_DISALLOW_NULL_AUTHTOK);
    if (rc == PAM_SUCCESS) {
      result = {PamOutcome::kOk, ""};
    } else if (rc == PAM_AUTH_ERR || rc == PAM_USER_UNKNOWN || rc == PAM_MAXTRIES || rc == PAM_ACCT_EXPIRED ||
               rc == PAM_NEW_AUTHTOK_REQD || rc == PAM_PERM_DENIED || rc == PAM_CRED_INSUFFICIENT) {
      // The same words for an unknown user and a wrong password: a login
      // must not tell which user names exist.
      result = {PamOutcome::kRefused, rc == PAM_ACCT_EXPIRED || rc == PAM_NEW_AUTHTOK_REQD
                                          ? std::string(::pam_strerror(handle, rc))
                                          : "wrong user name or password"};
    } else {
      result = {PamOutcome::kError, fmt::format("PAM: {}", ::pam_strerror(handle, rc))};
    }
    ::pam_end(handle, rc);
  }
  {
    std::lock_guard lock(mutex_);
    --running_;
  }
  cv_.notify_one();
  return result;
}

Result<std::string> new_token() {
  uint8_t raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) return fail(ErrorCode::kInternal, "no randomness for a login token");
  return "wpm_" + to_hex(raw, sizeof raw);
}

std::string token_hash(const std::string& token) { return to_hex(sha256(token)); }

std::vector<std::string> linux_groups(const std::string& user) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) return {};
  int count = 64;
  std::vector<gid_t> gids(static_cast<size_t>(count));
  if (::getgrouplist(user.c_str(), pw.pw_gid, gids.data(), &count) < 0) {
    gids.resize(static_cast<size_t>(count));
    if (::getgrouplist(user.c_str(), pw.pw_gid, gids.data(), &count) < 0) return {};
  }
  gids.resize(static_cast<size_t>(count));
  std::vector<std::string> names;
  for (gid_t gid : gids) {
    group gr{};
    group* g = nullptr;
    if (::getgrgid_r(gid, &gr, buf.data(), buf.size(), &g) == 0 && g != nullptr) names.emplace_back(g->gr_name);
  }
  return names;
}

Result<std::string> ensure_root_credential(const std::string& data_dir) {
  std::string dir = data_dir + "/keys";
  std::string path = dir + "/root.credential";
  {
    std::ifstream in(path);
    std::string token;
    if (in && std::getline(in, token) && token.starts_with("wpm_")) return token;
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(ErrorCode::kIo, fmt::format("cannot make {}: {}", dir, std::strerror(errno)));
  }
  auto token = new_token();
  if (!token) return token;
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  std::string line = *token + "\n";
  bool ok = fd >= 0 && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  }
  return token;
}

}  // namespace wpm::gateway
