"""The detector's optional second stage (``loupe train detect --verify``): a classifier of each candidate's crop
over {background, class 1..K} that re-scores and re-labels the detector's candidates (issue 17, sessions 7-8;
measured offline by ``bench/detect_verifier.py``, which imports these pieces).

Fit (after the detector is trained and exported, on its training images; the held-out ones only in the refit below):

1. Candidates: the exported detector through the runtime's own path (``loupe_dl_detect.model.Detector``, the
   verifier off) at ``candidate_score``, on every training image under the quarter turns and flips training
   uses; at most ``max_candidates`` per view, best score first (as at run time).
2. Crops (``loupe_dl_detect.verify.crop_boxes``: a square of ``margin`` x the box's longer side around the box's
   centre, ``crop`` px, grey outside) of every true box (class k) and ``N_JITTER`` jittered copies, every candidate
   at IoU >= 0.5 with a true box (its class) or < 0.3 with all (background), and ``n_random`` random background
   boxes per view.
3. The frozen EfficientNet-Lite0 (ImageNet) up to stage6; stage4 and stage6 each average- and max-pooled (544
   features); the linear layer fitted by the classifier's L-BFGS probe (``fit_linear``, L2 ``_probe_wd``), then
   stage5-6 and the linear layer fine-tuned ``epochs`` epochs on stage4 maps computed once (BatchNorm frozen,
   AdamW, one-cycle).
4. The exported graph ``verifier.onnx`` (RGB pixels 0..255 in, softmax out) checked against torch.

The operating threshold on the combined score is then chosen on the held-out images under their views and
``N_SHIFTED`` zoomed-out, turned and colour-jittered versions of each (``shifted_views``): the threshold at which
their total count is right on average (``trainer.count_balance``; session 12: on 8 held-out images the most exact
images, ``choose_threshold``, chose too high a threshold).

Then (``--verify-refit``, the default since session 23) the verifier is fitted again, with the same recipe and seed,
on the crops of every training image, the held-out ones too, and that one is exported: the threshold is the one
placed by the first fit, on images it had not seen (session 23, offline on eleven bundles' detectors: at the same
threshold the refitted verifier's count accuracy on the 300 test scenes was +0.015 higher, 8 of 11 up).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from loupe_dl_detect.model import iou_matrix
from loupe_dl_detect.verify import crop_boxes, relabel, top_candidates

from ..backbone import build_backbone, stage_channels
from .augment import _hflip, _rot90
from .trainer import VERIFY_CROP

#: the recipe of session 7 (crops of 0.75 x the box's longer side; stage4 + stage6 features), the crop's side the
#: trainer's default (``VERIFY_CROP``, 80 px since session 15)
CROP = VERIFY_CROP
MARGIN = 0.75
MIN_BOX_PX = 8.0
STAGES = ("stage4", "stage6")
N_RANDOM = 4
#: jittered copies of each true box per view, and their jitter (session 9: the detector's boxes on new images are
#: less exact than the true boxes; without jittered copies the verifier called some real parts background)
N_JITTER, JITTER = 2, 0.15
#: the operating threshold on the combined score (session 12): besides the held-out images' 8 views, ``N_SHIFTED``
#: zoomed-out (up to ``SHIFT_ZOOM``), turned and colour-jittered versions of each, and the threshold that gets their
#: total count right on average (``trainer.count_balance``), not the one with the most exact images on 8 images
N_SHIFTED, SHIFT_ZOOM, SHIFT_COLOUR = 8, 1.35, 0.25
#: a candidate is its true box's class at IoU >= POS_IOU with it, background below NEG_IOU with every true box
POS_IOU, NEG_IOU = 0.5, 0.3
#: export parity: probabilities within float rounding
PARITY_ATOL = 1e-4
OPSET = 17


class Verifier(nn.Module):
    """The trunk up to the deepest of ``stages``, each stage average- and max-pooled, a linear layer, softmax."""

    def __init__(self, stages=STAGES, n_out: int = 2, pretrained: bool = True):
        super().__init__()
        self.trunk = build_backbone(pretrained=pretrained)
        self.names = list(stages)
        self.dim = 2 * sum(stage_channels(s) for s in self.names)
        self.fc = nn.Linear(self.dim, n_out)

    def features(self, x: torch.Tensor, start: str | None = None) -> torch.Tensor:
        """Each named stage average- and max-pooled; ``start``: x is that stage's output (``trunk.stages``)."""
        st = self.trunk.stages(x, self.names, start=start)
        return torch.cat([t for s in self.names for t in (st[s].mean((2, 3)), st[s].amax((2, 3)))], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.fc(self.features(x)), 1)


