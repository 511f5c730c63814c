#!/usr/bin/env bash
# The whole job on this machine, without Kubernetes: generate a CSV, upload it to the
# producer, let one worker drain the queue, and show what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${ROWS:-1000}"
python=.venv/bin/python

mkdir -p .run
$python data/generate_data.py --rows "$rows" --out .run/demo.csv
$python -m producer >.run/demo-producer.log 2>&1 &
producer=$!
trap 'kill $producer 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fsS http://localhost:8000/healthz >/dev/null 2>&1 && break; sleep 0.2; done

echo "== upload"
answer=$(curl -fsS -X POST -F file=@.run/demo.csv http://localhost:8000/upload)
echo "$answer"
status_url=$(echo "$answer" | $python -c 'import json, sys; print(json.load(sys.stdin)["status_url"])')
echo "== worker (exits when the queue is empty)"
WORKER_IDLE_SECONDS=2 $python -m worker
echo "== the upload's status (http://localhost:8000$status_url; every upload: http://localhost:8000/)"
curl -fsS "http://localhost:8000$status_url"
echo
