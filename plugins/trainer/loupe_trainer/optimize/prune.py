"""``loupe optimize BUNDLE --method prune``: structured channel pruning of the backbone, in torch.

1. **Rebuild the trained network in torch from the bundle's ONNX graph.** The
   trainers export with BatchNorm folded into each convolution; every Conv node
   is named after its module (``.../_blocks.7/_expand_conv/Conv``), so its
   weight and bias go back into an ``EfficientNetLite0`` (the bias into the
   BatchNorm's shift, with unit scale). No torch checkpoint is needed, and
   nothing is unpickled. Classification bundles also give the linear head
   (``cam_weights.npy`` / ``cam_bias.npy``).
2. **Prune the expanded channels of every MBConv block** (blocks 1-15): the
   ``expand`` 1x1 conv's outputs, the depthwise conv's channels and the
   ``project`` 1x1 conv's inputs go together, so every block's input and output
   width -- and so the residual connections, the feature dimension, the memory
   bank layout and the CAM weights -- are unchanged. A channel's importance is
   data-aware L1: the mean absolute activation after the depthwise conv on the
   calibration images times the L1 norm of the project weights that read it
   (a channel that is never active, or whose output is ignored, goes first).
   The same fraction is removed from every block, rounded to a multiple of 8
   channels (SIMD-friendly widths).
3. **Recover.** Classification: a short fine-tune of the pruned network
   (knowledge distillation from the parent's logits plus cross-entropy on the
   labels, augmentation as in training, BatchNorm frozen). Anomaly: a short
   feature distillation (the pruned trunk learns to reproduce the parent's
   stage outputs on the good training images), then the memory bank, position
   statistics and threshold are rebuilt with the pruned backbone by the anomaly
   trainer itself, with the bundle's own training parameters.
4. **Re-export through the trainers' own export path** (with their torch/ONNX
   parity check) and record the FLOPs before/after (counted per convolution on
   the part of the backbone the graph uses).
"""
from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from host import Bundle, BundleError, Optimizer, Params, Progress, UsageError

_BN_OF = {"_conv_stem": "_bn0", "_expand_conv": "_bn0", "_depthwise_conv": "_bn1", "_project_conv": "_bn2",
          "_conv_head": "_bn1"}


class PruneParams(Params):
    ratio: float = Field(0.4, gt=0.0, lt=0.9, description="fraction of each MBConv block's expanded channels to "
                                                          "remove")
    calib: str | None = Field(None, description="folder of images for channel importance and recovery (default: "
                                                "the bundle's training images)")
    calib_images: int = Field(200, ge=4, le=20000, description="most images used for importance and recovery")
    steps: int = Field(1000, ge=0, le=100000, description="recovery (fine-tune / distillation) steps (the time "
                                                              "budget may end it sooner)")
    batch_size: int = Field(16, ge=2, le=256, description="images per recovery step")
    lr: float = Field(1e-4, gt=0, le=1.0, description="AdamW learning rate of the recovery")
    max_minutes: float = Field(6.0, gt=0, description="time budget of the recovery")
    data: str | None = Field(None, description="evaluation data for the accuracy check (default: the training "
                                               "data's test split)")
    max_drop: float = Field(2.0, ge=0, description="accuracy / AUROC points the pruned bundle may lose")
    strict: bool = Field(False, description="fail when the accuracy check loses more than --max-drop points")
    threads: int = Field(2, ge=1, le=64, description="CPU threads")
    seed: int = Field(0, description="random seed")


# ---------------------------------------------------------------- ONNX -> torch


