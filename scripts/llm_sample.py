"""Picks the rows of a labelled CSV that the cascade sent to the LLM, one per
template, for measuring the LLM's accuracy on them (README, "The LLM stage
against a real model").

usage: python3 scripts/llm_sample.py DATA.csv DECISIONS.jsonl N SEED > sample.csv

DATA.csv is the labelled input (source, log_message, target_label[, event_id]);
DECISIONS.jsonl is `logsieve classify DATA.csv --output-format jsonl`, in the
same order, run with the LLM stage off (no key, no local URL: each row it
would have asked says `llm stage off` in its detail) or with an LLM. Those
rows (or rows with `method` llm) are the ones the LLM is asked about; one row
per `event_id` (or per message when there is none) is kept, then N of those
at random (SEED).
"""

import csv
import json
import random
import sys


def main() -> None:
    data, decisions, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(data, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(decisions) as f:
        decided = [json.loads(line) for line in f]
    assert len(rows) == len(decided), (len(rows), len(decided))
    seen, picked = set(), []
    for row, d in zip(rows, decided):
        if d.get("method") != "llm" and "llm stage off" not in d.get("detail", ""):
            continue
        key = (row["source"], row.get("event_id") or row["log_message"])
        if key in seen:
            continue
        seen.add(key)
        picked.append(row)
    random.Random(seed).shuffle(picked)
    picked = picked[:n]
    out = csv.DictWriter(sys.stdout, fieldnames=["source", "log_message", "target_label"], extrasaction="ignore")
    out.writeheader()
    out.writerows(picked)
    print(f"{len(seen)} templates went to the LLM; {len(picked)} sampled", file=sys.stderr)


if __name__ == "__main__":
    main()
