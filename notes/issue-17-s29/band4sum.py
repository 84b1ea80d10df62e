"""band4sum.py BAND4.OUT: band4.py's lines per doubt ratio: mean count accuracy over the bundles, up / down against
the band alone (doubt None), mean extra crops per frame."""
import re
import sys
from collections import defaultdict

import numpy as np

acc, extra = defaultdict(dict), defaultdict(dict)
for ln in open(sys.argv[1]):
    m = re.match(r"(\S+) doubt (\S+): test (\S+) extra crops/frame (\S+)", ln)
    if m:
        acc[m[2]][m[1]] = float(m[3])
        extra[m[2]][m[1]] = float(m[4])
names = list(acc["None"])
for r, per in acc.items():
    d = np.array([per[b] - acc["None"][b] for b in names])
    print(f"doubt {r}: {np.mean(list(per.values())):.4f} ({d.mean():+.4f}, up {(d > 1e-9).sum()}, down "
          f"{(d < -1e-9).sum()}) | extra crops/frame {np.mean(list(extra[r].values())):.2f} | "
          + " ".join(f"{per[b]:.3f}" for b in names))
