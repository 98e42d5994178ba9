#include "agents/agent/transfer.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <thread>
#include <zmq.hpp>

#include "agents/checkpoint/cooperative.h"
#include "bus/curve.h"
#include "schemas/error.h"

namespace wpm::agent {
namespace {

namespace fs = std::filesystem;
namespace ap = agentproto;

bool valid_name(const std::string& n) {
  return !n.empty() && n.size() <= 100 && n.front() != '.' &&
         n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == std::string::npos;
}

int fail(int code, const std::string& message) {
  std::fprintf(stderr, "wpm-agent: %s\n", message.c_str());
  return code;
}

}  // namespace

void StateGrants::allow(const std::string& key, StateGrant grant) {
  std::lock_guard lock(mutex_);
  for (auto [it, end] = grants_.equal_range(key); it != end; ++it) {
    if (it->second.wpar == grant.wpar && it->second.state_id == grant.state_id) {
      it->second.expires_ns = std::max(it->second.expires_ns, grant.expires_ns);
      return;
    }
  }
  grants_.emplace(key, std::move(grant));
}

bool StateGrants::admits(const std::string& key, int64_t now_ns) const {
  std::lock_guard lock(mutex_);
  for (auto [it, end] = grants_.equal_range(key); it != end; ++it) {
    if (it->second.expires_ns > now_ns) return true;
  }
  return false;
}

bool StateGrants::covers(const std::string& key, const std::string& wpar, const std::string& state_id,
                         int64_t now_ns) const {
  std::lock_guard lock(mutex_);
  for (auto [it, end] = grants_.equal_range(key); it != end; ++it) {
    if (it->second.wpar == wpar && it->second.state_id == state_id && it->second.expires_ns > now_ns) return true;
  }
  return false;
}

void StateGrants::revoke_wpar(const std::string& wpar) {
  std::lock_guard lock(mutex_);
  std::erase_if(grants_, [&](const auto& g) { return g.second.wpar == wpar; });
}

void StateGrants::rebuild(const std::vector<OperationRecord>& records, int64_t now_ns) {
  for (const auto& r : records) {
    if (r.action != "pause" || r.peer_key.empty() || r.refused) continue;
    int64_t expires = r.started_ns + kGrantLifetimeNs;
    if (expires > now_ns) allow(r.peer_key, StateGrant{r.wpar, r.id, expires});
  }
}

bool safe_relative_path(const std::string& path) {
  if (path.empty() || path.size() > 4096 || path.front() == '/') return false;
  size_t start = 0;
  while (start <= path.size()) {  // bounded: each turn moves past one '/'
    size_t slash = path.find('/', start);
    std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (part.find('\0') != std::string::npos) return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

std::expected<ap::StateData, std::string> serve_state(const std::string& state_root, const ap::FetchState& r) {
  if (!valid_name(r.wpar) || !valid_operation_id(r.state_id)) {
    return std::unexpected("not a valid WPAR name or state file id");
  }
  const fs::path dir = fs::path(state_root) / r.wpar / r.state_id;
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dir, ec))) {
    return std::unexpected(fmt::format("no state file {} of WPAR {} here", r.state_id, r.wpar));
  }
  ap::StateData out;
  if (r.path.empty()) {
    // Regular files only: a state file holds nothing else (its manifest
    // says what the arrival must find).
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      auto status = it->symlink_status(ec);
      if (ec || !fs::is_regular_file(status)) continue;
      uint64_t size = it->file_size(ec);
      if (ec) continue;
      out.files.push_back({fs::relative(it->path(), dir, ec).string(), size});
      if (out.files.size() > 100'000) return std::unexpected("the state file holds more than 100,000 files");
    }
    if (ec) return std::unexpected(fmt::format("cannot list {}: {}", dir.string(), ec.message()));
    return out;
  }
  if (!safe_relative_path(r.path)) return std::unexpected(fmt::format("'{}' is not a path inside a state file", r.path));
  const std::string path = (dir / r.path).string();
  // Inside the state file only: no symbolic link anywhere on the way, nothing beneath it escapes.
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (dir_fd < 0) return std::unexpected(fmt::format("cannot open {}: {}", dir.string(), std::strerror(errno)));
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, dir_fd, r.path.c_str(), &how, sizeof how));
  int err = errno;
  ::close(dir_fd);
  if (fd < 0) return std::unexpected(fmt::format("cannot read {}: {}", path, std::strerror(err)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return std::unexpected(fmt::format("{} is not a regular file", path));
  }
  out.size = static_cast<uint64_t>(st.st_size);
  uint32_t length = std::min(r.length, ap::kStateChunkBytes);
  if (r.offset < out.size && length > 0) {
    out.data.resize(std::min<uint64_t>(length, out.size - r.offset));
    size_t done = 0;
    while (done < out.data.size()) {  // bounded: each turn reads at least one byte or stops
      ssize_t n = ::pread(fd, out.data.data() + done, out.data.size() - done, static_cast<off_t>(r.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    out.data.resize(done);
  }
  ::close(fd);
  return out;
}

int receive_state(const AgentPaths& paths, const ReceiveRequest& r) {
  if (!valid_name(r.wpar) || !valid_operation_id(r.state_id)) return fail(1, "not a valid WPAR name or state file id");
  if (r.dest_dir.empty() || r.dest_dir.front() != '/') return fail(1, "the destination must be an absolute path");
  // Already here and whole (a repeated receive, or a shared state root).
  if (fs::exists(r.dest_dir + "/manifest.json") && checkpoint::verify_state_file(r.dest_dir)) {
    std::printf("state file %s of WPAR %s is already here (%s) and matches its manifest\n", r.state_id.c_str(),
                r.wpar.c_str(), r.dest_dir.c_str());
    return 0;
  }
  auto keys = bus::load_curve_keys(paths.data_dir + "/keys", "agent");
  if (!keys) return fail(1, "cannot read this agent's keys: " + keys.error().message);
  const std::string part = r.dest_dir + ".part";
  std::error_code ec;
  fs::remove_all(part, ec);
  fs::remove_all(r.dest_dir, ec);
  fs::create_directories(part, ec);
  if (ec) return fail(1, fmt::format("cannot create {}: {}", part, ec.message()));
  auto started = std::chrono::steady_clock::now();

  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::rcvhwm, 0);
  try {
    bus::make_curve_client(socket, *keys, r.server_key);
    socket.connect(r.endpoint);
  } catch (const zmq::error_t& e) {
    return fail(1, fmt::format("cannot connect to the departure agent at {}: {}", r.endpoint, e.what()));
  }
  uint64_t next_id = 1;
  auto send = [&](ap::FetchState f) -> uint64_t {
    uint64_t id = next_id++;
    std::string bytes = ap::encode(ap::AgentCommand{id, std::move(f)});
    (void)socket.send(zmq::buffer(bytes), zmq::send_flags::none);
    return id;
  };
  // One reply, or the reason there is none.
  auto receive = [&]() -> std::expected<ap::AgentReply, std::string> {
    zmq::pollitem_t item{static_cast<void*>(socket), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::duration_cast<std::chrono::milliseconds>(kTransferStall)) <= 0) {
      return std::unexpected(fmt::format("no answer from the departure agent at {} for {} s (the link or the agent "
                                         "is down)",
                                         r.endpoint, kTransferStall.count()));
    }
    zmq::message_t frame;
    if (!socket.recv(frame, zmq::recv_flags::none)) return std::unexpected("the transfer was interrupted");
    auto reply = ap::decode_agent_reply(frame.to_string_view());
    if (!reply) return std::unexpected("malformed answer from the departure agent: " + reply.error().message);
    if (const auto* e = std::get_if<ap::ProtocolError>(&reply->body)) {
      return std::unexpected("the departure agent refused: " + e->message);
    }
    if (!std::holds_alternative<ap::StateData>(reply->body)) return std::unexpected("unexpected answer");
    return std::move(*reply);
  };
  auto cleanup_fail = [&](int code, const std::string& why) {
    std::error_code ignored;
    fs::remove_all(part, ignored);
    return fail(code, why);
  };

  send(ap::FetchState{r.wpar, r.state_id, "", 0, 0});
  auto listing = receive();
  if (!listing) return cleanup_fail(1, listing.error());
  const auto files = std::get<ap::StateData>(listing->body).files;
  // Every part of every file, asked for with a window in flight.
  struct Part {
    size_t file;
    uint64_t offset;
  };
  std::deque<Part> todo;
  std::vector<int> fds(files.size(), -1);
  auto close_all = [&] {
    for (int& fd : fds) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  };
  uint64_t total = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (!safe_relative_path(files[i].path)) {
      close_all();
      return cleanup_fail(1, fmt::format("the departure agent listed '{}', not a path inside a state file",
                                         files[i].path));
    }
    fs::path target = fs::path(part) / files[i].path;
    fs::create_directories(target.parent_path(), ec);
    fds[i] = ::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fds[i] < 0) {
      int err = errno;
      close_all();
      return cleanup_fail(1, fmt::format("cannot write {}: {}", target.string(), std::strerror(err)));
    }
    total += files[i].size;
    for (uint64_t off = 0; off < files[i].size; off += ap::kStateChunkBytes) todo.push_back({i, off});
  }
  const bool corrupt = std::getenv("WPM_TEST_TRANSFER_CORRUPT") != nullptr;  // tests: a damaged transfer
  bool corrupted = false;
  // Tests: each part asked for this much later (a transfer slow enough to cut its link).
  const char* delay_env = std::getenv("WPM_TEST_TRANSFER_PART_DELAY_MS");
  const auto part_delay = std::chrono::milliseconds(delay_env != nullptr ? std::atoi(delay_env) : 0);
  std::map<uint64_t, Part> asked;
  uint64_t received = 0;
  while (!todo.empty() || !asked.empty()) {  // bounded: every part is asked once; a stall ends it
    while (!todo.empty() && asked.size() < static_cast<size_t>(kTransferWindow)) {
      Part p = todo.front();
      todo.pop_front();
      if (part_delay.count() > 0) std::this_thread::sleep_for(part_delay);
      asked[send(ap::FetchState{r.wpar, r.state_id, files[p.file].path, p.offset, ap::kStateChunkBytes})] = p;
    }
    auto reply = receive();
    if (!reply) {
      close_all();
      return cleanup_fail(1, fmt::format("the transfer broke after {} of {} bytes: {}", received, total,
                                         reply.error()));
    }
    auto it = asked.find(reply->request_id);
    if (it == asked.end()) continue;  // an answer to nothing asked (a duplicate)
    Part p = it->second;
    asked.erase(it);
    auto& data = std::get<ap::StateData>(reply->body).data;
    if (corrupt && !corrupted && !data.empty() && files[p.file].path != "mcr.log") {  // a file the manifest lists
      data[0] = static_cast<char>(data[0] ^ 0x5a);
      corrupted = true;
    }
    uint64_t want = std::min<uint64_t>(ap::kStateChunkBytes, files[p.file].size - p.offset);
    if (data.size() != want) {
      close_all();
      return cleanup_fail(1, fmt::format("{} changed on the departure system during the transfer", files[p.file].path));
    }
    size_t done = 0;
    while (done < data.size()) {  // bounded: each turn writes at least one byte or stops
      ssize_t n = ::pwrite(fds[p.file], data.data() + done, data.size() - done, static_cast<off_t>(p.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = errno;
        close_all();
        return cleanup_fail(1, fmt::format("cannot write the state file into {}: {}", part, std::strerror(err)));
      }
      done += static_cast<size_t>(n);
    }
    received += data.size();
  }
  // Synced before it is answered: once the WPAR runs here the departure's
  // copy is removed, and this is the only one.
  for (int fd : fds) {
    if (fd >= 0 && ::fsync(fd) != 0) {
      close_all();
      return cleanup_fail(1, fmt::format("cannot sync the state file in {}", part));
    }
  }
  close_all();
  // Checked before anyone may use it.
  if (auto ok = checkpoint::verify_state_file(part); !ok) {
    return cleanup_fail(ok.error().exit_code, fmt::format("the state file received from {} is not whole: {}",
                                                          r.endpoint, ok.error().message));
  }
  if (std::rename(part.c_str(), r.dest_dir.c_str()) != 0 ||
      !checkpoint::fsync_path(fs::path(r.dest_dir).parent_path().string(), O_RDONLY | O_DIRECTORY)) {
    return cleanup_fail(1, fmt::format("cannot put the state file in place at {}: {}", r.dest_dir,
                                       std::strerror(errno)));
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  std::printf("received state file %s of WPAR %s from %s: %zu files, %llu bytes in %lld ms (%.1f MiB/s), verified\n",
              r.state_id.c_str(), r.wpar.c_str(), r.endpoint.c_str(), files.size(),
              static_cast<unsigned long long>(total), static_cast<long long>(ms),
              ms > 0 ? static_cast<double>(total) / (1024.0 * 1024.0) / (static_cast<double>(ms) / 1000.0) : 0.0);
  return 0;
}

}  // namespace wpm::agent
