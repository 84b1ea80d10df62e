"""Cache per-item detector candidates + verifier probabilities for one bundle, several decode/TTA variants.
Items: held-out views (the trainer's split, 8 dihedral views, as add_verifier), augmented held-out views
(dihedral + zoom-out + colour), training views (in-sample), and the 3 test sets."""
import sys, pickle, time
from pathlib import Path
import numpy as np
from host import Bundle, prepare_images as preprocess
from loupe_dl_detect.model import Detector, decode
from loupe_dl_detect.verify import BoxVerifier, top_candidates
from loupe_dl_detect.data import scan, load
from loupe_trainer.detect.trainer import split_names, _load_resized
from loupe_trainer.detect.verifier import views
from loupe_trainer.detect.augment import _scale_crop, _colour, _rot90, _hflip

bpath = Path(sys.argv[1]); out = Path(sys.argv[2])
b = Bundle.load(bpath)
det = Detector(b, threads=1, verify=False)
ver = BoxVerifier(b, len(det.classes), 1)
meta = b.meta; p = meta["training"]["params"]; seed = p["seed"]
ds = scan("/tmp/h17s15/bench", classes=det.classes)
samples = ds.train
tr_idx, va_idx = split_names([s.name for s in samples], p["val_fraction"], seed + 1)
size = tuple(meta["input_size"])
def items_of(idx):
    out = []
    for (s, rgb, r, bx, lab) in _load_resized([samples[i] for i in idx], size, lambda *a: None):
        h, w = rgb.shape[:2]
        raw = bx * np.array([w / r.shape[1], h / r.shape[0], w / r.shape[1], h / r.shape[0]], np.float32)
        out.append((rgb, raw, lab))
    return out
val, train = items_of(va_idx), items_of(tr_idx)
groups = {}
groups["held"] = [(img, bx, lab) for rgb, raw, lab in val for img, bx in views(rgb, raw)]
groups["train"] = [(img, bx, lab) for rgb, raw, lab in train for img, bx in views(rgb, raw)]
rng = np.random.default_rng(123)
aug = []
for rgb, raw, lab in val:
    for k in range(8):
        s = float(np.exp(rng.uniform(-np.log(1.35), 0)))
        H, W = rgb.shape[:2]
        import cv2
        im = cv2.resize(rgb, (max(1, int(round(W * s))), max(1, int(round(H * s)))), interpolation=cv2.INTER_AREA)
        canvas = np.empty_like(rgb); canvas[:] = rgb.reshape(-1, 3).mean(0).astype(np.uint8)
        oy, ox = int(rng.integers(0, H - im.shape[0] + 1)), int(rng.integers(0, W - im.shape[1] + 1))
        canvas[oy:oy + im.shape[0], ox:ox + im.shape[1]] = im
        bx = raw * s + np.array([ox, oy, ox, oy], np.float32)
        for _ in range(int(rng.integers(4))):
            canvas, bx = _rot90(canvas, bx)
        if rng.random() < 0.5:
            canvas, bx = _hflip(canvas, bx)
        canvas = _colour(rng, np.ascontiguousarray(canvas), 0.25)
        aug.append((np.ascontiguousarray(canvas), np.asarray(bx, np.float32).reshape(-1, 4), lab))
groups["aug"] = aug
for name in ("test", "dev", "dev2"):
    ds2 = scan(f"/tmp/h17s15/{'bench' if name == 'test' else name}", classes=det.classes)
    groups[name] = [load(s) for s in ds2.test]

cand, cap = ver.candidate_score, ver.max_candidates
def probs_of(bgr, boxes, vtta):
    pr = ver.probabilities(bgr, boxes)
    if vtta and len(boxes):
        w = bgr.shape[1]
        fb = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        pr = (pr + ver.probabilities(np.ascontiguousarray(bgr[:, ::-1]), fb)) / 2
    return pr

VARIANTS = {"base": dict()}
res = {}
t0 = time.process_time()
for g, items in groups.items():
    rows = {v: [] for v in VARIANTS}
    for img, gb, gl in items:
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        h, w = img.shape[:2]
        heat, sz, off = det.run(preprocess([bgr], det.size, det.norm))
        heat, sz, off = heat[0], sz[0], off[0]
        hf = None
        for v, o in VARIANTS.items():
            if g == "train" and v != "base":
                continue
            hm = heat
            if o.get("htta"):
                if hf is None:
                    hf = det.run(preprocess([np.ascontiguousarray(bgr[:, ::-1])], det.size, det.norm))[0][0][:, :, ::-1]
                hm = (heat + hf) / 2
            d = decode(hm, sz, off, det.stride, (w / det.size[1], h / det.size[0]), 0.05, det.top_k,
                       o.get("nms", det.nms_iou), det.agnostic)
            sel = d.scores >= cand
            cb, cs, cl = top_candidates(d.boxes[sel], d.scores[sel], d.labels[sel], cap)
            pr = probs_of(bgr, cb, o.get("vtta", False)) if len(cb) else np.zeros((0, len(det.classes) + 1), np.float32)
            rows[v].append({"det": (d.boxes, d.scores, d.labels), "cand": (cb, cs, cl), "probs": pr,
                            "gt": (np.asarray(gb, np.float32).reshape(-1, 4), np.asarray(gl, np.int64))})
    res[g] = rows
    print(g, len(items), round(time.process_time() - t0, 1), flush=True)
res["meta"] = {"classes": det.classes, "det_thr": det.min_score, "ver_thr": ver.min_score,
               "held_out": meta["verifier"]["held_out"]}
pickle.dump(res, open(out, "wb"))
