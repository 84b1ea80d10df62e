"""(Session 18: session 15's refit.py with crop-80 variants of the aspect-dependent margin (c80asp*, c80asp5*)
and of margin 1.0 (c80m1*), each at verifier seeds 0 / 100 / 200.)
(Session 15: session 12b's refit.py with paths under /tmp/h17s15, the crop side as a variant (c64, c80, their
verifier seeds s100 / s200), CROP pinned at 48 for the named variants, and an aspect-dependent margin (asp).)
Refit the verifier of BUNDLE offline with a variant recipe, on the detector candidates cached by
cache.py (CACHE), and score it: threshold by count balance on held-out + shifted views (augbal, the product's
rule), count accuracy on test / dev / dev2. Usage: refit.py BUNDLE CACHE VARIANT...
Variants: base (the product: margin 0.75, 2 jittered copies at 0.15), m1 (margin 1.0), m125 (1.25),
jit (4 copies at 0.25), m1jit, bgw (background weight 0.5 in the fine-tuning loss)."""
import sys, pickle, time, types
from pathlib import Path
import numpy as np, torch, cv2
import torch.nn.functional as F
sys.path.insert(0, "/tmp/h17s15/scripts")
from ana import gts, acc_at, signed_err
from host import Bundle
from loupe_dl_detect.verify import crop_boxes, relabel
from loupe_dl_detect.model import iou_matrix
from loupe_dl_detect.data import scan
from loupe_trainer.detect.trainer import split_names, _load_resized, THRESHOLDS
from loupe_trainer.detect import verifier as V
from loupe_trainer.detect.verifier import views, training_crops, fit_verifier, to_input, CROP, MIN_BOX_PX

torch.set_num_threads(1)
CROP = 48   # the product default was 48 when these variants were named
bpath, cpath = Path(sys.argv[1]), sys.argv[2]
res = pickle.load(open(cpath, "rb"))
b = Bundle.load(bpath); meta = b.meta; p = meta["training"]["params"]; seed = p["seed"]
classes = res["meta"]["classes"]; C = len(classes)
ds = scan("/tmp/h17s15/bench", classes=classes); samples = ds.train
tr_idx, va_idx = split_names([s.name for s in samples], p["val_fraction"], seed + 1)
size = tuple(meta["input_size"])
def items_of(idx):
    out = []
    for (s, rgb, r, bx, lab) in _load_resized([samples[i] for i in idx], size, lambda *a: None):
        h, w = rgb.shape[:2]
        out.append((rgb, bx * np.array([w / r.shape[1], h / r.shape[0], w / r.shape[1], h / r.shape[0]], np.float32), lab))
    return out
val, train = items_of(va_idx), items_of(tr_idx)
imgs = {"held": [img for rgb, raw, lab in val for img, bx in views(rgb, raw)],
        "train": [(img, bx, lab) for rgb, raw, lab in train for img, bx in views(rgb, raw)]}
# the shifted views exactly as cache.py drew them (rng 123)
from loupe_trainer.detect.augment import _colour, _rot90, _hflip
rng = np.random.default_rng(123); aug = []
for rgb, raw, lab in val:
    for k in range(8):
        s = float(np.exp(rng.uniform(-np.log(1.35), 0))); H, W = rgb.shape[:2]
        im = cv2.resize(rgb, (max(1, int(round(W * s))), max(1, int(round(H * s)))), interpolation=cv2.INTER_AREA)
        canvas = np.empty_like(rgb); canvas[:] = rgb.reshape(-1, 3).mean(0).astype(np.uint8)
        oy, ox = int(rng.integers(0, H - im.shape[0] + 1)), int(rng.integers(0, W - im.shape[1] + 1))
        canvas[oy:oy + im.shape[0], ox:ox + im.shape[1]] = im
        bx = raw * s + np.array([ox, oy, ox, oy], np.float32)
        for _ in range(int(rng.integers(4))):
            canvas, bx = _rot90(canvas, bx)
        if rng.random() < 0.5:
            canvas, bx = _hflip(canvas, bx)
        aug.append(np.ascontiguousarray(_colour(rng, np.ascontiguousarray(canvas), 0.25)))
imgs["aug"] = aug
from loupe_dl_detect.data import load
for name in ("test", "dev", "dev2"):
    ds2 = scan(f"/tmp/h17s15/{'bench' if name == 'test' else name}", classes=classes)
    imgs[name] = [load(s)[0] for s in ds2.test]
