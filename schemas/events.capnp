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
  registrationRejected @4;  # registration attempts refused (aggregated per address)
  systemProfileChanged @5;  # a registered system reported a different profile
  compatibilityAnalyzed @6; # the compatibility tests of one ordered pair of distinct properties
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
    registrationRejected @4 :RegistrationRejected;
    systemProfileChanged @5 :SystemProfileChanged;
    compatibilityAnalyzed @6 :CompatibilityAnalyzed;
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
  profile @4 :SystemProfile;
  agentPort @5 :UInt16;  # the agent's own port (state-file transfer, commands)
}

struct SystemRemoved {
  systemId @0 :Text;
  reason @1 :Text;
}

# Refused registrations from one address, aggregated: the first refusal is
# recorded at once, later ones at most once per window with their count, so a
# password-guessing client cannot flood the log. Never carries the password.
struct RegistrationRejected {
  address @0 :Text;      # the client's address as the socket saw it
  reason @1 :Text;       # the last reason, e.g. "wrong registration password"
  attempts @2 :UInt32;   # refusals this event stands for
  firstNs @3 :Int64;     # first and last refusal it stands for, Unix ns
  lastNs @4 :Int64;
  hostname @5 :Text;     # as the client claimed it
  publicKey @6 :Text;    # the client's CURVE key, Z85
}

struct SystemProfileChanged {
  systemId @0 :Text;
  profile @1 :SystemProfile;   # the whole new profile
}

# The compatibility tests (DESIGN.md §6) departure → arrival for one ordered
# pair of distinct compared properties: every system with those properties
# shares the result, so systems are not named. Written once per pair, on the
# stream compat/<departure>/<arrival>.
struct CompatibilityAnalyzed {
  departureProperties @0 :Text;  # digest of the departure's compared properties
  arrivalProperties @1 :Text;
  results @2 :List(CompatTestResult);
}

struct CompatTestResult {
  test @0 :Text;       # stable test name: osType, distribution, … (services/compatibility/tests.h)
  passed @1 :Bool;
  departure @2 :Text;  # the departure's value
  arrival @3 :Text;    # the arrival's value
  remedy @4 :Text;     # when failed: what would make it pass
}

# The system profile (DESIGN.md §6), compared by the compatibility tests.
struct SystemProfile {
  osType @0 :Text;
  distribution @1 :Text;
  distributionVersion @2 :Text;
  kernelVersion @3 :Text;
  baseSystemVersion @4 :Text;
  glibcVersion @5 :Text;
  architecture @6 :Text;
  isaLevel @7 :Text;
  cpuFlags @8 :List(Text);
  cpuModel @9 :Text;
  cpuMhz @10 :Float64;
  cpuCores @11 :UInt32;
  memoryBytes @12 :UInt64;
  memoryProtectionKeys @13 :Bool;
  ntp @14 :NtpState;
  cgroups @15 :List(CgroupController);
  cgroupV2Freeze @16 :Bool;
  namespaces @17 :List(Text);
  checkpointers @18 :List(Checkpointer);
  agentVersion @19 :Text;
  capabilities @20 :List(Text);
  overriddenFacts @21 :List(Text);  # facts the agent's [profile] table set by hand ("kernelVersion", …)
}

enum NtpState {
  unknown @0;
  synchronized @1;
  unsynchronized @2;
}

struct CgroupController {
  name @0 :Text;
  version @1 :UInt8;   # 1 or 2
  mount @2 :Text;
}

struct Checkpointer {
  name @0 :Text;
  available @1 :Bool;
  version @2 :Text;
  reason @3 :Text;
}
