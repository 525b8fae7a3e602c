#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzingclient against an echo server and hold it to this project's
# bar: every selected case ran, and none is FAILED, close-FAILED, NON-STRICT or UNIMPLEMENTED.
#
#   scripts/autobahn.sh URL OUTDIR full|quick|CASES
#
# `full` runs all 517 cases as two suite clients at once (the compression cases are bound by the
# client's single Python thread: two halves on two cores take half the time), in OUTDIR/a and
# OUTDIR/b. The suite is ../shared/tools/autobahn (or $AUTOBAHN_DIR), set up by scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AUTOBAHN="${AUTOBAHN_DIR:-$ROOT/../shared/tools/autobahn}"
PY=python3
if [ $# -ne 3 ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
URL="$1" OUT="$2" CASES="$3"
mkdir -p "$OUT"

# The heavy half: the first four groups of compression cases (about half the full run's time).
HEAVY='12.1.*,12.2.*,12.3.*,12.4.*'

# Judge OUTDIR's summary.json: print one line, and fail when it falls short.
judge() { # OUTDIR
  python3 - "$1" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
bad = {k: s.get(k) or [] for k in ("failed", "close_failed", "non_strict", "unimplemented", "missing")}
print(f"{sys.argv[1]}: {s['ran']}/{s['selected']} cases ran in {s['wall_seconds']} s, "
      + ", ".join(f"{k} {len(v)}{' ' + ' '.join(v[:10]) if v else ''}" for k, v in bad.items()))
sys.exit(1 if any(bad.values()) or s["ran"] != s["selected"] else 0)
EOF
}

rc=0
if [ "$CASES" = full ]; then
  "$AUTOBAHN/run.sh" "$URL" "$OUT/a" "$HEAVY" >"$OUT/a.log" 2>&1 &
  a=$!
  AUTOBAHN_EXCLUDE="$HEAVY" "$AUTOBAHN/run.sh" "$URL" "$OUT/b" full >"$OUT/b.log" 2>&1 || true
  wait "$a" || true
  tail -n 8 "$OUT/a.log" "$OUT/b.log"
  judge "$OUT/a" || rc=1
  judge "$OUT/b" || rc=1
  total=$(python3 -c 'import json,sys; print(sum(json.load(open(d + "/summary.json"))["ran"] for d in sys.argv[1:]))' "$OUT/a" "$OUT/b")
  echo "autobahn.sh: $total cases ran in all (517 expected)"
  [ "$total" = 517 ] || rc=1
else
  "$AUTOBAHN/run.sh" "$URL" "$OUT" "$CASES" || true
  judge "$OUT" || rc=1
fi
[ "$rc" = 0 ] && echo "autobahn.sh: PASS" || echo "autobahn.sh: FAIL"
exit "$rc"
