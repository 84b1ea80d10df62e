"""The session-12 threshold rule with the product's own pieces on an existing --verify bundle (its verifier as is),
then loupe eval's evaluate() at the old and the new threshold on the three sets."""
import sys, json
from pathlib import Path
import numpy as np
from host import Bundle, Progress
from loupe_dl_detect.model import Detector
from loupe_dl_detect.verify import BoxVerifier, top_candidates, relabel
from loupe_dl_detect.data import scan
from loupe_dl_detect.evaluate import evaluate
from loupe_trainer.detect.trainer import split_names, _load_resized, choose_threshold, count_balance
from loupe_trainer.detect.verifier import views, shifted_views, rescored

bp = Path(sys.argv[1]); b = Bundle.load(bp)
det = Detector(b, threads=1, verify=False); ver = BoxVerifier(b, len(det.classes), 1)
p = b.meta["training"]["params"]; seed = p["seed"]
samples = scan(b.meta["training"]["data"], classes=det.classes).train
_, va = split_names([s.name for s in samples], p["val_fraction"], seed + 1)
val = _load_resized([samples[i] for i in va], tuple(b.meta["input_size"]), lambda *a: None)
def raw_items():
    for _s, rgb, r, bx, lab in val:
        h, w = rgb.shape[:2]
        yield rgb, bx * np.array([w / r.shape[1], h / r.shape[0], w / r.shape[1], h / r.shape[0]], np.float32), lab
def held(items):
    gts, capped, probs = [], [], []
    for img, bx, lab in items:
        d = det.predict(np.ascontiguousarray(img[:, :, ::-1]), min_score=ver.candidate_score)
        c = top_candidates(d.boxes, d.scores, d.labels, ver.max_candidates)
        capped.append(c); gts.append((bx, lab))
        probs.append(ver.probabilities(np.ascontiguousarray(img[:, :, ::-1]), c[0]) if len(c[0]) else np.zeros((0, 1 + len(det.classes)), np.float32))
    return rescored(capped, probs), gts
hv = held((img, bx, lab) for rgb, raw, lab in raw_items() for img, bx in views(rgb, raw))
srng = np.random.default_rng(seed + 2)
sv = held((img, bx, lab) for rgb, raw, lab in raw_items() for img, bx in shifted_views(srng, rgb, raw))
old = choose_threshold(*hv, len(det.classes))[0]
new = count_balance(hv[0] + sv[0], hv[1] + sv[1])[0]
out = {"bundle": str(bp), "stored_thr": ver.min_score, "old_rule": old, "new_rule": new, "views": [len(hv[1]), len(sv[1])]}
for name, root in (("test", "/tmp/h17t/bench"), ("dev", "/tmp/h17t/dev"), ("dev2", "/tmp/h17t/dev2")):
    for tag, t in (("old", old), ("new", new)):
        r = evaluate(b, Path(root), None, Progress(), threads=1, min_score=t)
        out[f"{name}_{tag}"] = {"count_accuracy": r["count_accuracy"], "map50": round(r["map50"], 4)}
print(json.dumps(out))
