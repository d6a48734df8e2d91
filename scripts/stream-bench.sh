#!/usr/bin/env bash
# Throughput and memory of one `logsieve stream` process on replayed loghub
# lines, next to `logsieve classify` on the same lines.
#
# usage: scripts/stream-bench.sh [PASSES]     (default 51: 1,019,643 lines)
#
# Builds the replay (the ten loghub-2k raw logs from ../shared/datasets,
# concatenated PASSES times), starts a tansu broker (scripts/kafka-broker.sh,
# set up first) on a free port with topics `logs` and `labelled` (3
# partitions each), loads the replay into `logs` (round-robin over the
# partitions), then runs `logsieve stream --format text --stop-at-end
# --stats` and `logsieve classify --format text --stats` on it. Both print
# a JSON line; stream's has records/s, records per CPU-second and resident
# memory after every 100,000 records. Needs the release build:
#   cargo build --release -p logsieve-cli && cargo build --release -p logsieve-kafka --example produce
set -euo pipefail
cd "$(dirname "$0")/.."
passes=${1:-51}
bin=target/release/logsieve
produce=target/release/examples/produce
[ -x "$bin" ] && [ -x "$produce" ] || { echo "build first (see the header of $0)" >&2; exit 2; }
work=$(mktemp -d)
broker_pid=
cleanup() { [ -z "$broker_pid" ] || kill "$broker_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
replay="$work/replay.txt"
python3 - "$passes" "$replay" <<'PY'
import glob, sys
passes, out = int(sys.argv[1]), sys.argv[2]
files = sorted(glob.glob("../shared/datasets/loghub-2k/*/*_2k.log"))
assert len(files) == 10, files
lines = []
for f in files:
    lines += open(f, "rb").read().splitlines()
with open(out, "wb") as o:
    for _ in range(passes):
        o.write(b"\n".join(lines) + b"\n")
print(f"replay: {len(lines)} lines x {passes} = {len(lines) * passes} lines", file=sys.stderr)
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bash scripts/kafka-broker.sh serve --port "$port" --partitions 3 logs labelled > "$work/broker.out" 2> "$work/broker.err" &
broker_pid=$!
for _ in $(seq 300); do grep -q '^ready' "$work/broker.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$work/broker.out" || { cat "$work/broker.err" >&2; exit 1; }
"$produce" "127.0.0.1:$port" logs "$replay"
echo "== logsieve stream (one process, group bench)" >&2
/usr/bin/time -v "$bin" stream --brokers "127.0.0.1:$port" --topic logs --group bench --output-topic labelled \
    --format text --source loghub --stop-at-end --stats 2> "$work/stream.err" || { cat "$work/stream.err" >&2; exit 1; }
grep -E '^\{|^stream:' "$work/stream.err"
grep -E 'Maximum resident|Elapsed' "$work/stream.err"
echo "== logsieve classify (same lines, file in, /dev/null out)" >&2
/usr/bin/time -v "$bin" classify "$replay" --format text --source loghub --stats --no-progress -o /dev/null 2> "$work/classify.err" || { cat "$work/classify.err" >&2; exit 1; }
grep -E '^\{' "$work/classify.err"
grep -E 'Maximum resident|Elapsed|User time|System time' "$work/classify.err"
