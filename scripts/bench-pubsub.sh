#!/usr/bin/env bash
# Benchmark `hioload-ws pubsub` with `hioload-ws bench pubsub`, one appliance worker on CPU 0
# (DPDK: EAL lcore 0) and the generator on CPU 1 (DPDK: lcore 1, its own port, joined by
# net_memif). One run per row, a fresh appliance per run; JSON lines go to target/bench/.
#
#   scripts/bench-pubsub.sh [kernel|dpdk|all] [SECONDS] [ROWS]
#
# (default: all, 5 s measured, every row; ROWS is a glob of row names, e.g. 'churn*' or
# 'fanout-*'; the names are those of the JSON files in target/bench/). HIOLOAD_BIN=PATH runs
# that build of hioload-ws instead of building this tree (to compare two builds).
#
# Rows (issue 10): fan-out to one channel of 10,000 members from one publisher at rising rates,
# then as fast as acks come back; 100 channels of 100 members with 100 publishers as fast as
# they can; presence churn (1,000 connections joining and leaving those channels, 10,000 times
# a second in all); 10,000 idle members of one channel for memory per member.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHICH="${1:-all}"
SECS="${2:-5}"
ROWS="${3:-*}"
BIN="${HIOLOAD_BIN:-$ROOT/target/release/hioload-ws}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
case "$WHICH" in kernel | dpdk | all) ;; *)
  echo "usage: scripts/bench-pubsub.sh [kernel|dpdk|all] [SECONDS] [ROWS]" >&2
  exit 2
  ;;
esac
[ "$(nproc)" -ge 2 ] || { echo "bench-pubsub.sh: needs 2 CPUs" >&2; exit 2; }
if [ "$WHICH" != kernel ] && [ "$(id -u)" -ne 0 ]; then
  echo "bench-pubsub.sh: DPDK runs need root; use 'kernel'" >&2
  exit 2
fi
features=()
[ "$WHICH" = kernel ] || features=(--features dpdk)
[ -n "${HIOLOAD_BIN:-}" ] ||
  cargo build --release --quiet -p hioload-ws-app "${features[@]}" --manifest-path "$ROOT/Cargo.toml"

SERVER_PID=""
SERVER_EXTRA=() # appliance flags of the next row
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT
ADMIN=127.0.0.1:19181

wait_log() { # LOG PATTERN
  for _ in $(seq 1 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-pubsub.sh: the appliance did not get to '$2'; its log:" >&2
  cat "$1" >&2
  exit 1
}

row() { # TRANSPORT NAME BENCH-ARGS...: one run, prints its JSON line
  local t="$1" name="$2"
  shift 2
  # shellcheck disable=SC2254 # ROWS is a pattern
  case "$name" in $ROWS) ;; *) return 0 ;; esac
  local log="$OUT/pubsub-server-$t-$name.log"
  if [ "$t" = kernel ]; then
    taskset -c 0 "$BIN" pubsub --no-dpdk --listen 127.0.0.1:0 --workers 1 --cpus 0 \
      --admin "$ADMIN" --log-format text "${SERVER_EXTRA[@]}" >"$log" 2>&1 &
    SERVER_PID=$!
    wait_log "$log" "listening on"
    local url
    url=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on \(ws:\/\/[^ ]*\).*/\1/p' "$log" | head -1)
    "$BIN" bench pubsub --url "$url/" --cpus 1 --server-pid "$SERVER_PID" --server-admin "$ADMIN" \
      --json "$@" 2>"$OUT/pubsub-generator.log" | tee -a "$OUT/pubsub-$t-$name.jsonl"
  else
    local memif=/tmp/hioload-bench-pubsub.sock net=198.18.97
    rm -f "$memif"
    "$BIN" pubsub --eal "-l 0 --no-huge -m 1024 --no-pci --no-shconf --file-prefix hlbps \
      --vdev=net_memif0,role=server,socket=$memif" --ip $net.1/24 --poll-mode busy \
      --admin "$ADMIN" --log-format text "${SERVER_EXTRA[@]}" >"$log" 2>&1 &
    SERVER_PID=$!
    wait_log "$log" "waiting up to 10 s for its link"
    "$BIN" bench pubsub --url "ws://$net.1:8080/" --server-pid "$SERVER_PID" --server-admin "$ADMIN" \
      --json --eal "-l 1 --no-huge -m 2048 --no-pci --no-shconf --file-prefix hlbpg \
      --vdev=net_memif0,role=client,socket=$memif" --ip $net.2/24 --poll-mode busy \
      "$@" 2>"$OUT/pubsub-generator.log" | tee -a "$OUT/pubsub-$t-$name.jsonl"
  fi
  kill -TERM "$SERVER_PID"
  local status=0
  wait "$SERVER_PID" || status=$?
  SERVER_PID=""
  if [ "$status" -ne 0 ]; then
    echo "bench-pubsub.sh: the appliance of row $t/$name exited with status $status; its log: $log" >&2
  fi
}

for t in kernel dpdk; do
  [ "$WHICH" = all ] || [ "$WHICH" = "$t" ] || continue
  echo "bench-pubsub.sh: $t" >&2
  fan=(--connections 10000 --channels 1 --publishers 1 --size 32 --duration "${SECS}s" --warmup 8s)
  for rate in 100 300 1000 3000; do
    row "$t" "fanout-$rate" "${fan[@]}" --rate "$rate"
  done
  row "$t" fanout-max "${fan[@]}" --rate 0 --depth 16
  row "$t" rooms-100x100 --connections 10000 --channels 100 --publishers 100 --size 32 \
    --duration "${SECS}s" --warmup 8s --rate 0 --depth 4
  # Presence churn: 1,000 connections join and leave channels of 100 members, 10,000 steps
  # per second in all (one in flight each); every join and leave is a presence change.
  churn=(--connections 10000 --channels 100 --publishers 1 --rate 1 --churners 1000
    --churn-rate 10000 --duration "${SECS}s" --warmup 8s)
  row "$t" churn "${churn[@]}"
  # The same with presence changes gathered for 50 ms (half a churner's period).
  SERVER_EXTRA=(--presence-interval 50ms)
  row "$t" churn-gathered "${churn[@]}"
  SERVER_EXTRA=()
  row "$t" idle-members --connections 10000 --channels 1 --publishers 1 --rate 0.1 \
    --duration 2s --warmup 8s
done
