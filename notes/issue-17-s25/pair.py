"""pair.py BUNDLE...: a session 25 bundle as shipped on the 300 test scenes (``scenes.shipped_accuracy``) at its
threshold (out of fold, moved by the fine-tuning) and at the out-of-fold one it was moved from (issue 17; 2 threads)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import bundle_scenes, shipped_accuracy  # noqa: E402

torch.set_num_threads(2)
for bpath in sys.argv[1:]:
    sc = bundle_scenes(bpath)
    v = sc.meta["verifier"]
    acc = shipped_accuracy(sc)
    best = max(acc, key=acc.get)
    o, t = v["out_of_fold"]["threshold"], v["min_score"]
    print(f"{Path(bpath).name:4s} out of fold {o:.3f}:{acc[o]:.3f} | in sample {v['out_of_fold']['in_sample_threshold']}"
          f" | moved {t:.3f}:{acc[t]:.3f} | best {best:.3f}:{acc[best]:.3f}", flush=True)
