"""band2sum.py BAND2.OUT PRODUCT-E.OUT|ONE-LOOK.OUT: band2.py's lines as a table (as session 28's bandsum.py), with the median
and 90th percentile of the extra crops per frame averaged over the bundles."""
import re
import sys
from collections import defaultdict

import numpy as np

base = {f"E{ln.split()[0]}": float(ln.split()[5]) for ln in open(sys.argv[2]) if ln[0].isdigit()}
base.update({ln.split()[0]: float(ln.split()[-1]) for ln in open(sys.argv[2]) if " one look: " in ln})
acc, extra = defaultdict(dict), defaultdict(dict)
for ln in open(sys.argv[1]):
    m = re.match(r"(\S+) d8 band (\S+): test (\S+) extra crops/frame (\S+) median (\S+) p90 (\S+)", ln)
    if m:
        acc[m[2]][m[1]] = float(m[3])
        extra[m[2]][m[1]] = [float(m[4]), float(m[5]), float(m[6])]
names = sorted({b for per in acc.values() for b in per}, key=lambda b: [0, 6, 7, 8, 9, 1, 2, 3, 4, 5].index(int(b[1:])))
print(f"{len(names)} bundles ({' '.join(names)}); no second look: {np.mean([base[b] for b in names]):.4f}")
for key, per in acc.items():
    d = np.array([per[b] - base[b] for b in names])
    mean, med, p90 = np.mean(list(extra[key].values()), 0)
    print(f"d8 band {key}: {np.mean(list(per.values())):.4f} ({d.mean():+.4f}, se {d.std(ddof=1) / np.sqrt(len(d)):.4f}, "
          f"up {(d > 1e-9).sum()}, down {(d < -1e-9).sum()}) | extra crops/frame {mean:.1f} median {med:.1f} "
          f"p90 {p90:.1f} | " + " ".join(f"{per[b]:.3f}" for b in names))
