"""Whole-graph A/B timing: PatchCore graphs exported from the pretrained Lite0 trunk with the bank, mu and sd
of a trained default bundle (exact search) and with two-stage searches; bare ORT sessions, interleaved.
usage: tgraph.py BUNDLE THREADS N SPEC...   (SPEC = d,G ; 0,1 = exact)"""
import sys, time, statistics, glob, tempfile, json
from pathlib import Path
import numpy as np, onnx, torch
from onnx import numpy_helper as nh
from loupe_trainer.backbone import build_backbone
from loupe_trainer.anomaly.model import PatchFeatures, PatchCore
from loupe_trainer.common import export_onnx, ort_session
from loupe_dl_anomaly.data import read_image, prepare
bundle, threads, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
init = {i.name: nh.to_array(i) for i in onnx.load(f"{bundle}/model.onnx").graph.initializer}
bank = torch.from_numpy(-0.5 * init["bank_tn2"].T.copy())
mu, sd = torch.from_numpy(init["mu"]), torch.from_numpy(init["sd"])
feats = PatchFeatures(build_backbone(), ("stage3", "stage4"), 1).eval()
tmp = Path(tempfile.mkdtemp(prefix="h18s_tg_"))
imgs = [prepare(read_image(p), (256, 256)) for p in sorted(glob.glob("/tmp/h18b/data/hard_seed0/metal/test/*/*.png"))[::4][:20]]
S = {}
ref = None
import cv2
raw = [read_image(p) for p in sorted(glob.glob("/tmp/h18b/data/hard_seed0/metal/test/*/*.png"))[::4][:20]]
feeds = {}
for spec in sys.argv[4:]:
    if spec == "old":
        S[spec] = ort_session(f"{bundle}/model.onnx", threads); feeds[spec] = imgs; continue
    d, G, size, ch = (int(v) for v in (spec.split(",") + ["256", "128"])[:4])
    h = size // 8
    mu_s = torch.nn.functional.interpolate(mu, size=(h, h), mode="bilinear") if h != mu.shape[-1] else mu
    sd_s = torch.nn.functional.interpolate(sd, size=(h, h), mode="bilinear") if h != sd.shape[-1] else sd
    m = PatchCore(feats, bank, 0.5, mu_s, sd_s, search_dim=d, search_groups=G).eval()
    if ch != 128 and m.search is not None:
        from loupe_trainer.anomaly.model import TwoStageSearch
        m.search = TwoStageSearch(m.bank, d, G, chunk=ch)
    path = export_onnx(m, torch.zeros(1, 3, size, size), tmp / f"m_{d}_{G}_{size}_{ch}.onnx", ["image"], ["anomaly_map", "score"], fold_pads=True)
    s = ort_session(path, threads)
    feeds[spec] = [prepare(im, (size, size)) for im in raw]
    with torch.no_grad():
        a_t, s_t = m(torch.from_numpy(feeds[spec][0]))
    o = s.run(None, {"image": feeds[spec][0]})
    print(spec, "parity map", float(np.abs(o[0] - a_t.numpy()).max()), "score", float(np.abs(o[1] - s_t.numpy()).max()), flush=True)
    S[spec] = s
t = {n: [] for n in S}; c = {n: [] for n in S}
for r in range(N + 2):
    for n, s in S.items():
        x = feeds[n][r % len(imgs)]
        t0, c0 = time.perf_counter(), time.process_time(); s.run(None, {"image": x})
        if r >= 2: t[n].append((time.perf_counter() - t0) * 1e3); c[n].append((time.process_time() - c0) * 1e3)
b = sys.argv[4]
for n in S:
    print(f"{threads}t {n:8s} wall {statistics.median(t[n]):7.2f} ms ({statistics.median(t[n])/statistics.median(t[b]):.3f})"
          f"  cpu {statistics.median(c[n]):7.2f} ms ({statistics.median(c[n])/statistics.median(c[b]):.3f})")
