"""Micro-timing of search ops in ORT, interleaved, median of N runs."""
import sys, time, statistics
import numpy as np, onnx, onnxruntime as ort
from onnx import helper as h, TensorProto as T, numpy_helper as nh
threads = int(sys.argv[1]); N = int(sys.argv[2]) if len(sys.argv) > 2 else 100
rng = np.random.default_rng(0)
M, K = 1024, 2048
def model(nodes, inputs, outputs, inits):
    g = h.make_graph(nodes, "g", inputs, outputs, inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)]); m.ir_version = 8
    return m.SerializeToString()
def sess(b):
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(b, so, providers=["CPUExecutionProvider"])
cases = {}
for d in (24, 32, 48, 64, 120):
    B = nh.from_array(rng.standard_normal((d, K)).astype(np.float32), "B")
    bias = nh.from_array(rng.standard_normal(K).astype(np.float32), "c")
    cases[f"gemm d{d}"] = (sess(model([h.make_node("MatMul", ["x", "B"], ["y"]), h.make_node("Add", ["y", "c"], ["z"])],
        [h.make_tensor_value_info("x", T.FLOAT, [M, d])], [h.make_tensor_value_info("z", T.FLOAT, [M, K])], [B, bias])),
        {"x": rng.standard_normal((M, d)).astype(np.float32)})
X = {"x": rng.standard_normal((M, K)).astype(np.float32)}
vi = [h.make_tensor_value_info("x", T.FLOAT, [M, K])]
cases["reducemin"] = (sess(model([h.make_node("ReduceMin", ["x"], ["y"], axes=[1], keepdims=0)], vi,
    [h.make_tensor_value_info("y", T.FLOAT, [M])], [])), X)
cases["argmin"] = (sess(model([h.make_node("ArgMin", ["x"], ["y"], axis=1, keepdims=0)], vi,
    [h.make_tensor_value_info("y", T.INT64, [M])], [])), X)
for k in (1, 2, 4, 8):
    kk = nh.from_array(np.array([k], np.int64), "k")
    cases[f"topk{k}"] = (sess(model([h.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=0, sorted=0)], vi,
        [h.make_tensor_value_info("v", T.FLOAT, [M, k]), h.make_tensor_value_info("i", T.INT64, [M, k])], [kk])), X)
t = {n: [] for n in cases}
for r in range(N + 3):
    for n, (s, f) in cases.items():
        t0 = time.perf_counter(); s.run(None, f); dt = time.perf_counter() - t0
        if r >= 3: t[n].append(dt * 1e3)
for n in cases: print(f"{threads}t {n:12s} {statistics.median(t[n]):7.3f} ms")
