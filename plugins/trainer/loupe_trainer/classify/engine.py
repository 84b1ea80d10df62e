"""Transfer learning on the pretrained EfficientNet-Lite0: linear probe, then fine-tuning (LP-FT).

1. *Linear probe*: the backbone's pooled features of the (unaugmented and a few
   augmented copies of the) training images are computed once, and the new
   linear head is fitted on them (full-batch, weight decay). Fast, and gives
   the fine-tuning stage a head that already points the right way, so the
   pretrained features are not wrecked by a random head's gradients.
2. *Fine-tuning*: the top ``finetune_blocks`` MBConv blocks under the feature
   map (or the whole trunk) are trained with AdamW, a warm-up + cosine
   schedule, label smoothing and augmentation; BatchNorm statistics stay
   frozen (small batches from tiny sets give poor estimates). The epoch with
   the best validation accuracy is kept (the linear probe counts as epoch 0,
   so fine-tuning that does not help is thrown away); training stops after
   ``patience`` epochs without improvement or when the time budget is spent.
3. *Head refit*: the linear head is refitted on the training and validation
   images' features, so the images that picked the epoch also teach the head.
4. *Self-training* (only with unlabelled images): the refitted model labels
   them, and the head is fitted once more on the labelled images and the most
   confident ``pseudo_share`` of the unlabelled images predicted as each class,
   with those predictions as labels. Only the head learns from them; their
   pooled features are computed in batches, so memory stays bounded.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import build_backbone, stage_channels, to_tensor
from .augment import Augment


DEFAULT_STAGES = ("stage4", "stage5", "stage6")


POOLINGS = ("global", "grid")


def pool_matrix(h: int, w: int, pooling: str, grid: int = 3) -> np.ndarray:
    """[h*w, G] averaging weights that turn a feature map into G pooled vectors.

    ``global``: one column, the mean over the map. ``grid``: the global mean plus
    the means of ``grid`` x ``grid`` cells (adaptive-pooling bins), so the head
    sees where on the part a feature is as well as whether it is there. Pooling
    stays linear in the map, so the class activation map remains an exact
    decomposition of the logit (see :meth:`ClassNet.cam_weights`).
    """
    cols = [np.full(h * w, 1.0 / (h * w))]
    if pooling == "grid":
        for i in range(grid):
            r0, r1 = (i * h) // grid, -((-(i + 1) * h) // grid)
            for j in range(grid):
                c0, c1 = (j * w) // grid, -((-(j + 1) * w) // grid)
                m = np.zeros((h, w))
                m[r0:r1, c0:c1] = 1.0 / ((r1 - r0) * (c1 - c0))
                cols.append(m.ravel())
    elif pooling != "global":
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    return np.stack(cols, 1).astype(np.float32)


class ClassNet(nn.Module):
    """Backbone trunk -> multi-scale feature map -> linear pooling -> linear head.

    The feature map concatenates the outputs of ``stages`` (default: stages 4-6,
    strides 16, 16 and 32: 80 + 112 + 192 = 384 channels), the coarser ones
    upsampled (nearest) to the finest grid. Mid-level ImageNet features transfer
    better to small, unfamiliar images than the 1280-channel head alone (measured
    on Fashion-MNIST), the trunk stops after stage 6 (cheaper),
    and the class activation maps come at stride 16 instead of 32.

    ``pooling`` is ``global`` (average pooling) or ``grid`` (average pooling plus
    3 x 3 cell averages; see :func:`pool_matrix`). ``forward`` returns
    (logits, feature map).
    """

    def __init__(self, n_classes: int, dropout: float = 0.2, pretrained: bool = True,
                 stages: tuple[str, ...] = DEFAULT_STAGES, pooling: str = "global", grid: int = 3):
        super().__init__()
        self.backbone = build_backbone(pretrained=pretrained)
        self.backbone.fc = nn.Identity()  # the ImageNet classifier is not used
        self.stage_names = tuple(stages)
        self.channels = sum(stage_channels(s) for s in self.stage_names)
        self.pooling, self.grid = pooling, grid
        self.n_pools = pool_matrix(1, 1, pooling, grid).shape[1]
        self.num_features = self.channels * self.n_pools
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, n_classes)
        self._pmat: dict[tuple[int, int], torch.Tensor] = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        st = self.backbone.stages(x, self.stage_names)
        maps = [st[s] for s in self.stage_names]
        h = max(int(m.shape[-2]) for m in maps)
        w = max(int(m.shape[-1]) for m in maps)
        maps = [m if (int(m.shape[-2]), int(m.shape[-1])) == (h, w) else F.interpolate(m, size=(h, w), mode="nearest")
                for m in maps]
        return torch.cat(maps, dim=1) if len(maps) > 1 else maps[0]

    def set_pooling(self, pooling: str) -> None:
        """Change the pooling; the head is re-initialised for the new feature size."""
        self.pooling = pooling
        self.n_pools = pool_matrix(1, 1, pooling, self.grid).shape[1]
        self.num_features = self.channels * self.n_pools
        self.fc = nn.Linear(self.num_features, self.fc.out_features)
        self._pmat = {}

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """[N, K, h, w] -> [N, K * G] pooled features (channel-major)."""
        if self.pooling == "global":
            return fmap.mean(dim=(2, 3))
        h, w = int(fmap.shape[-2]), int(fmap.shape[-1])
        if (h, w) not in self._pmat:
            self._pmat[(h, w)] = torch.from_numpy(pool_matrix(h, w, self.pooling, self.grid))
        return torch.matmul(fmap.flatten(2), self._pmat[(h, w)]).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.features(x)
        return self.fc(self.dropout(self.pool(fmap))), fmap

    def cam_weights(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The head as class activation weights: [C, K] (global pooling) or [C, K, h, w], and the bias [C].

        With M_c = sum_k W[c, k] * F[k] (+ bias), the mean of M_c over the map is exactly the logit of class c.
        """
        wt = self.fc.weight.detach().numpy().astype(np.float64)
        b = self.fc.bias.detach().numpy().astype(np.float32)
        if self.pooling == "global":
            return wt.astype(np.float32), b
        p = pool_matrix(h, w, self.pooling, self.grid).astype(np.float64)     # [hw, G]
        wk = wt.reshape(wt.shape[0], self.channels, self.n_pools)            # [C, K, G]
        return (np.einsum("ckg,pg->ckp", wk, p) * (h * w)).reshape(wt.shape[0], self.channels, h, w).astype(
            np.float32), b

    def load_cam_weights(self, w: np.ndarray, b: np.ndarray) -> None:
        """Set the head from :meth:`cam_weights` output (the inverse; exact for weights that came from it)."""
        if w.ndim == 2:
            if self.pooling != "global":
                raise ValueError("global-pooling CAM weights for a grid-pooling head")
            fw = w
        else:
            c, k, h, ww = w.shape
            p = pool_matrix(h, ww, self.pooling, self.grid).astype(np.float64)
            # W_pos = hw * P @ W_g: least squares recovers one W_g giving the same logits for every map
            sol = np.linalg.lstsq(p, w.reshape(c * k, h * ww).T.astype(np.float64) / (h * ww), rcond=None)[0]
            fw = sol.T.reshape(c, k * self.n_pools)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(np.asarray(fw, np.float32)))
            self.fc.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))


