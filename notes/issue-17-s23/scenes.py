"""What oof.py and shift.py share: a detection bundle's own training scenes split as its trainer split them, its
detector's candidates, and their combined scores under a verifier net (issue 17, session 23)."""
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from host import Bundle
from loupe_dl_detect.data import load, scan
from loupe_dl_detect.model import Detector
from loupe_dl_detect.verify import top_candidates
from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.trainer import THRESHOLDS, _load_resized, split_names


def bundle_scenes(bpath) -> SimpleNamespace:
    """The bundle, its training parameters, its detector alone (``propose``: candidates at 0.1, as the trainer's
    verifier fit sees them), and its training / held-out scenes as (RGB image, boxes in its pixels, labels)."""
    b = Bundle.load(Path(bpath))
    meta = b.meta
    p = meta["training"]["params"]
    classes = meta["classes"]
    samples = scan(Path(meta["training"]["data"]), classes=classes).train
    tr_idx, va_idx = split_names([s.name for s in samples], p["val_fraction"], p["seed"] + 1)
    det = Detector(b, threads=2, verify=False)

    def raw(idx):
        out = []
        for _s, rgb, r, bx, lab in _load_resized([samples[i] for i in idx], tuple(meta["input_size"]), lambda *a: 0):
            h, w = rgb.shape[:2]
            out.append((rgb, bx.reshape(-1, 4) * np.array([w / r.shape[1], h / r.shape[0]] * 2, np.float32), lab))
        return out

    return SimpleNamespace(bundle=b, meta=meta, params=p, seed=p["seed"], classes=classes, n_cls=len(classes),
                           cap=meta["verifier"]["max_candidates"], side=meta["verifier"]["crop"], det=det,
                           propose=lambda rgb: det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=0.1),
                           train=raw(tr_idx), val=raw(va_idx))


def capped(sc: SimpleNamespace, img):
    """(boxes, scores, labels, crops) of the detector's best ``cap`` candidates on an RGB image, as the trainer and
    the runtime cap them."""
    d = sc.propose(img)
    bx, s, lb = top_candidates(d.boxes, d.scores, d.labels, sc.cap)
    return bx, s, lb, V.crop_boxes(img, bx, sc.side, V.MARGIN, V.MIN_BOX_PX)


@torch.no_grad()
def combined(net, cands) -> list:
    """[(boxes, combined scores, labels)] of ``capped`` candidates under a verifier net (``relabel``)."""
    out = []
    for b, s, _l, cr in cands:
        if len(s):
            sc, lab = V.relabel(s, net(V.to_input(cr)).numpy())
        else:
            sc, lab = s.astype(np.float32), np.zeros(0, np.int64)
        out.append((b, sc, lab))
    return out


def test_scenes(classes) -> list:
    """The 300 scenes of test / dev / dev2 (notes/issue-17-s15/mk.py): (RGB image, true labels). Session 29: the
    environment's SCENE_SETS (names under /tmp/h17s15, e.g. ``sel``) replaces the three."""
    out = []
    for sub in os.environ.get("SCENE_SETS", "bench dev dev2").split():
        for s in scan(Path("/tmp/h17s15") / sub, classes=classes).test:
            rgb, _gb, gl = load(s)
            out.append((rgb, gl))
    return out



def test_candidates(det, classes, cap: int, side: int) -> list:
    """(capped boxes, detector scores, their crops, true labels) of each of the 300 test scenes (``test_scenes``):
    ``det``'s candidates at 0.1, capped and cropped as the runtime does (session 26's ``rot.py``, session 27's
    ``hard.py``)."""
    out = []
    for rgb, gl in test_scenes(classes):
        d = det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=0.1)
        bx, s, _lb = top_candidates(d.boxes, d.scores, d.labels, cap)
        out.append((bx, s, V.crop_boxes(rgb, bx, side, V.MARGIN, V.MIN_BOX_PX), gl))
    return out

def all_scene_crops(sc: SimpleNamespace) -> SimpleNamespace:
    """Session 24's out-of-fold studies (``oof5.py``, ``oof5p.py``): every one of the bundle's 40 training scenes
    (the trainer's training scenes first, then its held-out ones), the verifier's training crops of each under its
    views (one rng from the bundle's seed, scene by scene), which scene each crop came from, the capped candidates
    and true boxes of each scene's views and shifted views (one rng from seed + 2, scene by scene), and the frozen
    trunk's stage4 maps of all crops."""
    items = sc.train + sc.val
    rng = np.random.default_rng(sc.seed)
    srng = np.random.default_rng(sc.seed + 2)
    crops, labels, owner, ev = [], [], [], []
    for i, (rgb, raw, lab) in enumerate(items):
        vs = [(img, bx, lab) for img, bx in V.views(rgb, raw)]
        c, l, _k = V.training_crops(sc.propose, vs, rng, crop=sc.side, max_candidates=sc.cap, n_jitter=V.N_JITTER,
                                    jitter_amount=V.JITTER)
        crops.append(c)
        labels.append(l)
        owner.append(np.full(len(l), i))
        allv = vs + [(img, bx, lab) for img, bx in V.shifted_views(srng, rgb, raw)]
        ev.append(([capped(sc, img) for img, _bx, _l in allv], [(bx, lab) for _img, bx, lab in allv]))
    crops = np.concatenate(crops)
    return SimpleNamespace(n=len(items), crops=crops, labels=np.concatenate(labels), owner=np.concatenate(owner),
                           ev=ev, s4=V.stage4_maps(V.Verifier(V.STAGES, sc.n_cls + 1), crops))


def scored(net, ev, scenes) -> tuple[list, list]:
    """The combined candidates and true boxes of ``scenes``' views (``all_scene_crops``'s ``ev``) under a verifier."""
    preds, gts = [], []
    for i in scenes:
        preds += combined(net, ev[i][0])
        gts += ev[i][1]
    return preds, gts


def acc_table(preds, gts, n_cls) -> dict:
    """{threshold: share of images whose per-class counts are exact} over the trainer's threshold grid."""
    return {t: float(np.mean([(np.bincount(p[2][p[1] >= t], minlength=n_cls) == np.bincount(g, minlength=n_cls))
                              .all() for p, g in zip(preds, gts)])) for t in THRESHOLDS}


def shipped_accuracy(sc: SimpleNamespace) -> dict:
    """``acc_table`` of the bundle as shipped (its own verifier, through the runtime: candidates at 0.1, the cap,
    the combined score) on the 300 test scenes."""
    full = Detector(sc.bundle, threads=2)
    preds, gts = [], []
    for rgb, gl in test_scenes(sc.classes):
        d = full.predict(rgb[:, :, ::-1], min_score=0.1)
        preds.append((d.boxes, d.scores, d.labels))
        gts.append(gl)
    return acc_table(preds, gts, sc.n_cls)


def first_fit(sc: SimpleNamespace):
    """The verifier that places the product's threshold: fitted exactly as the trainer's first fit (the training
    scenes' crops under their views, the bundle's seed and epochs)."""
    crops, labels, _k = V.training_crops(sc.propose, [(img, bx, lab) for rgb, r, lab in sc.train
                                                      for img, bx in V.views(rgb, r)],
                                         np.random.default_rng(sc.seed), crop=sc.side, max_candidates=sc.cap,
                                         n_jitter=V.N_JITTER, jitter_amount=V.JITTER)
    return V.fit_verifier(crops, labels, sc.n_cls, len(sc.train), sc.params["verify_epochs"], sc.seed)[0]