for g in ("held", "aug", "test", "dev", "dev2"):
    assert len(imgs[g]) == len(res[g]["base"]), g
# sanity: the cached ground truth matches the regenerated views
assert all(np.allclose(r["gt"][0], bx) for r, (img, bx, lab) in zip(res["train"]["base"], imgs["train"]))

VAR = {"base": {}, "m1": {"margin": 1.0}, "m125": {"margin": 1.25}, "m6": {"margin": 0.6}, "e4": {"epochs": 4}, "s100": {"seed": 100}, "jits100": {"n_jitter": 4, "amount": 0.25, "seed": 100}, "jit": {"n_jitter": 4, "amount": 0.25},
       "c64": {"crop": 64}, "c80": {"crop": 80}, "c96": {"crop": 96}, "c64s100": {"crop": 64, "seed": 100}, "c64e4": {"crop": 64, "epochs": 4},
       "c64m1": {"crop": 64, "margin": 1.0}, "asp": {"asp": (0.25, 1.1)}, "asp5": {"asp": (0.5, 1.25)}, "c64asp": {"crop": 64, "asp": (0.25, 1.1)},
       "s200": {"seed": 200}, "c64s200": {"crop": 64, "seed": 200}, "c80s100": {"crop": 80, "seed": 100}, "c80s200": {"crop": 80, "seed": 200},
       "m1jit": {"margin": 1.0, "n_jitter": 4, "amount": 0.25}, "bgw": {"bgw": 0.5}, "pos4": {"pos": 0.4}, "m1pos4": {"margin": 1.0, "pos": 0.4}}
VAR["c80asp"] = {"crop": 80, "asp": (0.25, 1.1)}
VAR["c80asps100"] = {"crop": 80, "asp": (0.25, 1.1), "seed": 100}
VAR["c80asps200"] = {"crop": 80, "asp": (0.25, 1.1), "seed": 200}
VAR["c80asp5"] = {"crop": 80, "asp": (0.5, 1.25)}
VAR["c80asp5s100"] = {"crop": 80, "asp": (0.5, 1.25), "seed": 100}
VAR["c80asp5s200"] = {"crop": 80, "asp": (0.5, 1.25), "seed": 200}
VAR["c80m1"] = {"crop": 80, "margin": 1.0}
VAR["c80m1s100"] = {"crop": 80, "margin": 1.0, "seed": 100}
VAR["c80m1s200"] = {"crop": 80, "margin": 1.0, "seed": 200}
for k_ in (2, 3):
    for sfx, sd in [("", 0), ("s100", 100), ("s200", 200)]:
        VAR[f"soup{k_}{sfx}"] = {"crop": 80, "soup": k_, "seed": sd}
        VAR[f"soup{k_}e1{sfx}"] = {"crop": 80, "soup": k_, "seed": sd, "epochs": 1}
import copy
def fit_soup(crops, labels, C, n_images, epochs, seed, k):
    """fit_verifier with k fine-tunings (fine-tuning seeds seed, seed + 1000, ...) from the same probe, their
    weights averaged (a 'model soup': BatchNorm frozen, the same start, so the average is one network)."""
    from loupe_trainer.classify.engine import _probe_wd, fit_linear
    torch.manual_seed(seed)
    net = V.Verifier(V.STAGES, C + 1)
    s4 = V.stage4_maps(net, crops)
    with torch.no_grad():
        feats = torch.cat([V.head_features(net, s4[i:i + 512]) for i in range(0, len(s4), 512)])
    fit_linear(net.fc, feats, torch.from_numpy(labels), _probe_wd(n_images), 0.0)
    start = copy.deepcopy(net.state_dict()); sds = []
    for j in range(k):
        net.load_state_dict(start)
        V.finetune(net, s4, labels, epochs, seed + 1000 * j)
        sds.append(copy.deepcopy(net.state_dict()))
    net.load_state_dict({n: (sum(sd[n].float() for sd in sds) / k).to(sds[0][n].dtype) if sds[0][n].is_floating_point()
                         else sds[0][n] for n in sds[0]})
    net.eval()
    with torch.no_grad():
        feats = torch.cat([V.head_features(net, s4[i:i + 512]) for i in range(0, len(s4), 512)])
        acc = float((net.fc(feats).argmax(1).numpy() == labels).mean())
    return net, acc