@dataclass
class FitConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    patience: int = 4
    finetune_blocks: int = 4           # 0: linear probe only; 4: stage 6; >= 15: the whole trunk
    probe_augment_copies: int = 2
    dropout: float = 0.2
    seed: int = 0
    time_limit_s: float = 270.0
    pooling: str = "auto"              # global | grid | auto (chosen by cross-validating the linear probe)
    refit_head: bool = True            # finally refit the linear head on training + validation features
    pseudo_share: float = 0.5          # self-training: share of each predicted class's unlabelled images kept
    augment: Augment = field(default_factory=Augment)


def _set_trainable(net: ClassNet, blocks: int) -> list[nn.Parameter]:
    """Train the head and the top ``blocks`` MBConv blocks that the feature map depends on."""
    bb = net.backbone
    for p in net.parameters():
        p.requires_grad_(False)
    last = max(bb.stage_end(s) for s in net.stage_names if s.startswith("stage")) \
        if any(s.startswith("stage") for s in net.stage_names) else len(bb._blocks)
    mods: list[nn.Module] = [net.fc]
    if blocks > 0:
        mods += list(bb._blocks[max(0, last - blocks):last])
        if "head" in net.stage_names:
            mods += [bb._conv_head, bb._bn1]
        if blocks >= last:
            mods += [bb._conv_stem, bb._bn0]
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


