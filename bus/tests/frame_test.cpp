#include "bus/frame.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zmq.hpp>
#include <zmq.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "bus/constants.h"

namespace wpm::bus {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// ---- endpoint helpers and topics ---------------------------------------------------

TEST(BindSpelling, PortZeroBecomesZeroMqWildcard) {
  EXPECT_EQ(bind_spelling("tcp://127.0.0.1:0"), "tcp://127.0.0.1:*");
  EXPECT_EQ(bind_spelling("tcp://*:0"), "tcp://*:*");
  EXPECT_EQ(bind_spelling("tcp://[::1]:0"), "tcp://[::1]:*");
}

TEST(BindSpelling, OtherEndpointsAreUnchanged) {
  for (const char* endpoint : {"tcp://127.0.0.1:9515", "tcp://127.0.0.1:10", "tcp://127.0.0.1:100",
                               "tcp://127.0.0.1:*", "ipc:///tmp/wpm/store.sock", "inproc://x:0",
                               "ipc:///tmp/a:0", ""}) {
    EXPECT_EQ(bind_spelling(endpoint), endpoint);
  }
}

TEST(ConnectEndpoint, AcceptsTcpHostPortAndIpcPath) {
  for (const char* ok : {"tcp://127.0.0.1:9515", "tcp://localhost:1", "tcp://[::1]:65535",
                         "tcp://store-1.example.org:9515", "ipc:///run/wpm/store.sock"}) {
    EXPECT_EQ(connect_endpoint_problem(ok), "") << ok;
  }
}

TEST(ConnectEndpoint, RefusesWhatZeroMqWouldThrowOn) {
  // Each of these made `wpm --store` abort with an uncaught ZeroMQ exception.
  std::string long_ipc = "ipc:///" + std::string(120, 'p');
  for (const std::string& bad :
       {std::string("bogus"), std::string("request=tcp://127.0.0.1:9515"), std::string("tcp://x"),
        std::string("tcp://:9515"), std::string("tcp://*:9515"), std::string("tcp://a b:1"),
        std::string("tcp://host/x:1"), std::string("tcp://u@h:1"), std::string("tcp://host:0"),
        std::string("tcp://host:65536"), std::string("tcp://host:95a"), std::string("ipc://"),
        long_ipc, std::string("")}) {
    std::string problem = connect_endpoint_problem(bad);
    EXPECT_NE(problem.find("expected tcp://HOST:PORT"), std::string::npos) << bad;
  }
}

TEST(ConnectEndpoint, AgreesWithZeroMq) {
  zmq::context_t context;
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  std::string long_ipc = "ipc:///" + std::string(120, 'p');
  // ZeroMQ throws on these: the check must refuse them.
  for (const std::string& thrown : {std::string("bogus"), std::string("tcp://*:9515"),
                                    std::string("tcp://a b:1"), std::string("tcp://u@h:1"),
                                    std::string("tcp://x"), long_ipc}) {
    EXPECT_THROW(socket.connect(thrown), zmq::error_t) << thrown;
    EXPECT_NE(connect_endpoint_problem(thrown), "") << thrown;
  }
  // What the check accepts, ZeroMQ connects to (asynchronously) without throwing.
  for (const char* ok : {"tcp://127.0.0.1:9515", "tcp://[::1]:9515", "tcp://localhost:1",
                         "ipc:///tmp/wpm-frame-test.sock"}) {
    ASSERT_EQ(connect_endpoint_problem(ok), "") << ok;
    EXPECT_NO_THROW(socket.connect(ok)) << ok;
  }
}

TEST(EventTopic, IsThePrefixAndTheTypeName) {
  EXPECT_EQ(event_topic(EventType::kSynthetic), "event.synthetic");
  EXPECT_EQ(event_topic(EventType::kSystemRegistered), "event.systemRegistered");
  EXPECT_EQ(event_topic(EventType::kSystemRemoved), "event.systemRemoved");
  for (uint16_t t = 1; t <= kEventTypeMax; ++t) {
    std::string topic = event_topic(static_cast<EventType>(t));
    EXPECT_TRUE(topic.starts_with(kEventTopicPrefix)) << topic;
    auto back = event_type_from_name(std::string_view(topic).substr(kEventTopicPrefix.size()));
    ASSERT_TRUE(back.has_value()) << topic;
    EXPECT_EQ(*back, static_cast<EventType>(t));
  }
}

// ---- recv_message --------------------------------------------------------------------

void send_frames(zmq::socket_t& socket, const std::vector<std::string>& frames) {
  for (size_t i = 0; i < frames.size(); ++i) {
    auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    ASSERT_TRUE(socket.send(zmq::buffer(frames[i]), flags).has_value());
  }
}

std::vector<std::string> strings(const std::vector<zmq::message_t>& frames) {
  std::vector<std::string> out;
  for (const auto& f : frames) out.emplace_back(view(f));
  return out;
}

class PairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    apply_defaults(receiver_);
    apply_defaults(sender_);
    receiver_.bind("inproc://frame-test");
    sender_.connect("inproc://frame-test");
  }

  zmq::context_t context_{1};
  zmq::socket_t receiver_{context_, zmq::socket_type::pair};
  zmq::socket_t sender_{context_, zmq::socket_type::pair};
};

