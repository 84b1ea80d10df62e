"""bandsum.py BAND.OUT PRODUCT.OUT: band.py's lines as a table: per look set and band, the mean count accuracy over
the bundles, the pairs up / down against the shipped verifier (its figure per seed from session 27's
``product-E.out``: the same bundles without a second look) and the mean extra crops per frame."""
import re
import sys
from collections import defaultdict

import numpy as np

base = {f"E{ln.split()[0]}": float(ln.split()[5]) for ln in open(sys.argv[2]) if ln[0].isdigit()}
acc, extra = defaultdict(dict), defaultdict(dict)
for ln in open(sys.argv[1]):
    m = re.match(r"(\S+) (\S+) band (\S+): test (\S+) extra crops/frame (\S+)", ln)
    if m:
        acc[(m[2], m[3])][m[1]] = float(m[4])
        extra[(m[2], m[3])][m[1]] = float(m[5])
names = sorted({b for per in acc.values() for b in per}, key=lambda b: [0, 6, 7, 8, 9, 1, 2, 3, 4, 5].index(int(b[1:])))
print(f"{len(names)} bundles ({' '.join(names)}); no second look: {np.mean([base[b] for b in names]):.4f}")
for key, per in acc.items():
    if len(per) < len(names):
        continue
    d = np.array([per[b] - base[b] for b in names])
    print(f"{key[0]:>3} band {key[1]}: {np.mean(list(per.values())):.4f} ({d.mean():+.4f}, se "
          f"{d.std(ddof=1) / np.sqrt(len(d)):.4f}, up {(d > 1e-9).sum()}, down {(d < -1e-9).sum()}) | extra crops/frame "
          f"{np.mean(list(extra[key].values())):.2f} | " + " ".join(f"{per[b]:.3f}" for b in names))
