"""Runs llama.cpp's OpenAI-compatible HTTP server in-process (xllamacpp) on
127.0.0.1 for logsieve's LLM stage: tests, evaluation, and users without a
hosted key. Started by scripts/local-llm.sh, which owns the venv and the
verified model files; this file only starts the server and waits.

Prints one line `ready BASE_URL` on stdout once /health answers ok, then
serves until SIGINT/SIGTERM, or, with --exit-on-stdin-eof, until stdin
closes (so a test that dies cannot leave a server behind).
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--alias", default=None, help="model name the server reports")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ctx", type=int, default=4096, help="context tokens, shared by the slots")
    ap.add_argument("--slots", type=int, default=1, help="requests decoded at once (n_parallel)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: one less than the cores, at least 1)")
    ap.add_argument("--poll", type=int, default=None, help="llama.cpp busy-wait level 0-100 (default: its own)")
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    ap.add_argument("--exit-on-stdin-eof", action="store_true")
    args = ap.parse_args()

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"refusing to listen on {args.host}: this helper serves this machine only", file=sys.stderr)
        return 2

    import xllamacpp  # the venv's; imported late so --help works anywhere

    threads = args.threads or max(1, (os.cpu_count() or 2) - 1)
    p = xllamacpp.CommonParams()
    p.model.path = args.model
    if args.alias:
        p.model_alias = {args.alias}  # a set of names in this llama.cpp
    p.hostnames = [args.host]
    p.port = args.port
    p.n_ctx = args.ctx
    p.n_parallel = args.slots
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    if args.poll is not None:
        p.cpuparams.poll = p.cpuparams_batch.poll = args.poll
    p.ui = False
    p.cache_prompt = True  # the stable prompt prefix is prefilled once per slot
    server = xllamacpp.Server(p)  # noqa: F841 (kept alive until exit)

    base = f"http://{args.host}:{args.port}"
    deadline = time.monotonic() + args.startup_timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                if json.load(r).get("status") == "ok":
                    break
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            print(f"server did not become healthy within {args.startup_timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"ready {base}/v1", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.exit_on_stdin_eof:
        def watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.wait(0.5):
        pass
    sys.stdout.flush()
    # The native server has no clean stop; the process ending frees the port.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
