"""Issue 18, session 14: a Gaussian (Mahalanobis) image-level term beside the patch score and the kNN global term.

    # caches (the session-11 study's commands; draw 0 = bench/anomaly.py's, draws 1 and 2 = default_rng(1 / 2))
    P="OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_global.py --cache /tmp/h18/cache"
    $P patch --draw D; $P desc --size 64 --draw D; $P desc --size 128 --via 64 --draw D; \
        $P desc --size 224 --via 64 --draw D
    # fusions, from the caches only
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_gauss.py --cache /tmp/h18/cache eval --draw D \
        --variants '[{"knn":"s6+128","gauss":"224:head","l2":true,"wg":[1,2,3]}]'
    # session 12's position channels with and without the Gaussian term (after anomaly_position.py feat)
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_position.py --cache /tmp/h18/pos feat --draw D
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_gauss.py pchan --pos-cache /tmp/h18/pos --draw D --lam 80
    # the graphs' per-image time (bundles trained by `loupe train anomaly`; bare ONNX Runtime, one thread)
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_gauss.py time --bundles OLD,NEW --images DIR

Score = patch + wk * (p_sd / g_sd) * (kNN distance - g_mu) + wg * (p_sd / m_sd) * (Mahalanobis distance - m_mu):
the trainer's fusion (``fit``) with one more term. ``knn``: the kNN global descriptor (k = 2, all 200 images in
its bank, the calibration images' distances leave-one-out): ``s6+128`` = today's default (the 64 px input's
stage 6 + the 128 px view's head via 64 px, concatenated), ``s6`` = the stage-6 descriptor alone (global_size 0),
``s6+224`` = stage 6 + the 224 px view's head (one trunk pass shared with the Gaussian), ``none``. ``gauss``:
``SIZE:stage`` of the pooled map (via the 64 px input, what the graph sees) whose Mahalanobis distance under a
Gaussian fitted with Ledoit-Wolf shrinkage is the term; ``fit``: ``bank`` = fitted on the 160 bank images and
z-scored on the 40 calibration images; ``all`` = fitted on all 200 images, the calibration images' distances
leave-one-out (a refit without each). ``l2``: the pooled map L2-normalised first. ``sq``: the squared distance
instead of the distance.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from anomaly_global import _bench, _load_desc, _loo, _sfx, descriptor, knn_dist, l2n

KNN = {"s6+128": ("lite0_64", ["stage6", "lite0_128via64:head"]),
       "s6": ("lite0_64", ["stage6"]),
       "s6+224": ("lite0_64", ["stage6", "lite0_224via64:head"]),
       "none": None}


def lw_fit(x: np.ndarray) -> dict:
    """Ledoit-Wolf Gaussian of the rows of x (n, d) in closed form: covariance (1 - s) S + s mu I (S the
    maximum-likelihood covariance, mu = trace(S) / d, s sklearn's Ledoit-Wolf shrinkage), kept as the
    eigen-decomposition of S (from the SVD of the centred rows: n < d is the usual case)."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    x = x.astype(np.float64)
    mean = x.mean(0)
    xc = x - mean
    n, d = xc.shape
    s = float(ledoit_wolf_shrinkage(xc, assume_centered=True))
    _, sv, vt = np.linalg.svd(xc, full_matrices=False)
    lam = sv * sv / n
    mu = float(lam.sum() / d)
    return {"mean": mean, "vt": vt, "ev": (1 - s) * lam + s * mu, "iso": s * mu, "shrinkage": s}


def maha(g: dict, y: np.ndarray, sq: bool = False) -> np.ndarray:
    yc = y.astype(np.float64) - g["mean"]
    p = yc @ g["vt"].T
    d2 = (p * p / g["ev"]).sum(1) + ((yc * yc).sum(1) - (p * p).sum(1)) / g["iso"]
    d2 = np.maximum(d2, 0)
    return d2 if sq else np.sqrt(d2)


def gauss_terms(tr: np.ndarray, te: np.ndarray, cal: np.ndarray, bank: np.ndarray, fit: str, sq: bool):
    """(calibration distances, test distances) of the Gaussian term."""
    if fit == "bank":
        g = lw_fit(tr[bank])
        return maha(g, tr[cal], sq), maha(g, te, sq)
    allr = np.concatenate([cal, bank])
    g = lw_fit(tr[allr])
    dc = np.array([maha(lw_fit(tr[np.setdiff1d(allr, [i])]), tr[[i]], sq)[0] for i in cal])
    return dc, maha(g, te, sq)


def cmd_eval(args) -> None:
    from loupe_dl_anomaly.metrics import auroc

    ba = _bench()
    cache = Path(args.cache)
    yte = ba.read_idx("t10k-labels-idx1-ubyte")
    rows = []
    for v in json.loads(args.variants):
        v = {"knn": "s6+128", "wk": 2, "gauss": "224:head", "wg": 2, "fit": "bank", "l2": False, "sq": False, **v}
        keys = [k for k in v if isinstance(v[k], list)]
        for combo in itertools.product(*[v[k] for k in keys]):
            rows.append({**v, **dict(zip(keys, combo))})
    patch = [np.load(cache / f"patch_c{c}{_sfx(args.draw)}.npz") for c in range(10)]
    descs: dict = {}

    def load(src):
        if src not in descs:
            descs[src] = _load_desc(cache, src, args.draw)
            descs[src]["_load"] = load
        return descs[src]

    gcache: dict = {}
    table = {}
    for r in rows:
        t0 = time.process_time()
        name = f"knn {r['knn']} w{r['wk']} + gauss {r['gauss']} w{r['wg']} fit {r['fit']}" + \
            (" l2" if r["l2"] else "") + (" sq" if r["sq"] else "")
        per = []
        for c in range(10):
            p = patch[c]
            cal, bank = p["cal"], p["bank"]
            rows_c = np.arange(200 * c, 200 * c + 200)
            p_sd = float(np.std(p["good"])) + 1e-6
            s = p["test"].astype(np.float64).copy()
            if KNN[r["knn"]] is not None and r["wk"]:
                src, stages = KNN[r["knn"]]
                d = load(src)
                gtr, gte = descriptor(d, "train", stages, rows_c), descriptor(d, "test", stages)
                gb = np.concatenate([gtr[cal], gtr[bank]])
                gd_cal = _loo(gtr[cal], gb, 2)
                g_mu = gd_cal.mean()
                g_sd = max(gd_cal.std(), 0.05 * g_mu) + 1e-6
                s += float(r["wk"]) * (p_sd / g_sd) * (knn_dist(gte, gb, 2) - g_mu)
            if r["gauss"] != "none" and r["wg"]:
                size, stage = r["gauss"].split(":")
                key = (size, stage, r["fit"], r["l2"], r["sq"], c)
                if key not in gcache:
                    d = load(f"lite0_{size}via64" if int(size) != 64 else "lite0_64")
                    tr, te = d[f"train_{stage}"][rows_c], d[f"test_{stage}"]
                    if r["l2"]:
                        tr, te = l2n(tr), l2n(te)
                    gcache[key] = gauss_terms(tr, te, cal, bank, r["fit"], r["sq"])
                mc, mt = gcache[key]
                m_mu = mc.mean()
                m_sd = max(mc.std(), 0.05 * m_mu) + 1e-6
                s += float(r["wg"]) * (p_sd / m_sd) * (mt - m_mu)
            per.append(auroc(s, (yte != c).astype(int)))
        table[name] = per
        print(f"{name:<56} " + " ".join(f"{a:.4f}" for a in per) + f"  mean {np.mean(per):.4f}  min {min(per):.4f}"
              f"  ({time.process_time() - t0:.0f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=1))


def cmd_pchan(args) -> None:
    """Session 12's position channels (``pchan``: lam x (row, column) appended to each patch feature, the
    product's whole fit) with and without the Gaussian term, from ``bench/anomaly_position.py``'s ``feat`` cache
    (``--pos-cache``) and this study's 224 px head descriptors: per class the product's ``fit`` with the
    descriptors passed (so the Gaussian term is the trainer's own)."""
    import torch

    from anomaly_position import _feats, with_position
    from loupe_dl_anomaly.metrics import auroc
    from loupe_trainer.anomaly.trainer import AnomalyParams, fit

    ba = _bench()
    cache, pos = Path(args.cache), Path(args.pos_cache)
    yte = ba.read_idx("t10k-labels-idx1-ubyte")
    zt = np.load(pos / "test_s64.npz")
    fte, gte = zt["f"], zt["g"]
    d = _load_desc(cache, "lite0_224via64", args.draw)
    hte = l2n(d["test_head"]).astype(np.float32)
    feats = _feats()
    assert feats.gauss_size, "the product's default feature module has no Gaussian term"
    params = AnomalyParams(threads=1)
    lams = [float(v) for v in args.lam.split(",")]
    table = {f"pchan {lam:g}" + (" + gauss" if wg else ""): [] for lam in lams for wg in (0, 1)}
    for c in range(10):
        z = np.load(pos / f"class{c}_s64{'_d' + str(args.draw)}.npz")
        cal, bank = z["cal"], z["bank"]
        gtr = z["gtr"]
        htr = l2n(d["train_head"][200 * c:200 * c + 200]).astype(np.float32)
        for lam in lams:
            ftr = with_position(z["ftr"], lam)
            for wg in (0, 1):
                hb, hc = (htr[bank], htr[cal]) if wg else (None, None)
                model, _, _ = fit(feats, ftr[bank], ftr[cal], params, gtr[bank], gtr[cal], h_bank=hb, h_cal=hc)
                out = []
                with torch.no_grad():
                    for i in range(0, len(fte), 500):
                        x = torch.from_numpy(with_position(fte[i:i + 500], lam))
                        out.append(model.score_features(x, torch.from_numpy(gte[i:i + 500]),
                                                        torch.from_numpy(hte[i:i + 500]) if wg else None)[1].numpy())
                table[f"pchan {lam:g}" + (" + gauss" if wg else "")].append(
                    auroc(np.concatenate(out), (yte != c).astype(int)))
        print(f"class {c} done", flush=True)
    for name, per in table.items():
        print(f"{name:<24} " + " ".join(f"{a:.4f}" for a in per) + f"  mean {np.mean(per):.4f}  min {min(per):.4f}",
              flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=1))


def cmd_time(args) -> None:
    """Per-image time of bundles' graphs: bare ONNX Runtime sessions (one thread, batch 1) on the same prepared
    test images, the bundles alternated in ``--blocks`` blocks; process time (immune to pauses), median per
    image in each block, then the median of the blocks and the ratio to the first bundle in each block."""
    import statistics

    import onnxruntime as ort

    from host import Bundle
    from loupe_dl_anomaly.data import list_images, prepare, read_image

    bundles = [Bundle.load(Path(b)) for b in args.bundles.split(",")]
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = [ort.InferenceSession(str(b.path / "model.onnx"), so, providers=["CPUExecutionProvider"]) for b in bundles]
    imgs = [read_image(p) for p in list_images(Path(args.images))[:40]]
    xs = [[prepare(im, tuple(b.meta["input_size"])) for im in imgs] for b in bundles]
    for s, x in zip(sess, xs):
        for xi in x[:5]:
            s.run(None, {"image": xi})
    per = [[] for _ in bundles]
    for _ in range(args.blocks):
        for j, (s, x) in enumerate(zip(sess, xs)):
            t = []
            for xi in x:
                c0 = time.process_time()
                s.run(None, {"image": xi})
                t.append((time.process_time() - c0) * 1e3)
            per[j].append(statistics.median(t))
    for j, b in enumerate(bundles):
        ratio = [p / q for p, q in zip(per[j], per[0])]
        print(f"{b.path}: {statistics.median(per[j]):.2f} ms/image (blocks {min(per[j]):.2f}-{max(per[j]):.2f}), "
              f"ratio to the first {statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f})", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["eval", "time", "pchan"])
    p.add_argument("--pos-cache", default="/tmp/h18/pos", help="pchan: bench/anomaly_position.py's feat cache")
    p.add_argument("--lam", default="80", help="pchan: position-channel weights, comma-separated")
    p.add_argument("--bundles", default="", help="time: comma-separated bundle folders (the first is the reference)")
    p.add_argument("--images", default="", help="time: a folder of test images")
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--cache", default="/tmp/h18/cache")
    p.add_argument("--variants", default='[{}]')
    p.add_argument("--out", default="")
    p.add_argument("--draw", type=int, default=0, help="training-image draw (0 = bench/anomaly.py's)")
    args = p.parse_args()
    {"eval": cmd_eval, "time": cmd_time, "pchan": cmd_pchan}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
