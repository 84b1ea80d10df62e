"""Issue 18, session 12: position-aware patch scores for aligned small images (a feasibility study).

    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_position.py --cache /tmp/h18p/cache feat [--draw D] [--size S]
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_position.py --cache /tmp/h18p/cache pairs [--draw D]
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_position.py --cache /tmp/h18p/cache eval [--draw D] --variants JSON

Fashion-MNIST one-class as ``bench/anomaly.py`` (the same 200 training images per class; draw 0 = its
``default_rng(0)`` draws in class order, draws 1, 2 = ``default_rng(1)``, ``default_rng(2)``; the trainer's bank /
calibration split, 160 / 40; the 10k test set):

* ``feat``: patch features and the product's global descriptor (today's default feature graph,
  ``make_features``) of the draw's 2000 training images and (once) of the 10k test images, at input ``--size``
  (default: the trainer's auto, 64 px for 28 px images); per class, the product's model (``fit``, every default)
  and its test scores (``product``: what ``bench/anomaly.py`` reports) and its patch term alone (``knn``: the
  smoothed, position-normalised map's maximum), with the leave-one-out good scores of the calibration images.
* ``pairs`` (64 px only): for every test / calibration patch at position p and every bank position q, the
  distance to the nearest of the 160 bank images' patches *at q* (exact, no coreset): ``(n, 64, 64)``.
  Every positional kNN variant is a cheap reduction of it: a window ``r`` (the minimum over q within Chebyshev
  distance r of p; r = 7 is the plain kNN without coreset), or a soft position penalty ``lam`` (``min_q
  sqrt(d^2 + lam^2 |p - q|^2)``, |p - q| in cells).
* ``eval``: per variant, the patch term (the chosen distance map, z-scored per position on the calibration
  images and smoothed as the product does, leave-one-out good scores as the trainer computes them), optionally
  plus ``a`` x the product's kNN z-map, plus the product's global term (weight ``w``, the trainer's fusion:
  z-scored on the calibration images in units of the patch score's spread). PaDiM-style terms (``padim``: a
  Gaussian per position from the bank images' features there (window ``r`` pools the neighbours), shrinkage
  ``eps`` x the mean variance, Mahalanobis distance) are computed here from the cached features.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import time
from pathlib import Path

import numpy as np


from anomaly_global import _bench, draws, split  # noqa: E402  (the same draws, split and bench module)


def _sfx(draw: int, size: int) -> str:
    return f"_s{size}_d{draw}"


def cmd_feat(args) -> None:
    import torch

    from loupe_trainer.anomaly.model import FeatureGraph
    from loupe_trainer.anomaly.trainer import AnomalyParams, _input_size, fit, make_features
    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.common import export_onnx, ort_session

    ba = _bench()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    xtr, ytr = ba.read_idx("train-images-idx3-ubyte"), ba.read_idx("train-labels-idx1-ubyte")
    xte = ba.read_idx("t10k-images-idx3-ubyte")
    params = AnomalyParams(threads=1, position="off", **({"image_size": args.size} if args.size else {}))
    size = _input_size(xtr[0], params.image_size)
    # session 12's study: the global term as it was then (no Gaussian term, issue 18 session 14)
    feats = make_features(params.model_copy(update={"global_gauss_weight": 0.0}), build_backbone(variant=params.backbone),
                          True)
    gpath = export_onnx(FeatureGraph(feats), torch.zeros(1, 3, *size), cache / f"features_{size[0]}.onnx", ["image"],
                        ["features", "global"], dynamic_batch=True, fold_pads=True)
    sess = ort_session(gpath, 1)
    tpath = cache / f"test_s{size[0]}.npz"
    if not tpath.exists():
        t0 = time.process_time()
        f, g = ba.graph_features(sess, xte, size)
        print(f"test features {size}: {time.process_time() - t0:.1f} s CPU", flush=True)
        np.savez(tpath, f=f, g=g)
    zt = np.load(tpath)
    fte, gte = torch.from_numpy(zt["f"]), torch.from_numpy(zt["g"])
    for c, idx in enumerate(draws(ytr, args.draw)):
        out = cache / f"class{c}{_sfx(args.draw, size[0])}.npz"
        if out.exists():
            continue
        t0 = time.process_time()
        ftr, gtr = ba.graph_features(sess, xtr[idx], size)
        cal, bank = split(len(idx), params)
        model, good, _ = fit(feats, ftr[bank], ftr[cal], params, gtr[bank], gtr[cal], input_shape=size)
        off = params.model_copy(update={"global_term": "off"})
        pmodel, pgood, _ = fit(feats, ftr[bank], ftr[cal], off)
        with torch.no_grad():
            s, sp = [], []
            for i in range(0, len(fte), 500):
                s.append(model.score_features(fte[i:i + 500], gte[i:i + 500])[1].numpy())
                sp.append(model.score_features(fte[i:i + 500], None)[1].numpy())
        np.savez(out, product=np.concatenate(s), knn=np.concatenate(sp), knn_good=pgood, product_good=good,
                 cal=cal, bank=bank, idx=idx, ftr=ftr, gtr=gtr,
                 mu=pmodel.mu.numpy(), sd=pmodel.sd.numpy())
        print(f"feat {c} {ba.CLASSES[c]} {time.process_time() - t0:.1f} s CPU", flush=True)


def _pair_dists(x: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """x (n, P, D), fb (B, P, D) -> (n, P, P) float32: distance of x[:, p] to the nearest of fb[:, q]."""
    n, P, D = x.shape
    xf = x.reshape(n * P, D).astype(np.float32)
    xsq = (xf * xf).sum(1)
    out = np.empty((n * P, P), np.float32)
    for q in range(P):
        b = np.ascontiguousarray(fb[:, q, :], dtype=np.float32)
        m = (xf @ (-2.0 * b.T) + (b * b).sum(1)[None]).min(1)
        out[:, q] = m
    out += xsq[:, None]
    np.maximum(out, 0, out=out)
    np.sqrt(out, out=out)
    return out.reshape(n, P, P)


def cmd_pairs(args) -> None:
    cache = Path(args.cache)
    zt = np.load(cache / f"test_s{args.size}.npz")
    fte = zt["f"]
    n, h, w, D = fte.shape
    fte = fte.reshape(n, h * w, D)
    for c in range(10):
        out = cache / f"pairs{c}{_sfx(args.draw, args.size)}.npz"
        if out.exists():
            continue
        t0 = time.process_time()
        z = np.load(cache / f"class{c}{_sfx(args.draw, args.size)}.npz")
        ftr = z["ftr"].reshape(200, h * w, D)
        fb, fc = ftr[z["bank"]], ftr[z["cal"]]
        te = np.concatenate([_pair_dists(fte[i:i + 1000], fb) for i in range(0, n, 1000)])
        ca = _pair_dists(fc, fb)
        np.savez(out, test=te.astype(np.float16), cal=ca)
        print(f"pairs {c} {time.process_time() - t0:.1f} s CPU", flush=True)


def _cheb(h: int, w: int) -> np.ndarray:
    yy, xx = np.divmod(np.arange(h * w), w)
    return np.maximum(np.abs(yy[:, None] - yy[None]), np.abs(xx[:, None] - xx[None]))


def _eucl2(h: int, w: int) -> np.ndarray:
    yy, xx = np.divmod(np.arange(h * w), w)
    return ((yy[:, None] - yy[None]) ** 2 + (xx[:, None] - xx[None]) ** 2).astype(np.float32)


def reduce_pairs(pd: np.ndarray, h: int, w: int, r: int | None = None, lam: float | None = None) -> np.ndarray:
    """(n, P, P) pair distances -> (n, P) positional kNN distance (window r, or soft penalty lam)."""
    if lam is not None:
        pen = (lam * lam) * _eucl2(h, w)
        d2 = pd.astype(np.float32) ** 2 + pen[None]
        return np.sqrt(d2.min(2))
    mask = _cheb(h, w) > r
    x = pd.astype(np.float32).copy()
    x[:, mask] = np.inf
    return x.min(2)


def padim(ftr_bank: np.ndarray, x: np.ndarray, h: int, w: int, r: int = 1, eps: float = 0.01) -> np.ndarray:
    """Mahalanobis distance of x (n, P, D) to a Gaussian per position fitted on ftr_bank (B, P, D) (window r
    pools the neighbouring positions' samples); shrinkage eps x the mean variance on the diagonal."""
    B, P, D = ftr_bank.shape
    cheb = _cheb(h, w)
    out = np.empty(x.shape[:2], np.float32)
    for p in range(P):
        s = ftr_bank[:, cheb[p] <= r, :].reshape(-1, D).astype(np.float64)
        mu = s.mean(0)
        cov = np.cov(s, rowvar=False)
        cov += eps * np.trace(cov) / D * np.eye(D)
        L = np.linalg.cholesky(np.linalg.inv(cov))
        d = (x[:, p, :].astype(np.float64) - mu) @ L
        out[:, p] = np.sqrt((d * d).sum(1))
    return out


def _torch_z(dist_cal, mode="z"):
    import torch

    from loupe_trainer.anomaly.trainer import _position_stats

    mu, sd = _position_stats(torch.as_tensor(dist_cal).float(), mode)
    return mu.numpy(), sd.numpy()


def patch_term(smooth_model, d_cal: np.ndarray, d_te: np.ndarray, extra=None):
    """(test scores, leave-one-out good scores) of a distance map (n, 1, h, w) as the trainer scores it
    (position z-score on the calibration images, smoothing, maximum); ``extra`` = list of (cal, test, weight)
    more maps, each z-scored on its own and added with its weight."""
    import torch

    from loupe_trainer.anomaly.trainer import _loo_scores

    maps = [(d_cal, d_te, 1.0)] + list(extra or [])
    zte = 0
    for dc, dt, wt in maps:
        mu, sd = _torch_z(dc)
        zte = zte + wt * (dt - mu) / sd
    with torch.no_grad():
        zte = torch.as_tensor(zte).float()
        s = np.concatenate([smooth_model.smooth(zte[i:i + 2000]).flatten(1).max(1).values.numpy()
                            for i in range(0, len(zte), 2000)])
    # leave-one-out good scores: sum of the maps' leave-one-out z-scores (the trainer's _loo_scores handles one
    # extra map; more are folded by hand)
    if len(maps) == 1:
        good = _loo_scores(smooth_model, torch.as_tensor(d_cal).float(), "z")
    elif len(maps) == 2:
        good = _loo_scores(smooth_model, torch.as_tensor(d_cal).float(), "z", None,
                           (torch.as_tensor(maps[1][0]).float(), maps[1][2]))
    else:
        raise ValueError("at most two maps")
    return s, good


def knn_dist(q: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    d2 = ((q[:, None, :] - b[None]) ** 2).sum(2) if len(q) * len(b) * q.shape[1] < 5e7 else \
        (q * q).sum(1)[:, None] - 2 * q @ b.T + (b * b).sum(1)[None]
    d2 = np.sort(d2, axis=1)[:, :k]
    return np.sqrt(np.maximum(d2, 0)).mean(1)


def global_parts(z, gte: np.ndarray, k: int = 2):
    """(test distances, calibration leave-one-out distances) of the product's global term (bank = all)."""
    gtr = z["gtr"].astype(np.float64)
    cal, bank = z["cal"], z["bank"]
    gb = np.concatenate([gtr[cal], gtr[bank]])
    d2 = ((gtr[cal][:, None, :] - gb[None]) ** 2).sum(2)
    d2[np.arange(len(cal)), np.arange(len(cal))] = np.inf
    gd_cal = np.sqrt(np.sort(d2, 1)[:, :k]).mean(1)
    gd_te = np.concatenate([knn_dist(gte[i:i + 2000].astype(np.float64), gb, k) for i in range(0, len(gte), 2000)])
    return gd_te, gd_cal


def fuse(s, good, gd_te, gd_cal, w: float) -> np.ndarray:
    from loupe_trainer.anomaly.trainer import GLOBAL_SD_FLOOR

    if w == 0:
        return s
    g_mu = float(gd_cal.mean())
    g_sd = max(float(gd_cal.std()), GLOBAL_SD_FLOOR * g_mu) + 1e-6
    p_sd = float(np.std(good)) + 1e-6
    return s + w * p_sd / g_sd * (gd_te - g_mu)


def with_position(f: np.ndarray, lam: float) -> np.ndarray:
    """(n, h, w, D) -> (n, h, w, D + 2): lam x (row, column) of each cell appended, by the product's own
    ``loupe_trainer.anomaly.model.with_position`` (built from this study in session 15)."""
    import torch

    from loupe_trainer.anomaly.model import with_position as channels

    return channels(torch.from_numpy(np.ascontiguousarray(f)), lam).numpy()


@functools.lru_cache(maxsize=1)
def _feats():
    from loupe_trainer.anomaly.trainer import AnomalyParams, make_features
    from loupe_trainer.backbone import build_backbone

    return make_features(AnomalyParams(threads=1, global_gauss_weight=0.0, position="off"), build_backbone(), True)


def pchan_scores(z, fte: np.ndarray, gte: np.ndarray, lam: float, extra: dict) -> np.ndarray:
    import torch

    from loupe_trainer.anomaly.trainer import AnomalyParams, fit

    params = AnomalyParams(threads=1, **{"position": "off", **extra})
    ftr = with_position(z["ftr"], lam)
    cal, bank = z["cal"], z["bank"]
    gtr = z["gtr"]
    model, _, _ = fit(_feats(), ftr[bank], ftr[cal], params, gtr[bank], gtr[cal])
    out = []
    with torch.no_grad():
        for i in range(0, len(fte), 500):
            x = torch.from_numpy(with_position(fte[i:i + 500], lam))
            out.append(model.score_features(x, torch.from_numpy(gte[i:i + 500]))[1].numpy())
    return np.concatenate(out)


def cmd_eval(args) -> None:
    import torch

    from loupe_dl_anomaly.metrics import auroc
    from loupe_trainer.anomaly.model import gaussian_kernel1d

    ba = _bench()
    cache = Path(args.cache)
    yte = ba.read_idx("t10k-labels-idx1-ubyte")
    variants = json.loads(args.variants)
    rows = []
    for v in variants:
        keys = [k for k in v if isinstance(v[k], list) and k != "terms"]
        for combo in itertools.product(*[v[k] for k in keys]):
            row = {**v, **dict(zip(keys, combo))}
            if "name" in v and keys:
                row["name"] = v["name"] + " " + " ".join(f"{k}={x}" for k, x in zip(keys, combo))
            rows.append(row)
    classes = [int(c) for c in args.classes.split(",")] if args.classes else list(range(10))
    zt = np.load(cache / f"test_s{args.size}.npz")
    gte = zt["g"]
    fte = None
    n, h, w, D = zt["f"].shape

    class _Smooth(torch.nn.Module):
        def __init__(self, sigma=0.5):
            super().__init__()
            self.kernel = gaussian_kernel1d(sigma)

        def smooth(self, m):
            k = self.kernel
            r = k.numel() // 2
            m = torch.nn.functional.pad(m, [r, r, r, r], mode="replicate")
            m = torch.nn.functional.conv2d(m, k.view(1, 1, 1, -1))
            return torch.nn.functional.conv2d(m, k.view(1, 1, -1, 1))

    sm = _Smooth()
    table = {r_["name"] if "name" in r_ else json.dumps(r_): {} for r_ in rows}
    for c in classes:
        z = np.load(cache / f"class{c}{_sfx(args.draw, args.size)}.npz")
        gd_te, gd_cal = global_parts(z, gte)
        pairs = None
        lab = (yte != c).astype(int)
        for r_ in rows:
            name = r_["name"] if "name" in r_ else json.dumps(r_)
            kind = r_["kind"]
            if kind == "product":
                s = z["product"]
            elif kind == "pchan":
                # the product's whole model (coreset, two-stage search, position z, global term) on features with
                # two position channels appended: lam x (row, column) in cells (a soft positional kNN)
                if fte is None:
                    fte = zt["f"].reshape(n, h * w, D)
                s = pchan_scores(z, fte.reshape(n, h, w, D), gte, float(r_["lam"]), r_.get("params", {}))
            else:
                maps = []
                for term in r_["terms"]:
                    t = term["t"]
                    if t == "knn":   # the product's patch term as is (its own statistics), z-map not cached:
                        raise ValueError("use 'knn_score' kind for the product's patch term")
                    if t in ("win", "soft"):
                        if pairs is None:
                            pairs = np.load(cache / f"pairs{c}{_sfx(args.draw, args.size)}.npz")
                            pairs = {"test": pairs["test"], "cal": pairs["cal"]}
                        kw = {"r": term["r"]} if t == "win" else {"lam": term["lam"]}
                        dc = reduce_pairs(pairs["cal"], h, w, **kw)
                        dt = np.concatenate([reduce_pairs(pairs["test"][i:i + 1000], h, w, **kw)
                                             for i in range(0, n, 1000)])
                    elif t == "padim":
                        if fte is None:
                            fte = zt["f"].reshape(n, h * w, D)
                        ftr = z["ftr"].reshape(200, h * w, D)
                        fb = ftr[z["bank"]]
                        dc = padim(fb, ftr[z["cal"]], h, w, term.get("r", 1), term.get("eps", 0.01))
                        dt = padim(fb, fte, h, w, term.get("r", 1), term.get("eps", 0.01))
                    else:
                        raise ValueError(t)
                    maps.append((dc.reshape(-1, 1, h, w), dt.reshape(-1, 1, h, w), float(term.get("a", 1.0))))
                if kind == "patch":
                    s, good = patch_term(sm, maps[0][0], maps[0][1], [(m[0], m[1], m[2]) for m in maps[1:]])
                elif kind == "patch+knn":
                    # the product's patch score (its own z-map max) added to the new term's score, each in its
                    # own units: s = knn + a * (new - mean) * sd_knn / sd_new
                    s_new, g_new = patch_term(sm, maps[0][0], maps[0][1])
                    a = maps[0][2]
                    scale = a * np.std(z["knn_good"]) / (np.std(g_new) + 1e-6)
                    s = z["knn"] + scale * s_new
                    good = z["knn_good"] + scale * g_new
                else:
                    raise ValueError(kind)
                s = fuse(s, good, gd_te, gd_cal, float(r_.get("w", 2.0)))
            table[name][c] = auroc(s, lab)
        print(f"class {c} done", flush=True)
    for name, per in table.items():
        vals = [per[c] for c in classes]
        print(f"{name:<70} " + " ".join(f"{a:.4f}" for a in vals) + f"  mean {np.mean(vals):.4f}  "
              f"min {min(vals):.4f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["feat", "pairs", "eval"])
    p.add_argument("--cache", default="/tmp/h18p/cache")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--draw", type=int, default=0)
    p.add_argument("--classes", default="")
    p.add_argument("--variants", default='[{"kind":"product","name":"product"}]')
    p.add_argument("--out", default="")
    args = p.parse_args()
    {"feat": cmd_feat, "pairs": cmd_pairs, "eval": cmd_eval}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
