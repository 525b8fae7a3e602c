#!/usr/bin/env bash
# Benchmark permessage-deflate (kernel sockets, one appliance worker on CPU 0, the generator on
# CPU 1): echo and pub/sub fan-out of 1 KiB and 16 KiB chat-like JSON text with deflate off and
# on, and the memory an idle session costs with deflate off, on (the default: no context
# takeover), and on with context takeover both ways.
#
#   scripts/bench-deflate.sh [SECONDS] [ROWS]
#
# ROWS is a grep pattern over the row names (default: all), e.g. 'echo' or 'memory'.
# Columns: msg/s (echoes, or deliveries to members), the appliance's CPU time per message
# (/proc) and its share of a core, how busy the generator was (which side set the pace),
# payload bytes per message on the wire as the appliance counted what it sent
# (hioload_ws_payload_sent_bytes_total / frames), and the round trip (echo) or publish-to-
# delivery time (pub/sub). Memory: the appliance's RSS growth per session between 500 and 5,000
# sessions that each sent one 2 KiB message, got its echo, and stayed open (Python websockets
# clients, which offer deflate as browsers do); the first 500 pay for the worker's shared
# codecs, which are made once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-5}"
ROWS="${2:-.}"
BIN="${HIOLOAD_BIN:-$ROOT/target/release/hioload-ws}"
PY="$ROOT/scripts/.deps/py/bin/python"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
[ -n "${HIOLOAD_BIN:-}" ] || cargo build --release --quiet -p hioload-ws-app --manifest-path "$ROOT/Cargo.toml"
[ -x "$PY" ] || { echo "bench-deflate.sh: needs scripts/.deps/py (run scripts/test.sh once)" >&2; exit 2; }

APP_PID=""
cleanup() { [ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null || true; }
trap cleanup EXIT

start() { # LOG MODE ARGS...: the appliance on CPU 0; sets URL, ADMIN, APP_PID
  local log="$1" mode="$2"
  shift 2
  taskset -c 0 "$BIN" "$mode" --no-dpdk --listen 127.0.0.1:0 --workers 1 --cpus 0 \
    --admin 127.0.0.1:0 --log-format text "$@" >"$log" 2>&1 &
  APP_PID=$!
  URL="" ADMIN=""
  for _ in $(seq 1 100); do
    URL=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on \(ws:\/\/[^ ]*\).*/\1/p' "$log" | head -1)
    ADMIN=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*admin endpoint on http:\/\/\([^ /]*\).*/\1/p' "$log" | head -1)
    [ -n "$URL" ] && [ -n "$ADMIN" ] && return 0
    sleep 0.1
  done
  cat "$log" >&2
  exit 1
}
stop() { kill "$APP_PID" 2>/dev/null || true; wait "$APP_PID" 2>/dev/null || true; APP_PID=""; }
metric() { # SERIES: its value from the appliance's /metrics
  curl -s "http://$ADMIN/metrics" | awk -v s="$1" 'index($0, s " ") == 1 { print $2 }'
}
wire_bytes_per_msg() {
  "$PY" -c 'import sys; b, f = float(sys.argv[1]), float(sys.argv[2]); print(f"{b / f:.0f}" if f else "-")' \
    "$(metric 'hioload_ws_payload_sent_bytes_total{worker="0",opcode="text"}')" \
    "$(metric 'hioload_ws_frames_sent_total{worker="0",opcode="text"}')"
}
field() { "$PY" -c 'import json,sys; r=json.loads(sys.argv[1]); v=r.get(sys.argv[2]); print("-" if v is None else (f"{v:.2f}" if isinstance(v, float) else v))' "$1" "$2"; }

SUMMARY="$OUT/deflate-summary.txt"
printf '%-28s %10s %11s %11s %10s %10s %10s %10s\n' row msg/s cpu_us/msg server_cpu gen_busy \
  wire_B/msg p50_us p99_us | tee "$SUMMARY"
row() { # NAME JSON
  printf '%-28s %10s %11s %11s %10s %10s %10s %10s\n' "$1" "$(field "$2" msg_per_s)" \
    "$(field "$2" server_cpu_us_per_msg)" "$(field "$2" server_cpu_share)" \
    "$(field "$2" generator_busy)" "$(wire_bytes_per_msg)" "$(field "$2" p50_us)" \
    "$(field "$2" p99_us)" | tee -a "$SUMMARY"
}

load() { # MODE SIZE GENERATOR-FLAGS...: one load against the running appliance; prints its JSON
  local mode="$1" size="$2"
  shift 2
  case "$mode" in
    echo) # 50 connections, two messages in flight each.
      taskset -c 1 "$BIN" bench echo --url "$URL/" --cpus 1 --connections 50 --depth 2 \
        --size "$size" --text --payload json "$@" --duration "${SECS}s" --warmup 1s \
        --server-pid "$APP_PID" --json 2>/dev/null ;;
    pubsub) # 1,000 members in 10 channels; 10 publishers each keep one publish waiting for its ack.
      taskset -c 1 "$BIN" bench pubsub --url "$URL/" --cpus 1 --connections 1000 --channels 10 \
        --publishers 10 --rate 0 --size "$size" --payload json "$@" --duration "${SECS}s" \
        --warmup 2s --server-pid "$APP_PID" --json 2>/dev/null ;;
  esac
}

for mode in echo pubsub; do
  for size in 1KiB 16KiB; do
    for deflate in off on; do
      name="$mode-$size-deflate-$deflate"
      echo "$name" | grep -q -- "$ROWS" || continue
      start "$OUT/$name.log" "$mode" --deflate "$deflate"
      gen=()
      [ "$deflate" = on ] && gen=(--deflate)
      row "$name" "$(load "$mode" "$size" "${gen[@]}")"
      stop
    done
  done
done

mem_row() { # NAME APPLIANCE-FLAGS...
  local name="$1"
  shift
  echo "$name" | grep -q -- "$ROWS" || return 0
  start "$OUT/$name.log" echo --max-connections 6000 "$@"
  local rss
  rss=$(taskset -c 1 "$PY" "$ROOT/scripts/smoke/idle_sessions.py" "$URL/" 500 5000 2048 "$APP_PID")
  printf '%-28s %s\n' "$name" "$rss" | tee -a "$SUMMARY"
  stop
}
mem_row memory-deflate-off --deflate off
mem_row memory-deflate-on --deflate on
mem_row memory-deflate-takeover --deflate on --deflate-server-takeover --deflate-client-takeover
echo "bench-deflate.sh: summary in $SUMMARY"
