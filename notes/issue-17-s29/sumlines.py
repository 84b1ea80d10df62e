"""sumlines.py OUT BASE: band2.py's, band4.py's and band5.py's lines ("E<seed> TAG: test ACC extra crops/frame X
[median M p90 P]") as a table (issue 17, session 29): per TAG, the mean count accuracy over the bundles, its
difference from BASE per bundle (mean, standard error, up / down), and the extra crops per frame averaged over the
bundles (and their median / p90 where the lines have them). BASE: a TAG of the same file, or a file of per-bundle
baselines (session 27's product-E.out, or band2.py's "E<seed> one look: test ACC" lines)."""
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

LINE = re.compile(r"(E\d) (.+): test (\S+) extra crops/frame (\S+)(?: median (\S+) p90 (\S+))?")
acc, extra = defaultdict(dict), defaultdict(dict)
for ln in open(sys.argv[1]):
    m = LINE.match(ln)
    if m:
        acc[m[2]][m[1]] = float(m[3])
        extra[m[2]][m[1]] = [float(x) for x in m.groups()[3:] if x is not None]
names = list(dict.fromkeys(b for per in acc.values() for b in per))
if Path(sys.argv[2]).is_file():
    lines = open(sys.argv[2]).read().splitlines()
    base = {f"E{ln.split()[0]}": float(ln.split()[5]) for ln in lines if ln[:1].isdigit()}
    base.update({ln.split()[0]: float(ln.split()[-1]) for ln in lines if " one look: " in ln})
    print(f"{len(names)} bundles ({' '.join(names)}); base ({Path(sys.argv[2]).name}): "
          f"{np.mean([base[b] for b in names]):.4f}")
else:
    base = acc[sys.argv[2]]
for tag, per in acc.items():
    if len(per) < len(names):
        continue
    d = np.array([per[b] - base[b] for b in names])
    x = np.mean(list(extra[tag].values()), 0)
    print(f"{tag:>24}: {np.mean(list(per.values())):.4f} ({d.mean():+.4f}, se {d.std(ddof=1) / np.sqrt(len(d)):.4f}, "
          f"up {(d > 1e-9).sum()}, down {(d < -1e-9).sum()}) | extra crops/frame {x[0]:.2f}"
          + (f" median {x[1]:.1f} p90 {x[2]:.1f}" if len(x) == 3 else "") + " | "
          + " ".join(f"{per[b]:.3f}" for b in names))
