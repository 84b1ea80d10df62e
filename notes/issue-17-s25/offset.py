"""offset.py BUNDLE[:THRESHOLD]...: the bundle as shipped on the 300 test scenes (``scenes.shipped_accuracy``) at its own
threshold (or THRESHOLD: for session 22's bundles, the out-of-fold one from weight.py) and the grid steps above and
below it, and the best (the oracle): is the out-of-fold threshold placed
systematically low? (issue 17, session 25; offline, 2 threads)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import bundle_scenes, shipped_accuracy  # noqa: E402

torch.set_num_threads(2)
for arg in sys.argv[1:]:
    bpath, _, thr = arg.partition(":")
    sc = bundle_scenes(bpath)
    acc = shipped_accuracy(sc)
    own = float(thr) if thr else sc.meta["verifier"]["min_score"]
    ts = sorted(acc)
    i = ts.index(own)
    best = max(acc, key=acc.get)
    print(f"{Path(bpath).name:4s} " + " ".join(f"{ts[j]:.3f}:{acc[ts[j]]:.3f}" + ("*" if j == i else "")
                                              for j in range(max(0, i - 2), min(len(ts), i + 4)))
          + f" | best {best:.3f}:{acc[best]:.3f}", flush=True)
