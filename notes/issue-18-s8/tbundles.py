"""Bare ONNX Runtime session per image for trained bundles, interleaved in one process; median wall and CPU ms.
usage: tbundles.py THREADS N BUNDLE...   (the first bundle is the reference of the ratios)"""
import sys, time, statistics, glob
from host import Bundle, create_session
from loupe_dl_anomaly.data import read_image, prepare
threads, N, bundles = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
raw = [read_image(p) for p in sorted(glob.glob("/tmp/h18b/data/hard_seed0/metal/test/*/*.png"))[::4][:20]]
S = {}
for b in bundles:
    B = Bundle.load(b); size = tuple(B.meta["input_size"])
    S[b] = (create_session(B.model_file, threads), [prepare(im, size) for im in raw])
t = {b: [] for b in bundles}; c = {b: [] for b in bundles}
for r in range(N + 3):
    for b, (s, xs) in S.items():
        x = xs[r % len(xs)]
        t0, c0 = time.perf_counter(), time.process_time(); s.run(None, {"image": x})
        if r >= 3: t[b].append((time.perf_counter() - t0) * 1e3); c[b].append((time.process_time() - c0) * 1e3)
w0, c0 = statistics.median(t[bundles[0]]), statistics.median(c[bundles[0]])
for b in bundles:
    w, cc = statistics.median(t[b]), statistics.median(c[b])
    print(f"{threads}t wall {w:7.2f} ms ({w / w0:.3f})  cpu {cc:7.2f} ms ({cc / c0:.3f})  {b}")
