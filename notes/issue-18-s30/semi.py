"""semi.py PER SEED NU [ROUNDS]: can unlabelled images from the same line lift the classifier's frozen probe? Few-shot
Fashion-MNIST (the bench's draw SEED, PER labelled images per class, plus the trainer's 2 augmented copies), NU further
training images with their labels hidden (drawn with default_rng(1000 + SEED) from the rest of the train split), the
classifier's frozen Lite0 maps (stages 4-6 at 96 px) grid-pooled 3 x 3, linear probes (``fit_linear``, ``_probe_wd``,
smoothing 0.1) on the full 10k test set (issue 18, session 30; features from frozen.py). Rows:
the product's probe; self-training (pseudo-labels of the most confident share of each predicted class, refit
(shares 0.25-1; ROUNDS refits, each teacher the last head); and the frozen ceiling: the same probe with the NU images' true labels."""
import json
import sys

import torch

from frozen import accuracy, features, probe
from loupe_trainer.classify.engine import pseudo_labelled

PER, SEED, NU = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 1
ftr, y, fu, yu, fte, yte = features(PER, SEED, NU)
fl, yl = ftr.flatten(0, 1), y.repeat(len(ftr))


def line(name, fc, **kw):
    print(json.dumps({"per": PER, "seed": SEED, "nu": NU, "probe": name, "acc": accuracy(fc, fte, yte), **kw}),
          flush=True)


fc = probe(fl, yl, len(y))
line("labelled only", fc)
line("ceiling: unlabelled with true labels", probe(torch.cat([fl, fu]), torch.cat([yl, yu]), len(yl) + len(yu)))
for share in (0.25, 0.5, 0.75, 1.0):
    head = fc
    for rnd in range(1, ROUNDS + 1):
        with torch.no_grad():
            p = torch.softmax(head(fu), 1).numpy()
        keep = torch.from_numpy(pseudo_labelled(p, share))
        lab = torch.from_numpy(p.argmax(1))[keep]
        head = probe(torch.cat([fl, fu[keep]]), torch.cat([yl, lab]), len(yl) + len(keep))
        line(f"self-training, share {share}, round {rnd}", head, kept=len(keep),
             pseudo_acc=round((lab == yu[keep]).float().mean().item(), 4))
