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
  commandRequested @7;   # a user's command, recorded before it takes effect; stream command/<id>
  commandDecided @8;     # what became of it: accepted (with the events it wrote) or refused, and why
  wparDefined @9;        # a WPAR definition made, changed or discovered; stream wpar/<name>
  wparRemoved @10;       # a WPAR definition removed
  groupDefined @11;      # a WPAR group made or changed; stream group/<name>
  groupDeleted @12;      # a WPAR group deleted
  settingChanged @13;    # one setting; stream settings
  roleMappingChanged @14;   # the users and Linux groups of one role; stream role/<role>
  sessionOpened @15;     # a login; stream session/<token hash prefix>
  sessionClosed @16;     # a logout or a revoked session
  loginRefused @17;      # refused logins of one user from one address, aggregated
  systemStateChanged @18;   # Online, Offline, Unreachable, with the reason; stream system/<id>
  agentReportRefused @19;   # an agent reported what is not its own; stream agent-report-refusals
  joinTokenCreated @20;  # a single-use join token for registering an agent; stream token/<hash prefix>
  joinTokenUsed @21;     # the registration that used it
  domainDefined @22;     # a relocation domain made or changed; stream domain/<name>
  domainRemoved @23;     # a relocation domain removed
  systemDomainSet @24;   # a system tagged with another relocation domain; stream system/<id>
  taskCreated @25;       # a lifecycle task of the executor; stream task/<id> (docs/executor.md)
  operationStarted @26;  # one operation on an agent, recorded before it is sent
  operationFinished @27; # what became of it: exit code, output, error, the WPAR's state after
  taskFinished @28;      # the task ended: succeeded, failed (with what recovery did) or cancelled
  wparPlaced @29;        # a WPAR placed on a system (or on none), with its new epoch; stream placement/<wpar>
  taskApproved @30;      # a task that waited for approval may run; stream task/<id>
  groupPolicySet @31;    # a WPAR group's relocation policy; stream group/<name>
  mobilityDecided @32;   # the policy asked for a relocation, with its inputs; stream policy/<group>
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
    commandRequested @7 :CommandRequested;
    commandDecided @8 :CommandDecided;
    wparDefined @9 :WparDefined;
    wparRemoved @10 :WparRemoved;
    groupDefined @11 :GroupDefined;
    groupDeleted @12 :GroupDeleted;
    settingChanged @13 :SettingChanged;
    roleMappingChanged @14 :RoleMappingChanged;
    sessionOpened @15 :SessionOpened;
    sessionClosed @16 :SessionClosed;
    loginRefused @17 :LoginRefused;
    systemStateChanged @18 :SystemStateChanged;
    agentReportRefused @19 :AgentReportRefused;
    joinTokenCreated @20 :JoinTokenCreated;
    joinTokenUsed @21 :JoinTokenUsed;
    domainDefined @22 :DomainDefined;
    domainRemoved @23 :DomainRemoved;
    systemDomainSet @24 :SystemDomainSet;
    taskCreated @25 :TaskCreated;
    operationStarted @26 :OperationStarted;
    operationFinished @27 :OperationFinished;
    taskFinished @28 :TaskFinished;
    wparPlaced @29 :WparPlaced;
    taskApproved @30 :TaskApproved;
    groupPolicySet @31 :GroupPolicySet;
    mobilityDecided @32 :MobilityDecided;
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

# A command as the gateway received it from an authenticated user, written
# before anything acts on it (DESIGN.md §4): the log answers "who asked for
# what, when". Never carries a password or a token.
struct CommandRequested {
  command @0 :Text;     # e.g. "wpar.create"
  args @1 :Text;        # the arguments, a JSON object
  user @2 :Text;        # the Linux user
  roles @3 :List(Text); # the roles the user held when asking
  address @4 :Text;     # where the request came from
}

# What became of a command: written on its stream by the service that
# decided it (in the same batch as the events it wrote), or by the gateway
# when it refused it (not logged in, role). Exactly one per command.
struct CommandDecided {
  accepted @0 :Bool;
  code @1 :Text;        # when refused: invalid, not_found, conflict, already_exists, forbidden, expired, unauthenticated
  message @2 :Text;     # when refused: what was wrong and what to do
  decidedBy @3 :Text;   # the service that decided
}

