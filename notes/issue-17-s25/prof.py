"""prof.py BUNDLE OUT: the product's verifier stage (``add_verifier``) alone, on a trained bundle's detector and its
own training / held-out scenes, under cProfile (issue 17, session 25): where its seconds go. 2 threads."""
import cProfile
import pstats
import sys
from pathlib import Path

import torch

from host import Bundle
from loupe_dl_detect.data import scan
from loupe_trainer.detect.trainer import DetectParams, _load_resized, split_names
from loupe_trainer.detect.verifier import add_verifier


class Quiet:
    def update(self, *a, **k):
        pass

    def log(self, msg):
        print(msg, flush=True)


torch.set_num_threads(2)
b = Bundle.load(Path(sys.argv[1]))
p = DetectParams(**{k: v for k, v in b.meta["training"]["params"].items() if k != "verify_refit"})   # before s25
samples = scan(Path(b.meta["training"]["data"]), classes=b.meta["classes"]).train
tr, va = split_names([s.name for s in samples], p.val_fraction, p.seed + 1)
size = tuple(b.meta["input_size"])
train = _load_resized([samples[i] for i in tr], size, lambda *a: 0)
val = _load_resized([samples[i] for i in va], size, lambda *a: 0)
pr = cProfile.Profile()
pr.enable()
add_verifier(b, Path(sys.argv[2]), train, val, b.meta["classes"], p, Quiet())
pr.disable()
pstats.Stats(pr).sort_stats("cumulative").print_stats(40)
