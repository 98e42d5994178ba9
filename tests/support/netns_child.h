#pragma once
// Test helper: a child process in a new network namespace (root only).
// `body` runs there after unshare, with the ready pipe's write end (write one
// byte once ready) and the release pipe's read end (EOF: the test is over);
// its return value is the child's exit code. The destructor releases the
// child and reaps it, killing it if it does not end within 5 s. Header-only,
// so that unit tests can use it without the test-support library.

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace wpm::testing {

class NetnsChild {
 public:
  explicit NetnsChild(const std::function<int(int ready, int release)>& body) {
    int ready[2], release[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) return;
    if (::pipe2(release, O_CLOEXEC) != 0) {
      ::close(ready[0]);
      ::close(ready[1]);
      return;
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(ready[0]);
      ::close(release[1]);
      if (::unshare(CLONE_NEWNET) != 0) ::_exit(90);
      ::_exit(body(ready[1], release[0]));
    }
    ::close(ready[1]);
    ::close(release[0]);
    release_ = release[1];
    pollfd p{ready[0], POLLIN, 0};
    char c = 0;
    ready_ = pid_ > 0 && ::poll(&p, 1, 5000) == 1 && ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
  }
  NetnsChild(const NetnsChild&) = delete;
  NetnsChild& operator=(const NetnsChild&) = delete;
  ~NetnsChild() {
    if (release_ >= 0) ::close(release_);
    if (pid_ <= 0) return;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || r < 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_t pid() const { return pid_; }
  bool ready() const { return ready_; }
  std::string netns_path() const { return "/proc/" + std::to_string(pid_) + "/ns/net"; }

 private:
  pid_t pid_ = -1;
  int release_ = -1;
  bool ready_ = false;
};

// A body that only holds the namespace: ready at once, ends when released
// (bounded: no test takes five minutes).
inline int hold_namespace(int ready, int release) {
  char c = 1;
  if (::write(ready, &c, 1) != 1) return 91;
  pollfd p{release, POLLIN, 0};
  ::poll(&p, 1, 300'000);
  return 0;
}

}  // namespace wpm::testing
