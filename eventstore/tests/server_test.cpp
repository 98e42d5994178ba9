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
#include "schemas/codec.h"
#include "schemas/record.h"

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
    options.local_publish_endpoint = "inproc://server-test-publish";
    options.keys = *bus::generate_curve_keys();
    server_store_key_ = options.keys.public_key;
    server_ = std::make_unique<StoreServer>(*store_, context_, options, access_, metrics_, log_);
    ASSERT_TRUE(server_->bind());
    if (with_samples_) {
      auto samples = SampleStore::open(*store_, SampleOptions{}, log_);
      ASSERT_TRUE(samples) << samples.error().message;
      samples_ = std::move(*samples);
      server_->serve_samples(*samples_);
    }
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
    samples_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  std::unique_ptr<bus::StoreClient> client(int timeout_ms = 5000, const std::string& identity = "admin") {
    bus::ClientOptions o{timeout_ms, 1, {}};
    o.credentials.local_identity = identity;
    return std::make_unique<bus::StoreClient>(context_, "inproc://server-test", o);
  }
  // The chain of record `sequence`, from the records read back.
  static Sha256Digest here_chain_at(bus::StoreClient& c, uint64_t sequence) {
    auto page = c.read_range(ReadRangeRequest{1, sequence, 0});
    EXPECT_TRUE(page);
    ChainVerifier v;
    for (size_t i = 0; page && i < page->records.size(); ++i) EXPECT_TRUE(v.check(i + 1, page->records[i]));
    return v.chain();
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
  bool with_samples_ = false;
  std::unique_ptr<SampleStore> samples_;
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

// `wpm log verify` online: the store checks its own log in parts, each
// chained to the one before by the client; the outcome equals a check of the
// records the client reads itself.
TEST_F(ServerTest, TheStoreChecksItsOwnLogInPartsChainedByTheClient) {
  ServerOptions options;
  options.verify_events_max = 7;  // parts smaller than the log
  start(options);
  auto c = client();
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(c->append(one(fmt::format("k{}", i))));
  ChainVerifier here;
  auto page = c->read_range(ReadRangeRequest{1, 0, 0});
  ASSERT_TRUE(page);
  for (size_t i = 0; i < page->records.size(); ++i) ASSERT_TRUE(here.check(i + 1, page->records[i]));

  VerifyRequest part{1, 0, {}, 0};
  int parts = 0;
  uint64_t checked = 0;
  Sha256Digest chain{};
  while (part.from <= 25 && parts < 10) {
    auto r = c->verify(part);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->problem, "");
    EXPECT_LE(r->checked, 7u);
    EXPECT_EQ(r->head, 25u);
    checked += r->checked;
    chain = r->chain;
    part.from = r->next;
    part.previous_chain = r->chain;
    ++parts;
  }
  EXPECT_EQ(parts, 4);
  EXPECT_EQ(checked, 25u);
  EXPECT_EQ(chain, here.chain());

  // A part chained to the wrong previous record fails at its first sequence.
  auto wrong = c->verify(VerifyRequest{8, 0, sha256("not the chain"), 0});
  ASSERT_TRUE(wrong) << wrong.error().message;
  EXPECT_EQ(wrong->checked, 0u);
  EXPECT_TRUE(wrong->end);
  EXPECT_NE(wrong->problem.find("sequence 8: hash chain broken"), std::string::npos) << wrong->problem;

  // A damaged record is named; what came before it counts as checked.
  auto record = c->read_range(ReadRangeRequest{12, 12, 1});
  ASSERT_TRUE(record);
  std::string damaged = record->records.at(0);
  damaged.back() ^= 0x5a;
  ASSERT_TRUE(store_->overwrite_record_for_test(12, damaged));
  auto broken = c->verify(VerifyRequest{8, 0, here_chain_at(*c, 7), 0});
  ASSERT_TRUE(broken) << broken.error().message;
  EXPECT_EQ(broken->checked, 4u);
  EXPECT_NE(broken->problem.find("sequence 12:"), std::string::npos) << broken->problem;
  EXPECT_EQ(broken->next, 12u);
  EXPECT_EQ(metrics_.request(RequestKind::kVerify, true).Value(), parts + 2.0);
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

TEST_F(ServerTest, SamplesAreWrittenReadAndPublishedOutsideTheLog) {
  with_samples_ = true;
  start(ServerOptions{});
  zmq::socket_t sub(context_, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "metrics.");
  sub.connect("inproc://server-test-publish");
  metrics::HostSample sample{"node1", 0, {}, {{"web", {}}}};
  sample.host.set(metrics::Metric::kCpu, 42.5);
  sample.wpars[0].values.set(metrics::Metric::kProcesses, 3);
  auto inventory = client(5000, "service:inventory");
  // The subscription reaches the server in its own time: write until one arrives.
  std::optional<metrics::HostSample> published;
  for (int i = 0; i < 100 && !published; ++i) {
    ASSERT_TRUE(inventory->write_samples(sample));
    zmq::pollitem_t item{sub.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(50)) <= 0) continue;
    zmq::message_t topic, body;
    ASSERT_TRUE(sub.recv(topic));
    ASSERT_TRUE(sub.recv(body));
    EXPECT_EQ(topic.to_string(), "metrics.node1");
    auto decoded = decode_host_sample(std::string_view(static_cast<const char*>(body.data()), body.size()));
    ASSERT_TRUE(decoded) << decoded.error().message;
    published = *decoded;
  }
  ASSERT_TRUE(published) << "no sample published on metrics.node1";
  EXPECT_EQ(published->host.get(metrics::Metric::kCpu), 42.5);
  EXPECT_GT(published->time_s, 1'700'000'000) << "time 0 is the store's now";
  EXPECT_EQ(store_->head(), 0u) << "samples are not log events";

  int64_t now = published->time_s;
  auto host = inventory->read_samples(ReadSamplesRequest{false, "node1", now - 60, now + 60, false});
  ASSERT_TRUE(host) << host.error().message;
  ASSERT_FALSE(host->times_s.empty());
  EXPECT_EQ(host->column(static_cast<uint8_t>(metrics::Metric::kCpu))->values.back(), 4250);
  auto web = client()->read_samples(ReadSamplesRequest{true, "web", now - 60, now + 60, true});
  ASSERT_TRUE(web) << web.error().message;
  EXPECT_EQ(web->systems.front(), "node1");
  EXPECT_NE(web->column(series::aggregate_tag(metrics::Metric::kProcesses, series::Aggregate::kMax)), nullptr);

  // Only the agent channel's service (and the administrator) write samples.
  auto other = client(5000, "service:compatibility")->write_samples(sample);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, ErrorCode::kPermissionDenied);
  auto nameless = inventory->write_samples(metrics::HostSample{});
  ASSERT_FALSE(nameless);
  EXPECT_EQ(nameless.error().code, ErrorCode::kInvalidRequest);
}

}  // namespace
}  // namespace wpm::eventstore
