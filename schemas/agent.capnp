@0xc4a1d2e3f5061728;
# The agent protocol (DESIGN.md §3, §8). Every message is one ZeroMQ frame
# holding one unpacked Cap'n Proto message (bus/frame.h); see schemas/README.md
# before changing anything here.
#
# Endpoints:
# - the manager's public port (9513, no encryption): getManagerKey only.
#   Nothing secret travels there;
# - the manager's agent channel (9514, CURVE with the manager's key): register
#   (the registration password is proven, never sent: Register.proof; and the
#   proof goes only to the pinned key), and, for registered keys, started,
#   heartbeat, profile, unregister;
# - the agent's own port (9510, CURVE with the agent's key, only the pinned
#   manager key admitted): AgentCommand from the manager.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("wpm::schema");

using Events = import "events.capnp";

struct ManagerRequest {
  requestId @0 :UInt64;       # echoed in the reply
  union {
    unspecified @1 :Void;
    getManagerKey @2 :Void;
    register @3 :Register;
    started @4 :Started;
    heartbeat @5 :Heartbeat;
    unregister @6 :Void;
    profile @7 :Events.SystemProfile;  # the profile changed since it was last sent
    metrics @9 :MetricsReport;  # every metrics interval (not a log event: DESIGN.md §2)
  }
  protocolVersion @8 :UInt16;  # the agent's (schemas/error.h); 0: from before it existed
}

# proof = HMAC-SHA256(K, "wpm-register-v1" 0 managerKey 0 publicKey 0 hostname)
# where K = scrypt(password, ManagerKey.passwordKdf). It authorises exactly
# this public key with this manager, so a replayed proof gains nothing.
struct Register {
  proof @0 :Data;
  hostname @1 :Text;
  agentPort @2 :UInt16;
  profile @3 :Events.SystemProfile;
  publicKey @4 :Text;         # the agent's CURVE public key, Z85
  token @5 :Text;             # a single-use join token (wpm system token create) in place of the proof; over CURVE only
}

struct Started {
  agentVersion @0 :Text;
  profile @1 :Events.SystemProfile;
  wpars @2 :UInt32;
  agentPort @3 :UInt16;      # the port the agent listens on now (0: not said)
}

struct Heartbeat {
  sentNs @0 :Int64;
  wpars @1 :UInt32;
  wparsActive @2 :UInt32;
  load1 @3 :Float32;          # the host's 1-minute load average (/proc/loadavg)
  cpus @4 :UInt16;            # its online CPUs; load1 / cpus ranks relocation targets
  agentPort @5 :UInt16;       # the port the agent listens on (a manager started since Started learns it; 0: not said)
}

struct ManagerReply {
  requestId @0 :UInt64;
  union {
    unspecified @1 :Void;
    managerKey @2 :ManagerKey;
    registered @3 :Registered;
    ack @4 :Void;
    error @5 :ProtocolError;
  }
  protocolVersion @6 :UInt16;  # the manager's
  # On the agent channel's acks: how often the agent reports metrics (the
  # setting metrics.interval). 0: not said, keep the current one.
  metricsIntervalMs @7 :UInt32;
}

# One entity's metrics over the last interval. `present` has bit n set for
# each metric collected, numbered as stored (eventstore/series.h): 1 cpu,
# 2 memory, 3 load, 4 processes, 5 threads, 6 page faults.
struct MetricSet {
  present @0 :UInt16;
  cpuPercent @1 :Float32;      # of the host's CPU capacity (all its CPUs)
  memoryPercent @2 :Float32;   # of the host's memory
  load1 @3 :Float32;           # host: 1-minute load average
  processes @4 :UInt32;
  threads @5 :UInt32;
  pageFaultsPerS @6 :Float32;
}

struct WparMetrics {
  name @0 :Text;
  metrics @1 :MetricSet;
}

struct MetricsReport {
  intervalMs @0 :UInt32;       # the span the CPU share and the rates cover
  host @1 :MetricSet;
  wpars @2 :List(WparMetrics); # the active WPARs
  hostScope @3 :Text;          # "host", or "wpars": host figures are the sum of its WPARs' (labs)
  metricsPort @4 :UInt16;      # the port of the agent's own /metrics (wpmd's Prometheus discovery; 0: none)
}

struct ManagerKey {
  publicKey @0 :Text;         # CURVE public key, Z85 (40 characters)
  fingerprint @1 :Text;       # "sha256:" + hex SHA-256 of the raw 32-byte key
  agentChannelPort @2 :UInt16;
  version @3 :Text;           # wpmd's version
  passwordKdf @4 :Text;       # "scrypt$N$r$p$<salt hex>", empty: registration closed
}

struct Registered {
  systemId @0 :Text;
  alreadyRegistered @1 :Bool; # the key was registered before; nothing new recorded
}

