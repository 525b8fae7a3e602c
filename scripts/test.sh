#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine:
#   1. installs what the tests need when it is missing (apt: python3-venv, patch, nodejs, npm,
#      libdpdk-dev, clang/libclang-dev, pkg-config, iproute2, iputils-ping, chromium, redis-server,
#      postgresql (the scale-out and archive tests start private servers on free loopback ports,
#      data under target/, and stop them); pip:
#      websockets; npm: ws; the Autobahn testsuite via ../shared/tools/autobahn/setup.sh);
#   2. checks formatting and lints (cargo fmt, cargo clippy -D warnings);
#   3. runs the Rust unit, property and integration tests (cargo nextest, else cargo test);
#   4. runs the echo appliance on kernel sockets and drives it with the Python `websockets` and
#      Node `ws` clients, and its admin dashboard in headless Chromium under load;
#   5. runs the full Autobahn|Testsuite (517 cases, permessage-deflate included) against it and
#      requires zero FAILED, NON-STRICT and UNIMPLEMENTED (scripts/autobahn.sh);
#   6. the same on DPDK (root and /dev/net/tun): EAL --no-huge with a net_tap device, the kernel
#      as the client: the stack's DPDK tests, the appliance's DPDK tests, the Python client and
#      Autobahn (all but the compression cases, plus 12.1.* and 13.1.*) against
#      `hioload-ws echo` on DPDK;
#   7. builds the DPDK transport against a newer DPDK LTS (Debian trixie's 24.11 packages,
#      unpacked under target/, not installed): scripts/check-dpdk-newer.sh.
# Exits non-zero if any stage fails; stages that cannot run say so in a SKIPPED banner (and fail
# under CI=true). Extra arguments are passed to the test runner (e.g. a test name filter).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/scripts/.deps"
AUTOBAHN="${AUTOBAHN_DIR:-$ROOT/../shared/tools/autobahn}"
cd "$ROOT"

START=$(date +%s)
PASSED=0
FAILED=0
SKIPPED=0
FAILED_STAGES=()
PIDS=()

