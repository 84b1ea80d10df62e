"""prof.py BUNDLE OUT: the product's verifier stage (``add_verifier``) alone, on a trained bundle's detector and its
own training / held-out scenes, under cProfile (issue 17, session 25): where its seconds go. 2 threads."""
import cProfile
import pstats
import sys
from pathlib import Path

import torch

from loupe_trainer.detect.verifier import add_verifier

sys.path.insert(0, str(Path(__file__).parent))
from inputs import trainer_inputs  # noqa: E402


class Quiet:
    def update(self, *a, **k):
        pass

    def log(self, msg):
        print(msg, flush=True)


torch.set_num_threads(2)
t = trainer_inputs(sys.argv[1])
pr = cProfile.Profile()
pr.enable()
add_verifier(t.bundle, Path(sys.argv[2]), t.train, t.val, t.classes, t.params, Quiet())
pr.disable()
pstats.Stats(pr).sort_stats("cumulative").print_stats(40)
