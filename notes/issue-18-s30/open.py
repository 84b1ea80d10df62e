"""open.py PER SEED NU: self-training when the unlabelled folder holds parts of classes the labelled set lacks. The
labelled images of semi.py's draw are kept for classes 0-7 only (bag and ankle boot are unknown to the model); the
unlabelled images stay as drawn, all ten classes (about 20 % foreign); the test set is the 8,000 images of classes 0-7.
The product's rule (``pseudo_labelled``, share 0.5) on the frozen features of frozen.py. Issue 18, session 30."""
import json
import sys

import numpy as np
import torch

from frozen import accuracy, features, probe
from loupe_trainer.classify.engine import pseudo_labelled

PER, SEED, NU, K = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), 8
ftr, y, fu, yu, fte, yte = features(PER, SEED, NU)
known = y < K
fl = ftr[:, known].flatten(0, 1)
yl = y[known].repeat(len(ftr))
n_img = int(known.sum())
yu = yu.numpy()
te = yte < K
fte, yte = fte[te], yte[te]

fc = probe(fl, yl, n_img, K)
print(json.dumps({"per": PER, "seed": SEED, "unlabelled": "none", "acc": accuracy(fc, fte, yte)}), flush=True)
for name, rows in [("all ten classes", np.arange(NU)), ("the eight known classes only", np.flatnonzero(yu < K))]:
    u = fu[torch.from_numpy(rows)]
    with torch.no_grad():
        probs = torch.softmax(fc(u), 1).numpy()
    keep = pseudo_labelled(probs, 0.5)
    lab = probs.argmax(1)[keep]
    head = probe(torch.cat([fl, u[torch.from_numpy(keep)]]), torch.cat([yl, torch.from_numpy(lab)]), n_img + len(keep),
                 K)
    print(json.dumps({"per": PER, "seed": SEED, "unlabelled": name, "n": int(len(rows)), "kept": int(len(keep)),
                      "kept_foreign": int((yu[rows][keep] >= K).sum()),
                      "kept_right": round(float((yu[rows][keep] == lab).mean()), 4),
                      "acc": accuracy(head, fte, yte)}), flush=True)
