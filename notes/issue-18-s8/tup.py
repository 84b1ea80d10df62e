import io, time, statistics, warnings, torch, numpy as np, onnxruntime as ort, torch.nn.functional as F
from loupe_trainer.anomaly.model import bilinear_matrix
class R(torch.nn.Module):
    def forward(self, m): return F.interpolate(m, size=(256, 256), mode="bilinear", align_corners=False)
class Mm(torch.nn.Module):
    def forward(self, m): return bilinear_matrix(256, 32) @ m @ bilinear_matrix(256, 32).t()
x = np.random.rand(1, 1, 32, 32).astype(np.float32)
S = {}
for n, mod in (("resize", R()), ("matmul", Mm())):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore"); torch.onnx.export(mod, (torch.from_numpy(x),), f, input_names=["m"], output_names=["y"], opset_version=17, dynamo=False)
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    S[n] = ort.InferenceSession(f.getvalue(), so, providers=["CPUExecutionProvider"])
print(np.abs(S["resize"].run(None, {"m": x})[0] - S["matmul"].run(None, {"m": x})[0]).max())
t = {n: [] for n in S}
for r in range(400):
    for n, s in S.items():
        c0 = time.process_time(); s.run(None, {"m": x}); t[n].append((time.process_time() - c0) * 1e3)
for n in S: print(n, f"{statistics.median(t[n]):.3f} ms cpu")
