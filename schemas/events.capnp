@0xf9566f78f21f3100;
# The event envelope and every event payload. This file is a storage contract:
# see schemas/README.md before changing anything here.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("wpm::schema");

enum EventType {
  unspecified @0;
  synthetic @1;          # test and load events; stream "synthetic/<run>"
  systemRegistered @2;   # a managed system was accepted (DESIGN.md §8)
  systemRemoved @3;      # a managed system was removed; its key is revoked
}

struct Event {
  sequence @0 :UInt64;        # global, gap-free, assigned by the store's sequencer
  eventId @1 :Data;           # 16 bytes, unique, assigned by the store
  timestampNs @2 :Int64;      # Unix time in ns when the batch was committed
  type @3 :EventType;         # always equals the payload's union tag
  streamId @4 :Text;          # the aggregate this event belongs to, e.g. "system/node1"
  streamVersion @5 :UInt64;   # 1 for the first event of a stream, then +1
  correlationId @6 :Text;     # the task this event belongs to
  causationId @7 :Text;       # the event or command that caused it
  actor @8 :Text;             # user or service that asked for it
  idempotencyKey @9 :Text;    # key of the append request that wrote it
  payload @10 :Payload;
}

struct Payload {
  union {
    unspecified @0 :Void;
    synthetic @1 :Synthetic;
    systemRegistered @2 :SystemRegistered;
    systemRemoved @3 :SystemRemoved;
  }
}

struct Synthetic {
  run @0 :Text;       # identifies the run (one `wpm log append` invocation)
  index @1 :UInt64;   # 0-based position of the event within its run
  note @2 :Text;
  blob @3 :Data;      # filler to reach a payload size
}

struct SystemRegistered {
  systemId @0 :Text;
  hostname @1 :Text;
  address @2 :Text;
  publicKey @3 :Text;   # CURVE public key, Z85
}

struct SystemRemoved {
  systemId @0 :Text;
  reason @1 :Text;
}
