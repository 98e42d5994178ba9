// The event store through its real endpoints: wpmd as a child process, the
// test as a separate client process on loopback.

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "bus/client.h"
#include "bus/frame.h"
#include "bus/subscriber.h"
#include "schemas/codec.h"
#include "schemas/store.capnp.h"
#include "tests/integration/helpers.h"
#include "services/kernel/keyring.h"
#include "tests/support/process.h"

namespace wpm::testing {
namespace {

using namespace std::chrono_literals;

class StoreEndpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    wpmd_ = std::make_unique<Wpmd>(Wpmd::Options{dir_ / "data", extra_args()});
    ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
    client_ = std::make_unique<bus::StoreClient>(ctx_, wpmd_->request(), wpmd_->client_options(5000, 2));
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "--- wpmd log ---\n%s\n", wpmd_->log().c_str());
  }
  virtual std::vector<std::string> extra_args() { return {}; }

  TempDir dir_;
  zmq::context_t ctx_{1};
  std::unique_ptr<Wpmd> wpmd_;
  std::unique_ptr<bus::StoreClient> client_;
};

TEST_F(StoreEndpoint, ExpectedVersionConflictWritesNothing) {
  auto first = synthetic_request("", "test/web1", 2);
  first.expectations = {{"test/web1", ExpectKind::kNoStream, 0}};
  ASSERT_TRUE(client_->append(first).has_value());

  auto stale = synthetic_request("", "test/web1", 1);
  stale.expectations = {{"test/web1", ExpectKind::kExact, 1}};
  auto r = client_->append(stale);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kWrongExpectedVersion);
  EXPECT_EQ(r.error().stream_id, "test/web1");
  EXPECT_EQ(r.error().expected_version, 1u);
  EXPECT_EQ(r.error().actual_version, 2u);
  EXPECT_NE(r.error().message.find("is at version 2"), std::string::npos) << r.error().message;

  auto again = synthetic_request("", "test/web1", 1);
  again.expectations = {{"test/web1", ExpectKind::kNoStream, 0}};
  EXPECT_FALSE(client_->append(again).has_value());

  auto stats = client_->stats();
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->head, 2u) << "a refused append must write nothing";
  auto stream = client_->read_stream(ReadStreamRequest{"test/web1", 1, 0});
  ASSERT_TRUE(stream.has_value());
  EXPECT_EQ(stream->records.size(), 2u);

  auto right = synthetic_request("", "test/web1", 1);
  right.expectations = {{"test/web1", ExpectKind::kExact, 2}};
  auto ok = client_->append(right);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_EQ(ok->first_sequence, 3u);
}

TEST_F(StoreEndpoint, IdempotentResendReturnsOriginalSequences) {
  ASSERT_TRUE(client_->append(synthetic_request("k0", "synthetic/a", 3)).has_value());
  auto req = synthetic_request("k1", "synthetic/a", 5, 3);
  auto first = client_->append(req);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->first_sequence, 4u);
  EXPECT_FALSE(first->duplicate);

  auto again = client_->append(req);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->first_sequence, 4u);
  EXPECT_EQ(again->count, 5u);
  EXPECT_EQ(client_->stats()->head, 8u) << "a re-send writes nothing";

  // Also after a restart: the keys are durable.
  ASSERT_EQ(wpmd_->stop(), 0);
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  bus::StoreClient client(ctx_, wpmd_->request(), wpmd_->client_options());
  auto after = client.append(req);
  ASSERT_TRUE(after.has_value()) << after.error().message;
  EXPECT_TRUE(after->duplicate);
  EXPECT_EQ(after->first_sequence, 4u);
  EXPECT_EQ(client.stats()->head, 8u);
}

