"""Paired count accuracy (mean of test / dev / dev2) and mAP50 of two arms of runs: pairs.py A_PREFIX B_PREFIX SEEDS...
e.g. pairs.py /tmp/s19/runs/V /tmp/s20/runs/W 0 1 2 3 4 5 (a run's eval JSONs: PREFIX{seed}.eval.{bench,dev,dev2}.json)"""
import json
import statistics
import sys

SETS = ("bench", "dev", "dev2")


def figures(prefix, seed):
    r = [json.load(open(f"{prefix}{seed}.eval.{s}.json")) for s in SETS]
    return [x["count_accuracy"] for x in r], [x["map50"] for x in r]


a, b, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for s in seeds:
    (ca, ma), (cb, mb) = figures(a, s), figures(b, s)
    rows.append((statistics.mean(ca), statistics.mean(cb), ca, cb, ma, mb))
    print(f"seed {s}: {statistics.mean(ca):.3f} -> {statistics.mean(cb):.3f} ({statistics.mean(cb) - statistics.mean(ca):+.3f})"
          f"  mAP50 {statistics.mean(ma):.3f} -> {statistics.mean(mb):.3f}")
d = [r[1] - r[0] for r in rows]
per_set = lambda k: " / ".join(f"{statistics.mean(r[k][i] for r in rows):.3f}" for i in range(3))
print(f"A: {per_set(2)} ({statistics.mean(r[0] for r in rows):.3f}), mAP50 {per_set(4)}")
print(f"B: {per_set(3)} ({statistics.mean(r[1] for r in rows):.3f}), mAP50 {per_set(5)}")
print(f"mean difference {statistics.mean(d):+.3f}, sd {statistics.stdev(d):.3f}, {sum(x > 0 for x in d)} up / "
      f"{sum(x < 0 for x in d)} down")
