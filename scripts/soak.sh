#!/usr/bin/env bash
# Soak test for `logsieve serve`: minutes of mixed traffic at a load the
# server sustains, then the figures that say whether it held: 5xx count,
# p99 latency, and the server's RSS after warm-up and at the end.
#
# It starts its own release server on 127.0.0.1 (never another address) and
# every loop in it is bounded by the clock; it stops by itself.
#
# usage: scripts/soak.sh
#   DURATION=600    seconds of mixed traffic after the warm-up
#   WARMUP=60       seconds of the same traffic before the "start" RSS
#   PORT=18080      port on 127.0.0.1
#   BIN=target/release/logsieve
# needs: wrk (apt-get install -y wrk), curl, python3.
#
# The mix, all at once:
#   - /classify-single, 4 connections (wrk), bodies cycling through every
#     row of the synthetic set (rules, model and LegacyCRM rows);
#   - /v1/classify, batches of 20 rows, 2 connections (wrk);
#   - a loop of uploads: a 10k-row CSV to /classify (multipart) and a
#     gzip NDJSON body to /v1/logs;
#   - a hostile loop: 100 idle sockets held open, slow headers, made-up
#     methods on made-up paths, stacked gzip, a 64 KiB gzip body inflating
#     to one 32 MiB line, /metrics and /health scrapes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
duration=${DURATION:-600}
warmup=${WARMUP:-60}
port=${PORT:-18080}
bin=${BIN:-$here/target/release/logsieve}
base="http://127.0.0.1:$port"
synthetic=${SYNTHETIC:-/work/shared/datasets/synthetic_logs.csv}
[ -f "$synthetic" ] || synthetic="$here/data/seed_test.csv"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p logsieve-cli" >&2; exit 1; }

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

python3 - "$synthetic" "$work" <<'PY'
import csv, gzip, json, sys, itertools
src, work = sys.argv[1], sys.argv[2]
rows = [(r["source"].strip(), r["log_message"]) for r in csv.DictReader(open(src, newline=""), skipinitialspace=True)]
with open(f"{work}/bodies.jsonl", "w") as f:
    for s, m in rows:
        f.write(json.dumps({"source": s, "log_message": m}) + "\n")
with open(f"{work}/batches.jsonl", "w") as f:
    it = itertools.cycle(rows)
    for _ in range(200):
        f.write(json.dumps({"logs": [{"source": s, "log_message": m} for s, m in itertools.islice(it, 20)]}) + "\n")
with open(f"{work}/upload.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["source", "log_message"])
    for s, m in itertools.islice(itertools.cycle(rows), 10000):
        w.writerow([s, m])
with gzip.open(f"{work}/logs.ndjson.gz", "wt") as f:
    for s, m in itertools.islice(itertools.cycle(rows), 5000):
        f.write(json.dumps({"source": s, "log_message": m, "ts": 1700000000}) + "\n")
with gzip.open(f"{work}/bomb.ndjson.gz", "wb", compresslevel=9) as f:
    f.write(b'{"source":"ModernCRM","log_message":"')
    block = b"x" * (1 << 20)
    for _ in range(32):
        f.write(block)
    f.write(b'"}\n{"source":"ModernCRM","log_message":"User User1 logged in."}\n')
PY

# A wrk script: bodies from $BODIES to $WRK_PATH; counts 5xx per thread.
cat >"$work/mix.lua" <<'LUA'
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = math.random(#bodies)
wrk.method = "POST"
wrk.path = os.getenv("WRK_PATH")
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s5 = 0; s429 = 0 end
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
response = function(status, headers, body)
  if status >= 500 then s5 = s5 + 1 end
  if status == 429 then s429 = s429 + 1 end
end
done = function(summary, latency, requests)
  local t5, t429 = 0, 0
  for _, t in ipairs(threads) do t5 = t5 + t:get("s5"); t429 = t429 + t:get("s429") end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f s5xx=%d s429=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, t5, t429, e.status, e.connect + e.read + e.write + e.timeout))
end
LUA

"$bin" serve --host 127.0.0.1 --port "$port" --queue-capacity 64 >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
  curl -fsS "$base/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$base/ready" >/dev/null || { echo "server did not get ready" >&2; cat "$work/server.log" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; }

