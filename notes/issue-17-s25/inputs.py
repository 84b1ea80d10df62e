"""What prof.py, perclass.py and weight.py share (issue 17, session 25): a detection bundle's own training inputs as
its trainer split and loaded them, and the product's out-of-fold data (``verifier_data``) on its detector."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from host import Bundle
from loupe_dl_detect.data import scan
from loupe_dl_detect.model import Detector
from loupe_trainer.detect.trainer import DetectParams, _load_resized, split_names
from loupe_trainer.detect.verifier import verifier_data


def trainer_inputs(bpath) -> SimpleNamespace:
    """The bundle, its training parameters (``verify_refit`` dropped: bundles before session 25 record it) and its
    training / held-out images as the trainer's ``(sample, rgb, resized, resized boxes, labels)`` tuples."""
    b = Bundle.load(Path(bpath))
    p = DetectParams(**{k: v for k, v in b.meta["training"]["params"].items() if k != "verify_refit"})
    classes = b.meta["classes"]
    samples = scan(Path(b.meta["training"]["data"]), classes=classes).train
    tr, va = split_names([s.name for s in samples], p.val_fraction, p.seed + 1)
    size = tuple(b.meta["input_size"])
    return SimpleNamespace(bundle=b, params=p, classes=classes, n_cls=len(classes),
                           train=_load_resized([samples[i] for i in tr], size, lambda *a: 0),
                           val=_load_resized([samples[i] for i in va], size, lambda *a: 0))


def oof_data(t: SimpleNamespace) -> tuple[Detector, SimpleNamespace]:
    """The bundle's detector alone and ``verifier_data`` of every training image under it (candidates at 0.1, the
    bundle's cap), as ``add_verifier`` computes them."""
    det = Detector(t.bundle, threads=2, verify=False)
    return det, verifier_data(lambda rgb: det.predict(np.ascontiguousarray(rgb[:, :, ::-1]), min_score=0.1),
                              t.train + t.val, t.n_cls, t.bundle.meta["verifier"]["max_candidates"], t.params)
