"""Dump a classify bundle's test probabilities (10k Fashion-MNIST test images, columns in bench NAMES order).

    OMP_NUM_THREADS=1 .venv/bin/python notes/issue-18-s24/probs.py BUNDLE OUT.npy
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import classify as bench  # noqa: E402
from host import Bundle, prepare_images  # noqa: E402
from loupe_dl_classify.model import Classifier, softmax  # noqa: E402

xte, yte = bench.read_idx("t10k-images-idx3-ubyte"), bench.read_idx("t10k-labels-idx1-ubyte")
clf = Classifier(Bundle.load(Path(sys.argv[1])), threads=1)
cols = [clf.classes.index(n) for n in bench.NAMES]
out = []
for s in range(0, len(xte), 100):
    lg, _ = clf.run(prepare_images(list(xte[s:s + 100]), clf.size, clf.norm))
    out.append(softmax(lg.astype(np.float64))[:, cols])
p = np.concatenate(out)
np.save(sys.argv[2], p)
print(sys.argv[1], "acc", float((p.argmax(1) == yte).mean()))