TEST_F(PairTest, ReceivesAWholeMultipartMessage) {
  send_frames(sender_, {"id", "", "body"});
  auto msg = recv_message(receiver_, 3, zmq::recv_flags::none);
  ASSERT_TRUE(msg.has_value());
  ASSERT_TRUE(msg->has_value()) << (*msg).error().message;
  EXPECT_EQ(strings(**msg), (std::vector<std::string>{"id", "", "body"}));
}

TEST_F(PairTest, TooManyFramesAreRefusedAndDrained) {
  send_frames(sender_, {"a", "b", "c", "d"});
  send_frames(sender_, {"next-1", "next-2"});

  auto refused = recv_message(receiver_, 2, zmq::recv_flags::none);
  ASSERT_TRUE(refused.has_value());
  ASSERT_FALSE(refused->has_value()) << "a message of 4 frames was accepted with max 2";
  EXPECT_EQ((*refused).error().code, ErrorCode::kInvalidRequest);
  EXPECT_THAT((*refused).error().message, HasSubstr("4 frames"));

  // The refused message left nothing behind: the next one arrives whole.
  auto next = recv_message(receiver_, 2, zmq::recv_flags::none);
  ASSERT_TRUE(next.has_value());
  ASSERT_TRUE(next->has_value()) << (*next).error().message;
  EXPECT_EQ(strings(**next), (std::vector<std::string>{"next-1", "next-2"}));

  auto nothing = recv_message(receiver_, 2, zmq::recv_flags::dontwait);
  EXPECT_FALSE(nothing.has_value());
}

TEST_F(PairTest, ExactlyMaxFramesIsAccepted) {
  send_frames(sender_, {"1", "2"});
  auto msg = recv_message(receiver_, 2, zmq::recv_flags::none);
  ASSERT_TRUE(msg.has_value());
  ASSERT_TRUE(msg->has_value()) << (*msg).error().message;
  EXPECT_EQ((*msg)->size(), 2u);
}

TEST_F(PairTest, DontwaitWithNothingQueuedReturnsEmpty) {
  auto msg = recv_message(receiver_, 2, zmq::recv_flags::dontwait);
  EXPECT_FALSE(msg.has_value());

  send_frames(sender_, {"x"});
  auto got = recv_message(receiver_, 2, zmq::recv_flags::dontwait);
  ASSERT_TRUE(got.has_value()) << "inproc delivery is immediate";
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(strings(**got), (std::vector<std::string>{"x"}));
}

// ---- ZMQ_MAXMSGSIZE over TCP -----------------------------------------------------------

// Waits (with a deadline, no sleeps) for `event` on a socket monitor.
bool wait_for_monitor_event(zmq::socket_t& monitor, uint16_t event, std::chrono::milliseconds deadline) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    zmq::pollitem_t items[] = {{monitor.handle(), 0, ZMQ_POLLIN, 0}};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (poll(items, 1, std::max(left, 1ms)) == 0) continue;
    zmq::message_t head;
    if (!monitor.recv(head, zmq::recv_flags::none)) continue;
    uint16_t got = 0;
    if (head.size() >= 2) std::memcpy(&got, head.data(), 2);
    while (head.more()) {
      zmq::message_t rest;
      (void)monitor.recv(rest, zmq::recv_flags::none);
      head = std::move(rest);
    }
    if (got == event) return true;
  }
  return false;
}

class TcpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    apply_defaults(router_);
    router_.bind(bind_spelling("tcp://127.0.0.1:0"));
    endpoint_ = last_endpoint(router_);
    ASSERT_TRUE(endpoint_.starts_with("tcp://127.0.0.1:")) << endpoint_;
    ASSERT_FALSE(endpoint_.ends_with(":0")) << endpoint_;
    ASSERT_EQ(zmq_socket_monitor(router_.handle(), "inproc://frame-test-monitor",
                                 ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED),
              0);
    monitor_.connect("inproc://frame-test-monitor");
  }
  void TearDown() override { (void)zmq_socket_monitor(router_.handle(), nullptr, 0); }

  zmq::socket_t dealer() {
    zmq::socket_t s(context_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.connect(endpoint_);
    return s;
  }

  zmq::context_t context_{1};
  zmq::socket_t router_{context_, zmq::socket_type::router};
  zmq::socket_t monitor_{context_, zmq::socket_type::pair};
  std::string endpoint_;
};

TEST_F(TcpTest, BindOnPortZeroGetsARealPort) {
  zmq::socket_t client = dealer();
  ASSERT_TRUE(client.send(zmq::str_buffer("hello"), zmq::send_flags::none).has_value());
  router_.set(zmq::sockopt::rcvtimeo, 5000);
  auto msg = recv_message(router_, kRequestFramesMax, zmq::recv_flags::none);
  ASSERT_TRUE(msg.has_value()) << "nothing received within 5 s";
  ASSERT_TRUE(msg->has_value()) << (*msg).error().message;
  ASSERT_EQ((*msg)->size(), 2u);
  EXPECT_EQ(view((**msg)[1]), "hello");
}

TEST_F(TcpTest, MessageOfExactlyTheFrameLimitIsReceived) {
  zmq::socket_t client = dealer();
  std::string payload(kFrameBytesMax, 'y');
  ASSERT_TRUE(client.send(zmq::buffer(payload), zmq::send_flags::none).has_value());
  router_.set(zmq::sockopt::rcvtimeo, 10'000);
  auto msg = recv_message(router_, kRequestFramesMax, zmq::recv_flags::none);
  ASSERT_TRUE(msg.has_value()) << "nothing received within 10 s";
  ASSERT_TRUE(msg->has_value()) << (*msg).error().message;
  ASSERT_EQ((*msg)->size(), 2u);
  EXPECT_EQ((**msg)[1].size(), kFrameBytesMax);
}

TEST_F(TcpTest, MessageOverTheFrameLimitDropsThePeer) {
  zmq::socket_t big = dealer();
  ASSERT_TRUE(wait_for_monitor_event(monitor_, ZMQ_EVENT_ACCEPTED, 5000ms));
  std::string payload(kFrameBytesMax + 1, 'x');
  ASSERT_TRUE(big.send(zmq::buffer(payload), zmq::send_flags::none).has_value());
  ASSERT_TRUE(wait_for_monitor_event(monitor_, ZMQ_EVENT_DISCONNECTED, 10'000ms))
      << "the receiver did not drop a peer sending " << payload.size() << " bytes";
  auto msg = recv_message(router_, kRequestFramesMax, zmq::recv_flags::dontwait);
  EXPECT_FALSE(msg.has_value()) << "the oversize message was delivered";

  // The receiving socket still works for other peers.
  zmq::socket_t small = dealer();
  ASSERT_TRUE(small.send(zmq::str_buffer("after"), zmq::send_flags::none).has_value());
  router_.set(zmq::sockopt::rcvtimeo, 5000);
  auto after = recv_message(router_, kRequestFramesMax, zmq::recv_flags::none);
  ASSERT_TRUE(after.has_value()) << "nothing received within 5 s";
  ASSERT_TRUE(after->has_value()) << (*after).error().message;
  ASSERT_EQ((*after)->size(), 2u);
  EXPECT_EQ(view((**after)[1]), "after");
}

}  // namespace
}  // namespace wpm::bus
