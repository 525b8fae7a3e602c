#!/usr/bin/env bash
# Benchmark the echo appliance with the project's load generator, on kernel sockets and on DPDK.
#
#   scripts/bench.sh [kernel|dpdk|all] [RUNS] [BASELINE]   (default: all, 3 runs; medians)
#
# With BASELINE (another build's hioload-ws binary, e.g. one built from an earlier commit with
# `git worktree add`), every run of every scenario runs twice, baseline first, then this build,
# each with its own server and generator: the two builds meet the same machine state, and the
# table shows both and the change.
#
# kernel: `hioload-ws echo --no-dpdk --workers 1 --cpus 0` on loopback, generator on CPU 1.
# dpdk:   the appliance on DPDK (EAL lcore 0) and the generator on DPDK (EAL lcore 1), joined by
#         net_memif with --no-huge: no kernel on the data path of either side. Needs root.
# Scenarios (issue 4): 100 connections x 32 B with 1 and 16 in flight; 100 x 16 KiB with 4 in
# flight; 10,000 connections x 32 B with 1 in flight; then idle connections (kernel 10,000;
# DPDK 100,000 with 4 KiB socket buffers) for memory per connection.
# Each run starts a fresh server. Prints Markdown tables; raw JSON lines go to target/bench/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHICH="${1:-all}"
RUNS="${2:-3}"
BASELINE="${3:-}"
CURRENT="$ROOT/target/release/hioload-ws"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
case "$WHICH" in kernel | dpdk | all) ;; *)
  echo "usage: scripts/bench.sh [kernel|dpdk|all] [RUNS] [BASELINE-BINARY]" >&2
  exit 2
  ;;
esac
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then
  echo "bench.sh: baseline $BASELINE is not an executable hioload-ws" >&2
  exit 2
fi
[ "$(nproc)" -ge 2 ] || { echo "bench.sh: needs 2 CPUs (server on 0, generator on 1)" >&2; exit 2; }
if [ "$WHICH" != kernel ] && [ "$(id -u)" -ne 0 ]; then
  echo "bench.sh: DPDK runs need root (EAL, memif); run as root or use 'kernel'" >&2
  exit 2
fi
features=()
[ "$WHICH" = kernel ] || features=(--features dpdk)
cargo build --release --quiet -p hioload-ws-app "${features[@]}" --manifest-path "$ROOT/Cargo.toml"

SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

wait_log() { # LOG PATTERN: wait up to 20 s for PATTERN in LOG
  for _ in $(seq 1 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench.sh: server did not get to '$2'; its log:" >&2
  cat "$1" >&2
  exit 1
}

stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
}

ADMIN=127.0.0.1:19100
MEMIF=/tmp/hioload-bench.sock
NET=198.18.97

# start_server TRANSPORT MODE [ARGS...]: a fresh appliance; sets SERVER_PID and TARGET
start_server() {
  local transport="$1" mode="$2"
  shift 2
  local log="$OUT/server.log"
  if [ "$transport" = kernel ]; then
    taskset -c 0 "$BIN" "$mode" --no-dpdk --listen 127.0.0.1:0 --workers 1 --cpus 0 \
      --admin "$ADMIN" --log-format text "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    wait_log "$log" "listening on"
    TARGET=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on [a-z]*:\/\/\([^ ]*\).*/\1/p' "$log" | head -1)
  else
    "$BIN" "$mode" --eal "-l 0 --no-huge -m 1024 --no-pci --no-shconf --file-prefix hlbench-s \
      --vdev=net_memif0,role=server,socket=$MEMIF" --ip "$NET.1/24" --poll-mode busy \
      --admin "$ADMIN" --log-format text "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    # A memif client connects once: start it only when the server's port is up.
    wait_log "$log" "waiting up to 10 s for its link"
    TARGET="$NET.1:8080"
  fi
}

# generator TRANSPORT ARGS...: the generator's own transport flags, then ARGS
generator() {
  local transport="$1"
  shift
  if [ "$transport" = kernel ]; then
    "$BIN" bench "$@" --cpus 1
  else
    "$BIN" bench "$@" --eal "-l 1 --no-huge -m 2048 --no-pci --no-shconf --file-prefix hlbench-g \
      --vdev=net_memif0,role=client,socket=$MEMIF" --ip "$NET.2/24" --poll-mode busy
  fi
}