orig_ce = F.cross_entropy
_orig_crop = V.crop_boxes
def crop_asp(k, mmax):
    def f(img, boxes, side, margin, min_px=8.0, out=None):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        res = np.empty((len(boxes), side, side, 3), np.uint8)
        for i, b in enumerate(boxes):
            w, h = max(b[2] - b[0], 1e-3), max(b[3] - b[1], 1e-3)
            a = max(w, h) / min(w, h)
            m = min(margin + k * (a - 1), max(mmax, margin))
            res[i] = _orig_crop(img, b[None], side, m, min_px)[0]
        return res
    return f
for var in sys.argv[3:]:
    o = VAR[var]; margin = o.get("margin", V.MARGIN)
    c0 = time.process_time()
    it = iter(res["train"]["base"])
    def propose(img):
        cb, cs, cl = next(it)["cand"]
        return types.SimpleNamespace(boxes=cb, scores=cs, labels=cl)
    V.POS_IOU = o.get("pos", 0.5)
    vseed = seed + o.get("seed", 0)
    rng = np.random.default_rng(vseed)
    CR = o.get("crop", CROP)
    V.crop_boxes = crop_asp(*o["asp"]) if "asp" in o else _orig_crop
    crop_boxes = V.crop_boxes
    crops, labels, kinds = training_crops(propose, imgs["train"], rng, crop=CR, margin=margin, max_candidates=16,
                                          n_jitter=o.get("n_jitter", V.N_JITTER), jitter_amount=o.get("amount", V.JITTER))
    if "bgw" in o:
        w = torch.ones(C + 1); w[0] = o["bgw"]
        F.cross_entropy = lambda x, y, **k: orig_ce(x, y, weight=w, **k)
    if "soup" in o:
        net, acc = fit_soup(crops, labels, C, len(train), o.get("epochs", p["verify_epochs"]), vseed, o["soup"])
    else:
        net, acc = fit_verifier(crops, labels, C, len(train), o.get("epochs", p["verify_epochs"]), vseed)
    F.cross_entropy = orig_ce
    c1 = time.process_time()
    sel = {}; pbg = {g: [] for g in ("held", "aug", "test", "dev", "dev2")}
    with torch.no_grad():
        for g in ("held", "aug", "test", "dev", "dev2"):
            preds = []
            for img, r in zip(imgs[g], res[g]["base"]):
                cb, cs, cl = r["cand"]
                if len(cs):
                    pr = net(to_input(crop_boxes(img, cb, CR, margin, MIN_BOX_PX))).numpy()
                    sc, lab = relabel(cs, pr); preds.append((cb, sc, lab)); pbg[g].append(pr[:, 0])
                else:
                    preds.append((cb, cs.astype(np.float32), np.zeros(0, np.int64))); pbg[g].append(np.zeros(0))
            sel[g] = (preds, gts(res[g]["base"]))
    HA = (sel["held"][0] + sel["aug"][0], sel["held"][1] + sel["aug"][1])
    se = [signed_err(*HA, t) for t in THRESHOLDS]; t = THRESHOLDS[int(np.argmin(np.abs(se)))]
    accs = [acc_at(*sel[s], C, t) for s in ("test", "dev", "dev2")]
    best = [max(acc_at(*sel[s], C, u) for u in THRESHOLDS) for s in ("test", "dev", "dev2")]
    rej = extra = 0
    for s_ in ("test", "dev", "dev2"):
        for (cb, sc, lab), (gb, gl), q in zip(*sel[s_], pbg[s_]):
            if not len(cb):
                continue
            iou = iou_matrix(gb, cb) if len(gb) else np.zeros((0, len(cb)))
            for j in range(len(gb)):
                k = int(iou[j].argmax())
                rej += bool(iou[j, k] >= 0.3 and sc[k] < t and q[k] > 0.5)
            kept = sc >= t
            extra += int((kept & ((iou.max(0) if len(gb) else np.zeros(len(cb))) < 0.3)).sum())
    print(bpath.name, f"rejected-as-background {rej} extras {extra}", f"{var:6s} crops {len(crops)} trainacc {acc:.3f} fit {c1 - c0:.0f} CPU-s thr {t:<6} augbal "
          + " / ".join(f"{x:.2f}" for x in accs) + f" mean {np.mean(accs):.3f}  best "
          + " / ".join(f"{x:.2f}" for x in best) + f" ({np.mean(best):.3f})", flush=True)