TEST_F(StoreEndpoint, KillNineLosesNoIndexOrKey) {
  // The stream index and idempotency keys are derived data written without
  // the WAL after each acknowledgement; after kill -9 they are rebuilt.
  auto req = synthetic_request("k9", "test/db1", 4);
  req.expectations = {{"test/db1", ExpectKind::kNoStream, 0}};
  ASSERT_TRUE(client_->append(req).has_value());
  ASSERT_TRUE(client_->append(synthetic_request("other", "test/db2", 3)).has_value());
  wpmd_->kill(SIGKILL);
  ASSERT_TRUE(wpmd_->start()) << wpmd_->log();
  EXPECT_NE(wpmd_->log().find("recovery_rebuilt_derived from=1 to=7"), std::string::npos)
      << wpmd_->log();
  bus::StoreClient client(ctx_, wpmd_->request(), wpmd_->client_options());
  auto again = client.append(req);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->first_sequence, 1u);
  auto stream = client.read_stream(ReadStreamRequest{"test/db1", 1, 0});
  ASSERT_TRUE(stream.has_value());
  EXPECT_EQ(stream->records.size(), 4u);
  auto next = synthetic_request("", "test/db1", 1);
  next.expectations = {{"test/db1", ExpectKind::kExact, 4}};
  EXPECT_TRUE(client.append(next).has_value()) << "the stream version survived";
  auto stats = client.stats();
  ASSERT_TRUE(stats.has_value());
  ASSERT_EQ(stats->per_type.size(), 1u);
  EXPECT_EQ(stats->per_type[0].count, 8u);
}

TEST_F(StoreEndpoint, SameKeyWithAnotherPayloadIsRefused) {
  ASSERT_TRUE(client_->append(synthetic_request("key", "synthetic/a", 2)).has_value());
  auto other = synthetic_request("key", "synthetic/a", 2, 100);
  auto r = client_->append(other);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::kIdempotencyKeyReused);
  EXPECT_NE(r.error().message.find("'key'"), std::string::npos);
  EXPECT_EQ(client_->stats()->head, 2u);
}

TEST_F(StoreEndpoint, SecondWpmdOnTheSameDirectoryIsRefused) {
  Wpmd second(Wpmd::Options{wpmd_->data_dir(), {}});
  EXPECT_FALSE(second.start());
  ASSERT_TRUE(second.exit_code().has_value());
  EXPECT_EQ(*second.exit_code(), 1);
  EXPECT_NE(second.log().find("in use by another wpmd (pid " + std::to_string(wpmd_->pid())),
            std::string::npos)
      << second.log();
  EXPECT_TRUE(client_->stats().has_value()) << "the first keeps serving";
}

TEST_F(StoreEndpoint, MetricsShowTheAppendsMade) {
  ASSERT_TRUE(client_->append(synthetic_request("a", "synthetic/m", 100)).has_value());
  ASSERT_TRUE(client_->append(synthetic_request("b", "synthetic/m", 23)).has_value());
  std::string text = http_get(wpmd_->metrics());
  ASSERT_FALSE(text.empty()) << "no answer from " << wpmd_->metrics();
  EXPECT_EQ(metric_value(text, "wpm_store_appended_events_total"), 123.0) << text;
  EXPECT_EQ(metric_value(text, "wpm_store_head_sequence"), 123.0);
  EXPECT_EQ(metric_value(text, "wpm_store_batch_events_count"), 2.0);
  EXPECT_EQ(metric_value(text, "wpm_store_requests_total{kind=\"append\",result=\"ok\"}"), 2.0);
  EXPECT_GT(metric_value(text, "wpm_store_log_bytes").value_or(0), 123 * 40.0);
  EXPECT_TRUE(metric_value(text, "wpm_store_commit_seconds_count").has_value());
}

