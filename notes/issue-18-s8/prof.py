import sys, json, glob, collections, time
import numpy as np, onnxruntime as ort
path = sys.argv[1]; threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
so.enable_profiling = True; so.profile_file_prefix = "/tmp/h18s/ortprof"
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
xs = [rng.uniform(0, 255, (1, 3, 256, 256)).astype(np.float32) for _ in range(5)]
runs = 0
for r in range(6):
    for x in xs: s.run(None, {"image": x}); runs += 1
f = s.end_profiling()
ev = json.load(open(f))
tot = collections.Counter()
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        op = e["args"].get("op_name"); tot[(op, e["name"][:-12])] += e["dur"]
byop = collections.Counter()
for (op, n), d in tot.items(): byop[op] += d
print(f"total per run {sum(byop.values())/runs/1000:.3f} ms")
for op, d in byop.most_common(): print(f"  {op:24s} {d/runs/1000:.3f}")
print("top nodes:")
for (op, n), d in tot.most_common(12): print(f"  {op:20s} {n[:60]:60s} {d/runs/1000:.3f}")
