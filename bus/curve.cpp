#include "bus/curve.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bus/frame.h"
#include "schemas/hash.h"

namespace wpm::bus {
namespace {

constexpr size_t kZ85KeyChars = 40;
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

Result<void> write_file(const std::string& path, const std::string& content, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  ::fchmod(fd, mode);  // whatever the umask
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  }
  return {};
}

std::optional<std::string> value_of(const std::string& content, std::string_view key) {
  std::istringstream in(content);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(key) && line.size() > key.size() && line[key.size()] == '=') {
      return line.substr(key.size() + 1);
    }
  }
  return std::nullopt;
}

}  // namespace

Result<CurveKeyPair> generate_curve_keys() {
  char pub[kZ85KeyChars + 1];
  char sec[kZ85KeyChars + 1];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return fail(ErrorCode::kInternal,
                fmt::format("cannot make a CURVE key pair: {} (is libzmq built with CURVE?)", zmq_strerror(errno)));
  }
  return CurveKeyPair{pub, sec};
}

Result<CurveKeyPair> load_curve_keys(const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name + ".key";
  std::ifstream in(path);
  if (!in) {
    if (errno == EACCES || errno == EPERM) {
      return fail(ErrorCode::kPermissionDenied,
                  fmt::format("cannot read the key file {}: permission denied; it is readable by root only", path));
    }
    return fail(ErrorCode::kNotFound, fmt::format("no key file {}", path));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("{} is readable by others (mode {:o}); run chmod 600 {}", path, st.st_mode & 0777, path));
  }
  std::stringstream content;
  content << in.rdbuf();
  auto pub = value_of(content.str(), "public");
  auto sec = value_of(content.str(), "secret");
  if (!pub || !sec || !valid_curve_key(*pub) || !valid_curve_key(*sec)) {
    return fail(ErrorCode::kCorruption,
                fmt::format("{} does not hold a CURVE key pair; move it away to make a new one", path));
  }
  return CurveKeyPair{*pub, *sec};
}

Result<std::string> load_public_key(const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name + ".pub";
  std::ifstream in(path);
  if (!in) {
    if (errno == EACCES || errno == EPERM) {
      return fail(ErrorCode::kPermissionDenied, fmt::format("cannot read {}: permission denied", path));
    }
    return fail(ErrorCode::kNotFound, fmt::format("no public key file {}", path));
  }
  std::stringstream content;
  content << in.rdbuf();
  auto pub = value_of(content.str(), "public");
  if (!pub || !valid_curve_key(*pub)) {
    return fail(ErrorCode::kCorruption, fmt::format("{} does not hold a CURVE public key", path));
  }
  return *pub;
}

Result<void> store_curve_keys(const std::string& dir, const std::string& name, const CurveKeyPair& keys) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  if (auto r = write_file(dir + "/" + name + ".key",
                          fmt::format("public={}\nsecret={}\n", keys.public_key, keys.secret_key), 0600);
      !r) {
    return r;
  }
  return write_file(dir + "/" + name + ".pub", fmt::format("public={}\n", keys.public_key), 0644);
}

Result<CurveKeyPair> load_or_create_curve_keys(const std::string& dir, const std::string& name) {
  auto keys = load_curve_keys(dir, name);
  if (keys || keys.error().code != ErrorCode::kNotFound) return keys;
  auto fresh = generate_curve_keys();
  if (!fresh) return fresh;
  if (auto r = store_curve_keys(dir, name, *fresh); !r) return std::unexpected(r.error());
  return fresh;
}

bool valid_curve_key(std::string_view z85) {
  if (z85.size() != kZ85KeyChars) return false;
  uint8_t raw[32];
  std::string s(z85);
  return zmq_z85_decode(raw, s.c_str()) != nullptr;
}

std::string key_fingerprint(std::string_view public_key_z85) {
  uint8_t raw[32];
  std::string s(public_key_z85);
  if (s.size() != kZ85KeyChars || zmq_z85_decode(raw, s.c_str()) == nullptr) return "";
  return "sha256:" + to_hex(sha256(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw)));
}

bool fingerprint_matches(std::string_view given, std::string_view fingerprint) {
  auto digits = [](std::string_view s) {
    std::string out;
    if (s.size() >= 7 && (s.substr(0, 7) == "sha256:" || s.substr(0, 7) == "SHA256:")) s.remove_prefix(7);
    for (char c : s) {
      if (c == ':' || c == ' ') continue;
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    return out;
  };
  std::string g = digits(given);
  std::string f = digits(fingerprint);
  if (g.size() < 16 || g.size() > f.size() || g.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return false;
  }
  return f.compare(0, g.size(), g) == 0;
}

void make_curve_server(zmq::socket_t& socket, const CurveKeyPair& keys, const std::string& zap_domain) {
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  // libzmq admits every key when no ZAP handler is bound (ZMQ_ZAP_ENFORCE_DOMAIN
  // is draft API): the ZapHandler must exist before the socket handshakes.
  socket.set(zmq::sockopt::zap_domain, zap_domain);
}

void make_curve_client(zmq::socket_t& socket, const CurveKeyPair& keys, const std::string& server_public_key) {
  socket.set(zmq::sockopt::curve_serverkey, server_public_key);
  socket.set(zmq::sockopt::curve_publickey, keys.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

ZapHandler::ZapHandler(zmq::context_t& context) : socket_(context, zmq::socket_type::rep) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind(kZapEndpoint);  // before any server socket handshakes
  thread_ = std::thread([this] { run(); });
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::serve_domain(const std::string& domain, Policy policy) {
  std::lock_guard lock(mutex_);
  policies_[domain] = std::move(policy);
}

void ZapHandler::drop_domain(const std::string& domain) {
  std::lock_guard lock(mutex_);
  policies_.erase(domain);
}

std::optional<std::string> ZapHandler::decide(const std::string& domain, const std::string& address,
                                              const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = policies_.find(domain);
  if (it == policies_.end()) return std::nullopt;
  return it->second(address, key);
}

void ZapHandler::run() {
  while (!stop_) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (poll(&item, 1, std::chrono::milliseconds(100)) <= 0) continue;
    auto got = recv_message(socket_, 16, zmq::recv_flags::dontwait);
    if (!got || !*got) continue;
    auto& frames = **got;
    // version, request id, domain, address, identity, mechanism, credentials…
    auto text = [&](size_t i) { return i < frames.size() ? std::string(view(frames[i])) : std::string(); };
    std::string status = "400", status_text = "refused", user;
    if (frames.size() >= 6 && text(0) == "1.0") {
      std::string mechanism = text(5);
      if (mechanism == "CURVE" && frames.size() >= 7 && frames[6].size() == 32) {
        char z85[kZ85KeyChars + 1];
        zmq_z85_encode(z85, static_cast<const uint8_t*>(frames[6].data()), 32);
        if (auto id = decide(text(2), text(3), z85)) {
          status = "200";
          status_text = "OK";
          user = *id;
        } else {
          status_text = "key not admitted";
        }
      } else {
        status_text = "CURVE required";
      }
    }
    (status == "200" ? admitted_ : refused_)++;
    std::array<std::string, 6> reply = {"1.0", text(1), status, status_text, user, ""};
    for (size_t i = 0; i < reply.size(); ++i) {
      socket_.send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
}

}  // namespace wpm::bus