# A WPAR definition, whole (made, changed, or found on a host).
struct WparDefinition {
  name @0 :Text;
  type @1 :Text;              # "system" or "application"
  command @2 :Text;           # what an application WPAR runs (or a system WPAR's init)
  checkpointable @3 :Bool;
  triggerSignal @4 :Text;     # cooperative checkpoint trigger, e.g. "SIGUSR2"
  triggerCommand @5 :Text;    # or a command that triggers it
  cpuShares @6 :UInt32;       # 0: unset
  cpuLimitPercent @7 :UInt32; # 0: unset
  memoryBytes @8 :UInt64;     # 0: unset
  processesMax @9 :UInt32;    # 0: unset
  address @10 :Text;          # network address, CIDR; "" none
  capabilities @11 :Text;     # capability set spec; "" default
  group @12 :Text;            # WPAR group
  system @13 :Text;           # the system it is on; "" while undeployed
  discovered @14 :Bool;       # made by hand on its system and reported by the agent
  reportedState @15 :Text;    # the WPAR's state letter as its agent (or the executor) reported it
  epoch @16 :UInt64;          # its placement epoch (wparPlaced); 0 never placed by the manager
  operation @17 :Text;        # the operation in progress while Transitional ("" none)
  cause @18 :Text;            # why it is Broken ("" when it is not)
  privileged @19 :Bool;       # runs without the system call filter (agents/README.md)
}

struct WparDefined {
  wpar @0 :WparDefinition;
  created @1 :Bool;     # the first definition of this name (else a change)
}

struct WparRemoved {
  name @0 :Text;
  reason @1 :Text;
}

struct GroupDefined {
  name @0 :Text;
  description @1 :Text;
  created @2 :Bool;
}

struct GroupDeleted {
  name @0 :Text;
}

struct SettingChanged {
  key @0 :Text;
  value @1 :Text;
  previous @2 :Text;
}

struct RoleMappingChanged {
  role @0 :Text;             # administrator, WPARAdministrator, WPARUser, WPARMonitor
  users @1 :List(Text);      # the whole mapping after the change
  groups @2 :List(Text);
}

struct SessionOpened {
  user @0 :Text;
  tokenHash @1 :Text;        # hex SHA-256 of the token; the token itself is never kept
  expiresNs @2 :Int64;
  address @3 :Text;
}

struct SessionClosed {
  tokenHash @0 :Text;
  reason @1 :Text;           # "logout", …
}

# Refused logins of one user from one address, aggregated as registration
# refusals are. Never carries the password.
struct LoginRefused {
  user @0 :Text;
  address @1 :Text;
  reason @2 :Text;
  attempts @3 :UInt32;
  firstNs @4 :Int64;
  lastNs @5 :Int64;
}

struct SystemStateChanged {
  systemId @0 :Text;
  state @1 :Text;            # online, offline, unreachable
  reason @2 :Text;
}

# A report of an agent that the inventory refused: an agent speaks only for
# its own system and the WPARs on it.
struct AgentReportRefused {
  systemId @0 :Text;     # the reporting system
  subject @1 :Text;      # what it reported about, e.g. "wpar/web1"
  reason @2 :Text;
}

# A join token: an agent registers with it in place of the registration
# password, once, before it expires. Only the token's hash is kept.
struct JoinTokenCreated {
  tokenHash @0 :Text;    # hex SHA-256 of the token
  expiresNs @1 :Int64;
}

struct JoinTokenUsed {
  tokenHash @0 :Text;
  systemId @1 :Text;     # the system that registered with it
}

# Relocation domains (seed "Relocation domains and system profiles"): a
# grouping of managed systems by purpose. Every system is in `default` until
# tagged otherwise; profiles never span two domains.
struct DomainDefined {
  name @0 :Text;
  description @1 :Text;
  created @2 :Bool;
}

