#!/usr/bin/env bash
# Benchmark the echo appliance on kernel sockets with the project's load generator.
#
#   scripts/bench-kernel.sh [RUNS]        (default 3 runs per scenario; the median is reported)
#
# Server: one worker pinned to CPU 0. Generator: `hioload-ws bench echo`, pinned to CPU 1.
# Scenarios (issue #2): 100 connections x 32 B with 1 and 16 in flight; 100 x 16 KiB with 4 in
# flight; 10,000 connections x 32 B with 1 in flight; 10,000 idle connections (memory).
# Prints a Markdown table; raw JSON lines go to target/bench/kernel-*.jsonl.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-3}"
BIN="$ROOT/target/release/hioload-ws"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
[ "$(nproc)" -ge 2 ] || { echo "bench-kernel.sh: needs 2 CPUs (server on 0, generator on 1)" >&2; exit 2; }
cargo build --release --quiet -p hioload-ws-app --manifest-path "$ROOT/Cargo.toml"

SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

start_server() {
  local log="$OUT/server.log"
  taskset -c 0 "$BIN" echo --listen 127.0.0.1:0 --workers 1 --cpus 0 --log-level info --log-format text >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    URL=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on \(ws:\/\/[^ ]*\).*/\1/p' "$log" | head -1)
    [ -n "$URL" ] && return 0
    sleep 0.1
  done
  echo "bench-kernel.sh: server did not start" >&2
  cat "$log" >&2
  exit 1
}
stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
}

run_scenario() { # NAME ARGS...: RUNS runs, each against a fresh server
  local name="$1"
  shift
  local file="$OUT/kernel-$name.jsonl"
  : >"$file"
  for i in $(seq 1 "$RUNS"); do
    start_server
    "$BIN" bench echo --url "$URL/" --server-pid "$SERVER_PID" --cpu 1 --json "$@" 2>/dev/null >>"$file"
    stop_server
    echo "  $name run $i: $(tail -1 "$file")" >&2
  done
}

echo "bench-kernel.sh: $RUNS runs per scenario on $(nproc) CPUs ($(uname -r))" >&2
run_scenario small-d1 --connections 100 --depth 1 --size 32 --duration 10s --warmup 2s
run_scenario small-d16 --connections 100 --depth 16 --size 32 --duration 10s --warmup 2s
run_scenario large-d4 --connections 100 --depth 4 --size 16KiB --duration 10s --warmup 2s
run_scenario conns10k-d1 --connections 10000 --depth 1 --size 32 --duration 10s --warmup 5s
run_scenario idle10k --connections 10000 --depth 0 --duration 2s --warmup 5s

python3 - "$OUT" <<'PY'
import json, statistics, sys, os
out = sys.argv[1]
def load(name):
    with open(os.path.join(out, f"kernel-{name}.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]
def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
print("| scenario | msg/s | MB/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/msg | server busy | generator busy | mismatches |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, label in [("small-d1", "100 conns, 32 B, 1 in flight"), ("small-d16", "100 conns, 32 B, 16 in flight"),
                    ("large-d4", "100 conns, 16 KiB, 4 in flight"), ("conns10k-d1", "10,000 conns, 32 B, 1 in flight")]:
    r = load(name)
    print(f"| {label} | {med(r,'msg_per_s'):,.0f} | {med(r,'mb_per_s'):,.1f} | {med(r,'p50_us'):,.0f} | {med(r,'p99_us'):,.0f} | "
          f"{med(r,'p999_us'):,.0f} | {med(r,'server_cpu_us_per_msg'):.3f} | {med(r,'server_cpu')*100:.0f} % | "
          f"{med(r,'generator_busy')*100:.0f} % | {sum(x['mismatches'] for x in r)} |")
r = load("idle10k")
print(f"\nIdle connections: {med(r,'open'):,.0f} open, server RSS {med(r,'server_rss_per_conn'):,.0f} bytes per connection (median of {len(r)}).")
PY
