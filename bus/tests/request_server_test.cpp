// The request server loop: replies from workers, parked requests answered
// later, a full queue answered "busy" at once, oversize frames dropped.

#include "bus/request_server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace wpm::bus {
namespace {

std::string ask(zmq::context_t& context, const std::string& endpoint, const std::string& body, int timeout_ms = 5000) {
  zmq::socket_t s(context, zmq::socket_type::req);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, timeout_ms);
  s.connect(endpoint);
  s.send(zmq::buffer(body));
  zmq::message_t reply;
  if (!s.recv(reply)) return "<timeout>";
  return reply.to_string();
}

TEST(RequestServer, WorkersAnswerAndAParkedRequestIsAnsweredLater) {
  zmq::context_t context(1);
  RequestServerOptions o;
  o.endpoint = "tcp://127.0.0.1:0";
  o.workers = 2;
  RequestServer server(context, o);
  ASSERT_TRUE(server.bind());
  std::mutex m;
  std::vector<ServerRequest> parked;
  server.start(
      [&](ServerRequest& r) -> std::optional<std::string> {
        if (r.body == "park") {
          std::lock_guard lock(m);
          parked.push_back(std::move(r));
          return std::nullopt;
        }
        EXPECT_EQ(r.peer_address, "127.0.0.1");
        return "echo:" + r.body;
      },
      [](const ServerRequest&, std::string_view why) { return std::string("busy:") + std::string(why); });
  EXPECT_EQ(ask(context, server.endpoint(), "a"), "echo:a");
  std::string parked_reply;
  std::thread waiter([&] { parked_reply = ask(context, server.endpoint(), "park"); });
  // Both workers stay free while the request is parked.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ask(context, server.endpoint(), "b"), "echo:b");
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lock(m);
      if (!parked.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  {
    std::lock_guard lock(m);
    ASSERT_EQ(parked.size(), 1u);
    server.reply(std::move(parked.front()), "later");
  }
  waiter.join();
  EXPECT_EQ(parked_reply, "later");
  server.stop();
}

TEST(RequestServer, AFullQueueIsAnsweredBusyAndAnOversizeFrameIsDropped) {
  zmq::context_t context(1);
  RequestServerOptions o;
  o.endpoint = "tcp://127.0.0.1:0";
  o.workers = 1;
  o.queue_max = 1;
  o.message_bytes_max = 1024;
  RequestServer server(context, o);
  ASSERT_TRUE(server.bind());
  std::atomic<bool> release{false};
  server.start(
      [&](ServerRequest& r) -> std::optional<std::string> {
        while (r.body == "slow" && !release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        return "done:" + r.body;
      },
      [](const ServerRequest&, std::string_view why) { return std::string("busy:") + std::string(why); });
  std::string r1, r2;
  std::thread t1([&] { r1 = ask(context, server.endpoint(), "slow"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the worker holds "slow"
  std::thread t2([&] { r2 = ask(context, server.endpoint(), "queued"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // "queued" fills the queue
  std::string r3 = ask(context, server.endpoint(), "third");
  EXPECT_TRUE(r3.starts_with("busy:the server is busy")) << r3;
  release = true;
  t1.join();
  t2.join();
  EXPECT_EQ(r1, "done:slow");
  EXPECT_EQ(r2, "done:queued");
  EXPECT_EQ(ask(context, server.endpoint(), std::string(4096, 'x'), 300), "<timeout>");
  EXPECT_EQ(ask(context, server.endpoint(), "small"), "done:small") << "the server goes on after an oversize frame";
  EXPECT_GE(server.busy(), 1u);
  server.stop();
}

}  // namespace
}  // namespace wpm::bus
