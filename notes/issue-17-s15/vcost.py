"""ONNX Runtime time of the verifier graph for 8 crops at 48 / 64 / 80 px, 1 thread, interleaved (median of 200)."""
import time, tempfile, numpy as np, torch
from pathlib import Path
from host import create_session
from loupe_trainer.detect.verifier import Verifier, export_verifier
torch.manual_seed(0)
net = Verifier(n_out=5).eval()
sess = {}
tmp = Path(tempfile.mkdtemp())
for c in (48, 64, 80, 96):
    export_verifier(net, c, tmp / f"v{c}.onnx"); sess[c] = create_session(tmp / f"v{c}.onnx", 1)
x = {c: np.random.default_rng(0).uniform(0, 255, (8, 3, c, c)).astype(np.float32) for c in sess}
t = {c: [] for c in sess}
for rep in range(200):
    for c, s in sess.items():
        t0 = time.perf_counter(); s.run(["probs"], {s.get_inputs()[0].name: x[c]}); t[c].append(time.perf_counter() - t0)
for c in sess:
    print(c, f"median {1000*np.median(t[c]):.2f} ms  p25 {1000*np.percentile(t[c],25):.2f}  ratio to 48 {np.median(t[c])/np.median(t[48]):.2f} (p25 ratio {np.percentile(t[c],25)/np.percentile(t[48],25):.2f})")
