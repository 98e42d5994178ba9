#!/usr/bin/env bash
# The tests' scratch directory (build/test-tmp), set up before the first test
# and cleaned after the last (a ctest fixture). Where it lies on overlayfs —
# a container or chroot whose root is an overlay — it cannot hold the upper
# layer of a system WPAR's overlay root, so a tmpfs is mounted there (root
# only); everywhere else nothing changes.
#
# Usage: test_tmp.sh setup|cleanup DIR
set -u
action=${1:?usage: test_tmp.sh setup|cleanup DIR}
dir=${2:?usage: test_tmp.sh setup|cleanup DIR}
source_name=wpm-test-tmp

ours() { awk -v d="$dir" -v s="$source_name" '$1 == s && $2 == d { found = 1 } END { exit !found }' /proc/self/mounts; }

case $action in
  setup)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    if ours; then exit 0; fi
    if [[ $(stat -f -c %T "$dir") == overlayfs && $(id -u) == 0 ]]; then
      mount -t tmpfs -o mode=0755,size=50% "$source_name" "$dir" || exit 1
      echo "test-tmp: $dir lies on overlayfs, which cannot hold a WPAR's upper layer: a tmpfs is mounted there for the tests"
    fi
    ;;
  cleanup)
    [[ -d $dir ]] || exit 0
    dir=$(cd "$dir" && pwd -P)
    if ours; then umount -l "$dir"; fi
    ;;
  *)
    echo "usage: test_tmp.sh setup|cleanup DIR" >&2
    exit 2
    ;;
esac
exit 0
