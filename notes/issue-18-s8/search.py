"""Timing of whole nearest-neighbour search subgraphs (M=1024 patches, K=2048 bank, D=120) in ORT."""
import sys, time, statistics
import numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, TensorProto as T, numpy_helper as nh
threads = int(sys.argv[1]); N = int(sys.argv[2]) if len(sys.argv) > 2 else 100
rng = np.random.default_rng(0)
M, K, D = 1024, 2048, 120
bank = rng.standard_normal((K, D)).astype(np.float32)
x = rng.standard_normal((M, D)).astype(np.float32)
def I(a, n): return nh.from_array(np.ascontiguousarray(a), n)
def model(nodes, inits, outs=("d",)):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [M, D])],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)]); m.ir_version = 8
    return m.SerializeToString()
def sess(b):
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(b, so, providers=["CPUExecutionProvider"])
bt = (-2 * bank).T; bsq = (bank * bank).sum(1)
def exact(nchunk, aug):
    nodes = []; inits = [I(bt, "B"), I(bsq, "c"), I(np.array([1], np.int64), "ax1")]
    if aug:
        inits = [I(np.vstack([bt, bsq[None]]), "Ba"), I(np.ones((M, 1), np.float32), "one"), I(np.array([1], np.int64), "ax1")]
        nodes.append(h.make_node("Concat", ["x", "one"], ["xa"], axis=1)); src = "xa"
    else:
        src = "x"
    parts = [src] if nchunk == 1 else [f"xs{i}" for i in range(nchunk)]
    if nchunk > 1:
        nodes.append(h.make_node("Split", [src], parts, axis=0, num_outputs=nchunk) if False else
                     h.make_node("Split", [src, "splits"], parts, axis=0))
        inits.append(I(np.full(nchunk, M // nchunk, np.int64), "splits"))
    mins = []
    for i, p in enumerate(parts):
        if aug:
            nodes.append(h.make_node("MatMul", [p, "Ba"], [f"g{i}"]))
        else:
            nodes.append(h.make_node("MatMul", [p, "B"], [f"mm{i}"])); nodes.append(h.make_node("Add", [f"mm{i}", "c"], [f"g{i}"]))
        nodes.append(h.make_node("ReduceMin", [f"g{i}"], [f"m{i}"], axes=[1], keepdims=0)); mins.append(f"m{i}")
    nodes.append(h.make_node("Concat", mins, ["mn"], axis=0) if len(mins) > 1 else h.make_node("Identity", mins, ["mn"]))
    nodes += [h.make_node("Mul", ["x", "x"], ["xx"]), h.make_node("ReduceSum", ["xx", "ax1"], ["xn"], keepdims=0),
              h.make_node("Add", ["mn", "xn"], ["d2"]), h.make_node("Sqrt", ["d2"], ["d"])]
    return model(nodes, inits)
def twostage(dc, nchunk, k=1):
    # PCA of the bank: rotate, coarse in the first dc dims
    mu = bank.mean(0); w, v = np.linalg.eigh(np.cov((bank - mu).T)); P = v[:, ::-1][:, :dc].astype(np.float32)
    pb = bank @ P
    inits = [I(P, "P"), I((-2 * pb).T, "Bc"), I((pb * pb).sum(1), "cc"), I(bank, "bank"), I(np.array([1], np.int64), "ax1")]
    nodes = [h.make_node("MatMul", ["x", "P"], ["xp"])]
    parts = ["xp"] if nchunk == 1 else [f"xs{i}" for i in range(nchunk)]
    if nchunk > 1:
        nodes.append(h.make_node("Split", ["xp", "splits"], parts, axis=0)); inits.append(I(np.full(nchunk, M // nchunk, np.int64), "splits"))
    idx = []
    for i, p in enumerate(parts):
        nodes += [h.make_node("MatMul", [p, "Bc"], [f"mm{i}"]), h.make_node("Add", [f"mm{i}", "cc"], [f"g{i}"])]
        if k == 1:
            nodes.append(h.make_node("ArgMin", [f"g{i}"], [f"a{i}"], axis=1, keepdims=0))
        else:
            inits.append(I(np.array([k], np.int64), f"k{i}"))
            nodes.append(h.make_node("TopK", [f"g{i}", f"k{i}"], [f"v{i}", f"a{i}"], axis=1, largest=0, sorted=0))
        idx.append(f"a{i}")
    nodes.append(h.make_node("Concat", idx, ["ai"], axis=0) if len(idx) > 1 else h.make_node("Identity", idx, ["ai"]))
    nodes.append(h.make_node("Gather", ["bank", "ai"], ["nb"], axis=0))  # (M, D) or (M, k, D)
    if k == 1:
        nodes += [h.make_node("Sub", ["x", "nb"], ["df"])]
        nodes += [h.make_node("Mul", ["df", "df"], ["dd"]), h.make_node("ReduceSum", ["dd", "ax1"], ["d2"], keepdims=0),
                  h.make_node("Sqrt", ["d2"], ["d"])]
    else:
        inits.append(I(np.array([1], np.int64), "one"))
        nodes += [h.make_node("Unsqueeze", ["x", "one"], ["x3"]), h.make_node("Sub", ["x3", "nb"], ["df"]),
                  h.make_node("Mul", ["df", "df"], ["dd"]), I and h.make_node("ReduceSum", ["dd", "two"], ["d2k"], keepdims=0),
                  h.make_node("ReduceMin", ["d2k"], ["d2"], axes=[1], keepdims=0), h.make_node("Sqrt", ["d2"], ["d"])]
        inits.append(I(np.array([2], np.int64), "two"))
    return model(nodes, inits)
cases = {"exact": exact(1, False), "exact aug": exact(1, True), "exact c4": exact(4, False), "exact c8": exact(8, False),
         "exact c16": exact(16, False), "exact aug c8": exact(8, True)}
for dc in (24, 32, 48):
    cases[f"2st d{dc}"] = twostage(dc, 1); cases[f"2st d{dc} c8"] = twostage(dc, 8)
cases["2st d32 c8 k4"] = twostage(32, 8, 4)
S = {n: sess(b) for n, b in cases.items()}
ref = np.sqrt(np.maximum(((x[:, None, :] - bank[None]) ** 2).sum(-1).min(1), 0))
for n, s in S.items():
    out = s.run(None, {"x": x})[0]
    if n.startswith("exact"): assert np.allclose(out, ref, atol=1e-3), n
t = {n: [] for n in S}
for r in range(N + 3):
    for n, s in S.items():
        t0 = time.perf_counter(); s.run(None, {"x": x}); dt = time.perf_counter() - t0
        if r >= 3: t[n].append(dt * 1e3)
b0 = statistics.median(t["exact"])
for n in S: print(f"{threads}t {n:16s} {statistics.median(t[n]):7.3f} ms  {statistics.median(t[n])/b0:.3f}")
