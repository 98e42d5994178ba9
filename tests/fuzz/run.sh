#!/bin/bash
# Fuzzes every target of wpm-fuzz with AFL++ for a set time each (make fuzz).
# usage: tests/fuzz/run.sh WPM_FUZZ_BINARY SECONDS_PER_TARGET
# Findings are copied to tests/fuzz/findings/TARGET/ (crashes and hangs): fix
# each, then move its input into tests/fuzz/corpus/TARGET/ as a regression case.
set -euo pipefail
bin=$1
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /tmp/wpm-fuzz.XXXXXX)
trap 'rm -rf "$out"' EXIT
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
found=0
for target in $("$bin" --list); do
  echo "== $target: ${seconds} s"
  afl-fuzz -i "$here/corpus/$target" -o "$out/$target" -V "$seconds" -m none -- "$bin" "$target" > "$out/$target.log" 2>&1 ||
    { echo "afl-fuzz failed for $target:"; tail -20 "$out/$target.log"; exit 1; }
  stats="$out/$target/default/fuzzer_stats"
  execs=$(awk -F' *: *' '$1=="execs_done"{print $2}' "$stats")
  crashes=$(find "$out/$target/default/crashes" -type f -name 'id:*' | wc -l)
  hangs=$(find "$out/$target/default/hangs" -type f -name 'id:*' | wc -l)
  echo "   $execs executions, $crashes crashes, $hangs hangs"
  if [ $((crashes + hangs)) -gt 0 ]; then
    mkdir -p "$here/findings/$target"
    cp "$out/$target/default/crashes/"id:* "$out/$target/default/hangs/"id:* "$here/findings/$target/" 2>/dev/null || true
    found=$((found + crashes + hangs))
  fi
done
if [ "$found" -gt 0 ]; then
  echo "$found findings in tests/fuzz/findings/: reproduce with $bin TARGET FILE"
  exit 1
fi
echo "no findings"