say() { printf '\n=== test.sh: %s (%ss)\n' "$*" "$(($(date +%s) - START))"; }
skip() {
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
  printf '!!! SKIPPED: %s\n' "$*"
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
  SKIPPED=$((SKIPPED + 1))
  if [ "${CI:-}" = "true" ]; then
    FAILED=$((FAILED + 1))
    FAILED_STAGES+=("skipped under CI: $*")
  fi
}
notice_skip() { # a skip the issue allows (e.g. no hugepages on this machine): loud, not a failure
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
  printf '!!! SKIPPED: %s\n' "$*"
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
  SKIPPED=$((SKIPPED + 1))
}
stage() { # NAME COMMAND...: run a stage, record its result, keep going
  local name="$1"
  shift
  say "$name"
  if "$@"; then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
    FAILED_STAGES+=("$name")
    echo "test.sh: stage FAILED: $name"
  fi
}
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# 1. What the tests need
say "checking prerequisites"
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo not found. Install Rust (stable) with rustup (https://rustup.rs), then run this again." >&2
  exit 2
fi
need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v patch >/dev/null 2>&1 || need_apt+=(patch)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists libdpdk 2>/dev/null || need_apt+=(libdpdk-dev dpdk)
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v ping >/dev/null 2>&1 || need_apt+=(iputils-ping)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing packages: ${need_apt[*]}; install them (sudo apt-get install ${need_apt[*]}) or run as root." >&2
    exit 2
  fi
  echo "test.sh: installing ${need_apt[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

mkdir -p "$DEPS"
if [ ! -x "$DEPS/py/bin/python" ]; then
  python3 -m venv "$DEPS/py"
fi
if ! "$DEPS/py/bin/python" -c 'import websockets, sys; sys.exit(websockets.version.version != "15.0.1")' 2>/dev/null; then
  echo "test.sh: installing Python websockets 15.0.1 into scripts/.deps/py"
  "$DEPS/py/bin/pip" install --quiet --disable-pip-version-check websockets==15.0.1
fi
if [ ! -f "$DEPS/node/node_modules/ws/package.json" ]; then
  echo "test.sh: installing Node ws 8.18.0 into scripts/.deps/node"
  npm install --silent --no-audit --no-fund --prefix "$DEPS/node" ws@8.18.0 >/dev/null
fi
HAVE_AUTOBAHN=0
if [ -x "$AUTOBAHN/setup.sh" ]; then
  "$AUTOBAHN/setup.sh" | tail -1
  HAVE_AUTOBAHN=1
fi

# ---------------------------------------------------------------------------------------------
# 2. Formatting and lints
if cargo fmt --version >/dev/null 2>&1; then
  stage "cargo fmt --check" cargo fmt --all -- --check
else
  skip "cargo fmt is not installed (rustup component add rustfmt)"
fi
if cargo clippy --version >/dev/null 2>&1; then
  stage "cargo clippy -D warnings" cargo clippy --workspace --all-targets --release --quiet -- -D warnings
  stage "cargo clippy -D warnings (dpdk feature)" \
    cargo clippy -p hioload-stack -p hioload-dpdk-sys -p hioload-ws-app --features hioload-stack/dpdk,hioload-ws-app/dpdk \
    --all-targets --release --quiet -- -D warnings
else
  skip "cargo clippy is not installed (rustup component add clippy)"
fi

# ---------------------------------------------------------------------------------------------
# 3. Rust tests (the `ci` profile: release optimisations without LTO or debug info, which
# compiles in far less time; the same build serves the smoke and conformance stages)
if cargo nextest --version >/dev/null 2>&1; then
  stage "cargo nextest (unit, property, integration)" cargo nextest run --workspace --cargo-profile ci --no-fail-fast "$@"
else
  echo "test.sh: cargo-nextest not installed; using cargo test"
  stage "cargo test (unit, property, integration)" cargo test --workspace --profile ci --no-fail-fast "$@"
fi
cargo build --profile ci --quiet -p hioload-ws-app
BIN="$ROOT/target/ci/hioload-ws"

# Start the appliance on a free port; sets APP_URL. Logs go to $1.
launch_appliance() { # LOG ARGS...: start `hioload-ws ${APP_MODE:-echo} ARGS`, wait for its startup line
  local log="$1"
  shift
  "$BIN" "${APP_MODE:-echo}" --log-level info --log-format text --admin 127.0.0.1:0 "$@" >"$log" 2>&1 &
  APP_PID=$!
  PIDS+=("$APP_PID")
  APP_URL=""
  for _ in $(seq 1 100); do
    APP_URL=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*listening on \(ws:\/\/[^ ]*\).*/\1/p' "$log" | head -1)
    APP_ADMIN=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*admin endpoint on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -1)
    [ -n "$APP_URL" ] && return 0
    kill -0 "$APP_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "test.sh: the appliance did not start; its log:" >&2
  cat "$log" >&2
  return 1
}
start_appliance() { # LOG ARGS...: on kernel sockets, on a free port; sets APP_URL
  local log="$1"
  shift
  launch_appliance "$log" --listen 127.0.0.1:0 "$@"
}
stop_appliance() {
  kill -TERM "$APP_PID" 2>/dev/null || true
  wait "$APP_PID" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# 4. Clients nobody here wrote
LOGS="$ROOT/target/test-logs"
mkdir -p "$LOGS"
# The chat page in Chromium (scripts/smoke/chat.py ARGS...), then proof from the appliance's
# /metrics that the browser negotiated permessage-deflate (it offers it on every connection).
chat_page() {
  "$DEPS/py/bin/python" scripts/smoke/chat.py "$@" || return 1
  local n
  n=$(curl -s "$APP_ADMIN/metrics" | awk '/^hioload_ws_deflate_sessions_total/ { s += $2 } END { print s + 0 }')
  echo "chat page: $n session(s) on $APP_ADMIN negotiated permessage-deflate"
  [ "$n" -ge 1 ]
}
if start_appliance "$LOGS/smoke.log" --workers 2; then
  stage "Python websockets client smoke test ($APP_URL)" "$DEPS/py/bin/python" scripts/smoke/py_client.py "$APP_URL/smoke"
  stage "Node ws client smoke test ($APP_URL)" env NODE_PATH="$DEPS/node/node_modules" node scripts/smoke/node_client.js "$APP_URL/smoke"
  stage "Admin dashboard in headless Chromium under load ($APP_ADMIN)" \
    "$DEPS/py/bin/python" scripts/smoke/dashboard.py "$APP_ADMIN" "$APP_URL/" "$BIN" "$ROOT/target/dashboard.png"
  stop_appliance
else
  FAILED=$((FAILED + 1))
  FAILED_STAGES+=("appliance start for smoke tests")
fi
if APP_MODE=pubsub start_appliance "$LOGS/chat.log" --workers 2; then
  stage "Pub/sub chat page in two headless Chromium pages (${APP_URL/ws:/http:})" \
    chat_page "${APP_URL/ws:/http:}/" "$ROOT/target/chat.png"
  stop_appliance
else
  FAILED=$((FAILED + 1))
  FAILED_STAGES+=("appliance start for the chat page")
fi

# Two nodes joined through a private Redis (free loopback port, data under target/), the chat
# page's two people on different nodes.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_DIR="$ROOT/target/test-redis"
rm -rf "$REDIS_DIR" && mkdir -p "$REDIS_DIR"
REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$REDIS_DIR" \
  >"$LOGS/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 1 50); do
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ] && break
  sleep 0.1
