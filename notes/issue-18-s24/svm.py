"""Two cheap classical members beside the product's bundle and the scratch CNN (draw 0, 100/class): an RBF SVM
(C 10) on raw pixels and on HOG (scikit-image: 9 orientations, 4 px cells, 2 x 2 blocks), log-probabilities averaged.
    OMP_NUM_THREADS=2 .venv/bin/python notes/issue-18-s24/svm.py"""
import sys

import numpy as np
from skimage.feature import hog
from sklearn.svm import SVC

sys.path.insert(0, "/work/main/bench")
import classify as b  # noqa: E402

xtr, ytr = b.read_idx("train-images-idx3-ubyte"), b.read_idx("train-labels-idx1-ubyte").astype(int)
xte, y = b.read_idx("t10k-images-idx3-ubyte"), b.read_idx("t10k-labels-idx1-ubyte")
rng = np.random.default_rng(0)
order = {c: rng.permutation(np.flatnonzero(ytr == c)) for c in range(10)}
sel = np.concatenate([order[c][:100] for c in range(10)])
d = "/tmp/s24/c/"
L = lambda p: np.log(p + 1e-9)  # noqa: E731
acc = lambda s: round(float((s.argmax(1) == y).mean()), 4)  # noqa: E731
pb, pe = np.load(d + "probs-base-s0-100.npy"), np.load(d + "probs-scratche120-s0-100.npy")
feats = {"pix": lambda X: X.reshape(len(X), -1) / 255.0,
         "hog": lambda X: np.stack([hog(im, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2)) for im in X])}
for name, f in feats.items():
    p = SVC(C=10, probability=True, random_state=0).fit(f(xtr[sel]), ytr[sel]).predict_proba(f(xte))
    print(name, acc(p), "base|svm w0.2/0.3/0.4:", [acc((1 - w) * L(pb) + w * L(p)) for w in (0.2, 0.3, 0.4)],
          "base 0.6 | scratch-e120 0.2 | svm 0.2:", acc(0.6 * L(pb) + 0.2 * L(pe) + 0.2 * L(p)), flush=True)