# Uploads until $1 (epoch seconds); each answer's status is recorded.
uploads() {
  local until=$1 n=0
  while [ "$(date +%s)" -lt "$until" ] && [ $n -lt 100000 ]; do
    curl -s -o /dev/null -w '%{http_code}\n' -F "file=@$work/upload.csv" "$base/classify/" >>"$work/codes.txt" || echo 000 >>"$work/codes.txt"
    curl -s -o /dev/null -w '%{http_code}\n' -H 'content-type: application/x-ndjson' -H 'content-encoding: gzip' \
      --data-binary "@$work/logs.ndjson.gz" "$base/v1/logs" >>"$work/codes.txt" || echo 000 >>"$work/codes.txt"
    n=$((n + 1))
  done
}

# The hostile loop until $1 (epoch seconds).
hostile() {
  python3 - "$port" "$1" "$work" >>"$work/codes.txt" <<'PY'
import socket, sys, time, urllib.request, urllib.error
port, until, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
bomb = open(f"{work}/bomb.ndjson.gz", "rb").read()
def status(method, path, body=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except Exception:
        return 0
n = 0
while time.time() < until and n < 100000:
    n += 1
    idle = []
    for _ in range(100):
        try:
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            pass
    slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    slow.sendall(b"GET /health HT")
    codes = [status(f"FOO{n % 1000}", f"/made/up/{n}"), status("GET", "/metrics"), status("GET", "/health"),
             status("POST", "/v1/logs", b"{}\n", {"content-type": "application/x-ndjson", "content-encoding": "gzip, gzip"}),
             status("POST", "/v1/logs", bomb, {"content-type": "application/x-ndjson", "content-encoding": "gzip"})]
    for c in codes:
        print(c)
    sys.stdout.flush()
    time.sleep(2)
    for s in idle:
        s.close()
    slow.close()
PY
}

# Run the whole mix for $1 seconds; wrk results go to $2.
mix() {
  local secs=$1 out=$2 until
  until=$(( $(date +%s) + secs ))
  BODIES="$work/bodies.jsonl" WRK_PATH=/classify-single wrk -t2 -c4 -d"${secs}s" --latency -s "$work/mix.lua" "$base" >"$out.single" 2>&1 &
  local w1=$!
  BODIES="$work/batches.jsonl" WRK_PATH=/v1/classify wrk -t1 -c2 -d"${secs}s" -s "$work/mix.lua" "$base" >"$out.batch" 2>&1 &
  local w2=$!
  uploads "$until" &
  local u=$!
  hostile "$until" &
  local h=$!
  (
    while [ "$(date +%s)" -lt "$until" ]; do
      echo "$(date +%s) $(rss)" >>"$work/rss.txt"
      sleep 5
    done
  ) &
  local r=$!
  wait $w1 $w2 $u $h $r
}

echo "warm-up: ${warmup}s"
: >"$work/codes.txt"
mix "$warmup" "$work/warm"
rss_start=$(rss)
: >"$work/codes.txt"
: >"$work/rss.txt"
echo "soak: ${duration}s (RSS after warm-up $((rss_start / 1024)) MiB)"
mix "$duration" "$work/soak"
rss_end=$(rss)

grep RESULT "$work/soak.single" | sed 's/^RESULT/classify-single:/'
grep RESULT "$work/soak.batch" | sed 's/^RESULT/v1-classify:    /'
s5_wrk=$(grep -ho 's5xx=[0-9]*' "$work/soak.single" "$work/soak.batch" | cut -d= -f2 | awk '{s += $1} END {print s + 0}')
s5_other=$(grep -c '^5' "$work/codes.txt" || true)
others=$(wc -l <"$work/codes.txt")
codes=$(sort "$work/codes.txt" | uniq -c | awk '{printf "%s×%s ", $2, $1}')
rss_max=$(awk '{print $2}' "$work/rss.txt" | sort -n | tail -1)
growth=$(python3 -c "print(f'{($rss_end - $rss_start) / $rss_start * 100:+.1f}')")
echo "uploads and hostile requests: $others ($codes)"
echo "5xx: $((s5_wrk + s5_other))"
echo "RSS: after warm-up $((rss_start / 1024)) MiB, end $((rss_end / 1024)) MiB ($growth%), highest sample $((rss_max / 1024)) MiB"
if grep -q 'panicked' "$work/server.log"; then echo "the server log has a panic:" >&2; grep -m3 panicked "$work/server.log" >&2; fi
echo "SOAK rss_start_kib=$rss_start rss_end_kib=$rss_end growth_pct=$growth s5xx=$((s5_wrk + s5_other))"
