#!/usr/bin/env bash
# Benchmark `hioload-ws pubsub --redis` (kernel sockets): one node alone, one node through
# Redis, two nodes through Redis (a member set on each), with `hioload-ws bench pubsub`, and
# what Redis does meanwhile. A private redis-server on a free loopback port, data under
# target/; appliances on CPU 0, generator and Redis on CPU 1 (this VM has two). JSON lines and
# a summary table go to target/bench/scaleout-*.
#
#   scripts/bench-scaleout.sh [SECONDS] [ROWS]
#
# (default 5 s measured; ROWS is a glob of row names). Each row: 1,000 members over 10
# channels and 20 publishers, at a fixed 2,000 publishes/s (latency) and as fast as acks come
# back (throughput). Redis calls per message come from Redis's own INFO commandstats, its CPU
# from INFO cpu. REDIS_BATCH=N sets the nodes' --redis-batch (pipeline size) to compare.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-5}"
ROWS="${2:-*}"
BIN="${HIOLOAD_BIN:-$ROOT/target/release/hioload-ws}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
command -v redis-server >/dev/null || { echo "bench-scaleout.sh: needs redis-server (apt-get install redis-server)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "bench-scaleout.sh: needs 2 CPUs" >&2; exit 2; }
[ -n "${HIOLOAD_BIN:-}" ] || cargo build --release --quiet -p hioload-ws-app --manifest-path "$ROOT/Cargo.toml"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

REDIS_DIR="$OUT/scaleout-redis"
rm -rf "$REDIS_DIR" && mkdir -p "$REDIS_DIR"
REDIS_PORT=$(free_port)
taskset -c 1 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --dir "$REDIS_DIR" >"$OUT/scaleout-redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 1 50); do
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
redis_calls() { rcli INFO commandstats | sed -n 's/^cmdstat_[a-z]*:calls=\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }'; }
redis_scripts() { rcli INFO commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }'; }
redis_cpu() { rcli INFO cpu | sed -n 's/^used_cpu_\(sys\|user\):\([0-9.]*\).*/\2/p' | awk '{ s += $1 } END { print s + 0 }'; }

start_node() { # NAME LOG ARGS...: sets NODE_URL and NODE_PID
  local name="$1" log="$2"
  shift 2
  taskset -c 0 "$BIN" pubsub --no-dpdk --listen 127.0.0.1:0 --workers 1 --cpus 0 --admin off \
    --log-format text --node-name "$name" "$@" >"$log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  for _ in $(seq 1 100); do
    NODE_URL=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on \(ws:\/\/[^ ]*\).*/\1/p' "$log" | head -1)
    [ -n "$NODE_URL" ] && return 0
    sleep 0.1
  done
  echo "bench-scaleout.sh: node $name did not start; its log:" >&2
  cat "$log" >&2
  exit 1
}

SUMMARY="$OUT/scaleout-summary.txt"
printf '%-22s %-6s %12s %9s %9s %12s %14s %12s\n' row rate deliveries/s p50_ms p99_ms scripts/msg redis_calls/msg redis_cpu_% | tee "$SUMMARY"

row() { # NAME NODES(0 = alone, no Redis) RATE
  local name="$1" nodes="$2" rate="$3"
  # shellcheck disable=SC2254 # ROWS is a pattern
  case "$name" in $ROWS) ;; *) return 0 ;; esac
  rcli FLUSHALL >/dev/null
  local urls=() node_pids=() redis=()
  if [ "$nodes" -gt 0 ]; then redis=(--redis "redis://127.0.0.1:$REDIS_PORT/0" --redis-batch "${REDIS_BATCH:-256}"); fi
  for i in $(seq 1 "$(( nodes > 0 ? nodes : 1 ))"); do
    start_node "n$i" "$OUT/scaleout-$name-n$i.log" "${redis[@]}"
    urls+=(--url "$NODE_URL/")
    node_pids+=("$NODE_PID")
  done
  local calls0 cpu0 t0 scripts0
  calls0=$(redis_calls || echo 0)
  scripts0=$(redis_scripts || echo 0)
  cpu0=$(redis_cpu || echo 0)
  t0=$(date +%s.%N)
  local json
  json=$(taskset -c 1 "$BIN" bench pubsub "${urls[@]}" --workers 2 --cpus 1 --channels 10 \
    --connections 1000 --publishers 20 --rate "$rate" --size 64 --duration "${SECS}s" \
    --warmup 1s --json 2>"$OUT/scaleout-generator.log")
  local t1 calls1 cpu1 scripts1
  t1=$(date +%s.%N)
  calls1=$(redis_calls || echo 0)
  scripts1=$(redis_scripts || echo 0)
  cpu1=$(redis_cpu || echo 0)
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  echo "$json" >>"$OUT/scaleout-$name.jsonl"
  python3 - "$name" "$rate" "$json" "$calls0" "$calls1" "$cpu0" "$cpu1" "$t0" "$t1" "$nodes" "$scripts0" "$scripts1" <<'EOF' | tee -a "$SUMMARY"
import json, sys
name, rate, j, c0, c1, u0, u1, t0, t1, nodes, s0, s1 = sys.argv[1:]
r = json.loads(j)
pubs = max(r["publishes"], 1)
# The generator counts the publishes acknowledged in its window; Redis counts all calls of the
# run (warm-up and setup included): calls per message is an upper bound.
calls = (float(c1) - float(c0)) / pubs if nodes != "0" else 0.0
scripts = (float(s1) - float(s0)) / pubs if nodes != "0" else 0.0
cpu = (float(u1) - float(u0)) / (float(t1) - float(t0)) * 100 if nodes != "0" else 0.0
print(f"{name:<22} {rate:<6} {r['msg_per_s']:>12.0f} {r['p50_us']/1000:>9.2f} {r['p99_us']/1000:>9.2f} {scripts:>12.2f} {calls:>14.2f} {cpu:>12.1f}")
EOF
}

for rate in 2000 0; do
  tag=$([ "$rate" = 0 ] && echo max || echo "r$rate")
  row "alone-$tag" 0 "$rate"
  row "redis-1node-$tag" 1 "$rate"
  row "redis-2nodes-$tag" 2 "$rate"
done
echo "bench-scaleout.sh: results in $SUMMARY and $OUT/scaleout-*.jsonl"
