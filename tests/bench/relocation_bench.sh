#!/usr/bin/env bash
# Relocation benchmarks (issue targets), with a real wpmd and two real wpm-agents on
# this machine (both on loopback, each with its own data directory and cgroups):
#   1. `wpm wpar relocate` of a wpm-demo-counter WPAR holding 100 MiB of state: the
#      time the workload is stopped as the issue defines it, from the freeze on the
#      departure to the workload running on the arrival (the state file's mcr.log:
#      checkpoint_frozen → restart_done; target < 1 s), and an upper bound, from the
#      start of the pause operation (before the workload writes its state) to the end
#      of the restore as the task records them, with each step's time; 3 rounds back
#      and forth, median;
#   2. `wpm system evacuate` of a host with 50 small WPARs, wall time (target < 30 s).
# Benchmarks never fail the build: exit 0 whatever the figures; 1 only when something
# does not run at all.
#
# Usage: bash tests/bench/relocation_bench.sh BUILD_DIR

set -u

build=${1:?usage: relocation_bench.sh BUILD_DIR}
bin=$(cd "$build/bin" && pwd)
for b in wpmd wpm wpm-agent wpm-demo-counter; do
  if [[ ! -x $bin/$b ]]; then
    echo "relocation_bench: $bin/$b is missing; build first (make build)" >&2
    exit 1
  fi
done
if [[ $(id -u) != 0 ]]; then
  echo "relocation_bench: needs root (cgroups, namespaces); skipped" >&2
  exit 0
fi

mkdir -p build
dir=$(mktemp -d "$PWD/build/wpm-relocation-bench.XXXXXX") || exit 1
wpmd_pid=
wpm() { "$bin/wpm" --data "$dir/wpmd" "$@"; }
agent() { local n=$1; shift; "$bin/wpm-agent" --data "$dir/a$n" "$@"; }

cleanup() {
  for n in 1 2; do
    for w in $(agent "$n" lswpar -o json 2>/dev/null | python3 -c 'import json,sys; [print(w["name"]) for w in json.load(sys.stdin)]' 2>/dev/null); do
      agent "$n" rmwpar -F "$w" >/dev/null 2>&1
    done
    agent "$n" stop >/dev/null 2>&1
  done
  if [[ -n $wpmd_pid ]]; then
    kill -TERM "$wpmd_pid" 2>/dev/null
    wait "$wpmd_pid" 2>/dev/null
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v < t) ? "meets" : "over" }'; }

echo "bench-password-$$" >"$dir/password"
"$bin/wpmd" --data "$dir/wpmd" --store-endpoint tcp://127.0.0.1:0 --publish-endpoint tcp://127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --agent-public-endpoint tcp://127.0.0.1:0 \
  --agent-channel-endpoint tcp://127.0.0.1:0 --gateway-endpoint tcp://127.0.0.1:0 --registration-password-file "$dir/password" \
  >"$dir/wpmd.out" 2>"$dir/wpmd.err" &
wpmd_pid=$!
for _ in $(seq 1 200); do
  [[ -s $dir/wpmd/endpoints ]] && break
  sleep 0.1
done
pubport=$(sed -n 's/^agent_public=.*://p' "$dir/wpmd/endpoints")
if [[ -z $pubport ]]; then
  echo "relocation_bench: wpmd did not start:" >&2
  cat "$dir/wpmd.err" >&2
  exit 1
fi
for n in 1 2; do
  agent "$n" configure --manager 127.0.0.1 --pubport "$pubport" --agentport 0 --hostname "bench$n" \
    --password-file "$dir/password" >/dev/null || exit 1
  agent "$n" start --agent-endpoint tcp://127.0.0.1:0 --metrics-listen 127.0.0.1:0 >/dev/null || exit 1
done
online() { wpm -o json system list 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s.get("state")=="online"))' 2>/dev/null; }
for _ in $(seq 1 100); do
  [[ $(online) == 2 ]] && break
  sleep 0.2
done
# Compatibility is analysed (same host: the same properties) and both are reachable.
sleep 2

# ---- 1. relocation with 100 MiB of state -------------------------------------------------
wpm wpar create big --type application --checkpoint \
  --command "$bin/wpm-demo-counter --out $dir/count --interval-ms 100 --state-bytes $((100 * 1024 * 1024))" >/dev/null || exit 1
