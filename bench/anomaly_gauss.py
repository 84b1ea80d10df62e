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
    # session 15: pchan 80's patch term alone (the product's fit, global term off), then any image-level terms
    # on top of it from the caches; the views' trunk time at batch 1
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_gauss.py pchanpatch --pos-cache /tmp/h18/pos --draw D \
        --lam 80 --out-cache /tmp/h18s15/pchan80
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_global.py --cache /tmp/h18s15/cache desc --backbone lite1 \
        --size 224 --via 64 --draw D
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_gauss.py eval --cache /tmp/h18s15/cache \
        --patch-cache /tmp/h18s15/pchan80 --draw D --variants '[{"l2":true,"gauss":"lite1_224via64:head","pow":0.5}]'
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_gauss.py timeviews --cache /tmp/h18s15/cache \
        --graphs lite0_224,lite1_224

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


def lw_fit(x: np.ndarray, shr: float = 1.0) -> dict:
    """Ledoit-Wolf Gaussian of the rows of x (n, d) in closed form: covariance (1 - s) S + s mu I (S the
    maximum-likelihood covariance, mu = trace(S) / d, s sklearn's Ledoit-Wolf shrinkage), kept as the
    eigen-decomposition of S (from the SVD of the centred rows: n < d is the usual case)."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    x = x.astype(np.float64)
    mean = x.mean(0)
    xc = x - mean
    n, d = xc.shape
    # shr (session 15's scan): the Ledoit-Wolf shrinkage times shr; a negative shr: the shrinkage is -shr (fixed)
    s = -shr if shr < 0 else min(1.0, shr * float(ledoit_wolf_shrinkage(xc, assume_centered=True)))
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


def gauss_terms(tr: np.ndarray, te: np.ndarray, cal: np.ndarray, bank: np.ndarray, fit: str, sq: bool,
                shr: float = 1.0):
    """(calibration distances, test distances) of the Gaussian term (``shr``: the Ledoit-Wolf shrinkage times)."""
    if fit == "bank":
        g = lw_fit(tr[bank], shr)
        return maha(g, tr[cal], sq), maha(g, te, sq)
    allr = np.concatenate([cal, bank])
    g = lw_fit(tr[allr], shr)
    dc = np.array([maha(lw_fit(tr[np.setdiff1d(allr, [i])], shr), tr[[i]], sq)[0] for i in cal])
    return dc, maha(g, te, sq)


def _gauss_src(spec: str) -> tuple[str, list[str]]:
    """``SIZE:stages`` (Lite0, via the 64 px input) or ``SRC:stages`` (a descriptor cache name, e.g.
    ``lite2_260via64``); stages joined by ``+`` are concatenated (each L2-normalised first when ``l2``)."""
    src, stages = spec.split(":")
    if src.isdigit():
        src = f"lite0_{src}via64" if int(src) != 64 else "lite0_64"
    return src, stages.split("+")


def _knn_spec(spec):
    if isinstance(spec, (list, tuple)):         # [src, [stages]]: any descriptor
        return spec[0], list(spec[1])
    return KNN[spec]


def knn_density(gb: np.ndarray, kr: int) -> np.ndarray:
    """Each global-bank row's own kNN radius (k = kr, itself left out), over the mean: the density weights."""
    r = _loo(gb, gb, kr)
    return r / r.mean()


def knn_dist_w(q: np.ndarray, b: np.ndarray, k: int, r: np.ndarray, alpha: float, exclude_self: bool = False):
    """kNN distance with density re-weighting: mean of the k smallest d(q, b_j) / r_j ** alpha (r_j the bank
    entry's own kNN radius, relative): a bank image in a sparse region of the good set counts as closer.
    In a graph: one constant row vector multiplied into the distances before the ReduceMin / TopK."""
    d2 = (q * q).sum(1)[:, None] - 2 * q @ b.T + (b * b).sum(1)[None]
    d = np.sqrt(np.maximum(d2, 0)) / (r[None] ** alpha)
    if exclude_self:
        d[np.arange(len(q)), np.arange(len(q))] = np.inf
    return np.sort(d, axis=1)[:, :k].mean(1)


