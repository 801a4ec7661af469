#!/usr/bin/env bash
# Start the real servers, run the tests on SQLite then PostgreSQL (or the benchmarks), stop the servers.
# Usage: tests/run.sh PYTHON [--bench | --soak | --compare BASE]
set -uo pipefail
PY=$1; MODE=${2:-test}; BASE=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
STATE=$(mktemp -d /tmp/helpdesk-services.XXXXXX)
trap 'bash "$HERE/services/stop.sh" "$STATE"; rm -rf "$STATE"' EXIT
bash "$HERE/services/start.sh" "$STATE" "$PY" || exit 1
set -a; . "$STATE/env"; set +a
cd "$ROOT"
if [ "$MODE" = "--bench" ]; then
  "$PY" bench/outbound.py && "$PY" bench/memory.py && "$PY" bench/inbound.py --reference --rounds 5 &&
    "$PY" bench/senders.py &&
    "$PY" bench/scale.py && HELPDESK_TEST_DATABASE=postgresql "$PY" bench/scale.py
  exit $?
fi
if [ "$MODE" = "--soak" ]; then
  HELPDESK_TEST_DATABASE=sqlite "$PY" tests/soak/soak.py; sqlite_rc=$?
  HELPDESK_TEST_DATABASE=postgresql "$PY" tests/soak/soak.py; pg_rc=$?
  [ $sqlite_rc = 0 ] && [ $pg_rc = 0 ]
  exit $?
fi
if [ "$MODE" = "--compare" ]; then
  "$PY" bench/compare.py "$BASE"
  exit $?
fi
start=$(date +%s)
echo "== tests on SQLite, attachments in a local folder"
HELPDESK_TEST_DATABASE=sqlite "$PY" -m pytest -q; sqlite_rc=$?
echo "== tests on PostgreSQL, attachments in S3 (the tests that use the database)"
HELPDESK_TEST_DATABASE=postgresql "$PY" -m pytest -q; pg_rc=$?
echo "make test took $(( $(date +%s) - start ))s (SQLite rc=$sqlite_rc, PostgreSQL rc=$pg_rc)"
[ $sqlite_rc = 0 ] && [ $pg_rc = 0 ]