done
if APP_MODE=pubsub start_appliance "$LOGS/chat-a.log" --workers 2 --redis "redis://127.0.0.1:$REDIS_PORT/0" --node-name a; then
  NODE_A_PID=$APP_PID NODE_A_URL=$APP_URL
  if APP_MODE=pubsub start_appliance "$LOGS/chat-b.log" --workers 2 --redis "redis://127.0.0.1:$REDIS_PORT/0" --node-name b; then
    stage "Pub/sub chat page on two nodes joined through Redis (${NODE_A_URL/ws:/http:}, ${APP_URL/ws:/http:})" \
      chat_page "${NODE_A_URL/ws:/http:}/" --bob-url "${APP_URL/ws:/http:}/"
    stop_appliance
  else
    FAILED=$((FAILED + 1))
    FAILED_STAGES+=("second node start for the two-node chat page")
  fi
  APP_PID=$NODE_A_PID
  stop_appliance
else
  FAILED=$((FAILED + 1))
  FAILED_STAGES+=("first node start for the two-node chat page")
fi
kill "$REDIS_PID" 2>/dev/null || true
wait "$REDIS_PID" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# 5. Conformance
if [ "$HAVE_AUTOBAHN" = 1 ]; then
  if start_appliance "$LOGS/autobahn.log"; then
    stage "Autobahn|Testsuite full set, 517 cases with permessage-deflate ($APP_URL)" \
      scripts/autobahn.sh "$APP_URL" "$ROOT/target/autobahn" full
    stop_appliance
  else
    FAILED=$((FAILED + 1))
    FAILED_STAGES+=("appliance start for Autobahn")
  fi
  # Against pubsub: the cases that expect no echo must pass; every other message must be
  # answered with error bad_request (run.sh itself fails on the echo cases: its verdict is not
  # the one that counts here, the checker's is).
  autobahn_pubsub() { # URL OUTDIR
    "$AUTOBAHN/run.sh" "$1" "$2" quick >"$LOGS/autobahn-pubsub-run.log" 2>&1 || true
    "$DEPS/py/bin/python" scripts/smoke/autobahn_pubsub.py "$2"
  }
  if APP_MODE=pubsub start_appliance "$LOGS/autobahn-pubsub.log" --workers 2; then
    stage "Autobahn|Testsuite quick set against pubsub, where it applies ($APP_URL)" \
      autobahn_pubsub "$APP_URL" "$ROOT/target/autobahn-pubsub"
    stop_appliance
  else
    FAILED=$((FAILED + 1))
    FAILED_STAGES+=("appliance start for Autobahn against pubsub")
  fi
else
  skip "Autobahn testsuite not found at $AUTOBAHN (set AUTOBAHN_DIR)"
fi