enum ProtocolErrorCode {
  none @0;
  invalidRequest @1;          # malformed, over a limit, or not allowed here
  wrongPassword @2;
  registrationClosed @3;      # the manager has no registration password set
  notRegistered @4;           # this key is not registered: run wpm-agent configure
  rateLimited @5;             # too many refused attempts from this address
  unavailable @6;             # the manager cannot record it now; retry
  internal @7;
  notFound @8;
}

struct ProtocolError {
  code @0 :ProtocolErrorCode;
  message @1 :Text;
}

# Commands from the manager to an agent (its port, 9510).
struct AgentCommand {
  requestId @0 :UInt64;
  union {
    unspecified @1 :Void;
    ping @2 :Void;
    listWpars @3 :Void;
    refreshProfile @5 :Void;   # collect the profile again and send it on the agent channel now (wpm system update-profile)
    operation @6 :Operation;   # run one lifecycle operation, or report on it (the same id again)
    fetchState @7 :FetchState; # from another agent: part of a state file the manager allowed it to take
  }
  protocolVersion @4 :UInt16;  # the manager's
}

struct AgentReply {
  requestId @0 :UInt64;
  union {
    unspecified @1 :Void;
    pong @2 :Pong;
    wpars @3 :List(WparSummary);
    error @4 :ProtocolError;
    operation @6 :OperationResult;
    stateData @7 :StateData;
  }
  protocolVersion @5 :UInt16;  # the agent's
}

struct Pong {
  systemId @0 :Text;
  agentVersion @1 :Text;
}

struct WparSummary {
  name @0 :Text;
  type @1 :Text;              # "application" or "system"
  state @2 :Text;             # the state letter of lswpar: D A P F L T B
  epoch @3 :UInt64;           # the highest placement epoch a command for it carried here (0: none)
}

# One lifecycle operation of the executor (docs/executor.md). The agent
# records the id durably before it acts; the same id and attempt again is
# answered with the first result (or "running"), also after a restart, and
# never runs twice. A later attempt of an operation whose exit code says
# "run the command again" (the seed's 3, 5, 6, 17) runs it again.
struct Operation {
  operationId @0 :Text;
  attempt @1 :UInt32;         # 1 for the first
  wpar @2 :Text;
  epoch @3 :UInt64;           # the WPAR's placement epoch; an older one than the agent holds is refused
  action @4 :Text;            # deploy start stop forceStop pause resume freeze kill remove receive restore modify
  definition @5 :Text;        # deploy: the WPAR's definition, a JSON object
  preserveFs @6 :Bool;        # remove: keep a system WPAR's file systems
  startAfter @7 :Bool;        # deploy: start a system WPAR once made
  deadlineNs @8 :Int64;       # Unix ns after which the manager no longer waits: a new operation is refused then (0: none)
  # Relocation (docs/relocation.md): the other agent of a state-file
  # transfer. On pause: the arrival agent's key, allowed to fetch this
  # operation's state file. On receive: the departure agent's endpoint and
  # key, and the state file's id (the pause operation's id).
  peerEndpoint @9 :Text;      # tcp://address:port
  peerKey @10 :Text;          # CURVE public key, Z85
  stateId @11 :Text;          # receive, restore: the operation id that wrote the state file
  force @12 :Bool;            # remove: end whatever runs first (a paused or frozen WPAR too)
  # pause, restore, remove: the state files' directory every agent mounts
  # at this path (the manager's statefile.shared-root); "" the agent's own
  # (DATA/state). An absolute path without "..".
  stateRoot @13 :Text;
  # While the operation runs, the agent may hold its answer up to this many
  # milliseconds and answers as soon as the operation ends (a long poll; the
  # manager asks again at once after a held answer). 0: answer at once.
  waitMs @14 :UInt32;
}

# Agent to agent, for relocation: a state file is read in bounded parts.
# An empty path lists the state file's files (paths relative to it, sizes).
struct FetchState {
  wpar @0 :Text;
  stateId @1 :Text;
  path @2 :Text;
  offset @3 :UInt64;
  length @4 :UInt32;          # at most kStateChunkBytes
}
struct StateFile {
  path @0 :Text;
  size @1 :UInt64;
}
struct StateData {
  files @0 :List(StateFile);  # the listing (empty path asked)
  data @1 :Data;              # the part asked for
  size @2 :UInt64;            # the file's whole size
}

struct OperationResult {
  operationId @0 :Text;
  attempt @1 :UInt32;
  running @2 :Bool;           # still running: ask again with the same id
  exitCode @3 :Int32;         # the command's exit code (the seed's where it defines one)
  output @4 :Text;            # its standard output, the last 16 KiB
  error @5 :Text;             # its error message, when it failed
  wparState @6 :Text;         # the WPAR's state letter afterwards ("" when it no longer exists)
  refused @7 :Bool;           # not run at all (stale epoch, not placed here, busy): error says why
}
