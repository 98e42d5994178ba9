#!/usr/bin/env bash
# Idle resident memory of wpmd: starts the given binary on an empty data directory with every
# port picked by the kernel, waits until it is serving (DATA/endpoints written), lets it settle
# for 2 s, and prints VmRSS from /proc/PID/status against the target (< 64 MiB).
# Benchmarks never fail the build: exit 0 whatever the figure; exit 1 only if wpmd does not start.
#
# Usage: bash tests/bench/idle_memory.sh path/to/wpmd

set -u

wpmd=${1:?usage: idle_memory.sh path/to/wpmd}
target_mib=64
start_timeout_s=20

if [[ ! -x $wpmd ]]; then
  echo "idle_memory: $wpmd is not an executable; build it first (make build)" >&2
  exit 1
fi

# Under ./build, not /tmp: the same file system as real data (and /tmp may be a tmpfs that
# would count against memory).
mkdir -p build
dir=$(mktemp -d "$PWD/build/wpm-idle-memory.XXXXXX") || exit 1
pid=

cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    # Bounded wait for a clean stop, then no more patience.
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$wpmd" --data "$dir/data" \
  --store-endpoint tcp://127.0.0.1:0 \
  --publish-endpoint tcp://127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 \
  --agent-public-endpoint tcp://127.0.0.1:0 \
  --agent-channel-endpoint tcp://127.0.0.1:0 --gateway-endpoint tcp://127.0.0.1:0 \
  >"$dir/wpmd.out" 2>"$dir/wpmd.err" &
pid=$!

# Bounded wait for the endpoints file, which wpmd writes once it is serving.
up=0
for _ in $(seq 1 $((start_timeout_s * 10))); do
  if [[ -s $dir/data/endpoints ]]; then
    up=1
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
if [[ $up != 1 ]]; then
  if kill -0 "$pid" 2>/dev/null; then
    echo "idle_memory: wpmd did not start within ${start_timeout_s} s; its output:" >&2
  else
    wait "$pid"
    echo "idle_memory: wpmd exited with status $? before serving; its output:" >&2
    pid=
  fi
  cat "$dir/wpmd.out" "$dir/wpmd.err" >&2
  exit 1
fi

sleep 2
rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
if [[ -z $rss_kib ]]; then
  echo "idle_memory: wpmd (pid $pid) exited while idle; its output:" >&2
  cat "$dir/wpmd.out" "$dir/wpmd.err" >&2
  exit 1
fi

read -r rss_mib verdict < <(awk -v kib="$rss_kib" -v target="$target_mib" \
  'BEGIN { printf "%.1f %s\n", kib / 1024, (kib < target * 1024) ? "meets" : "over" }')
echo "wpmd idle resident memory: ${rss_mib} MiB (VmRSS), target < ${target_mib} MiB: ${verdict}"
exit 0
