#!/usr/bin/env bash
# Benchmark `hioload-ws pubsub --postgres` (kernel sockets): how fast the archive stores what
# one node publishes, at --pg-batch 1 (a round trip per message) and at the default 500. A
# private PostgreSQL cluster on a free loopback port (data under target/, fsync off as in the
# tests), the appliance on CPU 0, generator and PostgreSQL on CPU 1.
#
#   scripts/bench-archive.sh [SECONDS]
#
# Each row publishes as fast as acks come back (20 publishers, 100 members over 10 channels)
# for SECONDS, then reports the publishes acknowledged, the rows stored when the load stopped,
# and how long the backlog took to drain after it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-5}"
BIN="${HIOLOAD_BIN:-$ROOT/target/release/hioload-ws}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "bench-archive.sh: needs PostgreSQL (apt-get install postgresql)" >&2; exit 2; }
[ -n "${HIOLOAD_BIN:-}" ] || cargo build --release --quiet -p hioload-ws-app --manifest-path "$ROOT/Cargo.toml"

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PGDIR="$OUT/archive-pg"
PGPORT=$(free_port)
APP_PID=""
cleanup() {
  [ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -m immediate -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
rm -rf "$PGDIR" && mkdir -p "$PGDIR"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDIR"
as_pg "$PGBIN/initdb" -A trust -U hioload --no-sync -E UTF8 -D "$PGDIR" >/dev/null
as_pg taskset -c 1 "$PGBIN/pg_ctl" -D "$PGDIR" -w -l "$PGDIR/server.log" \
  -o "-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off" start >/dev/null
URL="postgres://hioload@127.0.0.1:$PGPORT/postgres"
export PGOPTIONS='-c client_min_messages=warning'
psql_q() { psql -h 127.0.0.1 -p "$PGPORT" -U hioload -d postgres -Atc "$1"; }

printf '%-10s %12s %14s %16s %14s\n' pg-batch publishes/s stored_at_stop stored_total drain_s | tee "$OUT/archive-summary.txt"
for batch in 1 500; do
  psql_q "DROP TABLE IF EXISTS hioload_messages, hioload_schema" >/dev/null
  log="$OUT/archive-server-$batch.log"
  taskset -c 0 "$BIN" pubsub --no-dpdk --listen 127.0.0.1:0 --workers 1 --cpus 0 --admin off \
    --log-format text --postgres "$URL" --pg-batch "$batch" --pg-backlog 10000000 >"$log" 2>&1 &
  APP_PID=$!
  url=""
  for _ in $(seq 1 100); do
    url=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on \(ws:\/\/[^ ]*\).*/\1/p' "$log" | head -1)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { cat "$log" >&2; exit 1; }
  json=$(taskset -c 1 "$BIN" bench pubsub --url "$url/" --cpus 1 --channels 10 --connections 100 \
    --publishers 20 --rate 0 --size 64 --duration "${SECS}s" --warmup 1s --json 2>/dev/null)
  stopped=$(date +%s.%N)
  at_stop=$(psql_q "SELECT count(*) FROM hioload_messages")
  # The appliance has every publish numbered; wait until they are all stored.
  last=-1
  while :; do
    n=$(psql_q "SELECT count(*) FROM hioload_messages")
    [ "$n" = "$last" ] && break
    last=$n
    sleep 1
  done
  drained=$(python3 -c "import time; print(f'{time.time() - $stopped - 1:.1f}')")
  pubs=$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"{r['publishes']/r['seconds']:.0f}\")" "$json")
  printf '%-10s %12s %14s %16s %14s\n' "$batch" "$pubs" "$at_stop" "$last" "$drained" | tee -a "$OUT/archive-summary.txt"
  kill "$APP_PID" 2>/dev/null || true
  wait "$APP_PID" 2>/dev/null || true
  APP_PID=""
done
