#!/usr/bin/env bash
# Run the appliance on DPDK over a TAP device, so a browser or any client on this machine
# reaches it through real EAL, a real poll-mode driver (net_tap), mbufs and the smoltcp stack.
#
#   scripts/demo-tap.sh [IFACE] [NET] [MODE]   (defaults: hldemo0, 198.18.99.0/24, echo; root)
#
# MODE `pubsub` serves the chat page: open http://198.18.NET.2:8080/ in a browser on the host.
# The appliance gets 198.18.NET.2, the kernel side of the TAP 198.18.NET.1. EAL runs with
# --no-huge, so no hugepages are needed. Ctrl-C stops it (gracefully: sessions get close 1001).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IFACE="${1:-hldemo0}"
NET="${2:-99}"
MODE="${3:-echo}"
case "$MODE" in echo | pubsub) ;; *)
  echo "demo-tap.sh: MODE is echo or pubsub, not '$MODE'" >&2
  exit 2
  ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "demo-tap.sh: needs root (EAL and the TAP device)" >&2; exit 2; }
[ -c /dev/net/tun ] || { echo "demo-tap.sh: /dev/net/tun is missing (modprobe tun)" >&2; exit 2; }
pkg-config --exists libdpdk || { echo "demo-tap.sh: DPDK not found: apt-get install libdpdk-dev dpdk pkg-config clang libclang-dev" >&2; exit 2; }

cargo build --release --quiet -p hioload-ws-app --features dpdk --manifest-path "$ROOT/Cargo.toml"
LOG="$(mktemp /tmp/hioload-demo.XXXXXX.log)"
"$ROOT/target/release/hioload-ws" "$MODE" \
  --eal "-l 0 --no-huge -m 512 --no-pci --no-shconf --file-prefix $IFACE --vdev=net_tap0,iface=$IFACE" \
  --ip "198.18.$NET.2/24" --log-level info >"$LOG" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; echo "demo-tap.sh: stopped; log: $LOG"' EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q "listening on" "$LOG" && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
ip addr add "198.18.$NET.1/24" dev "$IFACE"
# The kernel drops what it queues to a TAP beyond txqueuelen (1,000 by default); a burst from
# many browser tabs or a load test would lose its tail there and wait a retransmission.
ip link set "$IFACE" txqueuelen 10000
ip link set "$IFACE" up
grep "listening on" "$LOG" | sed 's/\x1b\[[0-9;]*m//g'
if [ "$MODE" = pubsub ]; then
  cat <<MSG

  The pub/sub appliance runs on DPDK (net_tap device $IFACE).
  Open  http://198.18.$NET.2:8080/  in a browser on this machine (two tabs, two names) to chat.
  Ctrl-C to stop.
MSG
  wait "$PID"
  exit 0
fi
cat <<MSG

  The echo appliance runs on DPDK (net_tap device $IFACE).
  Open  ws://198.18.$NET.2:8080/  from this machine, for example in a browser console:
      let ws = new WebSocket("ws://198.18.$NET.2:8080/"); ws.onmessage = e => console.log(e.data); ws.onopen = () => ws.send("hello");
  or:  ping 198.18.$NET.2
  Ctrl-C to stop.
MSG
wait "$PID"
