"""Issue 18, session 10: SimpleNet-style feature adaptation on frozen patch features (a feasibility study).

    OMP_NUM_THREADS=1 .venv/bin/python bench/anomaly_adapt.py --data /tmp/h18a/data --seed S \
        --cache /tmp/h18a/feat [--category C ...] [--variants JSON] [--out RESULT.json]

For each hard-set category (``loupe_trainer.samples_hard``; generated into ``--data`` when missing, the same
images as ``bench/anomaly.py --set hard --data``), the trainer's own stages (``AnomalyRun.prepare`` and
``extract_features``: the ONNX feature graph that fills the memory bank) give the patch features of the
training images (bank and calibration parts, the trainer's split) and, through the same graph, of the test
images; they are cached in ``--cache``. Then, per category, from the cached features:

* ``knn``: today's model, built by the trainer's ``fit`` (coreset, two-stage search, position z-scores,
  smoothing); its ``score_features`` is what the exported graph computes, so this row reproduces the bench;
* SimpleNet (Liu et al., CVPR 2023) on the frozen features: a linear feature adaptor A (D x D, identity at
  start) and a discriminator MLP (D -> hidden -> 1) trained on the bank images' patches: adapted good patches
  against the same patches plus Gaussian noise (std = ``noise`` x the features' rms per-dimension spread),
  truncated L1 loss ``relu(th - D(A x)) + relu(th + D(A x + e))``. Anomaly maps from it:
  ``disc`` (the discriminator's negative score), ``knn_adapted`` (``fit`` on the adapted features), and
  ``sum`` (the kNN z-map plus ``w`` x the discriminator's z-map).
  Every map is position-normalised with the calibration images' statistics (the trainer's
  ``_position_stats``), smoothed like the product (sigma 0.5 cells), upsampled bilinearly to the input; the
  image score is the maximum of the smoothed map (the product's score). Pixel AUROC with the runtime's
  ``pixel_auroc`` over the 256 x 256 maps and masks.

Training time is CPU time (``time.process_time``) of the adaptor + discriminator training alone, one thread.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def cache_features(data: Path, seed: int, cat: str, cache: Path, params_json: str | None = None) -> Path:
    """Train and test patch features of one category through the trainer's feature graph (cached)."""
    fpath = cache / f"seed{seed}_{cat}.npz"
    if fpath.exists():
        return fpath
    from host import Progress
    from loupe_dl_anomaly.data import load_test_split, prepare, read_image, read_mask
    from loupe_trainer.anomaly.trainer import AnomalyParams, AnomalyRun
    from loupe_trainer.common import ort_session
    from loupe_trainer.samples_hard import make_hard_dataset

    root = data / f"hard_seed{seed}" / cat
    if not (root / "train").is_dir():
        make_hard_dataset(root.parent, cat, 200, 40, 10, 256, seed=seed)
    params = AnomalyParams(**{"threads": 1, **json.loads(params_json or "{}")})
    run = AnomalyRun(root, cache / "unused.bundle", params, Progress())
    run.prepare()
    with tempfile.TemporaryDirectory(prefix="adapt-") as tmp:
        f = run.extract_features(Path(tmp))
        sess = ort_session(Path(tmp) / "features.onnx", 1)
        samples = load_test_split(root / "test", root)
        test, labels, kinds, masks = [], [], [], []
        for s in samples:
            img = read_image(s.path)
            test.append(sess.run(None, {"image": prepare(img, run.size)})[0])
            labels.append(s.label)
            kinds.append(s.kind)
            masks.append(np.packbits(read_mask(s.mask, run.size).ravel()) if s.label else
                         np.packbits(np.zeros(run.size, bool).ravel()))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(fpath, patches=f.patches, in_bank=f.in_bank, in_cal=f.in_cal, owner=f.owner,
             test=np.concatenate(test), labels=np.array(labels), kinds=np.array(kinds), masks=np.stack(masks),
             size=np.array(run.size))
    return fpath


# ------------------------------------------------------------------------------------------- SimpleNet


