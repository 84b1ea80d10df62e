import sys, time, numpy as np
from pathlib import Path
from host import Bundle
from loupe_dl_detect.model import Detector
from loupe_dl_detect.verify import BoxVerifier, top_candidates
from loupe_dl_detect.data import scan
from loupe_trainer.detect.trainer import split_names, _load_resized
from loupe_trainer.detect.verifier import shifted_views
b = Bundle.load(Path(sys.argv[1])); det = Detector(b, threads=1, verify=False); ver = BoxVerifier(b, len(det.classes), 1)
p = b.meta["training"]["params"]
samples = scan(b.meta["training"]["data"], classes=det.classes).train
_, va = split_names([s.name for s in samples], p["val_fraction"], p["seed"] + 1)
val = _load_resized([samples[i] for i in va], tuple(b.meta["input_size"]), lambda *a: None)
for rep in range(2):
    c0 = time.process_time(); rng = np.random.default_rng(4); n = 0
    for _s, rgb, r, bx, lab in val:
        for img, bb in shifted_views(rng, rgb, bx):
            bgr = np.ascontiguousarray(img[:, :, ::-1])
            d = det.predict(bgr, min_score=ver.candidate_score)
            c = top_candidates(d.boxes, d.scores, d.labels, ver.max_candidates)
            if len(c[0]): ver.probabilities(bgr, c[0])
            n += 1
    print(f"{n} shifted views: {time.process_time() - c0:.1f} CPU-s")