def backbone_from_onnx(path: Path, variant: str = "lite0"):
    """An ``EfficientNetLite0`` (of ``variant``) carrying the (BN-folded) weights of the exported graph, and
    the set of modules found (the anomaly graph holds only the trunk up to its deepest stage)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from ..backbone import BN_EPS, EfficientNetLite0

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    if any(n.op_type == "BatchNormalization" for n in model.graph.node):
        raise BundleError(f"{path}: the graph has unfolded BatchNormalization nodes; pruning expects the trainers' "
                          f"eval-mode export (BatchNorm folded into the convolutions)")
    net = EfficientNetLite0(variant=variant)
    found: set[str] = set()
    pat = re.compile(r"(?:^|/)((?:_blocks\.\d+/)?(?:_conv_stem|_expand_conv|_depthwise_conv|_project_conv|"
                     r"_conv_head))/Conv$")
    # a module called again (a second view through the same trunk) reads its weights through Identity nodes
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}

    def source(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    stem = re.compile(r"(?:^|/)_conv_stem(?:_\d+)?/Conv$")
    first_stem = None
    with torch.no_grad():
        for n in model.graph.node:
            if n.op_type != "Conv":
                continue
            if stem.search(n.name):
                if first_stem is None:
                    first_stem = source(n.input[1])
                elif source(n.input[1]) != first_stem:
                    # a stem with weights of its own: another trunk (the small-image anomaly graph's Gaussian
                    # view, Lite1 by default), which runs after every pass of the main one. Its modules share the
                    # main trunk's names, and those the main trunk never ran (deeper blocks, the head) would
                    # carry no ``_N`` suffix either: nothing from here on is the main trunk's
                    break
            m = pat.search(n.name)
            if not m:
                continue
            path_s = m.group(1)
            parent = net
            parts = path_s.split("/")
            if parts[0].startswith("_blocks."):
                parent = net._blocks[int(parts[0].split(".")[1])]
            conv = getattr(parent, parts[-1])
            bn = getattr(parent, _BN_OF[parts[-1]])
            w = inits.get(n.input[1], consts.get(n.input[1]))
            b = inits.get(n.input[2], consts.get(n.input[2])) if len(n.input) > 2 else None
            if w is None or tuple(w.shape) != tuple(conv.weight.shape):
                raise BundleError(f"{path}: node {n.name}: weight shape {None if w is None else w.shape} does not "
                                  f"match EfficientNet-Lite0's {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(np.array(w, np.float32)))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(np.array(b, np.float32)) if b is not None else torch.zeros_like(bn.bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - BN_EPS)
            found.add(path_s)
    if "_conv_stem" not in found:
        raise BundleError(f"{path}: no EfficientNet-Lite0 backbone convolutions found by name")
    return net.eval(), found


# ------------------------------------------------------------------- FLOPs


def count_macs(module, example, stop_layers: tuple[str, ...] | None = None) -> int:
    """Multiply-accumulates of every Conv2d / Linear in one forward pass of ``module(example)``."""
    import torch
    from torch import nn

    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += int(out.numel() // out.shape[0]) * (m.in_channels // m.groups) * m.kernel_size[0] * \
                m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total[0] += int(out.numel() // out.shape[0]) * m.in_features

    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            if stop_layers:
                module.stages(example, stop_layers)
            else:
                module(example)
    finally:
        for h in hs:
            h.remove()
    return total[0]


# ----------------------------------------------------------------- pruning


def channel_importance(net, images, layers: tuple[str, ...], batch: int = 16) -> dict[int, "np.ndarray"]:
    """Block index -> importance of each expanded channel (mean |activation| after the depthwise conv x
    L1 norm of the project weights reading it)."""
    import torch
    import torch.nn.functional as F

    acts: dict[int, torch.Tensor] = {}
    hooks = []
    for i, blk in enumerate(net._blocks):
        if not blk.has_expand:
            continue

        def hook(m, inp, out, i=i):
            a = F.relu6(out).abs().mean(dim=(0, 2, 3))
            acts[i] = acts.get(i, 0) + a * out.shape[0]

        hooks.append(blk._bn1.register_forward_hook(hook))
    n = 0
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch):
                x = images[s:s + batch]
                net.stages(x, layers)
                n += len(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for i, a in acts.items():
        wl1 = net._blocks[i]._project_conv.weight.detach().abs().sum(dim=(0, 2, 3))
        out[i] = (a / max(n, 1) * wl1).numpy()
    return out


def prune_blocks(net, importance: dict[int, np.ndarray], ratio: float, multiple: int = 8) -> dict[str, Any]:
    """Remove the least important expanded channels of each block in place; returns {block: (before, after)}."""
    import torch

    from ..backbone import Conv2dSame, _bn

    done = {}
    for i, score in sorted(importance.items()):
        blk = net._blocks[i]
        mid = blk._depthwise_conv.in_channels
        keep_n = max(multiple, int(round(mid * (1 - ratio) / multiple)) * multiple)
        if keep_n >= mid:
            continue
        keep = torch.from_numpy(np.sort(np.argsort(-score, kind="stable")[:keep_n]).astype(np.int64))
        cin = blk._expand_conv.in_channels
        cout = blk._project_conv.out_channels
        k = blk._depthwise_conv.kernel_size[0]
        s = blk._depthwise_conv.stride[0]
        e, dw, pj = Conv2dSame(cin, keep_n, 1), Conv2dSame(keep_n, keep_n, k, stride=s, groups=keep_n), \
            Conv2dSame(keep_n, cout, 1)
        bn0, bn1 = _bn(keep_n), _bn(keep_n)
        with torch.no_grad():
            e.weight.copy_(blk._expand_conv.weight[keep])
            dw.weight.copy_(blk._depthwise_conv.weight[keep])
            pj.weight.copy_(blk._project_conv.weight[:, keep])
            for new, old in ((bn0, blk._bn0), (bn1, blk._bn1)):
                new.weight.copy_(old.weight[keep])
                new.bias.copy_(old.bias[keep])
                new.running_mean.copy_(old.running_mean[keep])
                new.running_var.copy_(old.running_var[keep])
        blk._expand_conv, blk._depthwise_conv, blk._project_conv, blk._bn0, blk._bn1 = e, dw, pj, bn0, bn1
        done[f"block{i}"] = [int(mid), int(keep_n)]
    return done


def _freeze_bn(net) -> None:
    from torch import nn

    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(True)  # the shift (folded conv bias) keeps training; statistics stay fixed


# ------------------------------------------------------------------ optimiser


class PruneOptimizer(Optimizer):
    method = "prune"
    description = ("structured pruning of the backbone's expanded channels (data-aware L1), short recovery "
                   "(fine-tune / distillation, memory bank rebuilt), re-export with parity")
    Params = PruneParams

    def optimize(self, bundle: Bundle, out: Path, params: PruneParams, progress: Progress) -> Bundle:
        from ..common import set_threads
        from . import common

        t0 = time.perf_counter()
        set_threads(params.threads)
        if bundle.task not in ("classify", "anomaly"):
            raise UsageError(f"{bundle.path}: cannot prune {bundle.task!r} bundles (only classify and anomaly)")
        common.require_float(bundle, "prune")
        src = bundle.file(common.model_file(bundle))
        # anomaly bundles may use the larger Lite1 / Lite2 trunk (issue 18's presets)
        feat = bundle.meta.get("feature") if bundle.task == "anomaly" else None
        variant = str((feat if isinstance(feat, dict) else {}).get("backbone", "efficientnet_lite0"))
        variant = variant.replace("efficientnet_", "")
        from ..backbone import VARIANTS

        if variant not in VARIANTS:
            raise BundleError(f"{bundle.path}: bundle.json feature.backbone {variant!r} is not one of {list(VARIANTS)}")
        teacher, found = backbone_from_onnx(src, variant)
        data = common.eval_data(bundle, params.data)
        if bundle.task == "classify":
            child = _prune_classify(bundle, teacher, Path(out), params, progress)
        else:
            child = _prune_anomaly(bundle, teacher, found, Path(out), params, progress)
        return common.record_accuracy(bundle, child, data, params, progress, t0)


def _layers_used(found: set[str]) -> tuple[str, ...]:
    """The deepest stage present in an anomaly graph (the trunk is exported only that far)."""
    from ..backbone import _BLOCK_ARGS

    if "_conv_head" in found:
        return ("head",)
    blocks = [int(p.split("/")[0].split(".")[1]) for p in found if p.startswith("_blocks.")]
    last = max(blocks) if blocks else -1
    ends, total = [], 0
    for i, (_, _, _, _, r) in enumerate(_BLOCK_ARGS):
        total += r
        ends.append((f"stage{i + 1}", total - 1))
    for name, end in ends:
        if end >= last:
            return (name,)
    return ("head",)


def _images_tensor(x: np.ndarray):
    from ..backbone import to_tensor

    return to_tensor(x)


def _load_rgb(bundle: Bundle, calib: str | None, n: int, seed: int, size: tuple[int, int]):
    """Training images (never the test split) as uint8 RGB at the model size, plus labels for classify."""
    import cv2

    from host import resize_to, to_rgb8, use_opencv

    use_opencv(cv2)

    from . import common

    if bundle.task == "classify" and calib is None:
        from loupe_dl_classify.data import scan, stratified_split

        from ..classify.augment import load_images

        data = common.training_data(bundle)
        if data is None:
            raise UsageError(f"{bundle.path / 'bundle.json'}: the training data folder is not available here; "
                             f"pruning a classifier needs its labelled training images")
        folders = scan(data, classes=[str(c) for c in bundle.meta["classes"]])
        train = folders.train
        split = bundle.meta.get("split")
        if not folders.has_test and split and split.get("test_fraction"):
            keep, _ = stratified_split([s.label for s in train], split["test_fraction"], split["seed"])
            train = [train[i] for i in keep]
        rng = np.random.default_rng(seed)
        train = [train[i] for i in rng.permutation(len(train))[:n]]
        x, y, _ = load_images(train, size)
        return x, y, f"{data.resolve()} (training images)"
    if calib is not None:
        root = Path(calib)
        if not root.is_dir():
            raise UsageError(f"--calib {calib}: folder not found")
        if bundle.task == "classify":
            raise UsageError("--calib: pruning a classifier needs labelled images; leave --calib out to use the "
                             "bundle's training data")
        data, source = root, str(root.resolve())
    else:
        data = common.training_data(bundle)
        if data is None:
            raise UsageError(f"{bundle.path / 'bundle.json'}: the training data folder is not available here; "
                             f"give images with --calib DATA")
        source = f"{data.resolve()} (training images)"
    paths = common._training_paths(bundle, data)
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(paths)):
        img = common._read(paths[i])
        if img is not None:
            out.append(resize_to(to_rgb8(img), size))
        if len(out) >= n:
            break
    if len(out) < 2:
        raise UsageError(f"{source}: fewer than two readable images")
    return np.stack(out), None, source


def _recover(student, teacher_fn, student_fn, x: np.ndarray, y, params: PruneParams, progress: Progress,
             loss_fn, augment=None) -> dict[str, Any]:
    """Generic short recovery loop: AdamW on ``loss_fn(student_out, teacher_out, labels)``."""
    import torch

    rng = np.random.default_rng(params.seed)
    torch.manual_seed(params.seed)
    student.train()
    _freeze_bn(student)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=params.lr, weight_decay=1e-5)
    t0 = time.perf_counter()
    losses = []
    step = 0
    stop = "steps"
    for step in range(1, params.steps + 1):
        idx = rng.choice(len(x), size=min(params.batch_size, len(x)), replace=False)
        xb = x[idx]
        if augment is not None:
            xb = augment(xb, rng)
        xt = _images_tensor(xb)
        with torch.no_grad():
            tout = teacher_fn(xt)
        sout = student_fn(xt)
        yb = torch.from_numpy(y[idx]) if y is not None else None
        loss = loss_fn(sout, tout, yb)
        for g in opt.param_groups:
            g["lr"] = params.lr * 0.5 * (1 + np.cos(np.pi * (step - 1) / max(1, params.steps)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 5 == 0 or step == params.steps:
            progress.update("recover", step, params.steps, loss=float(np.mean(losses[-5:])))
        if time.perf_counter() - t0 > params.max_minutes * 60:
            stop = f"time budget ({params.max_minutes:g} min)"
            break
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    progress.log(f"recovery: {step if params.steps else 0} steps in {time.perf_counter() - t0:.1f} s")
    return {"steps": step if params.steps else 0, "stopped": stop,
            "loss_first": round(float(np.mean(losses[:5])), 5) if losses else None,
            "loss_last": round(float(np.mean(losses[-5:])), 5) if losses else None}


def _prune_classify(bundle: Bundle, teacher_bb, out: Path, params: PruneParams, progress: Progress) -> Bundle:
    import torch
    import torch.nn.functional as F

    from host import read_image, resize_to, to_rgb8

    from ..classify.augment import Augment
    from ..classify.engine import ClassNet
    from ..classify.export import write_classifier_bundle
    from . import common

    size = common.input_size(bundle)
    classes = [str(c) for c in bundle.meta["classes"]]
    w = np.load(bundle.file("cam_weights.npy"), allow_pickle=False)
    b = np.load(bundle.file("cam_bias.npy"), allow_pickle=False)

    from ..backbone import stage_channels
    from ..classify import engine

    tparams = (bundle.meta.get("training") or {}).get("params") or {}
    stages = tuple(tparams.get("stages") or getattr(engine, "DEFAULT_STAGES", ("head",)))
    head = (bundle.meta.get("training") or {}).get("head") or {}
    pooling = "global" if w.ndim == 2 else str(head.get("pooling", "grid"))
    grid = int(head.get("grid", 3))
    if sum(stage_channels(s) for s in stages) != w.shape[1]:
        raise BundleError(f"{bundle.path}: cam_weights.npy has {w.shape[1]} feature channels, but stages {stages} "
                          f"give {sum(stage_channels(s) for s in stages)}; cannot rebuild the classifier")

    def classnet(bb):
        net = ClassNet(w.shape[0], pretrained=False, stages=stages, pooling=pooling, grid=grid)
        bb.fc = torch.nn.Identity()
        net.backbone = bb
        net.load_cam_weights(w, b)
        return net.eval()

    teacher = classnet(teacher_bb)
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, y, source = _load_rgb(bundle, None, params.calib_images, params.seed, size)
    progress.log(f"{len(x)} training images from {source}")
    _check_rebuilt(bundle, lambda t: teacher(t)[0], x[:8], "logits")
    example = torch.zeros(1, 3, *size)
    macs0 = count_macs(teacher.backbone, example, stages)
    student = classnet(copy.deepcopy(teacher_bb))
    imp = channel_importance(student.backbone, _images_tensor(x[:64]), stages)
    widths = prune_blocks(student.backbone, imp, params.ratio)
    macs1 = count_macs(student.backbone, example, stages)
    progress.log(f"backbone MACs {macs0 / 1e6:.1f}M -> {macs1 / 1e6:.1f}M ({1 - macs1 / macs0:.1%} fewer)")
    T = 2.0

    def loss_fn(s, t, yb):
        kd = F.kl_div(F.log_softmax(s[0] / T, 1), F.softmax(t[0] / T, 1), reduction="batchmean") * T * T
        return kd + F.cross_entropy(s[0], yb, label_smoothing=0.1)

    tp = bundle.meta.get("training", {}).get("params", {})
    aug = Augment(rotate=float(tp.get("rotate", 10.0)), hflip=bool(tp.get("hflip", True)),
                  vflip=bool(tp.get("vflip", False))) if tp.get("augment", True) else None
    rec = _recover(student, teacher, student, x, y, params, progress, loss_fn, aug)
    student.eval()
    # parity on real images through the trainers' export (raw decoded images vs the resized ones)
    from . import common as _c

    data = _c.training_data(bundle)
    paths = _c._training_paths(bundle, data)[:12] if data else []
    raw = []
    for p in paths:
        try:
            raw.append(read_image(p))
        except (ValueError, OSError):
            pass
    resized = np.stack([resize_to(to_rgb8(im), size) for im in raw])
    record = {"method": "prune", "criterion": "data-aware L1 (mean |activation| after the depthwise conv x L1 of "
                                              "the project weights)",
              "ratio": params.ratio, "pruned": "expanded channels of the MBConv blocks with an expansion (block widths, features and "
                                               "head unchanged)",
              "widths": widths, "backbone_macs": {"before": macs0, "after": macs1,
                                                  "reduction": round(1 - macs1 / macs0, 4),
                                                  "input_size": list(size)},
              "recovery": {"kind": "fine-tune: distillation from the parent (T=2) + cross-entropy, BatchNorm frozen",
                           "images": int(len(x)), "source": source, **rec}}
    meta = {k: v for k, v in bundle.meta.items() if k not in ("task", "classes", "input_size", "normalisation",
                                                                "model", "model_file", "outputs", "onnx_opset", "parity",
                                                                "format")}
    meta.update(_c.lineage(bundle, record))
    progress.update("export", 0, 1)
    child = write_classifier_bundle(student, out, classes, size, raw, resized, meta, params.threads)
    progress.update("export", 1, 1)
    _add_parent_parity(bundle, child)
    return Bundle.load(out)


def _check_rebuilt(bundle: Bundle, torch_fn, x_rgb: np.ndarray, output: str) -> None:
    """The torch network rebuilt from the graph must reproduce the parent graph before anything is pruned."""
    import torch

    from . import common
    from .graph import session

    sess = session(bundle.file(common.model_file(bundle)))
    prep = common.prepare(bundle)
    worst = 0.0
    for img in x_rgb:
        import cv2

        inp = prep(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        ref = sess.run([output], {sess.get_inputs()[0].name: inp})[0]
        with torch.no_grad():
            got = torch_fn(torch.from_numpy(inp) if bundle.task == "anomaly" else _images_tensor(img[None])).numpy()
        worst = max(worst, float(np.abs(ref - got).max() / (np.abs(ref).max() + 1e-6)))
    if worst > 1e-3:
        raise BundleError(f"{bundle.path}: the network rebuilt from {common.model_file(bundle)} does not reproduce "
                          f"it (relative difference {worst:.2e} on {output!r}); pruning needs the trainers' graph")


def _add_parent_parity(parent: Bundle, child: Bundle) -> None:
    """Record how far the pruned graph's outputs moved from the parent's on held-out images."""
    from . import common
    from .graph import compare_outputs, run_all, session

    data = common.training_data(parent)
    check = common.held_out_images(parent, data, 16)
    if not check:
        return
    a = session(parent.file(common.model_file(parent)))
    b = session(child.file(common.model_file(child)))
    names = [o.name for o in a.get_outputs()]
    cmp = compare_outputs(run_all(a, check), run_all(b, check), names)
    meta = dict(child.meta)
    meta["optimization"] = {**meta["optimization"], "parity": {
        "export": "torch vs ONNX Runtime on the pruned network: see the bundle's 'parity' field",
        "vs_parent": {"images": len(check), "outputs": cmp}}}
    common.rewrite(child, meta)


def _prune_anomaly(bundle: Bundle, teacher_bb, found: set[str], out: Path, params: PruneParams,
                   progress: Progress) -> Bundle:
    import torch
    import torch.nn.functional as F

    from .. import backbone as backbone_mod
    from ..anomaly.trainer import AnomalyParams, AnomalyTrainer
    from . import common

    size = common.input_size(bundle)
    feat = bundle.meta.get("feature", {})
    layers = tuple(feat.get("layers") or _layers_used(found))
    x, _, source = _load_rgb(bundle, params.calib, params.calib_images, params.seed, size)
    progress.log(f"{len(x)} good images from {source}")
    example = torch.zeros(1, 3, *size)
    norm = backbone_mod.normalize
    macs0 = count_macs(teacher_bb, norm(example), layers)
    student = copy.deepcopy(teacher_bb)
    imp = channel_importance(student, _images_tensor(x[:32]), layers, batch=8)
    present = {int(p.split("/")[0].split(".")[1]) for p in found if p.startswith("_blocks.")}
    imp = {i: s for i, s in imp.items() if i in present}
    widths = prune_blocks(student, imp, params.ratio)
    macs1 = count_macs(student, norm(example), layers)
    progress.log(f"backbone MACs {macs0 / 1e6:.1f}M -> {macs1 / 1e6:.1f}M ({1 - macs1 / macs0:.1%} fewer)")
    for p in teacher_bb.parameters():
        p.requires_grad_(False)

    def t_fn(xt):
        return teacher_bb.stages(xt, layers)

    def s_fn(xt):
        return student.stages(xt, layers)

    def loss_fn(s, t, _):  # each stage's features, normalised by the teacher's scale
        return sum(F.mse_loss(s[k], t[k]) / (t[k].pow(2).mean() + 1e-6) for k in layers)

    crop = max(64, (min(size) // 2) // 32 * 32)

    def flip_crop(xb, rng):
        """Random flips and a random crop of half the side: the features are local, so distilling on crops
        teaches the same mapping at a quarter of the cost per step (4x more steps in the time budget)."""
        if rng.random() < 0.5:
            xb = xb[:, :, ::-1]
        if rng.random() < 0.5:
            xb = xb[:, ::-1]
        if crop < min(xb.shape[1], xb.shape[2]):
            y0 = int(rng.integers(0, xb.shape[1] - crop + 1))
            x0 = int(rng.integers(0, xb.shape[2] - crop + 1))
            xb = xb[:, y0:y0 + crop, x0:x0 + crop]
        return np.ascontiguousarray(xb)

    rec = _recover(student, t_fn, s_fn, x, None, params, progress, loss_fn, flip_crop)
    # rebuild the memory bank, position statistics and threshold with the pruned backbone, through the trainer
    tparams = dict(bundle.meta.get("params") or {})
    try:
        ap = AnomalyParams.model_validate({**tparams, "threads": params.threads})
    except Exception as exc:  # noqa: BLE001
        raise BundleError(f"{bundle.path / 'bundle.json'}: cannot reuse the training parameters: {exc}") from None
    data = common.training_data(bundle) if params.calib is None else Path(params.calib)
    if data is None:
        raise UsageError(f"{bundle.path}: the training data is not available; give it with --calib DATA")
    progress.log("rebuilding the memory bank with the pruned backbone")
    child = AnomalyTrainer().train(data, out, ap, progress, backbone=copy.deepcopy(student.eval()))
    record = {"method": "prune", "criterion": "data-aware L1 (mean |activation| after the depthwise conv x L1 of "
                                              "the project weights)",
              "ratio": params.ratio, "pruned": "expanded channels of MBConv blocks (block widths and feature "
                                               "dimension unchanged)",
              "widths": widths, "backbone_macs": {"before": macs0, "after": macs1,
                                                  "reduction": round(1 - macs1 / macs0, 4), "layers": list(layers),
                                                  "input_size": list(size)},
              "recovery": {"kind": "feature distillation from the parent's trunk on good images (random flips, "
                                   f"{crop} px crops), then memory bank, "
                                   "position statistics and threshold rebuilt by the anomaly trainer",
                           "images": int(len(x)), "source": source, **rec}}
    child = common.rewrite(child, {**child.meta, **common.lineage(bundle, record)})
    _add_parent_parity(bundle, child)
    return Bundle.load(out)
