"""ONNX graph helpers shared by the optimisers: which node belongs to which part of the backbone.

The trainers export through ``torch.onnx.export`` (TorchScript), which names every
node after the module that produced it (``/net/backbone/_blocks.3/_expand_conv/Conv``,
``/features/backbone/_conv_stem/Pad``). ``node_groups`` maps each node to a
*group*: ``stem``, ``block0`` .. ``block15``, ``head`` for the EfficientNet-Lite0
trunk, and ``other`` for everything else (input normalisation, pooling, the
classifier, and for anomaly graphs the feature aggregation, the nearest-neighbour
distance, the position normalisation and the smoothing). Nodes the exporter
names at the backbone level (the ReLU6 ``Clip`` after the stem and the head)
join the group of the node that feeds them.

The optimisers only ever touch backbone groups; ``other`` stays in float32.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

_BLOCK = re.compile(r"/_blocks\.(\d+)/")

#: groups in network order (what sensitivity tables are sorted by)
GROUP_ORDER = ["stem"] + [f"block{i}" for i in range(16)] + ["head"]


def _own_group(name: str) -> str | None:
    m = _BLOCK.search(name)
    if m:
        return f"block{int(m.group(1))}"
    if "/_conv_stem/" in name:
        return "stem"
    if "/_conv_head/" in name:
        return "head"
    return None


def node_groups(model) -> "OrderedDict[str, str]":
    """node name -> group (``stem``, ``blockN``, ``head`` or ``other``), in graph order."""
    producer: dict[str, str] = {}
    out: OrderedDict[str, str] = OrderedDict()
    for node in model.graph.node:
        g = _own_group(node.name)
        if g is None and node.op_type in ("Clip", "Relu") and node.input:
            g = out.get(producer.get(node.input[0], ""), None)
            g = g if g not in (None, "other") else None
        out[node.name] = g or "other"
        for o in node.output:
            producer[o] = node.name
    return out


def backbone_groups(model) -> list[str]:
    present = set(node_groups(model).values())
    return [g for g in GROUP_ORDER if g in present]


def nodes_in(model, groups) -> list[str]:
    groups = set(groups)
    return [n for n, g in node_groups(model).items() if g in groups]


def ensure_node_names(model) -> None:
    """Give unnamed nodes unique names (the quantiser addresses nodes by name)."""
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def session(path: str | Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_all(sess, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: x}) for x in inputs]


def compare_outputs(ref: list[list[np.ndarray]], got: list[list[np.ndarray]], names: list[str]) -> dict[str, dict]:
    """Per output: mean relative L2 error, max abs difference (and argmax agreement for ``logits``)."""
    out: dict[str, dict] = {}
    for k, name in enumerate(names):
        rel, mx = [], 0.0
        for r, g in zip(ref, got):
            a, b = np.asarray(r[k], np.float64), np.asarray(g[k], np.float64)
            rel.append(float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)))
            mx = max(mx, float(np.abs(a - b).max()) if a.size else 0.0)
        d = {"rel_l2": float(np.mean(rel)) if rel else 0.0, "max_abs_diff": mx}
        if name == "logits":
            d["argmax_agreement"] = float(np.mean([np.argmax(r[k]) == np.argmax(g[k]) for r, g in zip(ref, got)]))
        out[name] = d
    return out


def mean_rel_l2(cmp: dict[str, dict]) -> float:
    return float(np.mean([v["rel_l2"] for v in cmp.values()])) if cmp else 0.0
