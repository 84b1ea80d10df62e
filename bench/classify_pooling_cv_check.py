import sys, json
import numpy as np
from pathlib import Path
from loupe_dl_classify.data import scan, stratified_split
from loupe_trainer.classify.augment import Augment, load_images
from loupe_trainer.classify.engine import FitConfig, FitRun
from loupe_trainer.common import set_threads
set_threads(1)
seed, grid, valf = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
folders = scan(Path(f"/tmp/h18s/fmnist-s{seed}-10"))
samples = folders.train; labels = [s.label for s in samples]
tr, va = stratified_split(labels, valf, 1) if valf > 0 else (np.arange(len(labels)), np.arange(0))
x, y, _ = load_images([samples[i] for i in tr], (96, 96)); vx, vy, _ = load_images([samples[i] for i in va], (96, 96))
run = FitRun(x, y, vx, vy, 10, FitConfig(grid=grid, pooling_tiebreak=True, augment=Augment()), log=print)
run.linear_probe()
print(json.dumps({"seed": seed, "grid": grid, "val": valf, "cv": run.history["pooling_cv_accuracy"],
                  "loss": run.history["pooling_cv_log_loss"], "chosen": run.history["pooling"]}))