TEST_F(StoreEndpoint, MalformedFramesAreCountedAndTheStoreKeepsServing) {
  zmq::socket_t raw(ctx_, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  bus::apply_credentials(raw, wpmd_->client_options().credentials);
  raw.connect(wpmd_->request());
  // 1: bytes that are not a Cap'n Proto message; an error reply still comes back.
  raw.send(zmq::str_buffer("garbage!garbage!"), zmq::send_flags::none);
  zmq::pollitem_t items[] = {{raw.handle(), 0, ZMQ_POLLIN, 0}};
  ASSERT_EQ(zmq::poll(items, 1, 5000ms), 1);
  zmq::message_t reply_frame;
  ASSERT_TRUE(raw.recv(reply_frame));
  auto reply = decode_reply(bus::view(reply_frame));
  ASSERT_TRUE(reply.has_value());
  ASSERT_TRUE(std::holds_alternative<Error>(reply->body));
  EXPECT_EQ(std::get<Error>(reply->body).code, ErrorCode::kInvalidRequest);
  // 2: three frames where one is expected.
  raw.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
  raw.send(zmq::str_buffer("b"), zmq::send_flags::sndmore);
  raw.send(zmq::str_buffer("c"), zmq::send_flags::none);
  // 3: a well-formed message with an unknown enum value (event type 77).
  std::string patched;
  {
    capnp::MallocMessageBuilder m;
    auto req = m.initRoot<schema::Request>();
    req.setRequestId(42);
    auto ev = req.initAppend().initBatch().initEvents(1);
    ev[0].setType(static_cast<schema::EventType>(77));
    ev[0].setStreamId("synthetic/x");
    ev[0].initPayload().initSynthetic();
    auto words = capnp::messageToFlatArray(m);
    patched.assign(reinterpret_cast<const char*>(words.asBytes().begin()), words.asBytes().size());
  }
  auto r = client_->call_raw(patched);
  ASSERT_TRUE(r.has_value());
  auto unknown = decode_reply(*r);
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->request_id, 42u) << "the error reaches the caller waiting for it";
  ASSERT_TRUE(std::holds_alternative<Error>(unknown->body));
  EXPECT_NE(std::get<Error>(unknown->body).message.find("unknown event type value 77"),
            std::string::npos);
  // 4: an oversize frame: ZeroMQ drops the peer before allocating it.
  {
    zmq::socket_t big(ctx_, zmq::socket_type::dealer);
    big.set(zmq::sockopt::linger, 0);
    bus::apply_credentials(big, wpmd_->client_options().credentials);
    big.connect(wpmd_->request());
    std::string huge(bus::kFrameBytesMax + 1, 'x');
    big.send(zmq::buffer(huge), zmq::send_flags::none);
  }
  // The store keeps serving and counted what it refused.
  ASSERT_TRUE(client_->append(synthetic_request("", "synthetic/ok", 1)).has_value());
  EXPECT_EQ(client_->stats()->head, 1u);
  double malformed = 0;
  EXPECT_TRUE(wait_until(
      [&] {
        malformed = metric_value(http_get(wpmd_->metrics()),
                                 "wpm_bus_malformed_frames_total{endpoint=\"store\"}")
                        .value_or(0);
        return malformed >= 3;
      },
      5s));
  EXPECT_GE(malformed, 3.0);
  EXPECT_NE(wpmd_->log().find("malformed_frame"), std::string::npos);
}

class TinyHighWaterMark : public StoreEndpoint {
 protected:
  std::vector<std::string> extra_args() override { return {"--publish-hwm", "1"}; }
};