# scenario TRANSPORT NAME SERVER_ARGS -- BENCH_ARGS: RUNS runs, one JSON line each
scenario() {
  local transport="$1" name="$2"
  shift 2
  local server_args=()
  while [ "$1" != "--" ]; do  # an empty list is fine: "${server_args[@]}" expands to nothing
    server_args+=("$1")
    shift
  done
  shift
  local file="$OUT/$transport-$name.jsonl"
  : >"$file"
  for i in $(seq 1 "$RUNS"); do
    for build in ${BASELINE:+baseline} current; do
      local out="$file"
      BIN="$CURRENT"
      if [ "$build" = baseline ]; then
        out="$OUT/baseline-$transport-$name.jsonl"
        [ "$i" = 1 ] && : >"$out"
        BIN="$BASELINE"
      fi
      start_server "$transport" echo "${server_args[@]}"
      generator "$transport" "$@" --url "ws://$TARGET/" --server-pid "$SERVER_PID" \
        --server-admin "$ADMIN" --json 2>"$OUT/generator.log" >>"$out" ||
        { echo "bench.sh: $transport $name run $i ($build) failed:" >&2; tail -5 "$OUT/generator.log" >&2; }
      stop_server
      echo "  $transport $name run $i${BASELINE:+ ($build)}: $(tail -1 "$out")" >&2
    done
  done
}

run_transport() {
  local t="$1"
  echo "bench.sh: $t, $RUNS runs per scenario on $(nproc) CPUs ($(uname -r))" >&2
  scenario "$t" small-d1 -- echo --connections 100 --depth 1 --size 32 --duration 10s --warmup 2s
  scenario "$t" small-d16 -- echo --connections 100 --depth 16 --size 32 --duration 10s --warmup 2s
  scenario "$t" large-d4 -- echo --connections 100 --depth 4 --size 16KiB --duration 10s --warmup 2s
  scenario "$t" conns10k-d1 -- echo --connections 10000 --depth 1 --size 32 --duration 10s --warmup 5s
  if [ "$t" = kernel ]; then
    scenario "$t" idle -- conns --connections 10000 --hold 5s
  else
    scenario "$t" idle --tcp-rx-buf 4KiB --tcp-tx-buf 4KiB --max-half-open 8192 -- \
      conns --connections 100000 --hold 10s --ip-count 2 --tcp-rx-buf 4KiB --tcp-tx-buf 4KiB \
      --max-connecting 4096
  fi
}

case "$WHICH" in
kernel) run_transport kernel ;;
dpdk) run_transport dpdk ;;
all)
  run_transport kernel
  run_transport dpdk
  ;;
esac

python3 - "$OUT" "$WHICH" "${BASELINE:+baseline-}" <<'PY'
import json, statistics, sys, os
out, which, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
transports = ["kernel", "dpdk"] if which == "all" else [which]
def load(t, name, p=""):
    path = os.path.join(out, f"{p}{t}-{name}.jsonl")
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]
def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
rows = [("small-d1", "100 conns, 32 B, 1 in flight"), ("small-d16", "100 conns, 32 B, 16 in flight"),
        ("large-d4", "100 conns, 16 KiB, 4 in flight"), ("conns10k-d1", "10,000 conns, 32 B, 1 in flight")]
print("| transport | scenario | msg/s | MB/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/msg | server busy µs/msg | server busy | generator busy | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in transports:
    for name, label in rows:
        r = load(t, name)
        errors = sum(x["mismatches"] + x["failed_sessions"] + x["failed_connects"] for x in r)
        print(f"| {t} | {label} | {med(r,'msg_per_s'):,.0f} | {med(r,'mb_per_s'):,.1f} | {med(r,'p50_us'):,.0f} | "
              f"{med(r,'p99_us'):,.0f} | {med(r,'p999_us'):,.0f} | {med(r,'server_cpu_us_per_msg'):.3f} | "
              f"{med(r,'server_busy_us_per_msg'):.3f} | {med(r,'server_busy_share')*100:.0f} % | "
              f"{med(r,'generator_busy')*100:.0f} % | {errors} |")
print()
for t in transports:
    r = load(t, "idle")
    print(f"- {t}: {med(r,'ready'):,.0f} idle connections held (of {med(r,'connections'):,.0f}), "
          f"{med(r,'connect_per_s'):,.0f} sessions/s, server RSS {med(r,'server_rss_per_conn'):,.0f} bytes per connection")
if prefix:
    print()
    print("Against the baseline (medians of the same interleaved runs; + is better for msg/s, - for µs):")
    print()
    print("| transport | scenario | baseline msg/s | msg/s | change | baseline busy µs/msg | busy µs/msg | change |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for t in transports:
        for name, label in rows:
            b, c = load(t, name, prefix), load(t, name)
            bm, cm = med(b, "msg_per_s"), med(c, "msg_per_s")
            bb, cb = med(b, "server_busy_us_per_msg"), med(c, "server_busy_us_per_msg")
            print(f"| {t} | {label} | {bm:,.0f} | {cm:,.0f} | {100*(cm/bm-1):+.1f} % | {bb:.3f} | {cb:.3f} | {100*(cb/bb-1):+.1f} % |")
    for t in transports:
        b, c = load(t, "idle", prefix), load(t, "idle")
        print(f"- {t} idle: server RSS per connection {med(b,'server_rss_per_conn'):,.0f} -> {med(c,'server_rss_per_conn'):,.0f} bytes")
PY
