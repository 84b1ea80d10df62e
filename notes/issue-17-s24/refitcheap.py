"""refitcheap.py BUNDLE...: cheaper refits of the verifier on all 40 scenes (issue 17, session 24; offline).

Today's default command on this VM skipped the refit (~84 s more would have ended past --max-minutes 4.5). Arms,
each scored at the bundle's own threshold (the product's: placed by the first fit) and at the best one (an oracle)
on the 300 scenes of test / dev / dev2, the bundle's detector:
  V32: the first fit (32 scenes; what the product ships when the refit is skipped);
  V40: the full refit (probe + 2 fine-tuning epochs on 40 scenes; what the product ships otherwise);
  V40h: V32's fine-tuned trunk kept, the linear layer refitted on the 40 scenes' features (L-BFGS probe);
  V40w: V40h, then 1 fine-tuning epoch on the 40 scenes.
2 threads; each arm's fit time printed."""
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loupe_trainer.classify.engine import _probe_wd, fit_linear
from loupe_trainer.detect import verifier as V

sys.path.insert(0, str(Path(__file__).parents[1] / "issue-17-s23"))
from scenes import acc_table, bundle_scenes, capped, combined, test_scenes  # noqa: E402

torch.set_num_threads(2)


for bpath in sys.argv[1:]:
    sc = bundle_scenes(bpath)
    seed, C = sc.seed, sc.n_cls
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for part in (sc.train, sc.val):        # as the product draws them: training crops, then the held-out ones
        c, l, _k = V.training_crops(sc.propose, [(img, bx, lab) for rgb, r, lab in part for img, bx in V.views(rgb, r)],
                                    rng, crop=sc.side, max_candidates=sc.cap, n_jitter=V.N_JITTER,
                                    jitter_amount=V.JITTER)
        crops.append(c)
        labels.append(l)
    n32 = len(labels[0])
    crops, labels = np.concatenate(crops), np.concatenate(labels)
    s4 = V.stage4_maps(V.Verifier(V.STAGES, C + 1), crops)
    ep = sc.params["verify_epochs"]
    secs, nets = {}, {}
    t = time.perf_counter()
    nets["V32"] = V.fit_verifier(crops[:n32], labels[:n32], C, len(sc.train), ep, seed, maps=s4[:n32])[0]
    secs["V32"] = time.perf_counter() - t
    t = time.perf_counter()
    nets["V40"] = V.fit_verifier(crops, labels, C, len(sc.train) + len(sc.val), ep, seed, maps=s4)[0]
    secs["V40"] = time.perf_counter() - t
    t = time.perf_counter()
    h = copy.deepcopy(nets["V32"])
    with torch.no_grad():
        feats = torch.cat([V.head_features(h, s4[i:i + 512]) for i in range(0, len(s4), 512)])
    fit_linear(h.fc, feats, torch.from_numpy(labels), _probe_wd(len(sc.train) + len(sc.val)), 0.0)
    h.eval()
    nets["V40h"] = h
    secs["V40h"] = time.perf_counter() - t
    t = time.perf_counter()
    w = copy.deepcopy(h)
    V.finetune(w, s4, labels, 1, seed)
    w.eval()
    nets["V40w"] = w
    secs["V40w"] = time.perf_counter() - t + secs["V40h"]
    test = test_scenes(sc.classes)
    tc, tg = [capped(sc, rgb) for rgb, _gl in test], [gl for _rgb, gl in test]
    own = sc.meta["verifier"]["min_score"]
    line = [f"{Path(bpath).name:4s} own {own:.3f}"]
    for name, net in nets.items():
        tab = acc_table(combined(net, tc), tg, C)
        best = max(tab, key=tab.get)
        line.append(f"{name} {tab[own]:.3f} (best {best:.3f}:{tab[best]:.3f}; {secs[name]:.0f}s)")
    print(" | ".join(line), flush=True)
