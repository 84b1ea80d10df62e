"""Segmentation: does a decision rule tuned on the training run's validation split help on test? (analysis)

    .venv/bin/python bench/segment_posthoc.py BUNDLE DATA

The same validation split as `loupe train segment` (stratified, val_fraction 0.2, seed + 1); the
rule is the threshold on 1 - p(background) and a log-bias per defect class, chosen by coordinate
ascent on (mean IoU + defect IoU) / 2 over the validation images; every line prints validation
and test defect / mean IoU and the per-class test IoUs.
"""
from __future__ import annotations

import sys

import numpy as np

from host import Bundle
from loupe_dl_classify.data import stratified_split
from loupe_dl_segment.data import scan
from loupe_dl_segment.model import Segmenter, label_map
from loupe_dl_segment.evaluate import metrics
from loupe_trainer.segment.trainer import main_class


bpath, data = sys.argv[1], sys.argv[2]
seg = Segmenter(Bundle.load(bpath), threads=2)
ds = scan(data)
k1 = len(ds.classes) + 1
tr = [ds.load(s) for s in ds.train]
mains = [main_class(m) for _, m in tr]
_, va = stratified_split(mains, 0.2, 1)
val = [(seg.probabilities(tr[i][0]), tr[i][1]) for i in va]
test = [(seg.probabilities(im), m) for im, m in (ds.load(s) for s in ds.test)]

def lab(p, thr, b):
    if not any(b):
        return label_map(p, thr)
    q = p * np.exp(np.asarray([0.0] + list(b), np.float32))[:, None, None]
    q /= q.sum(0, keepdims=True)
    return label_map(q, thr)

def score(pairs, thr, b):
    cm = np.zeros((k1, k1), np.int64)
    for p, t in pairs:
        cm += np.bincount(t.astype(np.int64).ravel() * k1 + lab(p, thr, b).astype(np.int64).ravel(),
                          minlength=k1 * k1).reshape(k1, k1)
    m = metrics(cm, ds.classes, [], [])
    return (m["mean_iou"] + m["defect_iou"]) / 2, m

def show(name, thr, b):
    sv, mv = score(val, thr, b); st, mt = score(test, thr, b)
    print(f"{name}: thr {thr} bias {b} | val {mv['defect_iou']:.3f}/{mv['mean_iou']:.3f} | test {mt['defect_iou']:.3f}/{mt['mean_iou']:.3f} {[round(v,3) for v in mt['per_class_iou'].values()]}", flush=True)

show("as bundle", seg.threshold, (0, 0, 0))
thrs = np.round(np.arange(0.2, 0.81, 0.05), 2)
t_best = max(thrs, key=lambda t: score(val, t, (0, 0, 0))[0])
show("thr on val", float(t_best), (0, 0, 0))
b = [0.0] * (k1 - 1); thr = float(t_best)
grid = [-1.0, -0.5, 0.0, 0.5, 1.0]
for _ in range(2):
    for k in range(k1 - 1):
        best = max(grid, key=lambda v: score(val, thr, b[:k] + [v] + b[k + 1:])[0])
        b[k] = best
    thr = float(max(thrs, key=lambda t: score(val, t, b)[0]))
show("bias+thr on val", thr, tuple(b))
