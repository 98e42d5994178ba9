#!/usr/bin/env bash
# Agent benchmarks (issue targets), on this machine with real processes and cgroups (root):
#   1. wpm-agent daemon idle resident memory, registered with a wpmd and heartbeating
#      (target < 16 MiB);
#   2. checkpoint plus restart of a wpm-demo-counter WPAR holding 100 MiB of state
#      (chkptwpar -k -d DIR, then restartwpar -d DIR; target < 2 s), median of 3;
#   3. system WPAR start, `mkwpar -n NAME -s` until Active (target < 200 ms), median of 5.
# Commands 2 and 3 run as local commands (no daemon in between), wall time.
# Benchmarks never fail the build: exit 0 whatever the figures; 1 only when something
# does not run at all.
#
# Usage: bash tests/bench/agent_bench.sh BUILD_DIR

set -u

build=${1:?usage: agent_bench.sh BUILD_DIR}
bin=$build/bin
for b in wpmd wpm-agent wpm-demo-counter; do
  if [[ ! -x $bin/$b ]]; then
    echo "agent_bench: $bin/$b is missing; build first (make build)" >&2
    exit 1
  fi
done
if [[ $(id -u) != 0 ]]; then
  echo "agent_bench: needs root (cgroups, namespaces); skipped" >&2
  exit 0
fi

mkdir -p build
dir=$(mktemp -d "$PWD/build/wpm-agent-bench.XXXXXX") || exit 1
wpmd_pid=
agent() { "$bin/wpm-agent" --data "$dir/agent" "$@"; }

cleanup() {
  for w in bench sysbench; do
    agent resumewpar "$w" >/dev/null 2>&1
    agent stopwpar -F "$w" >/dev/null 2>&1
    agent rmwpar "$w" >/dev/null 2>&1
  done
  agent stop >/dev/null 2>&1
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

# ---- 1. idle resident memory ----------------------------------------------------------
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
  echo "agent_bench: wpmd did not start:" >&2
  cat "$dir/wpmd.err" >&2
  exit 1
fi
agent configure --manager 127.0.0.1 --pubport "$pubport" --agentport 0 --password-file "$dir/password" >/dev/null ||
  exit 1
agent start --agent-endpoint tcp://127.0.0.1:0 --metrics-listen 127.0.0.1:0 >/dev/null || exit 1
sleep 6 # past the first heartbeat
pid=$(cat "$dir/agent/agent.pid")
rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
rss_mib=$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')
echo "wpm-agent idle resident memory: ${rss_mib} MiB (VmRSS, registered, heartbeating), target < 16 MiB: $(verdict "$rss_kib" $((16 * 1024)))"
agent stop >/dev/null

# ---- 2. checkpoint + restart with 100 MiB of state ---------------------------------------
times=()
for round in 1 2 3; do
  rm -f "$dir/count"
  agent wparexec -c -n bench -- "$bin/wpm-demo-counter" --out "$dir/count" --interval-ms 100 \
    --state-bytes $((100 * 1024 * 1024)) >/dev/null || exit 1
  for _ in $(seq 1 200); do
    [[ -s $dir/count ]] && break
    sleep 0.05
  done
  rm -rf "$dir/state"
  t0=$(now_ms)
  agent chkptwpar -k -d "$dir/state" bench >/dev/null || { echo "agent_bench: chkptwpar failed" >&2; exit 1; }
  agent restartwpar -d "$dir/state" bench >/dev/null || { echo "agent_bench: restartwpar failed" >&2; exit 1; }
  t1=$(now_ms)
  times+=($((t1 - t0)))
  agent stopwpar -F bench >/dev/null 2>&1
  for _ in $(seq 1 100); do
    agent lswpar bench 2>/dev/null | grep -q ' A ' || break
    sleep 0.05
  done
  agent rmwpar bench >/dev/null 2>&1
done
ms=$(printf '%s\n' "${times[@]}" | median)
echo "checkpoint + restart, 100 MiB of state: ${ms} ms (wall time, median of 3: ${times[*]}), target < 2000 ms: $(verdict "$ms" 2000)"

# ---- 3. system WPAR start --------------------------------------------------------------------
times=()
for round in 1 2 3 4 5; do
  t0=$(now_ms)
  if ! agent mkwpar -n sysbench -s >/dev/null 2>"$dir/mkwpar.err"; then
    echo "agent_bench: mkwpar -s failed: $(cat "$dir/mkwpar.err")" >&2
    exit 1
  fi
  t1=$(now_ms)
  times+=($((t1 - t0)))
  agent stopwpar -F sysbench >/dev/null 2>&1
  agent rmwpar sysbench >/dev/null 2>&1
done
ms=$(printf '%s\n' "${times[@]}" | median)
echo "system WPAR start (mkwpar -s to Active): ${ms} ms (wall time, median of 5: ${times[*]}), target < 200 ms: $(verdict "$ms" 200)"
exit 0
