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

import numpy as np

from ..common import ort_session as session  # noqa: F401  (the optimisers time and compare with it)

_BLOCK = re.compile(r"/_blocks\.(\d+)/")

#: groups in network order (what sensitivity tables are sorted by)
GROUP_ORDER = ["stem"] + [f"block{i}" for i in range(21)] + ["head"]   # Lite0: 16 blocks, Lite1/Lite2: 21


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


def fold_pads(model) -> int:
    """Fold zero ``Pad`` nodes into the ``Conv`` they feed (ONNX ``Conv.pads`` takes asymmetric padding).

    The trainers' TF-'SAME' convolutions export as ``Pad`` + ``Conv``; once shape inference and constant
    folding (``quant_pre_process``) have turned the pad amounts into initializers, each pair becomes one
    ``Conv``. On ONNX Runtime's CPU provider this removes a layout reorder around every padded convolution
    (float and int8 alike). The result is numerically identical. Returns the number of folded pads.
    """
    from onnx import helper, numpy_helper

    from ..common import merge_pad_into_conv

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    drop = []
    for n in g.node:
        if n.op_type != "Pad" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        mode = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "mode"), b"constant")
        if mode not in (b"constant", "constant"):
            continue
        if len(n.input) > 2 and n.input[2]:
            v = inits.get(n.input[2])
            if v is None or float(numpy_helper.to_array(v).reshape(-1)[0]) != 0.0:
                continue
        if len(n.input) > 3 and n.input[3]:
            continue  # axes given: leave it
        us = users.get(n.output[0], [])
        if len(us) != 1 or us[0].op_type != "Conv" or n.output[0] in outputs:
            continue
        conv = us[0]
        if any(a.name == "auto_pad" and helper.get_attribute_value(a) not in (b"NOTSET", "NOTSET")
               for a in conv.attribute):
            continue
        if merge_pad_into_conv(n, conv, numpy_helper.to_array(inits[n.input[1]])):
            drop.append(n)
    for n in drop:
        g.node.remove(n)
    return len(drop)


def _index(g):
    """(producer of each tensor, consumers of each tensor, initializers by name) of an ONNX graph."""
    prod = {o: n for n in g.node for o in n.output}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    return prod, users, {i.name: i for i in g.initializer}


def _replace(g, old: list, new: list, anchor, initializers: list) -> None:
    """Swap the nodes ``old`` for ``new`` (placed where ``anchor`` was, keeping topological order) and drop the
    ``initializers`` nothing reads any more."""
    nodes = list(g.node)
    at = sum(1 for n in nodes[:nodes.index(anchor)] if all(n is not o for o in old))
    keep = [n for n in nodes if all(n is not o for o in old)]
    del g.node[:]
    g.node.extend(keep[:at] + new + keep[at:])
    still = {i for n in g.node for i in n.input}
    for init in initializers:
        if init.name not in still:
            g.initializer.remove(init)


