"""``loupe train anomaly DATA --out BUNDLE``: a PatchCore-class model from good images only.

Steps (each reported through ``Progress``):

1. ``features``: the training images are split into a *bank* part and a
   *calibration* part (``calibration_fraction``, at least 2 images); patch
   features of all of them are computed with ONNX Runtime (the feature graph
   exported from torch, so the bank holds exactly what inference computes).
2. ``coreset``: the bank part's patches are subsampled by blocked greedy
   k-center on a random projection to at most ``max_bank`` rows (memory bound:
   ``max_bank x D x 4`` bytes in the graph, whatever the number of images).
3. ``calibrate``: the calibration images' nearest-neighbour distance maps give
   the per-position mean and spread (position normalisation) and, leave-one-out,
   the held-out good scores the threshold is fitted on (``quantile`` x ``margin``).
   With defective images (``--refine test`` or a folder), the threshold is moved
   to the F1-optimal cut.
4. ``export``: one ONNX graph ``image (1, 3, H, W) RGB 0..255 -> anomaly_map
   (1, 1, H, W), score (1,)``, nearest-neighbour search included; parity against
   torch on training images (tolerance ``PARITY_ATOL + PARITY_RTOL x |value|``)
   fails the export when they disagree; the bundle is written by ``host.write_bundle``.
"""
from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from host import BundleError, Params, Progress, Trainer, UsageError, __version__ as host_version, write_bundle

#: export parity tolerance on the anomaly map and the score (z-score units; thresholds are typically 3-10)
PARITY_ATOL = 2e-3
PARITY_RTOL = 1e-3


class AnomalyParams(Params):
    image_size: int = Field(256, ge=64, le=1024, description="model input height in pixels; the width follows "
                                                                "the training images' aspect ratio (multiple of 32)")
    layers: list[Literal["stage2", "stage3", "stage4", "stage5"]] = Field(
        default_factory=lambda: ["stage3", "stage4"],
        description="backbone stages whose features are concatenated (stage2 = stride 4, stage3 = stride 8, "
                    "stage4/stage5 = stride 16)")
    aggregate: int = Field(3, ge=1, le=7, description="local neighbourhood (k x k average) for patch features")
    max_bank: int = Field(8192, ge=64, le=65536, description="memory bound: at most this many patch features "
                                                             "are kept (coreset)")
    coreset_ratio: float = Field(0.1, gt=0, le=1, description="keep at most this fraction of the training patches")
    coreset_proj_dim: int = Field(32, ge=0, le=512, description="random projection used by the k-center "
                                                                 "greedy (0 = none)")
    sigma: float = Field(0.5, ge=0, le=8, description="Gaussian smoothing of the anomaly map, in feature cells "
                                                      "(one cell = 8 pixels at stride 8)")
    position_norm: Literal["z", "mean", "none"] = Field(
        "z", description="normalise each position's distance by good images' statistics there: z = (d - mean) / "
                         "std, mean = d / mean")
    calibration_fraction: float = Field(0.2, ge=0.05, le=0.5, description="share of the good training images held "
                                                                           "out for position statistics and the "
                                                                           "threshold")
    quantile: float = Field(0.99, gt=0.5, le=1.0, description="threshold = this quantile of held-out good scores "
                                                              "x margin")
    margin: float = Field(1.0, gt=0, le=10, description="multiplier on the good-score quantile")
    refine: str = Field("none", description="refine the threshold to the F1-optimal cut with defective images: "
                                            "'none', 'test' (DATA/test) or a folder with good/ and defect "
                                            "sub-folders")
    batch_size: int = Field(8, ge=1, le=128, description="images per feature-extraction batch")
    threads: int = Field(2, ge=1, le=64, description="CPU threads for torch and onnxruntime")
    seed: int = Field(0, description="random seed (split, projection, coreset)")


def _input_size(first_image: np.ndarray, image_size: int) -> tuple[int, int]:
    h, w = first_image.shape[:2]
    width = max(32, int(round(image_size * w / h / 32.0)) * 32)
    return int(image_size), int(width)


