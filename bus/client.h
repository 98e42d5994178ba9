#pragma once
// Request/reply client of the event store: one DEALER socket, a deadline per
// attempt, bounded retries (the Lazy Pirate pattern: on a timeout the socket is
// closed and a new one sends again). Only requests that are safe to repeat are
// retried: reads, stats, and appends that carry an idempotency key.
// Thread safety: one thread at a time per client (handing it to another
// thread needs a happens-before, e.g. a future's result or a mutex).

#include <memory>
#include <string>
#include <zmq.hpp>

#include "bus/constants.h"
#include "bus/curve.h"
#include "schemas/error.h"
#include "schemas/protocol.h"

namespace wpm::bus {

// How a client proves who it is to the store (DESIGN.md §8): CURVE with a
// listed key over tcp:// and ipc://, or, inside wpmd, the identity it acts as
// on the inproc endpoint.
struct StoreCredentials {
  // This client's key pair and the store's public key (Z85). Empty: none.
  CurveKeyPair client_keys;
  std::string store_public_key;
  // inproc:// only: the identity declared in the routing id, e.g.
  // "service:inventory". Empty: none.
  std::string local_identity;
};

struct ClientOptions {
  // Deadline of one attempt. Default: 5000 ms.
  int timeout_ms = kRequestTimeoutMsDefault;
  // Attempts for a repeatable request (1 = no retry). Default: 3.
  int attempts = kRequestAttemptsDefault;
  // Default: none (the store then refuses every request).
  StoreCredentials credentials;
};

// Applies `credentials` to a socket that connects to the store (DEALER or SUB).
void apply_credentials(zmq::socket_t& socket, const StoreCredentials& credentials);

class StoreClient {
 public:
  StoreClient(zmq::context_t& context, std::string endpoint, ClientOptions options = {});

  Result<AppendResult> append(const AppendRequest& request);
  Result<ReadReply> read_range(const ReadRangeRequest& request);
  Result<ReadReply> read_stream(const ReadStreamRequest& request);
  Result<StatsReply> stats();
  // The store checks a range of its own log and answers with the outcome.
  Result<VerifyReply> verify(const VerifyRequest& request);
  // Metric samples (not log events): a write is not repeated on a timeout.
  Result<void> write_samples(const metrics::HostSample& sample);
  Result<metrics::History> read_samples(const ReadSamplesRequest& request);
  // An online backup (admin only); never repeated (give the client a long
  // timeout: the store answers when the backup is made).
  Result<BackupReply> backup(const BackupRequest& request);

  // Sends raw bytes (tests of malformed input); returns the raw reply frame.
  Result<std::string> call_raw(const std::string& frame);

  const std::string& endpoint() const { return endpoint_; }

 private:
  enum class Repeat { kSafe, kNever };
  Result<Reply> call(RequestBody body, Repeat repeat);
  // Sends `encoded`, the encoded request `request_id`, and waits for its reply.
  Result<Reply> exchange(uint64_t request_id, std::string encoded, Repeat repeat);
  void reconnect();

  zmq::context_t& context_;
  std::string endpoint_;
  ClientOptions options_;
  std::unique_ptr<zmq::socket_t> socket_;
  uint64_t next_request_id_;
};

}  // namespace wpm::bus