def _const_value(model, name: str):
    from onnx import numpy_helper

    for i in model.graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def fuse_nn_distance(model) -> dict | None:
    """Restructure the anomaly graph's nearest-neighbour distance, in float32, to one GEMM and one min.

    The exported graph computes ``d2 = (|x|^2 - 2 x.B^T) + |b|^2`` over the whole (patches x bank) matrix,
    then ``min`` over the bank: two extra full passes over that matrix (the ``Sub`` and the ``Add``). Since
    ``|x|^2`` does not depend on the bank entry, ``min_k d2 = |x|^2 + min_k (|b_k|^2 - 2 x.b_k)``, and the
    bracket is one matrix product of ``[x, 1]`` with ``[-2 B^T ; |b|^2]``. Same arithmetic in float32 (the
    sums are only ordered differently); nothing is quantised. Returns what was done, or ``None`` when the
    pattern is not found (the graph is left unchanged).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    prod, users, inits = _index(g)
    for rm in list(g.node):
        if rm.op_type != "ReduceMin":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in rm.attribute}
        if list(attrs.get("axes", [])) not in ([1], [-1]) or attrs.get("keepdims", 1) != 0 or len(rm.input) > 1:
            continue
        add = prod.get(rm.input[0])
        if add is None or add.op_type != "Add":
            continue
        bsq_name = next((i for i in add.input if i in inits), None)
        sub = next((prod.get(i) for i in add.input if i != bsq_name and i in prod), None)
        if bsq_name is None or sub is None or sub.op_type != "Sub":
            continue
        s_node, q = prod.get(sub.input[0]), prod.get(sub.input[1])
        if s_node is None or q is None or s_node.op_type != "ReduceSum" or q.op_type != "Mul":
            continue
        p = next((prod.get(i) for i in q.input if i in prod and prod[i].op_type == "MatMul"), None)
        c_name = next((i for i in q.input if p is None or i != p.output[0]), None)
        c = _const_value(model, c_name) if c_name else None
        if p is None or c is None or c.size != 1 or p.input[1] not in inits:
            continue
        r_name = p.input[0]
        bt = numpy_helper.to_array(inits[p.input[1]]).astype(np.float32)      # (D, K)
        bsq = numpy_helper.to_array(inits[bsq_name]).astype(np.float32).reshape(1, -1)  # (1, K)
        if bt.ndim != 2 or bsq.shape[1] != bt.shape[1]:
            continue
        if any(len(users.get(t, [])) != 1 for t in (add.output[0], sub.output[0], q.output[0], p.output[0])):
            continue
        if len(users.get(s_node.output[0], [])) != 1:
            continue
        w = np.concatenate([-float(c.reshape(-1)[0]) * bt, bsq], axis=0).astype(np.float32)  # (D+1, K)
        pre = rm.name or "nn"
        names = {k: f"{pre}/fused_{k}" for k in ("w", "zero", "one", "z", "ones", "xa", "mm", "min", "ax", "xsq")}
        g.initializer.extend([numpy_helper.from_array(w, names["w"]),
                              numpy_helper.from_array(np.array(0.0, np.float32), names["zero"]),
                              numpy_helper.from_array(np.array(1.0, np.float32), names["one"]),
                              numpy_helper.from_array(np.array([1], np.int64), names["ax"])])
        s_out = s_node.output[0]  # (M, 1) = |x|^2
        new = [
            helper.make_node("Mul", [s_out, names["zero"]], [names["z"]], name=f"{pre}/fused_zeros"),
            helper.make_node("Add", [names["z"], names["one"]], [names["ones"]], name=f"{pre}/fused_ones"),
            helper.make_node("Concat", [r_name, names["ones"]], [names["xa"]], axis=1, name=f"{pre}/fused_concat"),
            helper.make_node("MatMul", [names["xa"], names["w"]], [names["mm"]], name=f"{pre}/fused_matmul"),
            helper.make_node("ReduceMin", [names["mm"]], [names["min"]], axes=[1], keepdims=0,
                             name=f"{pre}/fused_min"),
            helper.make_node("Squeeze", [s_out, names["ax"]], [names["xsq"]], name=f"{pre}/fused_squeeze"),
            helper.make_node("Add", [names["min"], names["xsq"]], [rm.output[0]], name=f"{pre}/fused_add"),
        ]
        old = [q, p, sub, add, rm]
        _replace(g, old, new, rm, [inits[n] for n in (p.input[1], bsq_name) if n in inits])
        return {"bank": int(bt.shape[1]), "dim": int(bt.shape[0]), "removed": [n.name for n in old],
                "note": "min_k(|x|^2 - 2x.b_k + |b_k|^2) = |x|^2 + min_k([x,1].[-2b_k; |b_k|^2]), float32"}
    return None


def quantize_nn_search(model) -> dict | None:
    """Run the anomaly graph's nearest-neighbour *search* in int8; keep the *distance* float32 and exact.

    The trainers export the search as ``min_k (x @ (-2 B^T) + |b|^2)`` (MatMul, Add, ReduceMin; ``|x|^2`` is
    added after the min). This becomes:

    * ``DynamicQuantizeMatMul`` (ONNX Runtime's contrib op: the patch features are quantised to uint8 per
      call, the bank is int8 with one scale per bank entry, the ``|b|^2`` bias is added in float) giving the
      approximate scores, and ``ArgMin`` over the bank: *which* entry is nearest;
    * a ``Gather`` of that entry's float32 row and the exact ``|x - b|^2 - |x|^2``, so the value handed on is
      the float32 distance to a real bank entry, never a quantised one. Where int8 picks a different entry
      than float would, the distance is to the runner-up: slightly larger, and measured (see the int8
      optimiser's sensitivity table, group ``nn_search``).

    Returns what was done, or ``None`` when the pattern is not in the graph (it is left unchanged).
    """
    from onnx import helper, numpy_helper

    g = model.graph
    prod, users, inits = _index(g)
    for rm in list(g.node):
        if rm.op_type != "ReduceMin" or len(rm.input) > 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in rm.attribute}
        if list(attrs.get("axes", [])) not in ([1], [-1]) or attrs.get("keepdims", 1) != 0:
            continue
        add = prod.get(rm.input[0])
        if add is None:
            continue
        if add.op_type == "Gemm":  # MatMul + Add as fused by ONNX Runtime's optimiser (quant_pre_process)
            ga = {a.name: helper.get_attribute_value(a) for a in add.attribute}
            if (ga.get("transA", 0) or ga.get("transB", 0) or ga.get("alpha", 1.0) != 1.0
                    or ga.get("beta", 1.0) != 1.0 or len(add.input) != 3
                    or add.input[1] not in inits or add.input[2] not in inits):
                continue
            mm, bsq_name, x, w_name, old = add, add.input[2], add.input[0], add.input[1], [add, rm]
        elif add.op_type == "Add":
            bsq_name = next((i for i in add.input if i in inits), None)
            mm = next((prod.get(i) for i in add.input if i != bsq_name and i in prod), None)
            if bsq_name is None or mm is None or mm.op_type != "MatMul" or mm.input[1] not in inits:
                continue
            if len(users.get(mm.output[0], [])) != 1:
                continue
            x, w_name, old = mm.input[0], mm.input[1], [mm, add, rm]
        else:
            continue
        if len(users.get(add.output[0], [])) != 1:
            continue
        btn2 = numpy_helper.to_array(inits[w_name]).astype(np.float32)                  # (D, K) = -2 B^T
        bsq = numpy_helper.to_array(inits[bsq_name]).astype(np.float32).reshape(-1)     # (K,)
        if btn2.ndim != 2 or bsq.shape[0] != btn2.shape[1]:
            continue
        k = btn2.shape[1]
        # ORT's ArgMin is a plain loop (5x slower than ReduceMin over the patches x bank scores), so the
        # index is found in two steps: the min of each chunk of WIDTH entries (ReduceMin), the best chunk
        # (ArgMin over K / WIDTH values), then the best entry inside it. The bank is padded to a multiple of
        # WIDTH with entries whose |b|^2 is huge, so they are never picked.
        width = 64
        kp = -(-k // width) * width
        pad = kp - k
        btn2 = np.pad(btn2, ((0, 0), (0, pad)))
        bsq = np.concatenate([bsq, np.full(pad, 1e30, np.float32)])
        scale = np.maximum(np.abs(btn2).max(axis=0), 1e-12).astype(np.float32) / 127.0  # per bank entry
        bq = np.clip(np.round(btn2 / scale), -127, 127).astype(np.int8)
        bank = np.ascontiguousarray((btn2 / -2.0).T).astype(np.float32)                # (K', D)
        pre = rm.name or "nn"
        nm = {k: f"{pre}/q8_{k}" for k in ("bq", "scale", "zp", "bsq", "bank", "ax", "s", "shape3", "s3", "cmin",
                                           "chunk", "chunk3", "expand", "cidx", "cvals", "inner", "width", "base",
                                           "idx3", "flat", "idx", "c", "d", "dd", "d2", "xx", "xn")}
        g.initializer.extend([numpy_helper.from_array(bq, nm["bq"]), numpy_helper.from_array(scale, nm["scale"]),
                              numpy_helper.from_array(np.zeros(kp, np.int8), nm["zp"]),
                              numpy_helper.from_array(bsq, nm["bsq"]), numpy_helper.from_array(bank, nm["bank"]),
                              numpy_helper.from_array(np.array([1], np.int64), nm["ax"]),
                              numpy_helper.from_array(np.array([0, kp // width, width], np.int64), nm["shape3"]),
                              numpy_helper.from_array(np.array([1, 1, width], np.int64), nm["expand"]),
                              numpy_helper.from_array(np.array(width, np.int64), nm["width"]),
                              numpy_helper.from_array(np.array([-1], np.int64), nm["flat"])])
        new = [
            helper.make_node("DynamicQuantizeMatMul", [x, nm["bq"], nm["scale"], nm["zp"], nm["bsq"]], [nm["s"]],
                             name=f"{pre}/q8_search", domain="com.microsoft"),
            helper.make_node("Reshape", [nm["s"], nm["shape3"]], [nm["s3"]], name=f"{pre}/q8_chunks"),  # (P, G, W)
            helper.make_node("ReduceMin", [nm["s3"]], [nm["cmin"]], axes=[2], keepdims=0, name=f"{pre}/q8_cmin"),
            helper.make_node("ArgMin", [nm["cmin"]], [nm["chunk"]], axis=1, keepdims=1, name=f"{pre}/q8_chunk"),
            helper.make_node("Unsqueeze", [nm["chunk"], nm["ax"]], [nm["chunk3"]], name=f"{pre}/q8_chunk3"),
            helper.make_node("Expand", [nm["chunk3"], nm["expand"]], [nm["cidx"]], name=f"{pre}/q8_cidx"),
            helper.make_node("GatherElements", [nm["s3"], nm["cidx"]], [nm["cvals"]], axis=1,
                             name=f"{pre}/q8_cvals"),                                              # (P, 1, W)
            helper.make_node("ArgMin", [nm["cvals"]], [nm["inner"]], axis=2, keepdims=0, name=f"{pre}/q8_inner"),
            helper.make_node("Mul", [nm["chunk"], nm["width"]], [nm["base"]], name=f"{pre}/q8_base"),
            helper.make_node("Add", [nm["base"], nm["inner"]], [nm["idx3"]], name=f"{pre}/q8_index"),
            helper.make_node("Reshape", [nm["idx3"], nm["flat"]], [nm["idx"]], name=f"{pre}/q8_flat"),
            helper.make_node("Gather", [nm["bank"], nm["idx"]], [nm["c"]], axis=0, name=f"{pre}/q8_gather"),
            helper.make_node("Sub", [x, nm["c"]], [nm["d"]], name=f"{pre}/q8_diff"),
            helper.make_node("Mul", [nm["d"], nm["d"]], [nm["dd"]], name=f"{pre}/q8_sq"),
            helper.make_node("ReduceSum", [nm["dd"], nm["ax"]], [nm["d2"]], keepdims=0, name=f"{pre}/q8_d2"),
            helper.make_node("Mul", [x, x], [nm["xx"]], name=f"{pre}/q8_xsq"),
            helper.make_node("ReduceSum", [nm["xx"], nm["ax"]], [nm["xn"]], keepdims=0, name=f"{pre}/q8_xn"),
            # what the ReduceMin handed on: min_k(|b_k|^2 - 2 x.b_k) = |x - b*|^2 - |x|^2
            helper.make_node("Sub", [nm["d2"], nm["xn"]], [rm.output[0]], name=f"{pre}/q8_value"),
        ]
        _replace(g, old, new, rm, [inits[n] for n in (w_name, bsq_name) if n in inits])
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.extend([helper.make_opsetid("com.microsoft", 1)])
        return {"bank": int(k), "dim": int(btn2.shape[0]),
                "search": "DynamicQuantizeMatMul (uint8 patches per call, int8 bank per entry), then the arg-min "
                          f"by chunks of {width}",
                "distance": "float32 |x - b|^2 to the entry found (exact)"}
    return None
