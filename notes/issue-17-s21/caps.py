"""caps.py CAPS BUNDLE...: count accuracy and mAP50 of each bundle (verifier on, its own threshold) on the bench's
test / dev / dev2 scenes (/tmp/h17s15) when the verifier re-scores at most CAP candidates per image (CAPS: comma
list, e.g. 16,12,10,8; the bundle's own cap is 16 on the bench). Only candidates past the cap change: the runtime
takes the CAP best by detector score (``top_candidates``), as it does with the bundle's own cap. One thread."""
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from host import Bundle
from loupe_dl_detect.data import load, scan
from loupe_dl_detect.metrics import counts_match, evaluate_detections
from loupe_dl_detect.model import Detector

caps = [int(c) for c in sys.argv[1].split(",")]
sets = {s: None for s in ("bench", "dev", "dev2")}
for path in sys.argv[2:]:
    det = Detector(Bundle.load(Path(path)), threads=1)
    v = det.verifier
    out = {"bundle": Path(path).name, "threshold": det.min_score, "own_cap": v.max_candidates}
    for sub in sets:
        if sets[sub] is None:
            sets[sub] = [load(s) for s in scan(Path("/tmp/h17s15") / sub, classes=det.classes).test]
        for cap in caps:
            v.max_candidates = min(cap, len(v._crops))
            preds, gts, exact, n_kept = [], [], [], []
            for rgb, gb, gl in sets[sub]:
                d = det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=0.05)
                preds.append((d.boxes, d.scores, d.labels))
                gts.append((gb, gl))
                keep = d.scores >= det.min_score
                exact.append(counts_match(d.labels[keep], gl, len(det.classes)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                m = evaluate_detections(preds, gts, len(det.classes))
            out[f"{sub}/{cap}"] = [round(float(np.mean(exact)), 3), round(m["map50"], 4)]
    print(json.dumps(out), flush=True)