def train_simplenet(x_bank: np.ndarray, cfg: dict, seed: int = 0):
    """Adaptor (D x D linear, identity at start) and discriminator on the bank patches (M, D).

    Returns ``(adaptor, disc, info)``: two torch modules in eval mode; ``info`` has the CPU seconds."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x = torch.as_tensor(x_bank).float()
    m, d = x.shape
    scale = float(x.var(0).mean().sqrt())            # rms per-dimension spread of the features
    adaptor = nn.Linear(d, d, bias=True)
    with torch.no_grad():
        adaptor.weight.copy_(torch.eye(d))
        adaptor.bias.zero_()
    hidden = int(cfg.get("hidden", 256))
    disc = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
    # the features' scale (tens) -> unit scale before the discriminator (a fixed affine map: folds into its
    # first layer at export)
    mean = x.mean(0)
    opt = torch.optim.Adam([{"params": adaptor.parameters(), "lr": cfg.get("lr_a", 1e-4) * cfg.get("lr_mult", 1),
                             "weight_decay": 1e-5},
                            {"params": disc.parameters(), "lr": cfg.get("lr_d", 2e-4) * cfg.get("lr_mult", 1),
                             "weight_decay": 1e-5}])
    th = float(cfg.get("th", 0.5))
    noise = float(cfg.get("noise", 0.1)) * scale
    steps, batch = int(cfg.get("steps", 300)), int(cfg.get("batch", 2048))
    train_adaptor = bool(cfg.get("adapt", True))
    g = torch.Generator().manual_seed(seed)
    c0 = time.process_time()
    losses = []
    for step in range(steps):
        idx = torch.randint(0, m, (batch,), generator=g)
        xb = (x[idx] - mean) / scale
        a = adaptor(xb) if train_adaptor else xb
        fake = a + torch.randn(a.shape, generator=g) * (noise / scale)
        out = disc(torch.cat([a, fake]))
        t, f_ = out[:batch, 0], out[batch:, 0]
        loss = torch.relu(th - t).mean() + torch.relu(th + f_).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            losses.append(round(float(loss.detach()), 4))
    cpu = time.process_time() - c0
    adaptor.eval()
    disc.eval()

    class Adapted(nn.Module):
        def __init__(self):
            super().__init__()
            self.adaptor, self.disc = adaptor, disc
            self.register_buffer("mean", mean)
            self.scale = scale
            self.train_adaptor = train_adaptor

        def adapt(self, f):  # (..., D) -> (..., D), in the features' units
            z = (f - self.mean) / self.scale
            return self.adaptor(z) * self.scale if self.train_adaptor else z * self.scale

        def score(self, f):  # (N, h, w, D) -> (N, 1, h, w): the discriminator's negative score
            n, h, w, d = f.shape
            z = (f.reshape(-1, d) - self.mean) / self.scale
            a = self.adaptor(z) if self.train_adaptor else z
            return (-self.disc(a)).reshape(n, 1, h, w)

    return Adapted().eval(), {"train_cpu_s": round(cpu, 2), "losses": losses, "scale": round(scale, 4)}


# ------------------------------------------------------------------------------------------- scoring


def evaluate(fpath: Path, variants: list[dict], seed_model: int = 0, params_json: str | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from loupe_dl_anomaly.metrics import auroc, pixel_auroc
    from loupe_trainer.anomaly.model import PatchFeatures, bilinear_matrix
    from loupe_trainer.anomaly.trainer import AnomalyParams, _position_stats, fit
    from loupe_trainer.backbone import build_backbone

    z = np.load(fpath)
    params = AnomalyParams(**{"threads": 1, "seed": seed_model, **json.loads(params_json or "{}")})
    feats = PatchFeatures(build_backbone(variant=params.backbone), tuple(params.layers), params.aggregate,
                          color=params.color).eval()
    patches, in_bank, in_cal = z["patches"], z["in_bank"], z["in_cal"]
    f_bank, f_cal = patches[in_bank], patches[in_cal]
    f_test = torch.from_numpy(z["test"]).float()
    labels, kinds = z["labels"], z["kinds"]
    size = tuple(int(v) for v in z["size"])
    n_pix = size[0] * size[1]
    masks = [np.unpackbits(m, count=n_pix).reshape(size).astype(bool) for m in z["masks"]]
    ah, aw = None, None

    def metrics(smoothed: torch.Tensor) -> dict:
        """smoothed maps (N, 1, h, w) at feature resolution -> image and pixel AUROC, per type."""
        nonlocal ah, aw
        if ah is None:
            ah = bilinear_matrix(size[0], smoothed.shape[-2])
            aw = bilinear_matrix(size[1], smoothed.shape[-1])
        score = smoothed.flatten(1).max(1).values.numpy()
        up = (ah @ smoothed[:, 0] @ aw.t()).numpy()
        per_type = {}
        for k in sorted(set(kinds.tolist()) - {"good"}):
            sel = (kinds == k) | (labels == 0)
            per_type[k] = round(auroc(score[sel], labels[sel]), 4)
        return {"image_auroc": round(auroc(score, labels), 4), "pixel_auroc": round(pixel_auroc(list(up), masks), 4),
                "per_type": per_type}

    with torch.no_grad():
        knn, _, _ = fit(feats, f_bank, f_cal, params)
        z_knn_test = knn.normalized(knn.patch_distances(f_test))
    out = {"knn": metrics(knn.smooth(z_knn_test))}
    for v in variants:
        name = v["name"]
        model, info = train_simplenet(f_bank.reshape(-1, f_bank.shape[-1]), v, seed=seed_model + int(v.get("tseed", 0)))
        with torch.no_grad():
            d_cal = model.score(torch.from_numpy(f_cal).float())
            mu, sd = _position_stats(d_cal, "z")
            z_disc = (model.score(f_test) - mu) / sd
            row = {"info": info, "disc": metrics(knn.smooth(z_disc))}
            for w in v.get("sum_weights", [1.0]):
                row[f"sum{w:g}"] = metrics(knn.smooth(z_knn_test + w * z_disc))
            if v.get("knn_adapted", True) and model.train_adaptor:
                fb = model.adapt(torch.from_numpy(f_bank).float()).numpy()
                fc = model.adapt(torch.from_numpy(f_cal).float()).numpy()
                knn_a, _, _ = fit(feats, fb, fc, params)
                za = knn_a.normalized(knn_a.patch_distances(model.adapt(f_test)))
                row["knn_adapted"] = metrics(knn_a.smooth(za))
        out[name] = row
    return out


# ------------------------------------------------------------------------------------------- Fashion-MNIST


def fmnist_eval(args, variants: list[dict]) -> dict:
    """Fashion-MNIST one-class as ``bench/anomaly.py`` (200 training images per class, the trainer's ``fit``,
    auto 64 px input and the global term, the 10k test set), plus the SimpleNet maps. A variant's score is
    the maximum of its smoothed map plus the global term, re-scaled to the variant's own calibration
    spread (as ``fit`` does for the kNN map, in-sample on the calibration images)."""
    import importlib.util

    import torch

    from loupe_dl_anomaly.metrics import auroc
    from loupe_trainer.anomaly.model import FeatureGraph, PatchFeatures, knn_distance
    from loupe_trainer.anomaly.trainer import AnomalyParams, _input_size, _position_stats, fit, use_global_term
    from loupe_trainer.backbone import build_backbone
    from loupe_trainer.common import export_onnx, ort_session

    spec = importlib.util.spec_from_file_location("bench_anomaly", Path(__file__).with_name("anomaly.py"))
    ba = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ba)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    xtr, ytr = ba.read_idx("train-images-idx3-ubyte"), ba.read_idx("train-labels-idx1-ubyte")
    xte, yte = ba.read_idx("t10k-images-idx3-ubyte"), ba.read_idx("t10k-labels-idx1-ubyte")
    params = AnomalyParams(**{"threads": 1, **json.loads(args.params or "{}")})
    size = _input_size(xtr[0], params.image_size)
    use_global = use_global_term(params, xtr[0])
    feats = PatchFeatures(build_backbone(variant=params.backbone), tuple(params.layers), params.aggregate,
                          global_stage=params.global_stage if use_global else None, color=params.color).eval()
    gpath = export_onnx(FeatureGraph(feats), torch.zeros(1, 3, *size), cache / "fmnist_features.onnx", ["image"],
                        ["features", "global"], dynamic_batch=True, fold_pads=True)
    sess = ort_session(gpath, 1)

    def features(imgs):
        return ba.graph_features(sess, imgs, size)

    tpath = cache / "fmnist_test.npz"
    if not tpath.exists():
        np.savez(tpath, *features(xte))
    zt = np.load(tpath)
    fte, gte = torch.from_numpy(zt["arr_0"]), torch.from_numpy(zt["arr_1"])
    res: dict = {}
    for c in args.fmnist_classes:
        # the bench draws the classes in order from one generator: replay the draws before class c
        rng_c = np.random.default_rng(0)
        for cc in range(c + 1):
            idx = rng_c.choice(np.nonzero(ytr == cc)[0], 200, replace=False)
        ftr, gtr = features(xtr[idx])
        order = np.random.default_rng(params.seed).permutation(len(idx))
        n_cal = max(min(5, len(idx) // 2), int(round(params.calibration_fraction * len(idx))))
        cal, bank = order[:n_cal], order[n_cal:]
        knn, _, info = fit(feats, ftr[bank], ftr[cal], params, gtr[bank], gtr[cal])
        lab = (yte != c).astype(int)
        row = {}
        with torch.no_grad():
            z_te = torch.cat([knn.normalized(knn.patch_distances(fte[i:i + 1000])) for i in range(0, len(fte), 1000)])
            g_te = knn.global_term(gte) if knn.global_bank is not None else torch.zeros(len(fte))
            s_knn = knn.smooth(z_te).flatten(1).max(1).values + g_te
            row["knn"] = round(auroc(s_knn.numpy(), lab), 4)
            gi = info["global"]
            gb = knn.global_bank
            gd_cal = knn_distance(torch.as_tensor(gtr[cal]).float(), gb, params.global_k)
            g_sd = float(gd_cal.std()) + 1e-6
            gd_te = knn_distance(gte, gb, params.global_k)
            z_cal_knn = knn.normalized(knn.patch_distances(torch.from_numpy(ftr[cal]).float()))
        for v in variants:
            model, minfo = train_simplenet(ftr[bank].reshape(-1, ftr.shape[-1]), v, seed=params.seed)
            with torch.no_grad():
                d_cal = model.score(torch.from_numpy(ftr[cal]).float())
                mu, sd = _position_stats(d_cal, "z")
                zc = (d_cal - mu) / sd
                zt_ = torch.cat([(model.score(fte[i:i + 1000]) - mu) / sd for i in range(0, len(fte), 1000)])
                maps = {"disc": (zc, zt_)}
                for w in v.get("sum_weights", [1.0]):
                    maps[f"sum{w:g}"] = (z_cal_knn + w * zc, z_te + w * zt_)
                for key, (mc, mt) in maps.items():
                    sc_cal = knn.smooth(mc).flatten(1).max(1).values
                    scale = (float(sc_cal.std()) + 1e-6) / g_sd
                    s = knn.smooth(mt).flatten(1).max(1).values + scale * (gd_te - gi["mu"])
                    row[f"{v['name']}/{key}"] = round(auroc(s.numpy(), lab), 4)
            row[f"{v['name']}/train_cpu_s"] = minfo["train_cpu_s"]
        res[ba.CLASSES[c]] = row
        print("fmnist", c, ba.CLASSES[c], json.dumps(row), flush=True)
    keys = [k for k in next(iter(res.values())) if not k.endswith("train_cpu_s")]
    res["mean"] = {k: round(float(np.mean([r[k] for r in res.values() if isinstance(r, dict) and k in r])), 4)
                   for k in keys}
    print("fmnist MEAN", json.dumps(res["mean"]), flush=True)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/tmp/h18a/data")
    p.add_argument("--cache", default="/tmp/h18a/feat")
    p.add_argument("--seed", type=int, default=0, help="data seed of the hard set")
    p.add_argument("--category", nargs="+", default=None)
    p.add_argument("--variants", default="[]", help="JSON list of SimpleNet configurations (name, noise, steps, "
                                                     "batch, hidden, th, lr_mult, adapt, sum_weights)")
    p.add_argument("--params", default=None, help="JSON object of AnomalyParams fields (features and kNN model)")
    p.add_argument("--out", default=None)
    p.add_argument("--fmnist", action="store_true", help="Fashion-MNIST one-class instead of the hard set")
    p.add_argument("--fmnist-classes", type=int, nargs="+", default=list(range(10)))
    args = p.parse_args()
    import torch

    from loupe_trainer.samples_hard import HARD_CATEGORIES

    torch.set_num_threads(1)
    variants = json.loads(args.variants)
    if args.fmnist:
        r = fmnist_eval(args, variants)
        if args.out:
            Path(args.out).write_text(json.dumps({"variants": variants, "fmnist": r}, indent=2))
        return 0
    res: dict = {"seed": args.seed, "variants": variants, "categories": {}}
    for cat in args.category or HARD_CATEGORIES:
        c0 = time.process_time()
        fpath = cache_features(Path(args.data), args.seed, cat, Path(args.cache), args.params)
        c1 = time.process_time()
        r = evaluate(fpath, variants, params_json=args.params)
        r["cpu_s"] = {"features": round(c1 - c0, 1), "evaluate": round(time.process_time() - c1, 1)}
        res["categories"][cat] = r
        print(cat, json.dumps(r), flush=True)
    cats = list(res["categories"].values())
    summary = {}
    for key in cats[0]:
        if key == "cpu_s":
            continue
        if key == "knn":
            summary["knn"] = [round(float(np.mean([c["knn"][m] for c in cats])), 4)
                              for m in ("image_auroc", "pixel_auroc")]
            continue
        for sub in cats[0][key]:
            if sub == "info":
                continue
            summary[f"{key}/{sub}"] = [round(float(np.mean([c[key][sub][m] for c in cats])), 4)
                                       for m in ("image_auroc", "pixel_auroc")]
    res["mean"] = summary
    print("MEAN (image, pixel):")
    for k, v in summary.items():
        print(f"  {k:<28} {v[0]:.4f} {v[1]:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