# ---------------------------------------------------------------------------------------------
# 6. DPDK: real EAL, a real PMD (net_tap), real mbufs; the kernel on the far side of the TAP.
# (Runs last: building the appliance with the `dpdk` feature replaces target/ci/hioload-ws.)
run_tests() { # PACKAGE ARGS...
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --cargo-profile ci --no-fail-fast -p "$@"
  else
    cargo test --profile ci --no-fail-fast -p "$@"
  fi
}
# Start the appliance on DPDK over TAP device $1 (198.18.$2.2/24; the kernel side gets .1);
# $3: EAL memory options (default: no hugepages).
start_dpdk_appliance() {
  local iface="$1" net="$2" mem="${3:---no-huge -m 512}"
  # Two lcores: two workers on two queues.
  launch_appliance "$LOGS/dpdk-$iface.log" \
    --eal "-l 0-1 $mem --no-pci --no-shconf --file-prefix $iface --vdev=net_tap0,iface=$iface" \
    --ip "198.18.$net.2/24" || return 1
  # A larger TAP queue than the kernel's 1,000 packets, as in app/tests/common (a burst's tail
  # dropped there waits a whole retransmission timeout).
  ip addr add "198.18.$net.1/24" dev "$iface" && ip link set "$iface" txqueuelen 10000 &&
    ip link set "$iface" up
}
if [ "$(id -u)" -eq 0 ] && [ -c /dev/net/tun ]; then
  stage "DPDK building blocks over net_tap (EAL --no-huge)" run_tests hioload-stack --features dpdk
  stage "DPDK appliance tests over net_tap" run_tests hioload-ws-app --features dpdk --test dpdk
  cargo build --profile ci --quiet -p hioload-ws-app --features dpdk
  if start_dpdk_appliance hltest0 91; then
    stage "Python websockets client smoke test over DPDK ($APP_URL)" "$DEPS/py/bin/python" scripts/smoke/py_client.py "$APP_URL/smoke"
    if [ "$HAVE_AUTOBAHN" = 1 ]; then
      # Every case but the compression ones, and the first group of each compression kind (the
      # full set runs on kernel sockets above; both full runs are recorded in docs/TESTING.md).
      stage "Autobahn|Testsuite over DPDK: all but 12.*/13.*, plus 12.1.* and 13.1.* ($APP_URL)" \
        scripts/autobahn.sh "$APP_URL" "$ROOT/target/autobahn-dpdk" \
        '1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.1.*,13.1.*'
    fi
    stop_appliance
  else
    FAILED=$((FAILED + 1))
    FAILED_STAGES+=("DPDK appliance start")
  fi
  if APP_MODE=pubsub start_dpdk_appliance hltest2 93; then
    stage "Pub/sub chat page in two headless Chromium pages over DPDK (${APP_URL/ws:/http:})" \
      chat_page "${APP_URL/ws:/http:}/"
    stop_appliance
  else
    FAILED=$((FAILED + 1))
    FAILED_STAGES+=("DPDK pub/sub appliance start")
  fi
  # Real hugepages, when the machine can reserve them.
  if hp=$(scripts/setup-hugepages.sh 256 2>&1); then
    echo "$hp"
    if start_dpdk_appliance hltest1 92 "-m 256 --huge-unlink"; then
      stage "Python websockets client smoke test over DPDK on hugepages ($APP_URL)" \
        "$DEPS/py/bin/python" scripts/smoke/py_client.py "$APP_URL/smoke"
      stop_appliance
    else
      FAILED=$((FAILED + 1))
      FAILED_STAGES+=("DPDK appliance start on hugepages")
    fi
  else
    notice_skip "DPDK on real hugepages: $hp"
  fi
else
  skip "DPDK tests need root and /dev/net/tun (uid $(id -u), /dev/net/tun $([ -c /dev/net/tun ] && echo present || echo missing))"
fi
# The newer LTS the code is written for: build and link against Debian trixie's DPDK 24.11.
stage "DPDK transport builds against DPDK 24.11 (Debian trixie's packages)" scripts/check-dpdk-newer.sh trixie

say "done"
for s in "${FAILED_STAGES[@]}"; do
  echo "test.sh: failed: $s"
done
echo "test.sh stages: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