struct DomainRemoved {
  name @0 :Text;
}

struct SystemDomainSet {
  systemId @0 :Text;
  domain @1 :Text;
  previous @2 :Text;
}

# The executor's tasks (docs/executor.md): one lifecycle command becomes a
# task of operations on agents, each recorded before it is sent and after it
# ends; stream task/<id> (the id is the command's).
struct TaskCreated {
  kind @0 :Text;        # deploy, start, stop, pause, resume, freeze, kill, remove
  wpar @1 :Text;
  system @2 :Text;      # where its operations run
  args @3 :Text;        # the options, a JSON object (force, preserveFs, keepDefinition, start)
  parent @4 :Text;      # the parent task ("" none)
  user @5 :Text;        # who asked
}

struct OperationStarted {
  operationId @0 :Text; # <task>.<n>: the agent runs one id once
  system @1 :Text;
  wpar @2 :Text;
  action @3 :Text;      # the agent's action (agent.capnp Operation)
  epoch @4 :UInt64;     # the placement epoch it carries
  attempt @5 :UInt32;   # 1, then more only for the seed's "run again" exit codes
  deadlineNs @6 :Int64; # Unix ns after which it fails as timed out
}

struct OperationFinished {
  operationId @0 :Text;
  attempt @1 :UInt32;
  outcome @2 :Text;     # ok, failed, refused, timeout, unreachable (sent, no answer), unsent (never left the manager)
  exitCode @3 :Int32;
  output @4 :Text;      # the last 16 KiB of its standard output
  error @5 :Text;
  wparState @6 :Text;   # the state letter the agent reported afterwards ("" gone or unknown)
}

struct TaskFinished {
  state @0 :Text;       # succeeded, failed, cancelled
  error @1 :Text;       # when failed: which operation failed and why
  recovery @2 :Text;    # what was done about it ("" nothing)
  wparState @3 :Text;   # the WPAR's state letter the task leaves it in, when no operation reported it ("" said nothing)
  cause @4 :Text;       # with wparState B: why it is Broken
}

# A task that waited for approval (created with one: a relocation or an
# evacuation asked for with --approval, later the policy's "approve" level)
# may run from now on.
struct TaskApproved {
  user @0 :Text;        # who approved it
}

# Placement with fencing (DESIGN.md §9): every placement of a WPAR carries a
# higher epoch than the last; agents refuse commands with an older one.
struct WparPlaced {
  wpar @0 :Text;
  system @1 :Text;      # "" when it is on no system any more
  epoch @2 :UInt64;
  previous @3 :Text;    # the system it was on before ("" none)
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
  networkInterfaces @22 :List(NetworkInterface);  # the host's interfaces with addresses (loopback, link-local left out)
}

enum NtpState {
  unknown @0;
  synchronized @1;
  unsynchronized @2;
}

struct NetworkInterface {
  name @0 :Text;
  addresses @1 :List(Text);  # CIDR, e.g. "10.0.0.5/24", "fd00::5/64"
  up @2 :Bool;
  mtu @3 :UInt32;
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

# A WPAR group's relocation policy (DESIGN.md §7; services/policy/model.h):
# the whole policy after the change, as a JSON object.
struct GroupPolicySet {
  group @0 :Text;
  policy @1 :Text;      # JSON: enabled, automation, max, min, periodS, triggerCount, cooldownS, minGain, domain, optionalTests, approvalS, metrics
}

# A mobility event of the policy service: the relocation it asked for (the
# command it recorded beside it) and why, so that an operator can see what
# it saw. The executor decides the command as any other.
struct MobilityDecided {
  group @0 :Text;
  wpar @1 :Text;
  from @2 :Text;
  to @3 :Text;
  trigger @4 :Text;     # hot cold critical
  automation @5 :Text;  # approve automatic
  command @6 :Text;     # the command id of the relocation
  explanation @7 :Text; # in words
  inputs @8 :Text;      # JSON: the states, thresholds, averages and the ranking of targets
  watermarkS @9 :Int64; # the newest sample time the pass used (Unix seconds)
}