class AnomalyTrainer(Trainer):
    task = "anomaly"
    description = "PatchCore-class anomaly detection from good images (EfficientNet-Lite0 features, coreset)"
    Params = AnomalyParams

    def make_sample_data(self, out: Path, seed: int = 0) -> Path:
        """A small brushed-metal set (60 good training images; 10 good and 3 x 5 defective test
        images with exact masks) in MVTec AD layout, for ``loupe demo``."""
        from ..samples import make_texture_dataset

        return make_texture_dataset(out, "brushed_metal", n_train=60, n_test_good=10, n_test_defect=5, seed=seed)

    def train(self, data: Path, out: Path, params: AnomalyParams, progress: Progress):
        import torch

        from loupe_dl_anomaly.data import discover, load_test_split, prepare, read_image
        from loupe_dl_anomaly.metrics import f1_threshold, good_threshold

        from ..backbone import build_backbone
        from ..common import check_parity, export_onnx, iter_batches, ort_session, set_threads
        from .coreset import subsample
        from .model import PatchCore, PatchFeatures, nn_distance

        t_start = time.perf_counter()
        set_threads(params.threads)
        ds = discover(data, need_train=True)
        refine_samples = []
        if params.refine != "none":
            folder = (ds.root / "test") if params.refine == "test" else Path(params.refine)
            if not folder.is_dir():
                raise UsageError(f"--refine {params.refine}: folder {folder} not found")
            refine_samples = load_test_split(folder, ds.root if params.refine == "test" else folder.parent)
            if not any(s.label == 1 for s in refine_samples):
                raise UsageError(f"--refine {params.refine}: {folder} has no defective images (sub-folders other "
                                 f"than good/)")

        def load(path: Path) -> np.ndarray:
            try:
                return read_image(path)
            except ValueError as exc:
                raise UsageError(str(exc)) from None

        first = load(ds.train[0])
        size = _input_size(first, params.image_size)
        paths = list(ds.train)
        n = len(paths)
        rng = np.random.default_rng(params.seed)
        order = rng.permutation(n)
        if n >= 5:
            # at least 5 held-out images (or half the set) so that per-position statistics mean something
            n_cal = max(min(5, n // 2), int(round(params.calibration_fraction * n)))
            cal_idx, bank_idx = order[:n_cal], order[n_cal:]
            in_sample = False
        else:  # too few images to hold any out: calibrate on the bank images themselves
            cal_idx, bank_idx, in_sample = order, order, True
            progress.log(f"only {n} training images: the threshold is fitted in-sample (optimistic); "
                         f"give at least 5 for a held-out threshold")

        backbone = build_backbone()
        feats = PatchFeatures(backbone, tuple(params.layers), params.aggregate).eval()
        with tempfile.TemporaryDirectory(prefix="loupe-anomaly-") as tmp:
            tmp = Path(tmp)
            # 1. features with ONNX Runtime (fast on CPU, and exactly what inference computes)
            fpath = export_onnx(feats, torch.zeros(1, 3, *size), tmp / "features.onnx", ["image"], ["features"],
                                dynamic_batch=True)
            fsess = ort_session(fpath, params.threads)
            all_feats: list[np.ndarray] = []
            done = 0
            for batch in iter_batches(paths, params.batch_size):
                x = np.concatenate([prepare(load(p), size) for p in batch])
                all_feats.append(fsess.run(None, {"image": x})[0])
                done += len(batch)
                progress.update("features", done, n)
            F_all = np.concatenate(all_feats)  # (n, h, w, D)
            del all_feats
            _, h, w, D = F_all.shape
            t_feat = time.perf_counter() - t_start

            # 2. coreset
            bank_feats = torch.from_numpy(F_all[bank_idx].reshape(-1, D))
            bank, cinfo = subsample(bank_feats, params.max_bank, params.coreset_ratio,
                                    proj_dim=params.coreset_proj_dim, seed=params.seed,
                                    progress=lambda i, k: progress.update("coreset", i, k))
            progress.update("coreset", cinfo["bank_size"], cinfo["bank_size"], bank=cinfo["bank_size"])
            del bank_feats

            # 3. calibration: position statistics and held-out good scores (leave-one-out)
            cal = torch.from_numpy(F_all[cal_idx].reshape(-1, D))
            dist = nn_distance(cal, bank, chunk=8192).reshape(len(cal_idx), 1, h, w)
            norm = params.position_norm
            if norm == "z" and len(cal_idx) < 8:
                norm = "mean"  # a per-position spread from fewer than 8 images is too noisy
                progress.log(f"{len(cal_idx)} calibration images: position normalisation 'mean' instead of 'z'")
            mu, sd = _position_stats(dist, norm)
            model = PatchCore(feats, bank, params.sigma, mu, sd).eval()
            loo = _loo_scores(model, dist, norm)
            good_scores = loo if loo is not None else \
                model.smooth(model.normalized(dist)).flatten(1).max(1).values.numpy()
            threshold = good_threshold(good_scores, params.quantile, params.margin)
            thr_info = {"method": "good_quantile", "quantile": params.quantile, "margin": params.margin,
                        "n_good": int(len(good_scores)), "held_out": not in_sample, "leave_one_out": loo is not None,
                        "good_quantile_threshold": threshold,
                        "good_score_mean": float(np.mean(good_scores)), "good_score_max": float(np.max(good_scores))}
            progress.update("calibrate", 1, 1, threshold=threshold)
            pixel_low = float(np.median(model.smooth(model.normalized(dist)).numpy()))

            if refine_samples:
                ref_scores, ref_labels = [], []
                with torch.no_grad():
                    for i, s in enumerate(refine_samples):
                        _, sc = model(torch.from_numpy(prepare(load(s.path), size)))
                        ref_scores.append(float(sc[0]))
                        ref_labels.append(s.label)
                        progress.update("refine", i + 1, len(refine_samples))
                # held-out good scores join the given ones
                sc = np.r_[good_scores, ref_scores]
                lb = np.r_[np.zeros(len(good_scores), int), ref_labels]
                t_f1, f1 = f1_threshold(sc, lb)
                threshold = t_f1
                thr_info.update({"method": "f1_optimal", "refine_source": params.refine, "f1": f1,
                                 "n_defective": int(sum(ref_labels)), "n_refine_good": int(len(ref_labels) -
                                                                                            sum(ref_labels))})
                if params.refine == "test":
                    progress.log("threshold refined on DATA/test: an evaluation on the same images is optimistic")
            if threshold <= 0:
                raise BundleError(f"{out}: fitted threshold {threshold:.4g} is not positive; the normalised score "
                                  f"(score / threshold) would be meaningless. Try --position-norm mean")

            # 4. export the whole graph and check parity with torch
            gpath = export_onnx(model, torch.zeros(1, 3, *size), tmp / "model.onnx", ["image"],
                                ["anomaly_map", "score"])
            sess = ort_session(gpath, params.threads)
            # held-out images (a bank image's own patches sit at distance ~0, where float32 cancellation in
            # |x|^2 - 2x.b + |b|^2 is amplified by the square root: not what inference sees)
            check_imgs = [prepare(load(paths[i]), size) for i in cal_idx[:6]]
            if refine_samples:
                check_imgs += [prepare(load(s.path), size) for s in refine_samples if s.label == 1][:2]

            def torch_fn(x):
                with torch.no_grad():
                    a, s = model(torch.from_numpy(x))
                return a.numpy(), s.numpy()

            parity = check_parity(torch_fn, sess, check_imgs, PARITY_ATOL, PARITY_RTOL,
                                  ["anomaly_map", "score"])
            progress.update("export", 1, 1)
            import onnx
            import onnxruntime
            import sklearn

            train_s = time.perf_counter() - t_start
            meta = {
                "task": "anomaly",
                "method": "patchcore",
                "model_file": "model.onnx",
                "input": {"name": "image", "layout": "NCHW", "color": "RGB", "dtype": "float32",
                          "range": [0, 255]},
                "input_size": [size[0], size[1]],
                "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3, "in_graph": True,
                                  "note": "the graph computes (x/255-0.5)/0.5 itself; feed RGB 0..255"},
                "outputs": {"anomaly_map": "(1,1,H,W) position-normalised nearest-neighbour distance",
                            "score": "(1,) maximum of the map (raw score)"},
                "threshold": threshold,
                "thresholds": thr_info,
                "score_normalisation": "score = raw_score / threshold (1.0 = threshold; > 1 is anomalous)",
                "pixel_low": pixel_low,
                "params": params.model_dump(),
                "position_norm": norm,
                "feature": {"backbone": "efficientnet_lite0", "layers": list(params.layers), "stride": feats.stride,
                            "dim": int(D), "map_size": [int(h), int(w)], "aggregate": params.aggregate},
                "memory_bank": {**cinfo, "bytes": int(bank.numel() * 4)},
                "training": {**ds.summary(), "n_bank_images": int(len(bank_idx)),
                             "n_calibration_images": int(len(cal_idx)), "train_s": round(train_s, 2),
                             "features_s": round(t_feat, 2)},
                "parity": {"atol": PARITY_ATOL, "rtol": PARITY_RTOL, "max_abs_diff": parity,
                           "n_images": len(check_imgs)},
                "metrics": {"threshold": threshold, "bank_size": cinfo["bank_size"], "train_s": round(train_s, 2),
                            "good_score_max": float(np.max(good_scores))},
                "versions": {"loupe_host": host_version, "torch": torch.__version__, "onnx": onnx.__version__,
                             "onnxruntime": onnxruntime.__version__, "sklearn": sklearn.__version__,
                             "python": platform.python_version()},
            }
            return write_bundle(out, meta, {"model.onnx": gpath})


def _position_stats(dist, mode: str):
    """Per-position mean and spread of good distance maps (N, 1, h, w); lightly smoothed."""
    import torch
    import torch.nn.functional as F

    if mode == "none":
        return None, None
    mu = dist.mean(0, keepdim=True)
    mu = F.avg_pool2d(F.pad(mu, [1, 1, 1, 1], mode="replicate"), 3, stride=1)
    if mode == "mean":
        return torch.zeros_like(mu), mu.clamp_min(1e-6)
    sd = dist.std(0, keepdim=True) if dist.shape[0] > 1 else torch.ones_like(mu) * float(dist.std())
    sd = F.avg_pool2d(F.pad(sd, [1, 1, 1, 1], mode="replicate"), 3, stride=1)
    sd = sd.clamp_min(0.25 * float(sd.mean()) + 1e-6)
    return mu, sd


def _loo_scores(model, dist, mode: str):
    """Leave-one-out good scores: each calibration image normalised with statistics of the others."""
    n = dist.shape[0]
    if mode == "none" or n < 3:
        return None
    out = []
    for i in range(n):
        rest = dist[[j for j in range(n) if j != i]]
        mu, sd = _position_stats(rest, mode)
        m = model.smooth((dist[i:i + 1] - mu) / sd)
        out.append(float(m.max()))
    return np.array(out)
