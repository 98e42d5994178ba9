@0x819289d2022c7aae;
# The event store protocol (DESIGN.md §2, §3): requests on the store's ROUTER
# endpoint (9515), publications on its PUB endpoint (9516).
# Every message travels as one ZeroMQ frame holding one unpacked Cap'n Proto
# message (bus/frame.h). Publications are two frames: topic, then Publication.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("wpm::schema");

using Events = import "events.capnp";

# What an appender supplies for one event; the store fills in the rest.
struct EventDraft {
  type @0 :Events.EventType;
  streamId @1 :Text;
  correlationId @2 :Text;
  causationId @3 :Text;
  actor @4 :Text;
  payload @5 :Events.Payload;
}

enum ExpectKind {
  any @0;          # no check
  noStream @1;     # the stream must not exist yet
  exact @2;        # the stream's current version must equal `version`
  streamExists @3; # the stream must exist, any version
}

struct StreamExpectation {
  streamId @0 :Text;
  kind @1 :ExpectKind;
  version @2 :UInt64;
}

# The part of an append the idempotency key stands for: the same key with a
# batch that differs (in canonical form) is refused.
struct AppendBatch {
  expectations @0 :List(StreamExpectation);
  events @1 :List(EventDraft);
}

struct AppendRequest {
  idempotencyKey @0 :Text;   # empty: no idempotency
  batch @1 :AppendBatch;
}

struct AppendResult {
  firstSequence @0 :UInt64;
  count @1 :UInt32;
  duplicate @2 :Bool;        # the key was already committed; nothing was written
}

enum ErrorCode {
  none @0;
  invalidRequest @1;         # malformed or over a limit; fix the client
  wrongExpectedVersion @2;   # optimistic concurrency conflict; reload and retry
  idempotencyKeyReused @3;   # same key, different batch
  readOnly @4;               # the store stopped writing after a write error
  unavailable @5;            # shutting down or overloaded; retry later
  internal @6;
  permissionDenied @7;       # the authenticated identity may not do this (e.g. write that stream)
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;
  streamId @2 :Text;          # wrongExpectedVersion: the stream in conflict
  expectedVersion @3 :UInt64;
  actualVersion @4 :UInt64;
}

struct ReadRangeRequest {
  from @0 :UInt64;       # first sequence wanted (1 = start of the log)
  to @1 :UInt64;         # last sequence wanted; 0 = up to the head
  maxEvents @2 :UInt32;  # 0 = the store's page limit
}

struct ReadStreamRequest {
  streamId @0 :Text;
  fromVersion @1 :UInt64;
  maxEvents @2 :UInt32;
}

struct ReadReply {
  # Stored records, byte for byte (eventstore/record.h): checksum, chain hash
  # and the encoded Event, so a reader can verify what it got.
  records @0 :List(Data);
  head @1 :UInt64;       # highest acknowledged sequence when the page was read
  next @2 :UInt64;       # range: next sequence to ask for; stream: next version
  end @3 :Bool;          # nothing more in the asked range right now
}

struct TypeCount {
  type @0 :Events.EventType;
  count @1 :UInt64;
}

struct StatsReply {
  head @0 :UInt64;
  eventCount @1 :UInt64;
  logBytes @2 :UInt64;       # sum of stored record sizes
  diskBytes @3 :UInt64;      # files of the database on disk
  perType @4 :List(TypeCount);
  readOnly @5 :Bool;
  readOnlyReason @6 :Text;
  dataDir @7 :Text;
  publishEndpoint @8 :Text;  # where to subscribe for live events
  unknownEvents @9 :UInt64;  # events of types the store's binary does not know
}

# The store checks a range of its own log (checksums, gap-free sequences, the
# hash chain) and answers with the outcome only: `wpm log verify` online. A
# client checks a long log in parts, carrying the chain from one to the next.
struct VerifyRequest {
  from @0 :UInt64;           # first sequence to check (1 = start of the log)
  to @1 :UInt64;             # last sequence; 0 = up to the head
  previousChain @2 :Data;    # the chain of record from-1 (32 bytes; zeros, or empty, for from = 1)
  maxEvents @3 :UInt32;      # 0 = the store's limit per request
}

struct VerifyReply {
  checked @0 :UInt64;        # records checked and sound
  next @1 :UInt64;           # the sequence to ask for next
  chain @2 :Data;            # the chain of record next-1 (32 bytes)
  problem @3 :Text;          # empty: sound; else the first fault, naming its sequence
  head @4 :UInt64;           # highest acknowledged sequence when the check started
  end @5 :Bool;              # the asked range is checked (or a problem stopped it)
}

# Metric samples (DESIGN.md §2; schemas/metrics.h): not log events. They
# never pass the sequencer; readers serve them, and every sample written is
# published on the topic "metrics.<system>" as one HostSample message.
struct MetricValues {
  present @0 :UInt8;          # bit n: metric n (schemas/metrics.h)
  values @1 :List(Int64);     # fixed point, one per bit set, in metric order
}

struct WparSample {
  name @0 :Text;
  values @1 :MetricValues;
}

struct HostSample {
  system @0 :Text;
  timeS @1 :Int64;            # Unix seconds; 0 in a write: the store's now
  host @2 :MetricValues;
  wpars @3 :List(WparSample);
}

struct ReadSamplesRequest {
  wpar @0 :Bool;              # a WPAR's history (else a system's)
  name @1 :Text;
  fromS @2 :Int64;
  toS @3 :Int64;
  aggregates @4 :Bool;        # 5-minute min, mean, max (else raw samples)
}

struct SampleColumn {
  tag @0 :UInt8;              # a metric's number, or metric × 4 + 1 min, 2 mean, 3 max
  values @1 :List(Int64);     # fixed point; INT64_MIN: not collected
}

struct SamplesReply {
  times @0 :List(Int64);
  systems @1 :List(Text);     # where the entity was at each time
  columns @2 :List(SampleColumn);
}

# An online backup of the store's data directory (admin only; README
# "Backup and restore"). dir: a directory on the store's host; empty: its
# configured one.
struct BackupRequest {
  dir @0 :Text;
}

struct BackupReply {
  name @0 :Text;
  path @1 :Text;
  head @2 :UInt64;            # the last sequence the backup holds
  bytes @3 :UInt64;
  files @4 :UInt32;
  createdNs @5 :Int64;
}

struct Request {
  requestId @0 :UInt64;
  union {
    append @1 :AppendRequest;
    readRange @2 :ReadRangeRequest;
    readStream @3 :ReadStreamRequest;
    stats @4 :Void;
    verify @6 :VerifyRequest;
    writeSamples @7 :HostSample;       # service:inventory and admin only
    readSamples @8 :ReadSamplesRequest;
    backup @9 :BackupRequest;          # admin only
  }
  protocolVersion @5 :UInt16;  # the client's (schemas/error.h); 0: from before it existed
}

struct Reply {
  requestId @0 :UInt64;
  union {
    error @1 :Error;
    append @2 :AppendResult;
    read @3 :ReadReply;
    stats @4 :StatsReply;
    verify @6 :VerifyReply;
    samples @7 :SamplesReply;
    written @8 :Void;                  # writeSamples: recorded
    backup @9 :BackupReply;
  }
  protocolVersion @5 :UInt16;  # the store's
}

# The second frame of a publication; the first is the topic
# "event.<type>" (bus/topics.h).
struct Publication {
  sequence @0 :UInt64;
  record @1 :Data;
}