def _freeze_bn(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


@torch.no_grad()
def pooled_features(net: ClassNet, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    net.eval()
    out = [net.pool(net.features(to_tensor(images[s:s + batch]))) for s in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.zeros((0, net.num_features))


@torch.no_grad()
def predict(net: ClassNet, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Softmax probabilities [N, C] (eval mode)."""
    net.eval()
    out = [F.softmax(net(to_tensor(images[s:s + batch]))[0], dim=1) for s in range(0, len(images), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, net.fc.out_features), np.float32)


def linear_probe(net: ClassNet, feats: torch.Tensor, labels: torch.Tensor, weight_decay: float = 1e-3,
                 smoothing: float = 0.1, steps: int = 300) -> None:
    """Fit ``net.fc`` on fixed pooled features (full-batch L-BFGS, L2 penalty)."""
    fit_linear(net.fc, feats, labels, weight_decay, smoothing, steps)


def fit_linear(fc: nn.Linear, feats: torch.Tensor, labels: torch.Tensor, weight_decay: float = 1e-3,
               smoothing: float = 0.1, steps: int = 300) -> None:
    """Fit the linear layer ``fc`` on fixed features (full-batch L-BFGS, L2 penalty on standardised inputs)."""
    nn.init.zeros_(fc.weight)
    nn.init.zeros_(fc.bias)
    # standardise for conditioning, then fold the scaling back into the layer
    mu, sd = feats.mean(0), feats.std(0) + 1e-3
    z = (feats - mu) / sd
    w = torch.zeros_like(fc.weight, requires_grad=True)
    b = torch.zeros_like(fc.bias, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, labels, label_smoothing=smoothing) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        fc.weight.copy_(w / sd)
        fc.bias.copy_(b - (w * (mu / sd)).sum(1))


def _probe_wd(n: int) -> float:
    """L2 strength of the linear probe for ``n`` training images (stronger for smaller sets)."""
    return float(np.clip(5.0 / max(n, 1), 0.005, 0.1))


def cross_validate_pooling(feats: torch.Tensor, y: np.ndarray, n_copies: int, channels: int, n_pools: int,
                           smoothing: float, seed: int, folds: int = 5,
                           max_images: int = 2000) -> dict[str, float]:
    """Accuracy of the linear probe under ``global`` and ``grid`` pooling, by stratified k-fold over the images.

    ``feats`` are grid-pooled features [n_copies * N, K * G] (copy 0 unaugmented); the global-pooled ones are
    their first pool column. Augmented copies of an image stay in its fold; each fold is scored on the
    unaugmented images it holds out.
    """
    from sklearn.model_selection import StratifiedKFold

    n = len(y)
    if np.bincount(y).min() < 2:
        return {}
    # large sets: decide on a stratified sample, so the choice costs seconds, not the training budget
    sample = np.arange(n)
    if n > max_images:
        from sklearn.model_selection import train_test_split

        sample = np.sort(train_test_split(sample, train_size=max_images, stratify=y, random_state=seed)[0])
    variants = {"grid": feats, "global": feats.view(len(feats), channels, n_pools)[:, :, 0].contiguous()}
    scores = {v: 0 for v in variants}
    yt = torch.from_numpy(y)
    ys = y[sample]
    k = int(min(folds, np.bincount(ys)[np.unique(ys)].min()))
    if k < 2:
        return {}
    for tr_s, te_s in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(sample)), ys):
        tr, te = sample[tr_s], sample[te_s]
        rows = torch.from_numpy(np.concatenate([tr + c * n for c in range(n_copies)]))
        for name, f in variants.items():
            head = nn.Linear(f.shape[1], int(y.max()) + 1)
            fit_linear(head, f[rows], yt[tr].repeat(n_copies), _probe_wd(len(tr)), smoothing)
            with torch.no_grad():
                scores[name] += int((head(f[torch.from_numpy(te)]).argmax(1) == yt[te]).sum())
    return {name: hits / len(sample) for name, hits in scores.items()}


class ImageBatches(Protocol):
    """Images without labels, read in batches (uint8 RGB [n, H, W, 3] at the model's input size)."""

    read_s_per_image: float   # estimated decoding time of one image (for the time budget)
    not_read: int             # images the last ``batches`` left unread at its deadline

    def __len__(self) -> int: ...

    def batches(self, size: int, deadline: float = float("inf")) -> Iterator[np.ndarray]: ...


def pseudo_labelled(probs: np.ndarray, share: float) -> np.ndarray:
    """Indices of the most confident ``share`` of the images predicted as each class (at least one per class
    that is predicted at all), sorted."""
    pred, conf = probs.argmax(1), probs.max(1)
    keep = []
    for c in np.unique(pred):
        idx = np.flatnonzero(pred == c)
        keep.append(idx[np.argsort(-conf[idx], kind="stable")[:max(1, int(np.ceil(share * len(idx))))]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def fit(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray, n_classes: int, cfg: FitConfig,
        progress=None, log=print, unlabelled: ImageBatches | None = None) -> tuple[ClassNet, dict[str, Any]]:
    """Train on uint8 RGB images ``x`` (labels ``y``); select the epoch on (``vx``, ``vy``); with
    ``unlabelled`` images, self-train the final head on them too.

    The stages of the module docstring are the methods of ``FitRun``."""
    run = FitRun(x, y, vx, vy, n_classes, cfg, progress, log, unlabelled=unlabelled or None)
    run.linear_probe()
    probe_only = cfg.finetune_blocks <= 0 or cfg.epochs <= 0
    if probe_only:
        run.history.update(best_epoch=0, best_val_acc=run.best["acc"], stopped="linear probe only")
    else:
        run.finetune()
        run.history.update(best_epoch=run.best["epoch"], best_val_acc=run.best["acc"], stopped=run.stopped)
    if (cfg.refit_head and run.has_val) or unlabelled:
        # the validation images chose the epoch; now let the head learn from them (and the unlabelled ones) too
        run.refit_head(unlabelled or None)
        if not probe_only:
            run.history["refit_head"] = True
    for p in run.net.parameters():
        p.requires_grad_(False)
    run.history["seconds"] = time.perf_counter() - run.t_start
    return run.net, run.history


class FitRun:
    """One classifier fit, stage by stage: ``linear_probe`` (frozen features, new head),
    ``finetune`` (epochs of ``train_epoch``, the best one kept) and ``refit_head``. The
    random generator is shared by the stages in this order, so a seed gives one result."""

    def __init__(self, x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray, n_classes: int,
                 cfg: FitConfig, progress=None, log=print, unlabelled: ImageBatches | None = None):
        self.t_start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.x, self.y, self.vx, self.vy, self.cfg, self.progress, self.log = x, y, vx, vy, cfg, progress, log
        self.net = ClassNet(n_classes, dropout=cfg.dropout, pooling="global" if cfg.pooling == "global" else "grid")
        self.yt = torch.from_numpy(y)
        self.has_val = len(vx) > 0
        self.history: dict[str, Any] = {"epochs": []}
        self.best: dict[str, Any] = {}
        self.stopped = f"{cfg.epochs} epochs"
        self.unlabelled = unlabelled

    def update(self, stage, done, total, **m) -> None:
        if self.progress is not None:
            self.progress.update(stage, done, total, **m)

    def val_metrics(self) -> tuple[float, float]:
        if not self.has_val:
            return float("nan"), float("nan")
        p = predict(self.net, self.vx)
        acc = float((p.argmax(1) == self.vy).mean())
        loss = float(-np.log(np.clip(p[np.arange(len(self.vy)), self.vy], 1e-9, 1)).mean())
        return acc, loss

    # ---- 1. linear probe on frozen features (plus a few augmented copies)
    def linear_probe(self) -> None:
        cfg, net, x, y, history = self.cfg, self.net, self.x, self.y, self.history
        copies = [x] + [cfg.augment(x, self.rng) for _ in range(cfg.probe_augment_copies)]
        feats, t0 = [], time.perf_counter()
        for i, c in enumerate(copies):
            feats.append(pooled_features(net, c))
            self.update("features", i + 1, len(copies))
        feats = torch.cat(feats)
        self.feature_s_per_image = (time.perf_counter() - t0) / sum(len(c) for c in copies)
        if cfg.pooling == "auto":
            cv = cross_validate_pooling(feats, y, len(copies), net.channels, net.n_pools, cfg.label_smoothing,
                                        cfg.seed)
            history["pooling_cv_accuracy"] = cv
            # grid pooling only when cross-validation says the part's layout helps; a tie keeps the simpler,
            # translation-invariant global pooling
            if not cv or cv["grid"] <= cv["global"]:
                feats = feats.view(len(feats), net.channels, net.n_pools)[:, :, 0].contiguous()
                net.set_pooling("global")
            self.log("pooling: " + net.pooling + (" (cross-validated probe accuracy: " +
                                                  ", ".join(f"{k} {v:.3f}" for k, v in cv.items()) + ")" if cv else ""))
        history["pooling"] = net.pooling
        linear_probe(net, feats, self.yt.repeat(len(copies)), smoothing=cfg.label_smoothing,
                     weight_decay=_probe_wd(len(x)))
        acc0, loss0 = self.val_metrics()
        history["probe_val_acc"] = acc0
        history["probe_s"] = time.perf_counter() - self.t_start
        self.log(f"linear probe: val acc {acc0:.4f} ({history['probe_s']:.1f} s)")
        self.best = {"acc": acc0, "loss": loss0, "epoch": 0, "state": copy.deepcopy(net.state_dict())}

    # ---- 2. fine-tune the top of the network
    def finetune(self) -> None:
        cfg, net, x = self.cfg, self.net, self.x
        params = _set_trainable(net, cfg.finetune_blocks)
        head = list(net.fc.parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in params if id(p) not in head_ids]
        opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.lr}],
                                weight_decay=cfg.weight_decay)
        steps_per_epoch = max(1, math.ceil(len(x) / cfg.batch_size))
        self.schedule = {"total": steps_per_epoch * cfg.epochs, "warm": steps_per_epoch,
                         "base": [g["lr"] for g in opt.param_groups], "step": 0}
        stale = 0
        for epoch in range(1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            loss, train_acc = self.train_epoch(epoch, opt)
            acc, vloss = self.val_metrics()
            dt = time.perf_counter() - t_epoch
            self.history["epochs"].append({"epoch": epoch, "loss": loss, "train_acc": train_acc,
                                           "val_acc": acc, "val_loss": vloss, "seconds": dt})
            self.log(f"epoch {epoch}: loss {loss:.4f} train acc {train_acc:.4f} "
                     f"val acc {acc:.4f} val loss {vloss:.4f} ({dt:.1f} s)")
            if self.has_val:  # the epoch's validation figures, for live curves beside the training ones
                self.update(f"epoch {epoch}/{cfg.epochs}", len(x), len(x), val_loss=vloss, val_acc=acc)
            if self.has_val:
                best = self.best
                better = acc > best["acc"] + 1e-9 or (abs(acc - best["acc"]) <= 1e-9 and vloss < best["loss"])
                if better:
                    self.best = {"acc": acc, "loss": vloss, "epoch": epoch, "state": copy.deepcopy(net.state_dict())}
                    stale = 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        self.stopped = f"early stop: no validation gain for {cfg.patience} epochs"
                        break
            else:
                self.best = {"acc": acc, "loss": vloss, "epoch": epoch, "state": None}
            elapsed = time.perf_counter() - self.t_start
            # keep time for the head refit (about the cost of the probe's feature pass) and for the unlabelled
            # images (decoding, and the probe's feature time per image) after the last epoch
            reserve = (self.history["probe_s"] * 1.3 if (cfg.refit_head and self.has_val) else 0.0)
            if self.unlabelled is not None:
                reserve += (self.feature_s_per_image + self.unlabelled.read_s_per_image) * len(self.unlabelled) * 1.3
            if elapsed + dt * 1.05 + reserve > cfg.time_limit_s:
                self.stopped = f"time budget ({cfg.time_limit_s:.0f} s) reached"
                break
        if self.best["state"] is not None:
            net.load_state_dict(self.best["state"])
        net.eval()

    def train_epoch(self, epoch: int, opt) -> tuple[float, float]:
        """One pass over the training images (augmented, shuffled); returns (mean loss, accuracy)."""
        cfg, net, x, yt, sch = self.cfg, self.net, self.x, self.yt, self.schedule
        net.train()
        _freeze_bn(net)
        order = self.rng.permutation(len(x))
        tot_loss, tot_ok, seen = 0.0, 0, 0
        for s in range(0, len(x), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            if len(idx) < 2 and seen:
                continue
            xb = to_tensor(cfg.augment(x[idx], self.rng))
            yb = yt[idx]
            step, total = sch["step"], sch["total"]
            f = min(1.0, (step + 1) / sch["warm"]) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
            for g, b0 in zip(opt.param_groups, sch["base"]):
                g["lr"] = b0 * f
            logits, _ = net(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sch["step"] += 1
            tot_loss += float(loss.detach()) * len(idx)
            tot_ok += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            self.update(f"epoch {epoch}/{cfg.epochs}", seen, len(x), loss=tot_loss / seen, acc=tot_ok / seen)
        return tot_loss / max(seen, 1), tot_ok / max(seen, 1)

    # ---- 3. refit the head on training + validation features; 4. self-train it on unlabelled images
    def refit_head(self, unlabelled: ImageBatches | None = None) -> None:
        cfg, net = self.cfg, self.net
        allx = np.concatenate([self.x, self.vx])
        ally = torch.from_numpy(np.concatenate([self.y, self.vy]))
        copies = [allx] + [cfg.augment(allx, self.rng) for _ in range(cfg.probe_augment_copies)]
        feats = torch.cat([pooled_features(net, c) for c in copies])
        labels = ally.repeat(len(copies))
        linear_probe(net, feats, labels, smoothing=cfg.label_smoothing, weight_decay=_probe_wd(len(allx)))
        if unlabelled is None:
            return
        fu, done = [], 0
        # the budget covers the whole command: when it is spent, the images read so far are used
        for batch in unlabelled.batches(256, deadline=self.t_start + cfg.time_limit_s):
            fu.append(pooled_features(net, batch))
            done += len(batch)
            self.update("unlabelled images", done, len(unlabelled))
        fu = torch.cat(fu) if fu else torch.zeros((0, feats.shape[1]))
        cut = unlabelled.not_read
        with torch.no_grad():
            probs = F.softmax(net.fc(fu), dim=1).numpy()
        keep = pseudo_labelled(probs, cfg.pseudo_share)
        pseudo = torch.from_numpy(probs.argmax(1)[keep])
        linear_probe(net, torch.cat([feats, fu[torch.from_numpy(keep)]]), torch.cat([labels, pseudo]),
                     smoothing=cfg.label_smoothing, weight_decay=_probe_wd(len(allx) + len(keep)))
        self.history["self_training"] = {
            "unlabelled": int(len(fu)), "pseudo_labelled": int(len(keep)), "share": cfg.pseudo_share,
            "per_class": np.bincount(pseudo.numpy(), minlength=net.fc.out_features).tolist(),
            **({"not_read": int(cut)} if cut else {})}
        self.log(f"self-training: {len(keep)} of {len(fu)} unlabelled images pseudo-labelled for the head"
                 + (f" (the time budget left {cut} more unread)" if cut else ""))
