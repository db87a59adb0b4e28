#!/usr/bin/env bash
# Autobahn conformance run (`npm run test:autobahn`): the Autobahn TestSuite's case set,
# driven by kosoku (PyPI; a Python 3 runner of Autobahn's own case files), against native
# ingress in its test-only echo mode (scripts/autobahn-server.mjs), on 127.0.0.1.
#
# Compression cases (12.x, 13.x: permessage-deflate) are excluded: ingress negotiates no
# extension, so kosoku would only mark them UNIMPLEMENTED.
#
# Prints the count of cases per outcome (OK / NON-STRICT / INFORMATIONAL / UNIMPLEMENTED /
# FAILED) and the failures; exits 1 on any failure. Reports (JSON and HTML per case, and
# index.json) go to .autobahn/reports/ (gitignored). Needs the build (`npm run build`),
# python3 (>= 3.10) with venv, and PyPI.
#
# Environment:
#   KOSOKU_VERSION   kosoku to install (default 0.1.0)
#   AUTOBAHN_CASES   space-separated case ids or globs to run (default: all but 12.*, 13.*)
#   AUTOBAHN_PARALLEL cases run at once (default 1)
#   AUTOBAHN_SUMMARY also write the summary (Markdown) to this file
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/.autobahn"
VENV="$WORK/venv"
REPORTS="$WORK/reports"
KOSOKU_VERSION="${KOSOKU_VERSION:-0.1.0}"
PARALLEL="${AUTOBAHN_PARALLEL:-1}"

mkdir -p "$WORK"
if [[ ! -x "$VENV/bin/kosoku" ]] || ! "$VENV/bin/python" -m pip show kosoku 2>/dev/null | grep -qx "Version: $KOSOKU_VERSION"; then
  echo "autobahn: installing kosoku $KOSOKU_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

if [[ ! -f "$ROOT/dist/index.js" ]]; then
  echo "autobahn: no build; run npm run build first" >&2
  exit 2
fi

# The echo server, on a free port.
SERVER_LOG="$WORK/server.log"
node "$ROOT/scripts/autobahn-server.mjs" 0 >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
cleanup() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}
trap cleanup EXIT
PORT=""
for _ in $(seq 1 100); do
  PORT="$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$SERVER_LOG")"
  [[ -n "$PORT" ]] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "autobahn: the echo server did not start:" >&2
    cat "$SERVER_LOG" >&2
    exit 2
  fi
  sleep 0.1
done
if [[ -z "$PORT" ]]; then
  echo "autobahn: the echo server did not report its port" >&2
  exit 2
fi

args=()
if [[ -n "${AUTOBAHN_CASES:-}" ]]; then
  for c in $AUTOBAHN_CASES; do args+=(-i "$c"); done
fi
args+=(-x '12.*' -x '13.*')

rm -rf "$REPORTS"
COMMAND="kosoku ws://127.0.0.1:$PORT ${args[*]} -p $PARALLEL -o .autobahn/reports"
echo "autobahn: $COMMAND" >&2
START="$(date +%s)"
set +e
(cd "$ROOT" && "$VENV/bin/kosoku" "ws://127.0.0.1:$PORT" "${args[@]}" -p "$PARALLEL" -o "$REPORTS" >"$WORK/kosoku.log" 2>&1)
KOSOKU_RC=$?
set -e
ELAPSED=$(($(date +%s) - START))
tail -n 3 "$WORK/kosoku.log" >&2

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "autobahn: the echo server died during the run:" >&2
  tail -n 20 "$SERVER_LOG" >&2
  exit 1
fi
if [[ ! -f "$REPORTS/index.json" ]]; then
  echo "autobahn: kosoku wrote no report (exit $KOSOKU_RC):" >&2
  tail -n 20 "$WORK/kosoku.log" >&2
  exit 1
fi

# Summary: a case's outcome is its behavior, unless its closing behavior is not OK or
# INFORMATIONAL (wrong code, unclean, failed by the wrong endpoint): then it is FAILED,
# as in Autobahn's own reports.
"$VENV/bin/python" - "$REPORTS/index.json" "$KOSOKU_VERSION" "$COMMAND" "$ELAPSED" "${AUTOBAHN_SUMMARY:-}" <<'PY'
import json, sys, datetime
index_path, version, command, elapsed, summary_path = sys.argv[1:6]
index = json.load(open(index_path))
ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
counts = {k: 0 for k in ORDER}
failures, notes = [], []
key = lambda c: [int(p) for p in c.split(".")]
for agent, cases in index.items():
    for case_id in sorted(cases, key=key):
        r = cases[case_id]
        behavior, close = r["behavior"], r["behaviorClose"]
        outcome = behavior if close in ("OK", "INFORMATIONAL") else "FAILED"
        counts[outcome] = counts.get(outcome, 0) + 1
        line = f"{case_id}: behavior {behavior}, close {close}, remote close code {r['remoteCloseCode']}, {r['duration']} ms"
        if outcome in ("FAILED", "UNIMPLEMENTED") or behavior not in ORDER:
            failures.append(line)
        elif outcome != "OK":
            notes.append(line)
total = sum(counts.values())
slowest = sorted(((r["duration"], c) for cases in index.values() for c, r in cases.items()), reverse=True)[:5]
out = []
out.append(f"kosoku {version}, {datetime.date.today().isoformat()}, {total} cases (12.x and 13.x excluded), {elapsed} s")
out.append(f"command: {command}")
out.append("")
out.append("| outcome | cases |")
out.append("| --- | ---: |")
for k in ORDER:
    out.append(f"| {k} | {counts[k]} |")
for k, v in counts.items():
    if k not in ORDER:
        out.append(f"| {k} | {v} |")
out.append("")
out.append("Slowest: " + ", ".join(f"{c} {d} ms" for d, c in slowest))
if notes:
    out.append("")
    out.append("Not OK but passing:")
    out += [f"- {n}" for n in notes]
if failures:
    out.append("")
    out.append("Failed:")
    out += [f"- {f}" for f in failures]
text = "\n".join(out) + "\n"
print(text, end="")
if summary_path:
    open(summary_path, "w").write(text)
sys.exit(1 if failures else 0)
PY
