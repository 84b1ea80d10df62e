"""student.py PER SEED NU SHARE EPOCHS LR [ROUNDS]: self-training of the whole trunk on unlabelled images (a noisy
student). The teacher is the product's probe (frozen Lite0 stages 4-6 at 96 px, grid 3 x 3, the images plus 2
augmented copies); it labels NU unlabelled training images (labels hidden, as in semi.py) and the most confident SHARE
of each predicted class joins the labelled images. The student fine-tunes the whole trunk (BatchNorm frozen, AdamW,
warm-up + cosine, batch 64, the trainer's ``Augment``, smoothing 0.1) for EPOCHS over labelled + pseudo-labelled
images; its trained head is scored, and the head refitted as the probe was, on both sets of images and on the
labelled ones only. With ROUNDS > 1 the student (its trained head) becomes the next teacher.
Full 10k test set (issue 18, session 30)."""
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import classify as bench  # noqa: E402
from loupe_trainer.backbone import to_tensor  # noqa: E402
from loupe_trainer.classify.augment import Augment  # noqa: E402
from loupe_trainer.classify.engine import (ClassNet, _freeze_bn, _probe_wd, _set_trainable, linear_probe,  # noqa: E402
                                           pooled_features, predict, pseudo_labelled)

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
PER, SEED, NU, SHARE, EPOCHS, LR = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                                    int(sys.argv[5]), float(sys.argv[6]))
ROUNDS = int(sys.argv[7]) if len(sys.argv) > 7 else 1
t0 = time.perf_counter()
xtr, ytr = bench.read_idx("train-images-idx3-ubyte"), bench.read_idx("train-labels-idx1-ubyte").astype(np.int64)
sel = bench.draw(ytr, PER, SEED)
unl = bench.unlabelled_draw(len(ytr), sel, NU, SEED)
x, y = bench.rgb_images(xtr[sel]), ytr[sel]
xu, yu = bench.rgb_images(xtr[unl]), ytr[unl]
xte, yte = bench.rgb_images(bench.read_idx("t10k-images-idx3-ubyte")), bench.read_idx("t10k-labels-idx1-ubyte")
aug, arng = Augment(), np.random.default_rng(SEED)
torch.manual_seed(0)


def probe(net, xs, ys):
    copies = [xs] + [aug(xs, arng) for _ in range(2)]
    feats = torch.cat([pooled_features(net, c) for c in copies])
    linear_probe(net, feats, torch.from_numpy(ys).repeat(len(copies)), weight_decay=_probe_wd(len(xs)))


def line(**kw):
    print(json.dumps({"per": PER, "seed": SEED, "nu": NU, "share": SHARE, "epochs": EPOCHS, "lr": LR, **kw,
                      "s": round(time.perf_counter() - t0)}), flush=True)


net = ClassNet(10, pooling="grid")
probe(net, x, y)
line(model="teacher (the probe)", acc=round(float((predict(net, xte).argmax(1) == yte).mean()), 4))
for rnd in range(1, ROUNDS + 1):
    p = predict(net, xu)
    lab, keep = p.argmax(1), pseudo_labelled(p, SHARE)
    xs, ys = np.concatenate([x, xu[keep]]), np.concatenate([y, lab[keep]])
    student = ClassNet(10, pooling="grid")
    student.load_state_dict(net.state_dict())
    params = _set_trainable(student, 16)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=1e-4)
    steps, bs = EPOCHS * math.ceil(len(xs) / 64), 64
    step = 0
    for ep in range(EPOCHS):
        student.train()
        _freeze_bn(student)
        perm = arng.permutation(len(xs))
        for s in range(0, len(xs), bs):
            idx = perm[s:s + bs]
            for g in opt.param_groups:
                g["lr"] = LR * min(1.0, (step + 1) / (steps / EPOCHS)) * 0.5 * (1 + math.cos(math.pi * step / steps))
            loss = F.cross_entropy(student(to_tensor(aug(xs[idx], arng)))[0], torch.from_numpy(ys[idx]),
                                   label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        line(round=rnd, epoch=ep + 1, model="student, trained head",
             acc=round(float((predict(student, xte).argmax(1) == yte).mean()), 4))
    for prm in student.parameters():
        prm.requires_grad_(False)
    for name, (hx, hy) in {"labelled + pseudo-labelled": (xs, ys), "labelled only": (x, y)}.items():
        refit = copy.deepcopy(student)
        probe(refit, hx, hy)
        line(round=rnd, model=f"student, head refitted on {name}", kept=len(keep),
             pseudo_acc=round(float((lab[keep] == yu[keep]).mean()), 4),
             acc=round(float((predict(refit, xte).argmax(1) == yte).mean()), 4))
    net = student  # the next round's teacher keeps the trained head