TEST_F(TinyHighWaterMark, SubscriberStillGetsEveryEventOnceInOrder) {
  constexpr uint64_t kEvents = 3000;
  std::vector<uint64_t> delivered;
  bus::SubscriberOptions o;
  o.store_endpoint = wpmd_->request();
  o.client = wpmd_->client_options();
  o.publish_endpoint = wpmd_->publish();
  o.receive_hwm = 1;
  o.idle_check_ms = 100;
  std::atomic<bool> stop{false};
  // A slow handler makes publications pile up behind the tiny high-water marks.
  bus::CatchUpSubscriber sub(ctx_, o, [&](const Event& e) {
    delivered.push_back(e.sequence);
    if (e.sequence % 50 == 0) std::this_thread::sleep_for(2ms);
  });
  auto deadline = std::chrono::steady_clock::now() + 60s;
  std::thread consumer([&] {
    auto r = sub.run([&] {
      return stop.load() || delivered.size() >= kEvents || std::chrono::steady_clock::now() > deadline;
    });
    EXPECT_TRUE(r.has_value()) << r.error().message;
  });
  zmq::context_t producer_ctx(1);
  bus::StoreClient producer(producer_ctx, wpmd_->request(), wpmd_->client_options());
  for (uint64_t i = 0; i < kEvents; i += 20) {
    auto r = producer.append(synthetic_request("p" + std::to_string(i), "synthetic/hwm", 20, i));
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  consumer.join();
  stop = true;
  ASSERT_EQ(delivered.size(), kEvents);
  for (uint64_t i = 0; i < kEvents; ++i) ASSERT_EQ(delivered[i], i + 1) << "at position " << i;
  EXPECT_GT(sub.stats().fetched_events, 0u) << "publications were dropped and read back";
}

TEST_F(StoreEndpoint, SigtermFinishesAndExitsZeroAndTheLogSurvives) {
  ASSERT_TRUE(client_->append(synthetic_request("s", "synthetic/t", 10)).has_value());
  EXPECT_EQ(wpmd_->stop(), 0);
  EXPECT_NE(wpmd_->log().find("wpmd_stopped head=10"), std::string::npos) << wpmd_->log();
  ASSERT_TRUE(wpmd_->start());
  bus::StoreClient client(ctx_, wpmd_->request(), wpmd_->client_options());
  EXPECT_EQ(client.stats()->head, 10u);
  // The store's own check, the records fetched and checked in wpm, and the
  // data directory read offline agree on the chain head.
  auto online = wpm(*wpmd_, {"log", "verify", "-o", "json"});
  ASSERT_EQ(online.exit_code, 0) << online.err;
  auto fetched = wpm(*wpmd_, {"log", "verify", "--fetch", "-o", "json"});
  ASSERT_EQ(fetched.exit_code, 0) << fetched.err;
  EXPECT_EQ(wpmd_->stop(), 0);
  auto offline = run({bin("wpm"), "log", "verify", "--data", wpmd_->data_dir(), "-o", "json"});
  ASSERT_EQ(offline.exit_code, 0) << offline.err;
  auto chain = nlohmann::json::parse(offline.out)["chain"];
  EXPECT_EQ(nlohmann::json::parse(online.out)["chain"], chain) << online.out;
  EXPECT_EQ(nlohmann::json::parse(fetched.out)["chain"], chain) << fetched.out;
  EXPECT_EQ(nlohmann::json::parse(online.out)["events"], 10);
  auto both = run({bin("wpm"), "log", "verify", "--fetch", "--data", wpmd_->data_dir()});
  EXPECT_EQ(both.exit_code, 2) << "--fetch and --data exclude each other";
}

TEST_F(StoreEndpoint, CliAppendWritesAcknowledgementsAndDumpShowsEveryField) {
  std::string acks = dir_ / "acks";
  auto r = wpm(*wpmd_, {"log", "append", "--synthetic", "25", "--batch", "10", "--ack-file", acks,
                        "--run", "r1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = read_acks(acks);
  ASSERT_EQ(lines.size(), 25u);
  EXPECT_EQ(lines[0].sequence, 1u);
  EXPECT_EQ(lines[0].key, "r1-0");
  EXPECT_EQ(lines[24].sequence, 25u);
  EXPECT_EQ(lines[24].key, "r1-2");

  auto dump = wpm(*wpmd_, {"log", "dump", "--from", "24", "-o", "json"});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  auto nl = dump.out.find('\n');
  ASSERT_NE(nl, std::string::npos);
  std::string first = dump.out.substr(0, nl);
  for (const char* field :
       {"\"sequence\":24", "\"eventId\"", "\"timestampNs\"", "\"type\":\"synthetic\"",
        "\"streamId\":\"synthetic/r1\"", "\"streamVersion\":24", "\"correlationId\"",
        "\"causationId\"", "\"actor\"", "\"idempotencyKey\":\"r1-2\"", "\"payload\""}) {
    EXPECT_NE(first.find(field), std::string::npos) << field << " missing in " << first;
  }
  EXPECT_EQ(std::count(dump.out.begin(), dump.out.end(), '\n'), 2) << "one object per line";

  auto stats = wpm(*wpmd_, {"log", "stats", "-o", "json"});
  ASSERT_EQ(stats.exit_code, 0);
  EXPECT_NE(stats.out.find("\"synthetic\": 25"), std::string::npos) << stats.out;

  auto tail = wpm(*wpmd_, {"log", "tail", "-n", "2"});
  ASSERT_EQ(tail.exit_code, 0);
  EXPECT_NE(tail.out.find("\n24 "), std::string::npos) << tail.out;
  EXPECT_NE(tail.out.find("\n25 "), std::string::npos) << tail.out;
  EXPECT_EQ(tail.out.find("\n23 "), std::string::npos) << tail.out;
}

TEST_F(StoreEndpoint, TailFollowPrintsNewEvents) {
  std::string out = dir_ / "follow.out";
  pid_t pid = spawn({bin("wpm"), "--data", wpmd_->data_dir(), "--store", wpmd_->request(), "log", "tail", "-f", "-o", "json"},
                    out, dir_ / "follow.err");
  ASSERT_TRUE(client_->append(synthetic_request("f", "synthetic/follow", 3)).has_value());
  EXPECT_TRUE(wait_until([&] { return read_file(out).find("\"sequence\":3") != std::string::npos; },
                         10s))
      << read_file(out) << read_file(dir_ / "follow.err");
  ::kill(pid, SIGINT);
  EXPECT_EQ(wait_exit(pid, 10s), 0) << "Ctrl-C ends a follow cleanly";
}

TEST(Cli, UsageErrorsAndUnreachableStoreHaveDocumentedExitCodes) {
  EXPECT_EQ(run({bin("wpm"), "--version"}).exit_code, 0);
  EXPECT_EQ(run({bin("wpm"), "log", "--help"}).exit_code, 0);
  EXPECT_EQ(run({bin("wpmd"), "--help"}).exit_code, 0);
  auto no_sub = run({bin("wpm")});
  EXPECT_EQ(no_sub.exit_code, 2);
  auto bogus = run({bin("wpm"), "log", "dump", "--bogus"});
  EXPECT_EQ(bogus.exit_code, 2);
  EXPECT_NE(bogus.err.find("--bogus"), std::string::npos) << bogus.err;
  EXPECT_EQ(run({bin("wpm"), "-o", "yaml", "log", "stats"}).exit_code, 2);
  EXPECT_EQ(run({bin("wpmd"), "--bogus"}).exit_code, 2);
  EXPECT_EQ(run({bin("wpmd"), "--log-level", "loud"}).exit_code, 2);
  // A malformed endpoint is a usage error (it used to abort on ZeroMQ's exception).
  auto bad_store = run({bin("wpm"), "--store", "request=tcp://127.0.0.1:9515", "log", "stats"});
  EXPECT_EQ(bad_store.exit_code, 2) << bad_store.err;
  EXPECT_NE(bad_store.err.find("expected tcp://HOST:PORT"), std::string::npos) << bad_store.err;
  EXPECT_EQ(run({bin("wpm"), "log", "tail", "--publish", "bogus"}).exit_code, 2);
  EXPECT_EQ(run({bin("wpm"), "log", "stats"}, std::chrono::seconds(60),
                {{"WPM_STORE", "tcp://*:9515"}}).exit_code, 2);
  EXPECT_EQ(run({bin("wpm"), "log", "--help"}, std::chrono::seconds(60),
                {{"WPM_STORE", "bogus"}}).exit_code, 0) << "help is not refused for a bad WPM_STORE";
  // An empty WPM_STORE is unset: the default endpoint is tried, no usage error
  // (whether a wpmd answers there does not matter here).
  auto empty_env = run({bin("wpm"), "--timeout", "200", "--attempts", "1", "log", "stats"},
                       std::chrono::seconds(60), {{"WPM_STORE", ""}});
  EXPECT_NE(empty_env.exit_code, 2) << empty_env.err;
  TempDir dir;
  // No wpmd data directory: no key to prove who we are; says where to look.
  auto no_keys = run({bin("wpm"), "--data", dir / "not-wpmd", "--store", "tcp://127.0.0.1:1", "log", "stats"});
  EXPECT_EQ(no_keys.exit_code, 1) << no_keys.err;
  EXPECT_NE(no_keys.err.find("WPM_DATA"), std::string::npos) << no_keys.err;
  // Nothing listens on port 1.
  ASSERT_TRUE(kernel::ensure_store_keys(dir / "keys-only"));
  auto down = run({bin("wpm"), "--data", dir / "keys-only", "--store", "tcp://127.0.0.1:1", "--timeout", "200",
                   "--attempts", "1", "log", "stats"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("is wpmd running"), std::string::npos) << down.err;
  auto missing = run({bin("wpm"), "log", "verify", "--data", dir / "nothing-here"});
  EXPECT_EQ(missing.exit_code, 3) << missing.err;
}

TEST_F(StoreEndpoint, UnknownStreamIsNotFound) {
  auto r = wpm(*wpmd_, {"log", "dump", "--stream", "wpar/nope"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("wpar/nope"), std::string::npos) << r.err;
}

TEST(WpmdConfig, ConfigurationFileSetsEndpointsAndRefusesUnknownKeys) {
  TempDir dir;
  std::string cfg = dir / "wpmd.toml";
  {
    std::ofstream f(cfg);
    f << "data = \"" << (dir / "data") << "\"\nlog_level = \"debug\"\n[store]\n"
      << "request_endpoint = \"tcp://127.0.0.1:0\"\npublish_endpoint = \"tcp://127.0.0.1:0\"\n"
      << "[metrics]\nlisten = \"127.0.0.1:0\"\n[gateway]\nendpoint = \"tcp://127.0.0.1:0\"\n"
      // Free ports for the agents too: a wpmd running on this machine holds the defaults.
      << "[agents]\npublic_endpoint = \"tcp://127.0.0.1:0\"\nchannel_endpoint = \"tcp://127.0.0.1:0\"\n";
  }
  pid_t pid = spawn({bin("wpmd"), "--config", cfg}, dir / "out", dir / "err");
  EXPECT_TRUE(wait_until([&] { return !read_file(dir / "data/endpoints").empty(); }, 20s))
      << read_file(dir / "err");
  auto kv = read_key_values(dir / "data/endpoints");
  EXPECT_TRUE(kv["request"].starts_with("tcp://127.0.0.1:")) << kv["request"];
  EXPECT_NE(kv["request"], "tcp://127.0.0.1:9515");
  EXPECT_TRUE(kv["gateway"].starts_with("tcp://127.0.0.1:")) << kv["gateway"];
  EXPECT_NE(kv["gateway"], "tcp://127.0.0.1:9520");
  ::kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit(pid, 20s), 0);
  EXPECT_NE(read_file(dir / "err").find("debug"), std::string::npos) << "log_level from the file";

  {
    std::ofstream f(cfg);
    f << "[store]\nrequest_endpont = \"tcp://127.0.0.1:0\"\n";
  }
  auto bad = run({bin("wpmd"), "--config", cfg});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("unknown key 'store.request_endpont'"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace wpm::testing
