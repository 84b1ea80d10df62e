import sys, json
import numpy as np, torch
from pathlib import Path
from loupe_dl_classify.data import scan, stratified_split
from loupe_trainer.classify.augment import Augment, load_images
from loupe_trainer.classify.engine import FitConfig, FitRun, pooled_features, cross_validate_pooling
from loupe_trainer.common import set_threads
set_threads(1)
for seed in [int(s) for s in sys.argv[1].split(",")]:
    folders = scan(Path(f"/tmp/h18s/fmnist-s{seed}-10"))
    samples = folders.train; labels = [s.label for s in samples]
    tr, va = stratified_split(labels, 0.2, 1)
    x, y, _ = load_images([samples[i] for i in tr], (96, 96))
    cfg = FitConfig(augment=Augment())
    run = FitRun(x, y, x[:0], y[:0], 10, cfg, log=lambda *a: None)
    copies = [x] + [cfg.augment(x, run.rng) for _ in range(cfg.probe_augment_copies)]
    feats = torch.cat([pooled_features(run.net, c) for c in copies])
    a = cross_validate_pooling(feats, y, 3, run.net.channels, run.net.n_pools, 0.1, 0)
    b = cross_validate_pooling(feats, y, 3, run.net.channels, run.net.n_pools, 0.1, 0, score_copies=True)
    r = {"seed": seed, "cv_today": a, "cv_copies": b}
    print(json.dumps(r), flush=True)
    open("/tmp/h18s/cvcopies.jsonl", "a").write(json.dumps(r) + "\n")
