// The store server's loop: reads are served by reader threads, so a slow
// read never delays an acknowledgement; the readers' queue is bounded.

#include "eventstore/server.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/null_sink.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <latch>
#include <thread>

#include "bus/client.h"

namespace wpm::eventstore {
namespace {

namespace fs = std::filesystem;

struct AllowAll final : AppendAccess {
  Result<std::string> authorize(const std::string& identity, const EventDraft&) const override { return identity; }
};

class ServerTest : public ::testing::Test {
 protected:
  void start(ServerOptions options) {
    dir_ = fs::temp_directory_path() / fmt::format("wpm-server-test-{}", ::getpid());
    fs::remove_all(dir_);
    StoreOptions so;
    so.data_dir = dir_.string();
    auto store = Store::open(so, log_);
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
    options.request_endpoint = "tcp://127.0.0.1:0";
    options.publish_endpoint = "tcp://127.0.0.1:0";
    options.local_request_endpoint = "inproc://server-test";
    options.local_publish_endpoint = "";
    options.keys = *bus::generate_curve_keys();
    server_store_key_ = options.keys.public_key;
    server_ = std::make_unique<StoreServer>(*store_, context_, options, access_, metrics_, log_);
    ASSERT_TRUE(server_->bind());
    stop_ = ::eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { server_->run(stop_); });
  }
  void TearDown() override {
    if (thread_.joinable()) {
      uint64_t one = 1;
      EXPECT_EQ(::write(stop_, &one, sizeof one), 8);
      thread_.join();
      ::close(stop_);
    }
    server_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  std::unique_ptr<bus::StoreClient> client(int timeout_ms = 5000) {
    bus::ClientOptions o{timeout_ms, 1, {}};
    o.credentials.local_identity = "admin";
    return std::make_unique<bus::StoreClient>(context_, "inproc://server-test", o);
  }
  static AppendRequest one(const std::string& key) {
    AppendRequest r;
    r.idempotency_key = key;
    r.events.push_back(EventDraft{"synthetic/s", "", "", "", Synthetic{"s", 0, "", ""}});
    return r;
  }

  std::shared_ptr<spdlog::logger> log_ =
      std::make_shared<spdlog::logger>("server-test", std::make_shared<spdlog::sinks::null_sink_mt>());
  fs::path dir_;
  zmq::context_t context_{1};
  prometheus::Registry registry_;
  StoreMetrics metrics_{registry_};
  AllowAll access_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<StoreServer> server_;
  int stop_ = -1;
  std::string server_store_key_;
  std::thread thread_;
};

TEST_F(ServerTest, AppendsAreAcknowledgedWhileAReadIsStuck) {
  std::latch release(1);
  std::atomic<int> reads_started = 0;
  ServerOptions options;
  options.before_read_for_test = [&] {
    ++reads_started;
    release.wait();
  };
  start(options);
  auto reader = client(20'000);
  auto read = std::async(std::launch::async, [&] { return reader->stats(); });
  while (reads_started.load() == 0) std::this_thread::yield();  // bounded by the read above arriving
  auto writer = client();
  for (int i = 0; i < 20; ++i) {
    auto r = writer->append(one(fmt::format("k{}", i)));
    ASSERT_TRUE(r) << r.error().message;
  }
  EXPECT_EQ(store_->head(), 20u) << "acknowledged while the read waited";
  EXPECT_EQ(read.wait_for(std::chrono::seconds(0)), std::future_status::timeout) << "the read is still stuck";
  release.count_down();
  auto stats = read.get();
  ASSERT_TRUE(stats) << stats.error().message;
  EXPECT_GE(stats->head, 0u);
}

TEST_F(ServerTest, AFullReadQueueIsAnsweredUnavailableNotQueuedWithoutBound) {
  std::latch release(1);
  ServerOptions options;
  options.reader_queue = 1;
  options.before_read_for_test = [&] { release.wait(); };
  start(options);
  constexpr int kReads = 30;
  std::vector<std::future<Result<StatsReply>>> reads;
  std::vector<std::unique_ptr<bus::StoreClient>> clients;
  for (int i = 0; i < kReads; ++i) clients.push_back(client(20'000));
  for (int i = 0; i < kReads; ++i) {
    reads.push_back(std::async(std::launch::async, [&, i] { return clients[i]->stats(); }));
  }
  // The refused ones come back at once, while the reader is still stuck.
  int unavailable = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (auto& r : reads) {
    if (r.wait_until(deadline) != std::future_status::ready) continue;
    auto got = r.get();
    if (!got && got.error().code == ErrorCode::kUnavailable) ++unavailable;
  }
  EXPECT_GT(unavailable, 0);
  EXPECT_LT(unavailable, kReads) << "some were queued";
  release.count_down();
}

TEST_F(ServerTest, ANetworkClientCannotDeclareAnInProcessIdentity) {
  start(ServerOptions{});
  // This test's context has no ZAP handler: libzmq then admits any CURVE key
  // with no user id. The routing id must still not make it "admin".
  auto keys = bus::generate_curve_keys();
  ASSERT_TRUE(keys);
  bus::ClientOptions o{2000, 1, {}};
  o.credentials.client_keys = *keys;
  o.credentials.store_public_key = server_store_key_;
  o.credentials.local_identity = "admin";
  bus::StoreClient pretender(context_, server_->request_endpoint(), o);
  auto r = pretender.append(one("pretend"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied) << r.error().message;
  EXPECT_EQ(store_->head(), 0u);
  // Over inproc the same declaration is the identity.
  EXPECT_TRUE(client()->append(one("local")));
}

}  // namespace
}  // namespace wpm::eventstore
