#!/usr/bin/env python3
"""Builds the real-world labelled corpus from the template labels.

Inputs: data/real/labels/<System>.csv (one label per loghub-2k template,
written by docs/taxonomy.md and reviewed a second time) and the loghub-2k
structured files (../shared/datasets/loghub-2k by default, or argv[1]).
Outputs, deterministic and committed:
  data/real/templates.csv  system,event_id,event_template,label,reason,lines
  data/real/lines.csv      source,log_message,target_label,event_id  (every line, in file order)
The `source` of a line is its system's name, so `eval --leave-one-out source`
holds out a whole system.
"""
import csv, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGHUB = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "datasets", "loghub-2k")
LABELS = {"Security Alert", "HTTP Status", "Resource Usage", "User Action", "Workflow Error",
          "Deprecation Warning", "Critical Error", "Error", "System Notification"}

def main():
    lab_dir = os.path.join(ROOT, "data", "real", "labels")
    systems = sorted(f[:-4] for f in os.listdir(lab_dir) if f.endswith(".csv"))
    tmpl_rows, line_rows = [], []
    for s in systems:
        labels = {}
        with open(os.path.join(lab_dir, s + ".csv"), encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                assert r["label"] in LABELS, (s, r["event_id"], r["label"])
                assert r["event_id"] not in labels, (s, r["event_id"])
                labels[r["event_id"]] = r
        counts = dict.fromkeys(labels, 0)
        with open(os.path.join(LOGHUB, s, f"{s}_2k.log_structured.csv"), encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                t = labels[r["EventId"]]  # every line's template is labelled
                counts[r["EventId"]] += 1
                line_rows.append((s, r["Content"], t["label"], r["EventId"]))
        for eid, r in labels.items():
            tmpl_rows.append((s, eid, r["event_template"], r["label"], r["reason"], counts[eid]))
    out = os.path.join(ROOT, "data", "real")
    with open(os.path.join(out, "templates.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["system", "event_id", "event_template", "label", "reason", "lines"])
        w.writerows(tmpl_rows)
    with open(os.path.join(out, "lines.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["source", "log_message", "target_label", "event_id"])
        w.writerows(line_rows)
    print(f"{len(systems)} systems, {len(tmpl_rows)} templates, {len(line_rows)} lines")

if __name__ == "__main__":
    main()
