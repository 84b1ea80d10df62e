"""Per-image CPU cost of a detection bundle's verifier, part by part, and its accuracy under a smaller cap.

    OMP_NUM_THREADS=1 .venv/bin/python bench/detect_verifier_cost.py BUNDLE DATA [--caps 16 12 8]

One thread, one process, CPU time of the calling thread (``time.thread_time``; honest on a shared or paused
machine), median over the test images of DATA, every part timed on the same image in turn:
``detector`` the detector alone at its own threshold (``Detector(verify=False).predict``); ``candidates`` the
same at the verifier's candidate score; ``crops`` the OpenCV crops into the preallocated buffer plus the copy
into the graph's input; ``graph`` the one batched ONNX Runtime call; ``total`` the runtime's whole
``Detector.predict`` with the verifier. Then, for each ``--caps`` value, the count accuracy and mAP50 with the
verifier re-scoring at most that many candidates (the bundle's own threshold; the bundle chose it at its own cap).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from host import Bundle
from loupe_dl_detect.data import load, scan
from loupe_dl_detect.metrics import counts_match, evaluate_detections
from loupe_dl_detect.model import Detector
from loupe_dl_detect.verify import as_bgr, crop_boxes, top_candidates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("data")
    ap.add_argument("--caps", type=int, nargs="*", default=[])
    ap.add_argument("--json")
    a = ap.parse_args()
    b = Bundle.load(Path(a.bundle))
    det, alone = Detector(b, threads=1), Detector(b, threads=1, verify=False)
    v = det.verifier
    if v is None:
        raise SystemExit(f"{a.bundle}: the bundle has no verifier")
    samples = scan(Path(a.data), classes=det.classes).test
    images = [load(s) for s in samples]
    parts = {k: [] for k in ("detector", "candidates", "crops", "graph", "total")}
    n_cand = []
    clock = time.thread_time
    for rgb, _gb, _gl in images:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        det.predict(bgr)                                   # warm-up on the same image
        t = clock()
        alone.predict(bgr)
        parts["detector"].append(clock() - t)
        t = clock()
        d = alone.predict(bgr, min_score=v.candidate_score)
        parts["candidates"].append(clock() - t)
        boxes = top_candidates(d.boxes, d.scores, d.labels, v.max_candidates)[0]
        n_cand.append(len(boxes))
        t = clock()
        crops = crop_boxes(as_bgr(bgr), boxes, v.side, v.margin, v.min_px, out=v._crops)
        x = v._x[:len(boxes)]
        np.copyto(x, crops[:, :, :, ::-1].transpose(0, 3, 1, 2))
        parts["crops"].append(clock() - t)
        t = clock()
        if len(boxes):
            v.session.run(["probs"], {v.input_name: x})
        parts["graph"].append(clock() - t)
        t = clock()
        det.predict(bgr)
        parts["total"].append(clock() - t)
    res = {"images": len(images), "threads": 1, "clock": "thread_time",
           "median_cpu_ms": {k: round(1e3 * statistics.median(t), 2) for k, t in parts.items()},
           "candidates_median": float(np.median(n_cand)), "candidates_p90": float(np.percentile(n_cand, 90)),
           "candidates_max": int(max(n_cand)), "caps": {}}
    print(json.dumps(res))
    for cap in a.caps:
        v.max_candidates = min(cap, len(v._crops))
        preds, gts, exact = [], [], []
        for rgb, gb, gl in images:
            d = det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=0.05)
            preds.append((d.boxes, d.scores, d.labels))
            gts.append((gb, gl))
            exact.append(counts_match(d.labels[d.scores >= det.min_score], gl, len(det.classes)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = evaluate_detections(preds, gts, len(det.classes))
        res["caps"][cap] = {"count_accuracy": float(np.mean(exact)), "map50": m["map50"]}
        print(f"cap {cap}: {res['caps'][cap]}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
