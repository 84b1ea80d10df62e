"""Dump patch features (the search's input) and the bank of default bundles for offline recall studies."""
import sys, glob
import numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper as nh
sys.path.insert(0, "/work/main/plugins/dl_anomaly")
from loupe_dl_anomaly.data import read_image, prepare
for run in ("mb2048", "mb2048s1"):
    for cat in ("metal", "wood", "tissue", "brick"):
        b = f"/tmp/a18/{run}/hard_{cat}.bundle/model.onnx"
        m = onnx.load(b)
        m.graph.output.append(onnx.helper.make_tensor_value_info("/Reshape_output_0", onnx.TensorProto.FLOAT, None))
        so = ort.SessionOptions(); so.intra_op_num_threads = 1
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        init = {i.name: nh.to_array(i) for i in m.graph.initializer}
        bank = -0.5 * init["bank_tn2"].T
        seed = "1" if run.endswith("s1") else "0"
        paths = sorted(glob.glob(f"/tmp/h18b/data/hard_seed{seed}/{cat}/test/*/*.png"))
        F = []
        for p in paths:
            F.append(s.run(["/Reshape_output_0"], {"image": prepare(read_image(p), (256, 256))})[0])
        np.savez(f"/tmp/h18s/f_{run}_{cat}.npz", feats=np.stack(F), bank=bank, paths=np.array(paths))
        print(run, cat, len(F), bank.shape, flush=True)