class ExportGraph(nn.Module):
    """What ``verifier.onnx`` holds: RGB pixels 0..255 [N, 3, S, S] -> probabilities [N, K + 1]."""

    def __init__(self, net: Verifier):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x / 255.0 - 0.5) / 0.5)


def to_input(crops: np.ndarray) -> torch.Tensor:
    """uint8 RGB crops [N, S, S, 3] -> the trunk's normalised input [N, 3, S, S]."""
    return (torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


@torch.no_grad()
def features(net: Verifier, crops: np.ndarray, batch: int = 256) -> torch.Tensor:
    net.eval()
    return torch.cat([net.features(to_input(crops[i:i + batch])) for i in range(0, len(crops), batch)])


def _stage_blocks(net: Verifier) -> tuple[int, int]:
    """(first, last) block indices after stage4 up to the deepest of the verifier's stages (4-6 only)."""
    if not set(net.names) <= {"stage4", "stage5", "stage6"}:
        raise ValueError(f"the cached-stage4 path needs stages 4-6 only, not {net.names}")
    return net.trunk.stage_end("stage4"), max(net.trunk.stage_end(n) for n in net.names)


@torch.no_grad()
def stage4_maps(net: Verifier, crops: np.ndarray, batch: int = 256) -> torch.Tensor:
    """The frozen trunk's stage4 maps of uint8 RGB crops (computed once; the rest runs on them)."""
    net.eval()
    return torch.cat([net.trunk.stages(to_input(crops[i:i + batch]), ["stage4"])["stage4"]
                      for i in range(0, len(crops), batch)])


def head_features(net: Verifier, s4: torch.Tensor) -> torch.Tensor:
    """``net.features`` from stage4 maps: the blocks after stage4, each named stage average- and max-pooled."""
    return net.features(s4, start="stage4")


def finetune(net: Verifier, s4: torch.Tensor, labels: np.ndarray, epochs: int, seed: int, lr: float = 1e-3,
             batch: int = 128) -> None:
    """Fine-tune the trunk after stage4 (stage5, stage6; BatchNorm frozen) with the fitted linear layer, on the
    crops' stage4 maps ``s4`` (``stage4_maps``: the trunk up to stage4 stays frozen)."""
    first, last = _stage_blocks(net)
    trunk = net.trunk
    params = [p for b in range(first, last) for p in trunk._blocks[b].parameters()]
    for p in trunk.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": params, "lr": lr / 4}, {"params": net.fc.parameters(), "lr": lr}],
                            weight_decay=1e-4)
    y = torch.from_numpy(labels)
    g = torch.Generator().manual_seed(seed)
    net.eval()                                        # BatchNorm statistics stay the ImageNet ones
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [lr / 4, lr], total_steps=steps, pct_start=0.1)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(batch):
            loss = F.cross_entropy(net.fc(head_features(net, s4[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    for p in params:
        p.requires_grad_(False)


def views(rgb: np.ndarray, boxes: np.ndarray, rot90: bool = True, flips: bool = True) -> list:
    """An image and its boxes under the quarter turns (square images only) and flips training uses."""
    out = []
    img, bx = rgb, np.asarray(boxes, np.float32).reshape(-1, 4)
    for k in range(4 if rot90 and rgb.shape[0] == rgb.shape[1] else 1):
        if k:
            img, bx = _rot90(img, bx)
        out.append((np.ascontiguousarray(img), bx.astype(np.float32)))
        if flips:
            fi, fb = _hflip(img, bx)
            out.append((np.ascontiguousarray(fi), np.asarray(fb, np.float32).reshape(-1, 4)))
    return out


def shifted_views(rng, rgb: np.ndarray, boxes: np.ndarray, n: int = N_SHIFTED, zoom: float = SHIFT_ZOOM,
                  colour: float = SHIFT_COLOUR, rot90: bool = True, flips: bool = True) -> list:
    """``n`` versions of an image and its boxes, each zoomed out by a random factor in [1 / ``zoom``, 1] onto the
    image's mean colour at a random place (no part is cut), then a random quarter turn (square images) and flip,
    and the training colour jitter (``colour``): held-out scenes a little further from the training ones, for the
    operating threshold."""
    from .augment import _colour

    H, W = rgb.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    fill = rgb.reshape(-1, 3).mean(0).astype(np.uint8)
    out = []
    for _ in range(n):
        s = float(np.exp(rng.uniform(-np.log(zoom), 0.0)))
        nw, nh = max(1, int(round(W * s))), max(1, int(round(H * s)))
        canvas = np.empty_like(rgb)
        canvas[:] = fill
        oy, ox = int(rng.integers(0, H - nh + 1)), int(rng.integers(0, W - nw + 1))
        canvas[oy:oy + nh, ox:ox + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        bx = boxes * np.float32(s) + np.array([ox, oy, ox, oy], np.float32)
        if rot90 and H == W:
            for _ in range(int(rng.integers(4))):
                canvas, bx = _rot90(canvas, bx)
        if flips and rng.random() < 0.5:
            canvas, bx = _hflip(canvas, bx)
        img = _colour(rng, np.ascontiguousarray(canvas), colour) if colour > 0 else np.ascontiguousarray(canvas)
        out.append((img, np.asarray(bx, np.float32).reshape(-1, 4)))
    return out


def jitter(rng, b: np.ndarray, n: int, amount: float = 0.1) -> np.ndarray:
    """``n`` copies of box ``b`` with its centre and sides moved by ~``amount`` of its size."""
    w, h = b[2] - b[0], b[3] - b[1]
    out = []
    for _ in range(n):
        dx, dy = rng.normal(0, amount, 2) * (w, h)
        sw, sh = np.exp(rng.normal(0, amount, 2))
        cx, cy = (b[0] + b[2]) / 2 + dx, (b[1] + b[3]) / 2 + dy
        out.append([cx - w * sw / 2, cy - h * sh / 2, cx + w * sw / 2, cy + h * sh / 2])
    return np.array(out, np.float32).reshape(-1, 4)


def random_background(rng, rgb: np.ndarray, gb: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` boxes of the true boxes' sizes (about) at random places overlapping no true box (IoU < 0.1)."""
    h, w = rgb.shape[:2]
    sizes = np.maximum(gb[:, 2:] - gb[:, :2], 8) if len(gb) else np.full((1, 2), 24.0)
    out = []
    for _ in range(n * 20):
        if len(out) >= n:
            break
        bw, bh = sizes[rng.integers(len(sizes))] * np.exp(rng.normal(0, 0.2, 2))
        x, y = rng.uniform(0, max(w - bw, 1)), rng.uniform(0, max(h - bh, 1))
        box = np.array([[x, y, x + bw, y + bh]], np.float32)
        if not len(gb) or iou_matrix(box, gb).max() < 0.1:
            out.append(box[0])
    return np.array(out, np.float32).reshape(-1, 4)


def label_candidates(boxes: np.ndarray, gb: np.ndarray, gl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept, labels) of candidate boxes: 1 + the true class at IoU >= POS_IOU with a true box, 0 (background)
    at IoU < NEG_IOU with every true box; the ambiguous ones in between are left out."""
    if not len(boxes):
        return np.zeros(0, bool), np.zeros(0, np.int64)
    if not len(gb):
        return np.ones(len(boxes), bool), np.zeros(len(boxes), np.int64)
    iou = iou_matrix(boxes, gb)
    best, arg = iou.max(1), iou.argmax(1)
    keep = (best >= POS_IOU) | (best < NEG_IOU)
    lab = np.where(best >= POS_IOU, np.asarray(gl, np.int64)[arg] + 1, 0)
    return keep, lab[keep].astype(np.int64)


def training_crops(propose: Callable, images, rng, crop: int = CROP, margin: float = MARGIN, n_jitter: int = 0,
                   n_random: int = N_RANDOM, max_candidates: int | None = None, min_px: float = MIN_BOX_PX,
                   jitter_amount: float = 0.1):
    """Crops [M, crop, crop, 3] (the images' channel order), labels [M] (0 background, 1..K the classes) and
    kinds [M] ("truth", "cand_pos", "cand_neg", "random") from ``images`` (an iterable of (RGB image, true boxes,
    true labels), each one view); ``propose(image)`` gives the detector's candidates (``Detections``). Each true box
    also gives ``n_jitter`` copies moved by ~``jitter_amount`` of its size (``jitter``), labelled as the box."""
    crops, labels, kinds = [], [], []
    for img, gb, gl in images:
        gb = np.asarray(gb, np.float32).reshape(-1, 4)
        gl = np.asarray(gl, np.int64)
        for b, lab in zip(gb, gl):           # the true boxes (and jittered copies)
            bx = np.concatenate([b[None], jitter(rng, b, n_jitter, jitter_amount)])
            crops.append(crop_boxes(img, bx, crop, margin, min_px))
            labels += [int(lab) + 1] * len(bx)
            kinds += ["truth"] * len(bx)
        d = propose(img)                     # the detector's own candidates
        boxes = top_candidates(d.boxes, d.scores, d.labels, max_candidates or len(d))[0]
        keep, lab = label_candidates(boxes, gb, gl)
        if keep.any():
            crops.append(crop_boxes(img, boxes[keep], crop, margin, min_px))
            labels += [int(v) for v in lab]
            kinds += ["cand_pos" if v else "cand_neg" for v in lab]
        bg = random_background(rng, img, gb, n_random)
        crops.append(crop_boxes(img, bg, crop, margin, min_px))
        labels += [0] * len(bg)
        kinds += ["random"] * len(bg)
    if not crops:
        raise ValueError("no training images for the verifier")
    return np.concatenate(crops), np.array(labels, np.int64), np.array(kinds)


def fit_verifier(crops: np.ndarray, labels: np.ndarray, n_classes: int, n_images: int, epochs: int, seed: int,
                 stages=STAGES, smoothing: float = 0.0, maps: torch.Tensor | None = None) -> tuple[Verifier, float]:
    """The verifier fitted on ``crops`` (uint8 RGB) and ``labels``: the linear probe on frozen features, then
    ``epochs`` of fine-tuning stage5-6 (0: the probe alone). ``maps``: the crops' stage4 maps when already computed
    (``stage4_maps``; the frozen trunk up to stage4 is the same in every fit). Returns (net in eval mode, training
    accuracy)."""
    from ..classify.engine import _probe_wd, fit_linear

    torch.manual_seed(seed)
    net = Verifier(stages, n_classes + 1)
    s4 = stage4_maps(net, crops) if maps is None else maps     # the frozen trunk runs once over the crops
    with torch.no_grad():
        feats = torch.cat([head_features(net, s4[i:i + 512]) for i in range(0, len(s4), 512)])
    fit_linear(net.fc, feats, torch.from_numpy(labels), _probe_wd(n_images), smoothing)
    if epochs:
        finetune(net, s4, labels, epochs, seed)
        with torch.no_grad():
            feats = torch.cat([head_features(net, s4[i:i + 512]) for i in range(0, len(s4), 512)])
    net.eval()
    with torch.no_grad():
        acc = float((net.fc(feats).argmax(1).numpy() == labels).mean())
    return net, acc


def export_verifier(net: Verifier, crop: int, path: Path) -> None:
    """``verifier.onnx``: input "crops" [N, 3, crop, crop] (RGB 0..255), output "probs" [N, K + 1]; TF-SAME pads
    folded into the convolutions (as the detector's graph)."""
    from ..common import fold_pads_into_convs

    net.eval()
    with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding and tracing
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportGraph(net).eval(), (torch.zeros(2, 3, crop, crop),), str(path),
                          input_names=["crops"], output_names=["probs"],
                          dynamic_axes={"crops": {0: "n"}, "probs": {0: "n"}}, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    fold_pads_into_convs(path)


def onnx_probabilities(sess, crops_rgb: np.ndarray) -> np.ndarray:
    """The exported graph's probabilities of uint8 RGB crops [N, S, S, 3] (the runtime's input layout)."""
    if not len(crops_rgb):
        return np.zeros((0, sess.get_outputs()[0].shape[1] or 1), np.float32)
    x = np.ascontiguousarray(crops_rgb.transpose(0, 3, 1, 2), np.float32)
    return sess.run(["probs"], {sess.get_inputs()[0].name: x})[0]


def parity_check(net: Verifier, sess, crops_rgb: np.ndarray) -> dict[str, Any]:
    """torch vs ONNX Runtime on the same crops: probabilities within ``PARITY_ATOL``, the same best class.
    Raises ``BundleError`` otherwise."""
    from host import BundleError

    with torch.no_grad():
        ref = net(to_input(crops_rgb)).numpy()
    got = onnx_probabilities(sess, crops_rgb)
    diff = float(np.abs(ref - got).max()) if len(ref) else 0.0
    same = float((ref.argmax(1) == got.argmax(1)).mean()) if len(ref) else 1.0
    if diff > PARITY_ATOL or same < 1.0:
        raise BundleError(f"verifier export parity check failed: ONNX Runtime and torch disagree on {len(ref)} crops "
                          f"(max |difference| {diff:.2e}, same class on {same:.0%}); the bundle was not written")
    return {"crops": int(len(ref)), "max_abs_probs_diff": diff, "same_class": same}


def rescored(det_preds, probs) -> list:
    """Per image (boxes, combined scores, labels): ``relabel`` of each candidate (``gmean_relabel``)."""
    out = []
    for (b, s, _l), p in zip(det_preds, probs):
        if len(s):
            sc, lab = relabel(s, p)
        else:
            sc, lab = s.astype(np.float32), np.zeros(0, np.int64)
        out.append((b, sc, lab))
    return out


def candidate_cap(params, most_parts: int) -> int:
    """Candidates re-scored per image (``max_candidates``): ``--verify-candidates`` when given; else its default
    (16), raised to twice the most parts in one training image (at most 256), so that a crowded scene (a full tray)
    keeps room for every part and as many background candidates: the runtime passes no more than this on."""
    if "verify_candidates" in params.model_fields_set:
        return int(params.verify_candidates)
    return int(min(256, max(params.verify_candidates, 2 * most_parts)))


def add_verifier(det_bundle, out: Path, train: list, val: list, classes: list[str], params, progress,
                 deadline: float | None = None) -> Any:
    """Fit the verifier for the detector in ``det_bundle`` (a written detection bundle, without verifier), choose
    the operating threshold on the combined score, and write ``out``: the detector's files, ``verifier.onnx`` and
    ``bundle.json``'s ``verifier`` section, all pinned by the manifest. ``train`` / ``val``: the trainer's
    ``(sample, rgb, resized, resized boxes, labels)`` tuples of its training and held-out images. ``deadline``
    (``time.perf_counter()`` seconds): the end of the command's time budget; the refit on every image
    (``--verify-refit``) is left out when the first fit's pace says it would end after it."""
    import tempfile
    import time

    from host import UsageError, create_session, write_bundle
    from loupe_dl_detect.model import Detector

    from .trainer import choose_threshold, count_balance

    if not val or not train:
        raise UsageError("--verify needs readable training and held-out images (none were left to fit or to choose "
                         "the verifier's threshold)")
    t0, c0 = time.perf_counter(), time.process_time()
    n_cls = len(classes)
    det = Detector(det_bundle, threads=params.threads, verify=False)
    cand = params.verify_candidate_score
    side = params.verify_crop
    cap = candidate_cap(params, max((len(item[4]) for item in (*train, *val)), default=0))
    rot, flips = params.rotate90 and params.augment, params.flips and params.augment

    def propose(rgb):
        return det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=cand)   # the runtime takes BGR

    def raw_items(items):
        for _s, rgb, r, b, lab in items:
            h, w = rgb.shape[:2]
            yield rgb, np.asarray(b, np.float32).reshape(-1, 4) * np.array(
                [w / r.shape[1], h / r.shape[0], w / r.shape[1], h / r.shape[0]], np.float32), lab

    def image_views(items):
        for rgb, raw, lab in raw_items(items):
            for img, bx in views(rgb, raw, rot, flips):
                yield img, bx, lab

    def shifted(items):
        srng = np.random.default_rng(params.seed + 2)
        for rgb, raw, lab in raw_items(items):
            for img, bx in shifted_views(srng, rgb, raw, rot90=rot, flips=flips):
                yield img, bx, lab

    def crops_of(items):
        return training_crops(propose, image_views(items), rng, crop=side, max_candidates=cap, n_jitter=N_JITTER,
                              jitter_amount=JITTER)

    def kind_counts(kinds):
        return {k: int((kinds == k).sum()) for k in ("truth", "cand_pos", "cand_neg", "random")}

    steps = 5 if params.verify_refit else 3
    progress.update("verifier", 0, steps)
    rng = np.random.default_rng(params.seed)
    crops, labels, kinds = crops_of(train)
    counts = kind_counts(kinds)
    progress.log(f"verifier: {len(crops)} training crops from {len(train)} images x their views ({counts}); "
                 f"at most {cap} candidates re-scored per image")
    progress.update("verifier", 1, steps)
    maps = stage4_maps(Verifier(STAGES, n_cls + 1), crops)      # the frozen trunk's, kept for the refit
    tf = time.perf_counter()
    net, train_acc = fit_verifier(crops, labels, n_cls, len(train), params.verify_epochs, params.seed, maps=maps)
    fit_s = time.perf_counter() - tf
    progress.update("verifier", 2, steps)
    with tempfile.TemporaryDirectory(prefix="loupe-verifier-") as tmp:
        path = Path(tmp) / "verifier.onnx"
        export_verifier(net, side, path)
        sess = create_session(path, params.threads)
        def held_out(items):
            """The detector's candidates, the true boxes, the combined candidates and the crops of each view."""
            det_preds, gts, capped, probs, held_crops = [], [], [], [], []
            for img, bx, lab in items:
                d = propose(img)
                det_preds.append((d.boxes, d.scores, d.labels))
                gts.append((bx, lab))
                c = top_candidates(d.boxes, d.scores, d.labels, cap)
                capped.append(c)
                cr = crop_boxes(img, c[0], side, MARGIN, MIN_BOX_PX)
                held_crops.append(cr)
                probs.append(onnx_probabilities(sess, cr))
            return det_preds, gts, rescored(capped, probs), held_crops

        # the held-out images under their views, and shifted versions of them (``shifted_views``)
        det_preds, gts, combined, held_crops = held_out(image_views(val))
        check = np.concatenate(held_crops)[:256] if sum(len(c) for c in held_crops) else crops[:64]
        parity = parity_check(net, sess, check)
        det_thr, det_table = choose_threshold(det_preds, gts, n_cls)
        _d, s_gts, s_combined, _c = held_out(shifted(val))
        balanced, balance = count_balance(combined + s_combined, gts + s_gts)
        if params.min_score > 0:
            thr = float(params.min_score)
            table = choose_threshold(combined, gts, n_cls, (thr,))[1]
        else:
            # the threshold that gets the total count right on average over both (session 12: the most exact
            # images on the 8 held-out ones chose 0.05-0.1 too high; +0.02 / +0.01 / +0.06 count accuracy on
            # test / dev / dev2 over three seeds)
            table = choose_threshold(combined, gts, n_cls)[1]
            thr = balanced
        refit, skipped = None, None
        # the refit's time: the first fit's, scaled to every image, and ~10 s for their crops and the export
        refit_s = fit_s * (len(train) + len(val)) / len(train) + 10
        if params.verify_refit and deadline is not None and time.perf_counter() + refit_s > deadline:
            skipped = (f"not refitted on the held-out images: that would take ~{refit_s:.0f} s and end after the "
                       f"time budget (--max-minutes {params.max_minutes:g})")
            progress.log(f"verifier: {skipped}")
        elif params.verify_refit:
            # the threshold is placed; the bundle's verifier is fitted again, with the same recipe and seed, on
            # every training image, the held-out ones too (issue 17, session 23: 32 -> 40 scenes)
            progress.update("verifier", 3, steps)
            vcrops, vlabels, vkinds = crops_of(val)
            net, train_acc = fit_verifier(np.concatenate([crops, vcrops]), np.concatenate([labels, vlabels]), n_cls,
                                          len(train) + len(val), params.verify_epochs, params.seed,
                                          maps=torch.cat([maps, stage4_maps(net, vcrops)]))
            export_verifier(net, side, path)
            sess = create_session(path, params.threads)
            parity = parity_check(net, sess, check)
            refit = {"images": len(train) + len(val), "crops": int(len(crops) + len(vcrops)),
                     "held_out_crops": kind_counts(vkinds)}
            progress.update("verifier", 4, steps)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        meta = json_copy(det_bundle.meta)
        meta["verifier"] = {
            "file": "verifier.onnx", "crop": side, "margin": MARGIN, "min_box_px": MIN_BOX_PX,
            "candidate_score": float(cand), "max_candidates": int(cap), "combine": "gmean_relabel",
            "min_score": thr, "labels": ["background", *classes],
            "input": f"crops float32 [N, 3, {side}, {side}]: RGB pixels 0..255 of a square of {MARGIN} x the box's "
                     f"longer side around its centre, grey (127) outside the image; normalised in the graph",
            "output": f"probs [N, {n_cls + 1}]: softmax over background and the classes",
            "method": f"EfficientNet-Lite0 (ImageNet) {' + '.join(STAGES)} average- and max-pooled, linear probe, "
                      f"then stage5-6 and the linear layer fine-tuned {params.verify_epochs} epoch(s); "
                      f"score sqrt(detector score x p[c]), c the verifier's best part class",
            "train_crops": counts, "truth_jitter": {"copies": N_JITTER, "amount": JITTER},
            "train_accuracy": round(train_acc, 4), "fine_tune_epochs": params.verify_epochs,
            "onnx_opset": OPSET, "parity": parity,
            "threshold_rule": "count balance" if params.min_score <= 0 else "given",
            # the held-out figures below are those of the verifier fitted on the training images alone
            "refit_on_held_out": refit,
            **({"refit_skipped": skipped} if skipped else {}),
            "held_out": {"views": len(gts), "shifted_views": len(s_gts),
                         "shift": {"copies": N_SHIFTED, "zoom_out": SHIFT_ZOOM, "colour": SHIFT_COLOUR},
                         "mean_count_error_by_threshold": {f"{t:g}": round(v, 4) for t, v in balance.items()},
                         "detector_alone": {"threshold": det_thr, "count_accuracy": round(det_table[det_thr][0], 4)},
                         "with_verifier": {"threshold": thr, "count_accuracy": round(table[thr][0], 4)},
                         "counts_by_threshold": {f"{t:g}": {"count_accuracy": round(v[0], 4),
                                                            "count_error": round(v[1], 4)} for t, v in table.items()}},
        }
        meta.setdefault("metrics", {}).update({"verifier_seconds": round(seconds, 1),
                                               "verifier_cpu_seconds": round(cpu, 1)})
        progress.log(f"verifier: training accuracy {train_acc:.3f}; held-out count accuracy {table[thr][0]:.3f} at "
                     f"{thr:g} (the detector alone on the same views: {det_table[det_thr][0]:.3f} at {det_thr:g})"
                     + (f"; then refitted on all {refit['images']} images" if refit else "")
                     + f"; {seconds:.0f} s ({cpu:.0f} CPU-s)")
        files = {n: det_bundle.path / n for n in det_bundle.files if n not in ("bundle.json", "manifest.json")}
        files["verifier.onnx"] = path
        bundle = write_bundle(out, meta, files)
    progress.update("verifier", steps, steps)
    return bundle


def json_copy(meta: dict) -> dict:
    import json

    return json.loads(json.dumps(meta))
