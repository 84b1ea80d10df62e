"""notes/issue-17-s22/summ.py RUNDIR TAG SEED...: per seed, the combined threshold, count accuracy on test / dev / dev2,
their mean, mAP50 and the training's epochs and wall time (the output of RUNS=/tmp/s22/runs notes/issue-17-s20/q2.sh)."""
import json
import sys
from pathlib import Path

runs, tag, seeds = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
means = []
for s in seeds:
    r = runs / f"{tag}{s}"
    try:
        ev = [json.loads((runs / f"{tag}{s}.eval.{k}.json").read_text()) for k in ("bench", "dev", "dev2")]
    except (OSError, ValueError):
        print(s, "missing")
        continue
    b = json.loads((r / "bundle.json").read_text())
    ca = [e["count_accuracy"] for e in ev]
    m = round(sum(ca) / 3, 3)
    means.append(m)
    wall = (runs / f"{tag}{s}.time").read_text().split()[-1]
    tr = b.get("metrics", {})
    print(s, b["verifier"]["min_score"], ca, m, [round(e["map50"], 3) for e in ev],
          f"epochs {tr.get('epochs_run')} ({tr.get('lr_schedule')}), detector {tr.get('train_seconds')} s, verifier {tr.get('verifier_seconds')} s, wall {wall} s")
if means:
    print("mean", round(sum(means) / len(means), 3), "over", len(means))