wpm wpar deploy big --system bench1 >/dev/null || { echo "relocation_bench: deploy failed" >&2; exit 1; }
for _ in $(seq 1 200); do
  [[ -s $dir/count ]] && break
  sleep 0.05
done
# Three relocations back and forth (to: the next arrival); $1 says how the
# state file travels.
to=bench2
relocate_rounds() {
  local how=$1 stopped=() frozen=() wall=() steps="" round t0 t1 task down freeze line ms root
  for round in 1 2 3; do
    t0=$(now_ms)
    if ! wpm wpar relocate big --to "$to" >/dev/null 2>"$dir/relocate.err"; then
      echo "relocation_bench: relocate failed: $(cat "$dir/relocate.err")" >&2
      exit 1
    fi
    t1=$(now_ms)
    wall+=($((t1 - t0)))
    task=$(wpm -o json task list --wpar big --limit 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
    # The state file's directory on the arrival (or the shared root), by the pause's id.
    if [[ $how == shared ]]; then root="$dir/shared/wpm-state"; else root="$dir/a${to#bench}/state"; fi
    read -r down freeze line < <(wpm -o json task show "$task" | python3 -c '
import json, sys
t = json.load(sys.stdin)
ops = {o["action"]: o for o in t["operations"]}
ms = lambda o: (o["finishedNs"] - o["startedNs"]) / 1e6
down = (ops["restore"]["finishedNs"] - ops["pause"]["startedNs"]) / 1e6
# mcr.log lines: "<unix ns> <event> ...", written on the departure, carried with the state file, then on the arrival.
marks = {}
for l in open(sys.argv[1] + "/big/" + ops["pause"]["id"] + "/mcr.log"):
    ns, event = l.split()[:2]
    marks.setdefault(event, int(ns))
freeze = (marks["restart_done"] - marks["checkpoint_frozen"]) / 1e6
write = (marks["checkpoint_frozen"] - marks["checkpoint_start"]) / 1e6
print("%.0f" % down, "%.0f" % freeze, "workload writes its state %.0f ms;" % write,
      " ".join("%s %.0f ms" % (a, ms(ops[a])) for a in ("pause", "receive", "restore", "remove") if a in ops))' "$root")
    stopped+=("$down")
    frozen+=("$freeze")
    steps="$steps\n  round $round: $line"
    [[ $to == bench2 ]] && to=bench1 || to=bench2
  done
  ms=$(printf '%s\n' "${frozen[@]}" | median)
  echo "relocation, 100 MiB of state, $2, workload stopped (freeze on departure → running on arrival): ${ms} ms (median of 3: ${frozen[*]}), target < 1000 ms: $(verdict "$ms" 1000)"
  ms=$(printf '%s\n' "${stopped[@]}" | median)
  echo "  upper bound (pause operation start → restore operation end, as the task records them): ${ms} ms (median of 3: ${stopped[*]})"
  echo "  whole relocate command: $(printf '%s\n' "${wall[@]}" | median) ms (wall time, median of 3: ${wall[*]})"
  printf "  steps (each operation from recorded start to recorded end):%b\n" "$steps"
}
relocate_rounds agent "sent from agent to agent"
mkdir -p "$dir/shared"
wpm settings set statefile.shared-root "$dir/shared" >/dev/null || exit 1
relocate_rounds shared "through a shared state root (statefile.shared-root)"
wpm settings set statefile.shared-root "" >/dev/null || exit 1
wpm wpar remove big >/dev/null 2>&1

# ---- 2. evacuation of 50 small WPARs ------------------------------------------------------
for i in $(seq 1 50); do
  wpm wpar create "e$i" --type application --checkpoint \
    --command "$bin/wpm-demo-counter --out $dir/e$i --interval-ms 1000" >/dev/null || exit 1
  wpm wpar deploy "e$i" --system bench1 --no-wait >/dev/null || exit 1
done
for _ in $(seq 1 300); do
  running=$(wpm -o json task list --state running --limit 100 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [[ $running == 0 ]] && break
  sleep 0.2
done
t0=$(now_ms)
if ! wpm system evacuate bench1 >/dev/null 2>"$dir/evacuate.err"; then
  echo "relocation_bench: evacuate failed: $(cat "$dir/evacuate.err")" >&2
  exit 1
fi
t1=$(now_ms)
ms=$((t1 - t0))
echo "evacuation of a host with 50 small WPARs: ${ms} ms (wall time, one relocation after another), target < 30000 ms: $(verdict "$ms" 30000)"
exit 0
