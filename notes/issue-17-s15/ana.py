"""Threshold rules, TTA and decode variants on cached candidates (cache.py)."""
import sys, pickle, json, warnings
import numpy as np
from loupe_dl_detect.verify import relabel
from loupe_dl_detect.metrics import evaluate_detections
from loupe_trainer.detect.trainer import THRESHOLDS, count_scores, pick_threshold

SETS = ("test", "dev", "dev2")

def combined(rows):
    out = []
    for r in rows:
        b, s, l = r["cand"]
        if len(s):
            sc, lab = relabel(s, r["probs"])
        else:
            sc, lab = s.astype(np.float32), np.zeros(0, np.int64)
        out.append((b, sc, lab))
    return out

def detonly(rows):
    return [r["det"] for r in rows]

def gts(rows):
    return [r["gt"] for r in rows]

def acc_at(preds, gt, C, thr):
    """thr: scalar or per-class array."""
    ok = []
    for p, g in zip(preds, gt):
        t = np.asarray(thr)[p[2]] if np.ndim(thr) else thr
        pc = np.bincount(p[2][p[1] >= t], minlength=C)
        ok.append(bool((pc == np.bincount(g[1], minlength=C)).all()))
    return float(np.mean(ok))

def map50(preds, gt, C):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_detections([(b, s, l) for b, s, l in preds if True] if False else
                                   [(b[s >= 0.05], s[s >= 0.05], l[s >= 0.05]) for b, s, l in preds], gt, C)["map50"]

def class_err_table(preds, gt, C, c, ts):
    out = {}
    for t in ts:
        e, ex = [], []
        for p, g in zip(preds, gt):
            n = int(((p[2] == c) & (p[1] >= t)).sum()); m = int((g[1] == c).sum())
            e.append(abs(n - m)); ex.append(n == m)
        out[t] = (float(np.mean(ex)), float(np.mean(e)))
    return out

def signed_err(preds, gt, t):
    return float(np.mean([int((p[1] >= t).sum()) - len(g[1]) for p, g in zip(preds, gt)]))

def smooth(vals, w):
    k = np.ones(w) / w
    return np.convolve(np.pad(np.asarray(vals, float), w // 2, mode="edge"), k, "valid")

def pick_w(table, w=3, key=0):
    ts = sorted(table)
    acc = smooth([table[t][0] for t in ts], w); err = smooth([table[t][1] for t in ts], w)
    if key == 1:   # min error, ties: max acc, then middle
        lo = err.min(); tied = [i for i in range(len(ts)) if err[i] <= lo + 1e-9]
        hi = max(acc[i] for i in tied); good = [ts[i] for i in tied if acc[i] >= hi - 1e-9]
        return float(good[len(good) // 2])
    tied = [i for i in range(len(ts)) if acc[i] >= acc.max() - 1e-9]
    low = min(err[i] for i in tied)
    good = [ts[i] for i in tied if err[i] <= low + 1e-9]
    return float(good[len(good) // 2])

def rules(sel, C):
    """sel: dict group -> preds/gt. Returns {rule: thr (scalar or per-class array)}"""
    H = sel["held"]; A = sel["aug"]; T = sel["train"]
    HA = (H[0] + A[0], H[1] + A[1])
    out = {}
    out["cur"] = pick_threshold(count_scores(*H, C, THRESHOLDS))
    out["w5"] = pick_w(count_scores(*H, C, THRESHOLDS), 5)
    out["err"] = pick_w(count_scores(*H, C, THRESHOLDS), 3, key=1)
    out["aug"] = pick_threshold(count_scores(*HA, C, THRESHOLDS))
    out["augerr"] = pick_w(count_scores(*HA, C, THRESHOLDS), 3, key=1)
    if T is not None:
        HT = (H[0] + T[0], H[1] + T[1])
        out["train"] = pick_threshold(count_scores(*HT, C, THRESHOLDS))
    se = [signed_err(*H, t) for t in THRESHOLDS]
    out["bal"] = float(THRESHOLDS[int(np.argmin(np.abs(se)))])
    se = [signed_err(*HA, t) for t in THRESHOLDS]
    out["augbal"] = float(THRESHOLDS[int(np.argmin(np.abs(se)))])
    for nm, D in (("pc", H), ("pcaug", HA)):
        out[nm] = np.array([pick_w(class_err_table(*D, C, c, THRESHOLDS), 3, key=1) for c in range(C)])
    return out

def analyse(path):
    res = pickle.load(open(path, "rb"))
    C = len(res["meta"]["classes"])
    out = {}
    for v in res["test"]:
        for stage, fn in (("ver", combined), ("det", detonly)):
            sel = {g: (fn(res[g][v]), gts(res[g][v])) if res[g][v] else None for g in ("held", "aug", "train", *SETS)}
            if v != "base" and stage == "det" and v not in ("htta", "nms3", "nms7"):
                continue
            rs = rules(sel, C)
            rec = {"map50": [round(map50(*sel[s], C), 4) for s in SETS]}
            best = [max(acc_at(*sel[s], C, t) for t in THRESHOLDS) for s in SETS]
            rec["best"] = best
            for r, t in rs.items():
                rec[r] = {"thr": (np.round(t, 3).tolist() if np.ndim(t) else t),
                          "acc": [acc_at(*sel[s], C, t) for s in SETS]}
            out[f"{v}/{stage}"] = rec
    return res["meta"], out

if __name__ == "__main__":
    for p in sys.argv[1:]:
        meta, out = analyse(p)
        print(json.dumps({"cache": p, "meta_thr": [meta["det_thr"], meta["ver_thr"]], "res": out}))
