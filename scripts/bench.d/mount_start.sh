#!/usr/bin/env bash
# Time of a btfs-mount mount on a fully cached torrent, for one or more
# builds of btfs-mount (e.g. before and after a change), in a private
# network namespace (only loopback):
#
#   sudo unshare --net --mount --propagation private -- \
#       scripts/bench.d/mount_start.sh [--size-mib N] [--reps N] BIN...
#
# A python3-libtorrent seeder (mountpoint-tests/lt/ltnode.py) seeds a random
# file of N MiB (default 1024) in 256 KiB pieces; the first BIN fills a
# cache from it (cat of the whole file); then, per repetition and per BIN,
# with the seeder stopped: `BIN MAGNET MNT --no-dht --no-lsd --cache-dir C`
# in its default background mode (it returns once the tree is listed) is
# timed, with the page cache warm and after `echo 3 > drop_caches` (cold),
# and unmounted. Lines "BIN warm|cold SECONDS" on stdout, then medians.
# Last, the last BIN is mounted once more with -v and left up until its log
# says how long verifying the cache took in the background (if it does).
# Everything lives in one scratch directory under /tmp, deleted at exit.
set -euo pipefail

size_mib=1024
reps=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size-mib) size_mib=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--size-mib N] [--reps N] BIN..." >&2; exit 2; }
bins=("$@")
here=$(cd "$(dirname "$0")/../.." && pwd)
ip link set lo up

work=$(mktemp -d /tmp/btfs-mount-start.XXXXXX)
lt_pid=
cleanup() {
  fusermount3 -u "$work/mnt" 2>/dev/null || true
  [[ -n "$lt_pid" ]] && kill "$lt_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until no process has the mountpoint on its command line.
wait_daemon_gone() {
  for _ in $(seq 1 400); do
    grep -qs -- "$work/mnt" /proc/[0-9]*/cmdline || return 0
    sleep 0.05
  done
  echo "btfs-mount did not exit after unmount" >&2
  return 1
}

mkdir -p "$work/data" "$work/mnt"
head -c "$((size_mib << 20))" /dev/urandom >"$work/data/big.bin"
echo small >"$work/data/small.txt"
: >"$work/lt.out"
/usr/bin/python3 "$here/mountpoint-tests/lt/ltnode.py" --seed "$work/data" \
  --piece-size 262144 --no-utp </dev/null >"$work/lt.out" 2>"$work/lt.err" &
lt_pid=$!
for _ in $(seq 1 600); do grep -q '"seeding"' "$work/lt.out" && break; sleep 0.1; done
grep -q '"seeding"' "$work/lt.out" || { echo "the seeder did not start" >&2; exit 1; }
magnet=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["event"] == "torrent": print(e["magnet"])' "$work/lt.out")
info_hash=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["event"] == "torrent": print(e["info_hash"])' "$work/lt.out")
port=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["event"] == "ready": print(e["port"])' "$work/lt.out")

# Fill the cache.
t0=$(date +%s.%N)
"${bins[0]}" "$magnet" "$work/mnt" --no-dht --no-lsd --peer "127.0.0.1:$port" \
  --cache-dir "$work/cache" </dev/null >/dev/null 2>"$work/fill.err"
cmp "$work/mnt/data/big.bin" "$work/data/big.bin"
fusermount3 -u "$work/mnt"
wait_daemon_gone
echo "filled a ${size_mib} MiB cache in $(echo "$(date +%s.%N) - $t0" | bc) s" >&2
kill "$lt_pid"; wait "$lt_pid" 2>/dev/null || true; lt_pid=

results="$work/results"
: >"$results"
for rep in $(seq 1 "$reps"); do
  for bin in "${bins[@]}"; do
    for mode in warm cold; do
      if [[ $mode == cold ]]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
      t0=$(date +%s.%N)
      "$bin" "$magnet" "$work/mnt" --no-dht --no-lsd --cache-dir "$work/cache" \
        </dev/null >/dev/null 2>"$work/mount.err"
      ls "$work/mnt/data" >/dev/null
      t=$(echo "$(date +%s.%N) - $t0" | bc)
      head -c 1000 "$work/mnt/data/small.txt" >/dev/null
      fusermount3 -u "$work/mnt"
      wait_daemon_gone
      echo "$bin $mode $t" | tee -a "$results"
    done
  done
done
echo "medians (s):"
for bin in "${bins[@]}"; do
  for mode in warm cold; do
    m=$(awk -v b="$bin" -v m="$mode" '$1 == b && $2 == m { print $3 }' "$results" | sort -g |
      awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    echo "  $bin $mode $m"
  done
done
# How long the last BIN takes to verify the cache after the mount is up
# (a build that hashes on the start-up path does not log this).
bin=${bins[-1]}
"$bin" "$magnet" "$work/mnt" --no-dht --no-lsd --cache-dir "$work/cache" -v \
  </dev/null >/dev/null 2>"$work/mount.err"
log="$work/cache/$info_hash/btfs-mount.log"
for _ in $(seq 1 1200); do
  grep -qs "cached pieces verified in" "$log" && break
  sleep 0.1
done
grep -s "cached pieces verified in" "$log" | tail -1 | sed "s|^|$bin: |" || true
fusermount3 -u "$work/mnt"
wait_daemon_gone
