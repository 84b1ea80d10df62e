"""Issue 18, session 11: the image-level (global-feature) kNN term beside the patch score (a feasibility study).

    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_global.py --cache /tmp/h18g/cache patch
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_global.py --cache /tmp/h18g/cache desc --size 64 [--backbone lite0]
    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_global.py --cache /tmp/h18g/cache eval --variants JSON

Fashion-MNIST one-class as ``bench/anomaly.py`` (the same 200 training images per class, drawn in class order
from ``default_rng(0)``; the trainer's bank / calibration split; the 10k test set):

* ``patch``: per class, today's patch model (the trainer's ``fit`` with the global term off: coreset,
  two-stage search, position z-scores, smoothing) scores the 10k test images (maximum of the smoothed map);
  its leave-one-out good scores on the calibration images (what the trainer standardises the global term
  with) are kept too. Also the product's own global descriptor (stage 6 at the 64 px input), so that the
  ``eval`` row ``stage6/k2/w1/bank`` reproduces today's default (0.9441) exactly.
* ``desc``: average-pooled maps of stages 4-7 and the head (1280 ch) of the backbone at input size
  ``--size`` (the 28 px image resized bilinearly, grey -> RGB as the runtime does) for the 2000 training
  images and the 10k test images, one ONNX graph (``--backbone``).
* ``eval``: the score ``patch + w * (p_sd / g_sd) * (gdist - g_mu)`` (the trainer's fusion: the global kNN
  distance z-scored on the calibration images, in patch-score units), for each variant: stages (each
  L2-normalised, concatenated, re-normalised), size, k, weight w, and the global bank: ``bank`` = the 160
  memory-bank images (today's), ``all`` = all 200 (the calibration images' distances leave-one-out).
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import json
import time
from pathlib import Path

import numpy as np

STAGES = ["stage4", "stage5", "stage6", "stage7", "head"]


@functools.lru_cache(maxsize=1)
def _bench():
    spec = importlib.util.spec_from_file_location("bench_anomaly", Path(__file__).with_name("anomaly.py"))
    ba = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ba)
    return ba


def draws(ytr: np.ndarray, draw: int = 0) -> list[np.ndarray]:
    """The bench's 200 training images of each class (one generator, classes in order; draw 0 = the bench's)."""
    rng = np.random.default_rng(draw)
    return [rng.choice(np.nonzero(ytr == c)[0], 200, replace=False) for c in range(10)]


def split(n: int, params) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(params.seed).permutation(n)
    n_cal = max(min(5, n // 2), int(round(params.calibration_fraction * n)))
    return order[:n_cal], order[n_cal:]


def resized(imgs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return _bench().gray_to_input(imgs, size)


def resized_via(imgs: np.ndarray, via: int, size: tuple[int, int]) -> np.ndarray:
    """As the product's graph would see it: the runtime's resize to the model input (via x via, uint8), then a
    bilinear upsampling to ``size`` inside the graph (torch's interpolate, half-pixel centres)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(resized(imgs, (via, via)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).numpy()


def cmd_patch(args) -> None:
    import torch

    from loupe_trainer.anomaly.model import FeatureGraph, PatchFeatures
    from loupe_trainer.anomaly.trainer import AnomalyParams, _input_size, fit
    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.common import export_onnx, ort_session

    ba = _bench()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    xtr, ytr = ba.read_idx("train-images-idx3-ubyte"), ba.read_idx("train-labels-idx1-ubyte")
    xte = ba.read_idx("t10k-images-idx3-ubyte")
    params = AnomalyParams(threads=1, position="off")   # session 11's patch term (before the channels)
    size = _input_size(xtr[0], params.image_size)
    feats = PatchFeatures(build_backbone(variant=params.backbone), tuple(params.layers), params.aggregate,
                          global_stage=params.global_stage).eval()
    gpath = export_onnx(FeatureGraph(feats), torch.zeros(1, 3, *size), cache / "patch_features.onnx", ["image"],
                        ["features", "global"], dynamic_batch=True, fold_pads=True)
    sess = ort_session(gpath, 1)

    def features(imgs):
        return ba.graph_features(sess, imgs, size)

    tpath = cache / "patch_test.npz"
    if not tpath.exists():
        np.savez(tpath, *features(xte))
    zt = np.load(tpath)
    fte, gte = torch.from_numpy(zt["arr_0"]), zt["arr_1"]
    off = params.model_copy(update={"global_term": "off"})
    for c, idx in enumerate(draws(ytr, args.draw)):
        out = cache / f"patch_c{c}{_sfx(args.draw)}.npz"
        if out.exists():
            continue
        t0 = time.process_time()
        ftr, gtr = features(xtr[idx])
        cal, bank = split(len(idx), params)
        model, good, _ = fit(feats, ftr[bank], ftr[cal], off)
        with torch.no_grad():
            s = np.concatenate([model.score_features(fte[i:i + 500], None)[1].numpy() for i in range(0, len(fte), 500)])
        np.savez(out, test=s, good=good, cal=cal, bank=bank, idx=idx, g_train=gtr, g_test_c=np.zeros(0))
        print(f"patch {c} {ba.CLASSES[c]} {time.process_time() - t0:.1f} s CPU", flush=True)
    np.save(cache / "g64_stage6_product.npy", gte)


class Pooled:
    """image (N, 3, H, W) RGB 0..255 -> the average-pooled maps of ``STAGES`` (unnormalised), concatenated."""

    def __new__(cls, backbone):
        import torch.nn as nn

        from loupe_trainer.backbone import normalize

        class _P(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = backbone

            def forward(self, image):
                f = self.backbone.stages(normalize(image), STAGES)
                return tuple(f[s].mean(dim=(2, 3)) for s in STAGES)

        return _P()


def cmd_desc(args) -> None:
    import torch

    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.common import export_onnx, ort_session

    ba = _bench()
    cache = Path(args.cache)
    tag = f"{args.backbone}_{args.size}" + (f"via{args.via}" if args.via else "") + ("flip" if args.flip else "")
    out = cache / f"desc_{tag}.npz"
    if args.draw:   # the test descriptors are in the draw-0 file; only the training images of this draw
        out = cache / f"desc_{tag}{_sfx(args.draw)}.npz"
    if out.exists():
        return
    xtr, ytr = ba.read_idx("train-images-idx3-ubyte"), ba.read_idx("train-labels-idx1-ubyte")
    xte = ba.read_idx("t10k-images-idx3-ubyte")
    net = Pooled(build_backbone(variant=args.backbone)).eval()
    size = (args.size, args.size)
    gpath = export_onnx(net, torch.zeros(1, 3, *size), cache / f"pooled_{args.backbone}_{args.size}.onnx", ["image"],
                        STAGES, dynamic_batch=True, fold_pads=True)
    sess = ort_session(gpath, 1)

    def run(imgs):
        parts = [[] for _ in STAGES]
        for i in range(0, len(imgs), 32):
            x = resized_via(imgs[i:i + 32], args.via, size) if args.via else resized(imgs[i:i + 32], size)
            if args.flip:   # the mirrored view (session 15: test-time flip averaged in the descriptor)
                x = np.ascontiguousarray(x[..., ::-1])
            for p, o in zip(parts, sess.run(None, {"image": x})):
                p.append(o)
        return [np.concatenate(p) for p in parts]

    idx = np.concatenate(draws(ytr, args.draw))
    t0 = time.process_time()
    tr = run(xtr[idx])
    t1 = time.process_time()
    te = run(xte) if not args.draw else [np.zeros((0, a.shape[1]), np.float32) for a in tr]
    t2 = time.process_time()
    np.savez(out, **{f"train_{s}": a for s, a in zip(STAGES, tr)}, **{f"test_{s}": a for s, a in zip(STAGES, te)},
             train_idx=idx)
    print(f"desc {tag}: train {t1 - t0:.1f} s, test {t2 - t1:.1f} s CPU "
          f"({1000 * (t2 - t1) / len(xte):.2f} ms/image)", flush=True)


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_dist(q: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    d2 = (q * q).sum(1)[:, None] - 2 * q @ b.T + (b * b).sum(1)[None]
    d2 = np.sort(d2, axis=1)[:, :k]
    return np.sqrt(np.maximum(d2, 0)).mean(1)


def descriptor(desc: dict, part: str, stages: list[str], rows=None) -> np.ndarray:
    """Each stage's pooled map L2-normalised, concatenated, re-normalised. A stage written ``SRC:stage`` comes
    from another descriptor file (``desc["_load"](SRC)``): one descriptor over two input sizes."""
    def get(s):
        src = desc
        if ":" in s:
            other, s = s.split(":")
            src = desc["_load"](other)
        return src[f"{part}_{s}"] if rows is None else src[f"{part}_{s}"][rows]
    xs = [l2n(get(s)) for s in stages]
    return l2n(np.concatenate(xs, axis=1).astype(np.float64))


def cmd_eval(args) -> None:
    from loupe_dl_anomaly.metrics import auroc

    ba = _bench()
    cache = Path(args.cache)
    yte = ba.read_idx("t10k-labels-idx1-ubyte")
    variants = json.loads(args.variants)
    # expand lists in each variant into their product
    rows = []
    for v in variants:
        if isinstance(v["stages"][0], str):
            v = {**v, "stages": [v["stages"]]}     # one stage set; a list of sets is expanded like the rest
        keys = [k for k in v if isinstance(v[k], list) and k != "extra"]
        for combo in itertools.product(*[v[k] for k in keys]):
            rows.append({**v, **dict(zip(keys, combo))})
    patch = [np.load(cache / f"patch_c{c}{_sfx(args.draw)}.npz") for c in range(10)]
    descs: dict = {}
    table: dict = {}
    for r in rows:
        src = r.get("src", "lite0_64")
        if src not in descs:
            descs[src] = _load_desc(cache, src, args.draw)
            descs[src]["_load"] = lambda o: descs.setdefault(o, _load_desc(cache, o, args.draw))
        d = descs[src]
        name = f"{src}/{'+'.join(r['stages'])}/k{r['k']}/w{r['w']}/{r['gbank']}" + "".join(
            f" +{e['w']}x{e['src']}/{'+'.join(e['stages'])}" for e in r.get("extra", []))
        per = []
        for c in range(10):
            p = patch[c]
            cal, bank = p["cal"], p["bank"]
            rows_c = np.arange(200 * c, 200 * c + 200)
            gtr = descriptor(d, "train", r["stages"], rows_c)
            gte = descriptor(d, "test", r["stages"])
            if r["gbank"] == "bank":
                gb = gtr[bank]
                gd_cal = knn_dist(gtr[cal], gb, r["k"])
            elif r["gbank"] == "all":   # all 200 images in the global bank; the calibration images' distances
                gb = np.concatenate([gtr[cal], gtr[bank]])  # leave-one-out
                gd_cal = _loo(gtr[cal], gb, r["k"])
            else:   # "all200": the same bank, statistics from all 200 images' leave-one-out distances
                gb = np.concatenate([gtr[cal], gtr[bank]])
                gd_cal = _loo(gb, gb, r["k"])
            g_mu, g_sd = gd_cal.mean(), gd_cal.std() + 1e-6
            p_sd = float(np.std(p["good"])) + 1e-6
            gd_te = knn_dist(gte, gb, r["k"])
            if r["w"] == "only":
                s = gd_te
            else:
                s = p["test"] + float(r["w"]) * (p_sd / g_sd) * (gd_te - g_mu)
            for e in r.get("extra", []):   # more global terms, each z-scored on its own
                de = descs.setdefault(e["src"], _load_desc(cache, e["src"], args.draw))
                etr, ete = descriptor(de, "train", e["stages"], rows_c), descriptor(de, "test", e["stages"])
                eb = etr[bank] if r["gbank"] == "bank" else np.concatenate([etr[cal], etr[bank]])
                ec = (knn_dist(etr[cal], eb, r["k"]) if r["gbank"] == "bank" else
                      _loo(etr[cal], eb, r["k"]) if r["gbank"] == "all" else _loo(eb, eb, r["k"]))
                s = s + float(e["w"]) * (p_sd / (ec.std() + 1e-6)) * (knn_dist(ete, eb, r["k"]) - ec.mean())
            per.append(auroc(s, (yte != c).astype(int)))
        table[name] = per
        print(f"{name:<48} " + " ".join(f"{a:.4f}" for a in per) + f"  mean {np.mean(per):.4f}  min {min(per):.4f}",
              flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=1))


def _sfx(draw: int) -> str:
    return f"_d{draw}" if draw else ""


def _load_desc(cache: Path, src: str, draw: int) -> dict:
    d = dict(np.load(cache / f"desc_{src}.npz"))
    if draw:
        d.update({k: v for k, v in np.load(cache / f"desc_{src}{_sfx(draw)}.npz").items() if k.startswith("train")})
    return d


def _loo(q: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """kNN distance of q[i] (= b[i]) to b without itself."""
    d2 = (q * q).sum(1)[:, None] - 2 * q @ b.T + (b * b).sum(1)[None]
    d2[np.arange(len(q)), np.arange(len(q))] = np.inf
    d2 = np.sort(d2, axis=1)[:, :k]
    return np.sqrt(np.maximum(d2, 0)).mean(1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["patch", "desc", "eval"])
    p.add_argument("--cache", default="/tmp/h18g/cache")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--backbone", default="lite0")
    p.add_argument("--flip", action="store_true", help="desc: the horizontally mirrored image (cache tag ...flip)")
    p.add_argument("--via", type=int, default=0, help="desc: resize to this size first, then upsample in torch")
    p.add_argument("--variants", default='[{"stages":["stage6"],"k":2,"w":1,"gbank":"bank"}]')
    p.add_argument("--out", default="")
    p.add_argument("--draw", type=int, default=0, help="training-image draw (0 = bench/anomaly.py's)")
    args = p.parse_args()
    {"patch": cmd_patch, "desc": cmd_desc, "eval": cmd_eval}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
