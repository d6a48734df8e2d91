#!/usr/bin/env bash
# Load test for `logsieve serve` (and, optionally, the reference FastAPI
# server): requests/s and p50/p99 latency of /classify-single/ at
# concurrency 1, 8 and 64 (wrk), the time to classify a 100k-row CSV upload,
# an overload check (429s while /health stays responsive) and peak RSS during
# a ~100 MB upload.
#
# usage: scripts/loadtest.sh [BASE_URL]        (default http://127.0.0.1:8000)
#   DURATION=10s       wrk run per concurrency level
#   ROWS=100000        rows in the big CSV upload
#   SERVER_PID=…       pid of the server, for the RSS figures (default: found by port)
#   SKIP_BIG=1         skip the 100 MB upload
#   SKIP_OVERLOAD=1    skip the overload check (run it against a server started
#                      with a small --queue-capacity, e.g. 16, to see 429s)
#   LOGSIEVE_API_TOKEN sent as a bearer token when set
# needs: wrk (apt-get install -y wrk), curl, python3.
set -euo pipefail
base=${1:-http://127.0.0.1:8000}
duration=${DURATION:-10s}
rows=${ROWS:-100000}
here=$(cd "$(dirname "$0")/.." && pwd)
synthetic=${SYNTHETIC:-../shared/datasets/synthetic_logs.csv}
[ -f "$synthetic" ] || synthetic="$here/data/seed_test.csv"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
auth=()
[ -n "${LOGSIEVE_API_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $LOGSIEVE_API_TOKEN")

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
curl -fsS "$base/" >/dev/null || { echo "no server at $base" >&2; exit 1; }

# Request bodies: every row of the synthetic set (rules, model and LegacyCRM
# rows in their natural mix), and a big CSV made by repeating it.
python3 - "$synthetic" "$work" "$rows" <<'PY'
import csv, json, sys, itertools
src, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [(r["source"].strip(), r["log_message"]) for r in csv.DictReader(open(src, newline=""), skipinitialspace=True)]
with open(f"{work}/bodies.jsonl", "w") as f:
    for s, m in rows:
        f.write(json.dumps({"source": s, "log_message": m}) + "\n")
with open(f"{work}/big.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["source", "log_message"])
    for s, m in itertools.islice(itertools.cycle(rows), n):
        w.writerow([s, m])
# ~100 MB of rows whose messages are long (1 KiB) but settled by a rule,
# so the figure is about streaming memory, not model speed.
with open(f"{work}/huge.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["source", "log_message"])
    pad = "x" * 1000
    for i in range(100 * 1024):
        w.writerow(["ModernCRM", f"User User{i} logged in. {pad}"])
PY

cat >"$work/single.lua" <<'LUA'
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = math.random(#bodies)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("LOGSIEVE_API_TOKEN")
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f non2xx=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
LUA

pid=${SERVER_PID:-}
if [ -z "$pid" ]; then
  port=$(echo "$base" | sed -E 's#.*:([0-9]+)/?$#\1#')
  pid=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
fi
# Wait until jobs left by the last run (callers gone, still holding queue
# slots until a classifier thread skips them) have drained.
drain() {
  for _ in $(seq 600); do
    q=$(curl -fsS "$base/health" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("queue",{}).get("in_flight",0))' 2>/dev/null || echo 0)
    [ "$q" = 0 ] && return
    sleep 1
  done
}
rss() { [ -n "$pid" ] && awk '/^VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status" 2>/dev/null || echo "?"; }

echo "== $base  ($(nproc) cores, $(date -u +%FT%TZ))"
echo "-- /classify-single/, $duration per level, bodies from $(basename "$synthetic") ($(wc -l <"$work/bodies.jsonl") rows, in order)"
for c in 1 8 64; do
  t=$((c < 2 ? 1 : 2))
  drain
  r=$(BODIES="$work/bodies.jsonl" wrk -t"$t" -c"$c" -d"$duration" --timeout 30s -s "$work/single.lua" "$base/classify-single/" | grep '^RESULT')
  echo "concurrency $c: ${r#RESULT }"
done
echo "server RSS after the wrk runs: $(rss)"
drain

echo "-- upload: $rows-row CSV ($(du -h "$work/big.csv" | cut -f1)) to /classify/"
echo "upload took $(curl -fsS "${auth[@]}" -F "file=@$work/big.csv" "$base/classify/" -o "$work/out.csv" -w '%{time_total}') s"
echo "rows out: $(($(python3 -c 'import csv,sys; print(sum(1 for _ in csv.reader(open(sys.argv[1], newline=""))))' "$work/out.csv") - 1))"
python3 - "$work/out.csv" <<'PY'
import csv, sys, collections
c = collections.Counter(r.get("method_used") or r.get("method") for r in csv.DictReader(open(sys.argv[1], newline="")))
print("methods:", dict(c))
PY

if [ -z "${SKIP_OVERLOAD:-}" ]; then
  echo "-- overload: 256 connections on /classify-single/ for $duration, /health probed meanwhile"
  (BODIES="$work/bodies.jsonl" wrk -t2 -c256 -d"$duration" --timeout 30s -s "$work/single.lua" "$base/classify-single/" | grep '^RESULT' >"$work/over.txt") &
  wpid=$!
  sleep 2
  worst=0; n=0
  while kill -0 "$wpid" 2>/dev/null; do
    t=$(curl -fsS -o /dev/null -w '%{time_total}' "$base/health" || echo fail)
    [ "$t" = fail ] && { echo "/health failed under load"; continue; }
    n=$((n + 1)); worst=$(python3 -c "print(max($worst, $t))")
    sleep 0.2
  done
  echo "overload: $(sed 's/RESULT //' "$work/over.txt")  (non2xx = 429s)"
  echo "/health under overload: $n probes, slowest $(python3 -c "print(round($worst*1000, 1))") ms"
  curl -fsS "${auth[@]}" "$base/metrics" 2>/dev/null | grep -E '^logsieve_http_requests_total\{.*classify-single.*status="429"' || true
fi

drain
if [ -z "${SKIP_BIG:-}" ]; then
  echo "-- memory: $(du -h "$work/huge.csv" | cut -f1) upload of long rule-hit rows to /classify/ (RSS sampled)"
  echo "RSS before: $(rss)"
  (curl -fsS "${auth[@]}" -X POST -T "$work/huge.csv" -H 'content-type: text/csv' \
     "$base/classify" -o /dev/null -w '%{time_total} s' >"$work/huge.txt" 2>&1) &
  cpid=$!
  peak=0
  while kill -0 "$cpid" 2>/dev/null; do
    [ -n "$pid" ] && k=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) && [ "${k:-0}" -gt "$peak" ] && peak=$k
    sleep 0.1
  done
  echo "100 MB upload: $(cat "$work/huge.txt"); peak RSS during it $((peak / 1024)) MiB; after $(rss)"
fi
