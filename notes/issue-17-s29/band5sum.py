"""band5sum.py BAND5.OUT: band5.py's lines per variant: mean count accuracy over the bundles, up / down against the
shipped second look, mean extra crops per frame."""
import re
import sys
from collections import defaultdict

import numpy as np

acc, extra = defaultdict(dict), defaultdict(dict)
for ln in open(sys.argv[1]):
    m = re.match(r"(E\d) (.+): test (\S+) extra crops/frame (\S+)", ln)
    if m:
        acc[m[2]][m[1]] = float(m[3])
        extra[m[2]][m[1]] = float(m[4])
base = acc["d8 (shipped)"]
names = list(base)
for tag, per in acc.items():
    if len(per) < len(names):
        continue
    d = np.array([per[b] - base[b] for b in names])
    print(f"{tag:>24}: {np.mean(list(per.values())):.4f} ({d.mean():+.4f}, up {(d > 1e-9).sum()}, down "
          f"{(d < -1e-9).sum()}) | extra crops/frame {np.mean(list(extra[tag].values())):.2f} | "
          + " ".join(f"{per[b]:.3f}" for b in names))
