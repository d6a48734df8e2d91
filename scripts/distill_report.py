"""The distillation loop's figures (README, "Answers that teach the model").

usage: python3 scripts/distill_report.py SYSTEM FIRST.jsonl SECOND.jsonl [LINES.csv]

FIRST.jsonl is `logsieve classify <SYSTEM>_2k.log --format text --source
SYSTEM --store S.db -o FIRST.jsonl` with the LLM on; SECOND.jsonl the same log
through the model retrained with `train --store S.db`, the LLM stage off.
LINES.csv (default data/real/lines.csv) holds the corpus labels: its SYSTEM
rows are the raw log's lines, in order.

Prints the LLM's share of the first run (lines, templates, accuracy of its
answers by line and by template) and, for the templates the LLM decided, how
many the retrained model decides itself in the second run and how often it
agrees with the corpus label and with the LLM.
"""

import csv
import json
import sys
from collections import defaultdict


def template_of(row: dict) -> str:
    # Lines of one template-cache key share their decision's detail (the
    # first carries it, the rest the same behind a cache-hit note).
    d = row["detail"]
    for note in ("template cache hit (stored decision); ", "template cache hit; "):
        if d.startswith(note):
            d = d[len(note):]
    return row["target_label"] + "\x1f" + d


def main() -> None:
    system, first, second = sys.argv[1], sys.argv[2], sys.argv[3]
    lines_csv = sys.argv[4] if len(sys.argv) > 4 else "data/real/lines.csv"
    with open(lines_csv, newline="") as f:
        truth = [r["target_label"] for r in csv.DictReader(f) if r["source"] == system]
    a = [json.loads(l) for l in open(first)]
    b = [json.loads(l) for l in open(second)]
    assert len(a) == len(b) == len(truth), (len(a), len(b), len(truth))
    n = len(a)
    groups = defaultdict(list)
    for i, r in enumerate(a):
        if r["method"] == "llm":
            groups[template_of(r)].append(i)
    asked = [i for g in groups.values() for i in g]
    right = sum(a[i]["target_label"] == truth[i] for i in asked)
    t_right = sum(
        sum(a[i]["target_label"] == truth[i] for i in g) * 2 > len(g) for g in groups.values()
    )
    print(f"{system}: {n} lines; the LLM decided {len(asked)} lines in {len(groups)} templates")
    if asked:
        print(f"  LLM answers right (corpus label): {right}/{len(asked)} lines = {right / len(asked):.3f}; "
              f"{t_right}/{len(groups)} templates")
    self_groups = [g for g in groups.values() if all(b[i]["method"] == "model" for i in g)]
    own = [i for g in self_groups for i in g]
    print(f"  retrained model decides {len(self_groups)}/{len(groups)} of those templates itself "
          f"({len(own)} lines)")
    if own:
        ok = sum(b[i]["target_label"] == truth[i] for i in own)
        agree = sum(b[i]["target_label"] == a[i]["target_label"] for i in own)
        print(f"  on them: corpus label {ok}/{len(own)} = {ok / len(own):.3f}; "
              f"same label as the LLM {agree}/{len(own)} = {agree / len(own):.3f}")
    rest = [i for i in asked if b[i]["method"] != "model"]
    print(f"  still unsure in the second run: {len(rest)} lines")
    # The whole log, both runs.
    for name, rows in (("first", a), ("second", b)):
        by = defaultdict(int)
        for r in rows:
            by[r["method"]] += 1
        acc = sum(r["target_label"] == t for r, t in zip(rows, truth)) / n
        print(f"  {name} run: methods {dict(sorted(by.items()))}; accuracy over all lines {acc:.3f}")


if __name__ == "__main__":
    main()
