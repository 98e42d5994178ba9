#pragma once
// The event store's network face (DESIGN.md §3): a ROUTER socket for requests
// (append, read, stats, verify) and an XPUB socket publishing every acknowledged event
// in order. One thread runs the loop and is the store's sequencer: appends that
// arrive while a batch is being made durable queue in the socket and form the
// next batch (group commit). Replies and publications go out only after the
// batch is durable. Reads are handed, undecoded beyond their kind, to reader
// threads over inproc (a bounded queue) and their replies come back to the
// loop to be sent: the sequencer never waits on a read. A read handed over
// after an append's reply sees that append (the loop writes the stream index
// before it takes the next request). Malformed frames are counted, logged
// (rate-limited) and answered with an error; they never stop the loop.
//
// Thread safety: construct and bind on one thread, then run on one thread (the
// same or another started after bind: thread creation orders the sockets'
// use); nothing else touches it while it runs.

#include <spdlog/logger.h>

#include <array>
#include <functional>
#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "bus/curve.h"
#include "eventstore/access.h"
#include "eventstore/metrics.h"
#include "eventstore/samples.h"
#include "eventstore/store.h"
#include "schemas/error.h"

namespace wpm::eventstore {

// The ZAP domain of the store's CURVE endpoints.
inline constexpr const char* kStoreZapDomain = "store";

struct ServerOptions {
  // Request endpoint; port 0 picks a free port. CURVE (see `keys`).
  // Default: tcp://127.0.0.1:9515.
  std::string request_endpoint = "tcp://127.0.0.1:9515";
  // Publication endpoint, CURVE as well. Default: tcp://127.0.0.1:9516.
  std::string publish_endpoint = "tcp://127.0.0.1:9516";
  // In-process endpoints for the services inside wpmd (no handshake: only
  // this process can reach them). Empty: none.
  // Defaults: inproc://wpm-store and inproc://wpm-store-publish.
  std::string local_request_endpoint = "inproc://wpm-store";
  std::string local_publish_endpoint = "inproc://wpm-store-publish";
  // The store's CURVE key pair. Every tcp:// and ipc:// endpoint is a CURVE
  // server with it, in ZAP domain kStoreZapDomain, whose handler (made by
  // main() for the context) admits only listed client keys. Required.
  bus::CurveKeyPair keys;
  // Send high-water mark per subscriber, in messages; a subscriber further
  // behind loses publications (and catches up by reading). Default: 100000.
  int publish_hwm = 100'000;
  // Requests taken into one group commit. Default: 4096.
  size_t batch_requests_max = 4096;
  // Request bytes taken into one group commit (the rest waits in the socket).
  // Default: 64 MiB.
  size_t batch_bytes_max = 64u << 20;
  // Replies queued per peer that does not read them, before ZeroMQ drops
  // them (the peer's own deadline then retries). Default: 64.
  int reply_hwm = 64;
  // Threads that serve reads (read_range, read_stream, stats), so that a
  // slow reader never delays an acknowledgement. Default: 1.
  int reader_threads = 1;
  // Reads waiting for a reader; past it a read is answered `unavailable`
  // (retry later). Default: 1024.
  int reader_queue = 1024;
  // Records one VerifyRequest checks at most (a reader is busy with it for
  // about a quarter of a second per 262,144 records). Default: 262144.
  uint64_t verify_events_max = 262'144;
  // Where `backup` requests with no directory of their own write (made,
  // mode 0700). Default: none (such a request is refused).
  std::string backups_dir;
  // The version a backup's manifest names (wpmd's).
  std::string version;
  // Tests only: called by a reader before it serves each read. Default: none.
  std::function<void()> before_read_for_test;
};

class StoreServer {
 public:
  // `access` decides every append's permission and actor; it outlives the server.
  StoreServer(Store& store, zmq::context_t& context, ServerOptions options, const AppendAccess& access,
              StoreMetrics& metrics, std::shared_ptr<spdlog::logger> log);
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  // Binds both endpoints; the bound addresses are then available.
  [[nodiscard]] Result<void> bind();
  const std::string& request_endpoint() const { return bound_request_; }
  const std::string& publish_endpoint() const { return bound_publish_; }

  // Serves metric samples too (writeSamples, readSamples) from `samples`,
  // and publishes every sample written there (by anyone) on
  // "metrics.<system>". Call before run(); `samples` outlives the server.
  void serve_samples(SampleStore& samples);

  // Serves until `stop_fd` becomes readable (a signalfd); the batch in flight
  // is finished and answered first.
  void run(int stop_fd);

 private:
  struct PendingAppend;
  void serve_requests(std::vector<PendingAppend>& pending);
  void commit(std::vector<PendingAppend>& pending);
  void read_subscriptions();
  void reply(const zmq::message_t& identity, const Reply& reply);
  void publish(const std::vector<Committed>& committed);
  void malformed(const std::string& why);
  // Hands a read to the readers; false when their queue is full.
  bool hand_to_readers(zmq::message_t& identity, zmq::message_t& request);
  void forward_read_replies();
  void serve_reads(int index);
  // The identity a request came with (ZAP user id or local routing id); empty: none.
  static std::string identity_of(const zmq::message_t& routing_id, zmq::message_t& body);
  // Stamps the actors of `append` as `identity` may write it, or says why not.
  Result<void> authorize(const std::string& identity, AppendRequest& append) const;

  Store& store_;
  ServerOptions options_;
  const AppendAccess& access_;
  StoreMetrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t& context_;
  zmq::socket_t router_;
  zmq::socket_t xpub_;
  zmq::socket_t to_readers_;    // PUSH: [identity][request] to the reader threads
  zmq::socket_t from_readers_;  // PULL: [identity][reply] back to the loop
  std::string readers_endpoint_;
  std::string replies_endpoint_;
  std::atomic<bool> readers_stop_{false};
  std::atomic<int> readers_ready_{0};
  std::string bound_request_;
  std::string bound_publish_;
  // Rate limit for malformed-frame log lines.
  uint64_t subscriptions_ = 0;  // live subscriptions on the XPUB socket
  std::array<std::string, kEventTypeMax + 1> topics_;  // per event type
  int64_t malformed_window_start_s_ = 0;
  uint64_t malformed_suppressed_ = 0;
  // Metric samples: the store that serves them, and those written but not
  // yet published (filled on any thread, drained by the loop).
  SampleStore* samples_ = nullptr;
  std::atomic<bool> sample_subscribers_{false};  // a copy of subscriptions_ > 0 for the writers
  std::mutex sample_queue_mutex_;
  std::deque<std::string> sample_queue_;  // [system, encoded HostSample] pairs, flattened
  int sample_fd_ = -1;                     // eventfd: the queue gained something
  void publish_samples();
  Result<ReplyBody> serve_samples_request(const RequestBody& body);
  // Backups (admin only): one at a time, on their own thread, which sends
  // its reply to the loop as the readers do.
  void start_backup(zmq::message_t& identity, uint64_t request_id, const BackupRequest& request);
  std::thread backup_thread_;
  std::atomic<bool> backup_running_{false};
};

// Identities that may write metric samples through the store's endpoint.
bool may_write_samples(const std::string& identity);

}  // namespace wpm::eventstore
