#!/usr/bin/env python3
"""Judge an Autobahn|Testsuite run against the `pubsub` listener, where it applies.

The fuzzing client expects every message echoed; `pubsub` answers text that is not a request
with error `bad_request` and closes binary messages with 1003 (docs/PROTOCOL.md). So a case
applies when none of its expected outcomes contains a message: ping/pong, reserved bits and
opcodes, fragmentation and control frames, invalid UTF-8, close handling. Those must be OK
(NON-STRICT and INFORMATIONAL as upstream allows), with the close handshake OK.

Every other case is checked for what `pubsub` must do instead: whatever message it sent is an
`error` with code `bad_request`, never an echo or anything else.

    autobahn_pubsub.py OUTDIR [MIN_CASES]   (OUTDIR as given to ../shared/tools/autobahn/run.sh)
"""
import glob
import json
import os
import sys

PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSE_PASS = {"OK", "INFORMATIONAL"}


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = sys.argv[1]
    min_cases = int(sys.argv[2]) if len(sys.argv) == 3 else 247
    reports = sorted(glob.glob(os.path.join(out, "report", "*_case_*.json")))
    if len(reports) < min_cases:
        print(f"autobahn_pubsub: {len(reports)} case reports in {out}/report, expected {min_cases}"
              " (did the run finish? see wstest.log)", file=sys.stderr)
        return 1
    applies, failed, wrong_answers = [], [], []
    for path in reports:
        with open(path, encoding="utf-8") as f:
            case = json.load(f)
        cid = case["id"]
        expects_echo = any(ev and ev[0] == "message"
                           for outcome in case["expected"].values() for ev in outcome)
        if not expects_echo:
            applies.append(cid)
            if case["behavior"] not in PASS or case["behaviorClose"] not in CLOSE_PASS:
                failed.append(f"{cid}:{case['behavior']}/{case['behaviorClose']}")
            continue
        for ev in case["received"]:
            if ev and ev[0] == "message":
                text = ev[1] if isinstance(ev[1], str) else ""
                if not text.startswith('{"type":"error","code":"bad_request"'):
                    wrong_answers.append(f"{cid}: {text[:80]!r}")
                    break
    print(f"autobahn_pubsub: {len(reports)} cases ran; {len(applies)} apply to pubsub "
          f"(no echo expected), {len(failed)} of them failed; "
          f"{len(reports) - len(applies)} expect echoes, "
          f"{len(wrong_answers)} got an answer other than error bad_request")
    for line in failed[:20] + wrong_answers[:20]:
        print(f"  {line}")
    if len(applies) < 100:
        print("autobahn_pubsub: fewer than 100 applicable cases: the suite or this rule changed",
              file=sys.stderr)
        return 1
    return 1 if failed or wrong_answers else 0


if __name__ == "__main__":
    sys.exit(main())
