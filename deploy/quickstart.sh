#!/usr/bin/env bash
# The README's main job: a local Kafka, a worker, the sample conversations, their trackers and
# signals. Leaves the broker and the worker running; `make stop` stops both (by pid).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${TRACKERFLOW_QUICKSTART_OUT:-out}
PORT=${TRACKERFLOW_WEB_PORT:-6066}
mkdir -p "$OUT"

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  KAFKA_BOOTSTRAP_SERVERS=$("$BIN/trackerflow" broker start --port 0)
fi
export KAFKA_BOOTSTRAP_SERVERS TRACKERFLOW_WEB_PORT=$PORT
echo "kafka:   $KAFKA_BOOTSTRAP_SERVERS"

if [ -f "$OUT/worker.pid" ] && kill -0 "$(cat "$OUT/worker.pid")" 2>/dev/null; then
  echo "worker:  already running (pid $(cat "$OUT/worker.pid"))"
else
  "$BIN/trackerflow" worker > "$OUT/worker.log" 2>&1 &
  echo $! > "$OUT/worker.pid"
  echo "worker:  pid $(cat "$OUT/worker.pid"), HTTP API on http://127.0.0.1:$PORT, log $OUT/worker.log"
fi

health() { curl -sf "http://127.0.0.1:$PORT/health" 2>/dev/null || true; }
for _ in $(seq 1 120); do [ -n "$(health)" ] && break; sleep 1; done
[ -n "$(health)" ] || { echo "the worker did not come up; see $OUT/worker.log" >&2; exit 1; }

before=$(health | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["records"]["folded"])')
"$BIN/trackerflow" publish deploy/samples/conversations.jsonl
want=$((before + $(grep -c . deploy/samples/conversations.jsonl)))
for _ in $(seq 1 120); do
  folded=$(health | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["records"]["folded"])')
  [ "$folded" -ge "$want" ] && break
  sleep 1
done
echo "folded:  $(health)"

echo; echo "== conversations (GET /conversations?limit=5)"
curl -s "http://127.0.0.1:$PORT/conversations?limit=5"; echo
first=$(curl -s "http://127.0.0.1:$PORT/conversations?limit=1" | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["conversations"][0]["sender_id"])')
echo; echo "== one tracker (GET /conversations/$first/tracker?include_events=NONE)"
curl -s "http://127.0.0.1:$PORT/conversations/$first/tracker?include_events=NONE"; echo
echo; echo "== signals (trackerflow tail signals --idle 3 --max 8)"
"$BIN/trackerflow" tail signals --idle 3 --max 8

cat <<TXT

Next:
  curl http://127.0.0.1:$PORT/conversations                      all conversations (paged)
  curl http://127.0.0.1:$PORT/conversations/$first/story         a conversation as a YAML story
  curl http://127.0.0.1:$PORT/metrics                            the worker's counters for Prometheus
  KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS .venv/bin/trackerflow tail signals
  make stop                                                      stop the worker and the broker
  README "State": run production workers with --store rocksdb (state on disk, fast restarts)
TXT