def cmd_eval(args) -> None:
    """Variant keys (lists expand into their product): ``knn`` (a KNN name, or [src, [stages]]), ``wk``,
    ``k`` (2), ``kdens`` (alpha of the density re-weighting of the kNN term, 0 = off) and ``kr`` (its radius'
    k, 2); ``gauss`` (``SIZE:stage[+stage]`` or ``SRC:stage``, or "none"), ``wg``, ``fit`` (bank / all),
    ``l2``, ``sq``, ``flip`` (average the descriptor with its mirrored image's, cache ``SRCflip``);
    ``gauss2`` / ``wg2`` / ``fit2``: a second Gaussian term, z-scored on its own; ``knn2`` / ``wk2``: a second
    kNN term. ``--patch-cache``: the patch term's caches (e.g. ``pchanpatch``'s)."""
    from loupe_dl_anomaly.metrics import auroc

    ba = _bench()
    cache = Path(args.cache)
    pcache = Path(args.patch_cache or args.cache)
    yte = ba.read_idx("t10k-labels-idx1-ubyte")
    rows = []
    for v in json.loads(args.variants):
        v = {"knn": "s6+128", "wk": 2, "k": 2, "kdens": 0, "kr": 2, "gauss": "224:head", "wg": 2, "fit": "bank",
             "l2": False, "sq": False, "flip": False, "gauss2": "none", "wg2": 0, "fit2": "bank",
             "knn2": "none", "wk2": 0, "shr": 1.0, "pow": 1.0, "kpow": 1.0, **v}
        keys = [k for k in v if isinstance(v[k], list) and not (k in ("knn", "knn2") and len(v[k]) > 1 and isinstance(v[k][1], list))]
        for combo in itertools.product(*[v[k] for k in keys]):
            rows.append({**v, **dict(zip(keys, combo))})
    classes = [int(c) for c in args.classes.split(",")] if args.classes else list(range(10))
    patch = {c: np.load(pcache / f"patch_c{c}{_sfx(args.draw)}.npz") for c in classes}
    descs: dict = {}

    def load(src):
        if src not in descs:
            descs[src] = _load_desc(cache, src, args.draw)
            descs[src]["_load"] = load
        return descs[src]

    gcache: dict = {}
    table = {}

    def gauss_part(spec, fit, l2, sq, flip, c, rows_c, cal, bank, shr=1.0, pw=1.0):
        key = (spec, fit, l2, sq, flip, c, shr, pw)
        if key not in gcache:
            src, stages = _gauss_src(spec)
            srcs = [src] + ([src + "flip"] if flip else [])
            trs, tes = [], []
            for st in stages:
                tr = np.mean([load(sc)[f"train_{st}"][rows_c] for sc in srcs], 0)
                te = np.mean([load(sc)[f"test_{st}"] for sc in srcs], 0)
                if pw != 1:     # power normalisation (the pooled maps are >= 0 after ReLU6)
                    tr, te = np.maximum(tr, 0) ** pw, np.maximum(te, 0) ** pw
                if l2:
                    tr, te = l2n(tr), l2n(te)
                trs.append(tr)
                tes.append(te)
            gcache[key] = gauss_terms(np.concatenate(trs, 1), np.concatenate(tes, 1), cal, bank, fit, sq, shr)
        return gcache[key]

    def knn_part(spec, k, kdens, kr, rows_c, cal, bank, kpow=1.0):
        src, stages = _knn_spec(spec)
        d = load(src)
        if kpow == 1:
            gtr, gte = descriptor(d, "train", stages, rows_c), descriptor(d, "test", stages)
        else:   # power normalisation of each pooled map before the descriptor's L2 normalisations
            def part(which, rows):
                xs = []
                for st in stages:
                    sd, st = (load(st.split(":")[0]), st.split(":")[1]) if ":" in st else (d, st)
                    x = sd[f"{which}_{st}"] if rows is None else sd[f"{which}_{st}"][rows]
                    xs.append(l2n(np.maximum(x, 0).astype(np.float64) ** kpow))
                return l2n(np.concatenate(xs, 1))
            gtr, gte = part("train", rows_c), part("test", None)
        gb = np.concatenate([gtr[cal], gtr[bank]])
        if kdens:
            r = knn_density(gb, kr)
            return knn_dist_w(gtr[cal], gb, k, r, kdens, True), knn_dist_w(gte, gb, k, r, kdens)
        return _loo(gtr[cal], gb, k), knn_dist(gte, gb, k)

    for r in rows:
        t0 = time.process_time()
        kn = r["knn"] if isinstance(r["knn"], str) else "+".join([r["knn"][0]] + r["knn"][1])
        name = f"knn {kn} w{r['wk']}" + (f" k{r['k']}" if r["k"] != 2 else "") + \
            (f" dens{r['kdens']}/{r['kr']}" if r["kdens"] else "") + (f" kpow{r['kpow']}" if r["kpow"] != 1 else "") + \
            f" + gauss {r['gauss']} w{r['wg']} fit {r['fit']}" + (" l2" if r["l2"] else "") + \
            (" sq" if r["sq"] else "") + (" flip" if r["flip"] else "") + (f" shr{r['shr']}" if r["shr"] != 1 else "") + \
            (f" pow{r['pow']}" if r["pow"] != 1 else "") + \
            (f" + gauss2 {r['gauss2']} w{r['wg2']} fit {r['fit2']}" if r["gauss2"] != "none" and r["wg2"] else "") + \
            (f" + knn2 {r['knn2'] if isinstance(r['knn2'], str) else '+'.join([r['knn2'][0]] + r['knn2'][1])}"
             f" w{r['wk2']}" if r["knn2"] != "none" and r["wk2"] else "")
        per = []
        for c in classes:
            p = patch[c]
            cal, bank = p["cal"], p["bank"]
            rows_c = np.arange(200 * c, 200 * c + 200)
            p_sd = float(np.std(p["good"])) + 1e-6
            s = p["test"].astype(np.float64).copy()
            terms = []
            if r["knn"] != "none" and r["wk"]:
                terms.append((knn_part(r["knn"], r["k"], r["kdens"], r["kr"], rows_c, cal, bank, r["kpow"]), r["wk"]))
            if r["knn2"] != "none" and r["wk2"]:
                terms.append((knn_part(r["knn2"], r["k"], 0, 2, rows_c, cal, bank), r["wk2"]))
            if r["gauss"] != "none" and r["wg"]:
                terms.append((gauss_part(r["gauss"], r["fit"], r["l2"], r["sq"], r["flip"], c, rows_c, cal, bank,
                                         r["shr"], r["pow"]),
                              r["wg"]))
            if r["gauss2"] != "none" and r["wg2"]:
                terms.append((gauss_part(r["gauss2"], r["fit2"], r["l2"], r["sq"], r["flip"], c, rows_c, cal,
                                         bank), r["wg2"]))
            for (dc, dt), w in terms:
                mu = dc.mean()
                sd = max(dc.std(), 0.05 * mu) + 1e-6
                s += float(w) * (p_sd / sd) * (dt - mu)
            per.append(auroc(s, (yte != c).astype(int)))
        table[name] = per
        print(f"{name:<64} " + " ".join(f"{a:.4f}" for a in per) + f"  mean {np.mean(per):.4f}  min {min(per):.4f}"
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
    # session 15: --gauss-src (the Gaussian view's descriptor cache) and --gauss-pow (the pooled head to that
    # power before the L2 normalisation), so the trainer's own fit checks the eval rows
    d = _load_desc(cache, args.gauss_src, args.draw)

    def head(x):
        return l2n(np.maximum(x, 0) ** args.gauss_pow if args.gauss_pow != 1 else x).astype(np.float32)

    hte = head(d["test_head"])
    feats = _feats()
    assert feats.gauss_size, "the product's default feature module has no Gaussian term"
    params = AnomalyParams(threads=1, position="off")   # the channels are appended here, by lam
    lams = [float(v) for v in args.lam.split(",")]
    table = {f"pchan {lam:g}" + (" + gauss" if wg else ""): [] for lam in lams
             for wg in ((1,) if args.gauss_only else (0, 1))}
    for c in range(10):
        z = np.load(pos / f"class{c}_s64{'_d' + str(args.draw)}.npz")
        cal, bank = z["cal"], z["bank"]
        gtr = z["gtr"]
        htr = head(d["train_head"][200 * c:200 * c + 200])
        for lam in lams:
            ftr = with_position(z["ftr"], lam)
            for wg in ((1,) if args.gauss_only else (0, 1)):
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


def cmd_pchanpatch(args) -> None:
    """The patch term alone of session 12's position channels (``pchan LAM``; the product's fit with the global
    term off, on features with lam x (row, column) appended) for every class of a draw, written in
    ``bench/anomaly_global.py patch``'s format (``patch_c{c}[_dD].npz``: test scores, leave-one-out good scores,
    cal, bank) into ``--out-cache``: ``eval --patch-cache`` then adds any global terms from the caches (the fused
    score is the patch score plus the terms, so ``pchan 80 + Gaussian`` is reproduced without a refit)."""
    import torch

    from anomaly_position import _feats, with_position
    from loupe_trainer.anomaly.trainer import AnomalyParams, fit

    pos, out_dir = Path(args.pos_cache), Path(args.out_cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    fte = np.load(pos / "test_s64.npz")["f"]
    feats = _feats()
    off = AnomalyParams(threads=1, position="off").model_copy(update={"global_term": "off"})
    lam = float(args.lam)
    for c in range(10):
        out = out_dir / f"patch_c{c}{_sfx(args.draw)}.npz"
        if out.exists():
            continue
        t0 = time.process_time()
        z = np.load(pos / f"class{c}_s64_d{args.draw}.npz")
        cal, bank = z["cal"], z["bank"]
        ftr = with_position(z["ftr"], lam)
        model, good, _ = fit(feats, ftr[bank], ftr[cal], off)
        with torch.no_grad():
            s = np.concatenate([model.score_features(torch.from_numpy(with_position(fte[i:i + 500], lam)),
                                                     None)[1].numpy() for i in range(0, len(fte), 500)])
        np.savez(out, test=s, good=good, cal=cal, bank=bank, idx=z["idx"], lam=lam)
        print(f"pchanpatch {lam:g} draw {args.draw} class {c}: {time.process_time() - t0:.1f} s CPU", flush=True)


def _alternated(sess: list, xs: list, blocks: int, names: list[str]) -> None:
    """ONNX Runtime sessions run on their inputs (``image``), alternated in ``blocks`` blocks after 5 warm-up
    runs; process time (immune to pauses), median per image in each block; prints the median of the blocks and
    the ratio to the first session in each block."""
    import statistics

    for s, x in zip(sess, xs):
        for xi in x[:5]:
            s.run(None, {"image": xi})
    per = [[] for _ in sess]
    for _ in range(blocks):
        for j, (s, x) in enumerate(zip(sess, xs)):
            t = []
            for xi in x:
                c0 = time.process_time()
                s.run(None, {"image": xi})
                t.append((time.process_time() - c0) * 1e3)
            per[j].append(statistics.median(t))
    for j, n in enumerate(names):
        ratio = [p / q for p, q in zip(per[j], per[0])]
        print(f"{n}: {statistics.median(per[j]):.2f} ms/image (blocks {min(per[j]):.2f}-{max(per[j]):.2f}), "
              f"ratio to the first {statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f})", flush=True)


def _session1(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def cmd_timeviews(args) -> None:
    """Per-image time of one view's trunk pass at batch 1, one thread: ``bench/anomaly_global.py desc``'s pooled
    graphs (``--graphs`` pooled_BACKBONE_SIZE.onnx in ``--cache``: the trunk to the head and the pooling, what
    the Gaussian term's view adds to the product's graph) on the same 40 random images per size."""
    names = args.graphs.split(",")
    sess = [_session1(Path(args.cache) / f"pooled_{n}.onnx") for n in names]
    rng = np.random.default_rng(0)
    xs = [[rng.uniform(0, 255, (1, 3, int(n.split("_")[1]), int(n.split("_")[1]))).astype(np.float32)
           for _ in range(40)] for n in names]
    _alternated(sess, xs, args.blocks, names)


def cmd_time(args) -> None:
    """Per-image time of bundles' graphs: bare ONNX Runtime sessions (one thread, batch 1) on the same prepared
    test images, the bundles alternated in ``--blocks`` blocks."""
    from host import Bundle
    from loupe_dl_anomaly.data import list_images, prepare, read_image

    bundles = [Bundle.load(Path(b)) for b in args.bundles.split(",")]
    sess = [_session1(b.path / "model.onnx") for b in bundles]
    imgs = [read_image(p) for p in list_images(Path(args.images))[:40]]
    xs = [[prepare(im, tuple(b.meta["input_size"])) for im in imgs] for b in bundles]
    _alternated(sess, xs, args.blocks, [str(b.path) for b in bundles])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["eval", "time", "pchan", "pchanpatch", "timeviews"])
    p.add_argument("--graphs", default="lite0_224,lite2_260", help="timeviews: pooled graphs (BACKBONE_SIZE)")
    p.add_argument("--out-cache", default="/tmp/h18s15/pchan80", help="pchanpatch: where its patch caches go")
    p.add_argument("--patch-cache", default="", help="eval: the patch-term caches (default: --cache)")
    p.add_argument("--pos-cache", default="/tmp/h18/pos", help="pchan: bench/anomaly_position.py's feat cache")
    p.add_argument("--lam", default="80", help="pchan: position-channel weights, comma-separated")
    p.add_argument("--gauss-src", default="lite0_224via64", help="pchan: the Gaussian view's descriptor cache")
    p.add_argument("--gauss-pow", type=float, default=1.0, help="pchan: power of the pooled head before L2")
    p.add_argument("--gauss-only", action="store_true", help="pchan: only the fit with the Gaussian term")
    p.add_argument("--bundles", default="", help="time: comma-separated bundle folders (the first is the reference)")
    p.add_argument("--images", default="", help="time: a folder of test images")
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--cache", default="/tmp/h18/cache")
    p.add_argument("--variants", default='[{}]')
    p.add_argument("--out", default="")
    p.add_argument("--draw", type=int, default=0, help="training-image draw (0 = bench/anomaly.py's)")
    p.add_argument("--classes", default="", help="eval: comma-separated classes (default: all ten)")
    args = p.parse_args()
    {"eval": cmd_eval, "time": cmd_time, "pchan": cmd_pchan, "pchanpatch": cmd_pchanpatch,
     "timeviews": cmd_timeviews}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
