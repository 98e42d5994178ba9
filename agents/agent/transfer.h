#pragma once
// State-file transfer between two agents, for relocation (DESIGN.md §5,
// docs/relocation.md). The departure agent checkpoints a WPAR into its state
// root (DATA/state/<wpar>/<state id>); the arrival agent pulls that state
// file over the departure's agent port (9510, CURVE) into the same path
// under its own state root, in parts of at most kStateChunkBytes with a
// bounded window in flight, checks it against the manifest's SHA-256 sums,
// and only then makes it visible (a rename). A restore reads it there.
//
// Who may pull: the manager hands the departure agent the arrival agent's
// public key with the checkpoint (Operation.peerKey); that key is admitted
// on the agent port for that one state file, for kGrantLifetime, and for
// nothing else. The grants are rebuilt from the operation journal when the
// agent restarts.
//
// Thread safety: StateGrants is synchronised; the rest are plain functions.

#include <chrono>
#include <cstdint>
#include <expected>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agents/agent/local_commands.h"
#include "agents/agent/operations.h"
#include "schemas/agent_protocol.h"

namespace wpm::agent {

// How long a peer may pull a state file after its checkpoint was asked for.
inline constexpr int64_t kGrantLifetimeNs = 30LL * 60 * 1'000'000'000;
// Parts asked for at once by the receiving side.
inline constexpr int kTransferWindow = 8;
// No part for this long: the transfer is broken.
inline constexpr std::chrono::seconds kTransferStall{15};

struct StateGrant {
  std::string wpar;
  std::string state_id;
  int64_t expires_ns = 0;
  bool operator==(const StateGrant&) const = default;
};

class StateGrants {
 public:
  void allow(const std::string& key, StateGrant grant);
  // Whether `key` holds any grant now (the ZAP handler's question).
  bool admits(const std::string& key, int64_t now_ns) const;
  // Whether `key` may read state file `state_id` of `wpar` now.
  bool covers(const std::string& key, const std::string& wpar, const std::string& state_id, int64_t now_ns) const;
  // Drops every grant for `wpar` (it was removed or moved on).
  void revoke_wpar(const std::string& wpar);
  // The grants the journal's finished pause operations hold (after a restart).
  void rebuild(const std::vector<OperationRecord>& records, int64_t now_ns);

 private:
  mutable std::mutex mutex_;
  std::multimap<std::string, StateGrant> grants_;  // by key
};

// Whether `path` is a plain relative path inside a state file (no "..", no
// absolute path, no empty or "." components). Pure.
bool safe_relative_path(const std::string& path);

// The departure's answer to a FetchState: the listing (empty path) or the
// part asked for, read from `state_root`/<wpar>/<state id>; the error says
// what was wrong.
std::expected<agentproto::StateData, std::string> serve_state(const std::string& state_root,
                                                               const agentproto::FetchState& request);

struct ReceiveRequest {
  std::string endpoint;    // the departure agent's port, tcp://host:port
  std::string server_key;  // its public key, Z85
  std::string wpar;
  std::string state_id;
  std::string dest_dir;    // where the state file goes (state root/<wpar>/<state id>)
};

// `wpm-agent receivestate`: pulls a state file from another agent into
// `dest_dir` and verifies it; exit 0, 25 (it does not match its manifest),
// 14 (a file missing), 1 (the transfer failed: the message says why).
// Receiving again a state file already received and whole does nothing.
int receive_state(const AgentPaths& paths, const ReceiveRequest& request);

}  // namespace wpm::agent
