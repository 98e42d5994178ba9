// wpm-test-listen PORT: the workload of network tests. Listens on TCP PORT on
// every address, says "listening on PORT" on stdout once it does, and answers
// each connection's first byte with that byte + 1 (so the client knows it
// reached this process), for at most 64 connections. Ends on SIGTERM. Test
// code only; no dependencies, so it runs inside any WPAR that sees the build tree.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int kConnectionsMax = 64;
constexpr int kReadTimeoutMs = 5000;

void answer(int conn) {
  pollfd in{conn, POLLIN, 0};
  char byte = 0;
  if (::poll(&in, 1, kReadTimeoutMs) == 1 && ::read(conn, &byte, 1) == 1) {
    byte = static_cast<char>(byte + 1);
    // The client checks what arrives; a failed write is its failure to see.
    (void)!::write(conn, &byte, 1);
  }
  ::close(conn);
}

}  // namespace

int main(int argc, char** argv) {
  int port = argc == 2 ? std::atoi(argv[1]) : 0;
  if (port <= 0 || port > 65535) {
    std::fprintf(stderr, "usage: wpm-test-listen PORT (1-65535)\n");
    return 2;
  }
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int on = 1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (s < 0 || ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 8) != 0) {
    std::fprintf(stderr, "wpm-test-listen: cannot listen on port %d: %s\n", port,
                 std::strerror(errno));
    return 1;
  }
  std::printf("listening on %d\n", port);
  std::fflush(stdout);
  for (int i = 0; i < kConnectionsMax; ++i) {
    int conn = ::accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn >= 0) answer(conn);
  }
  return 0;
}
