"""Two (or more) segmentation graphs timed against each other in one process, interleaved.

    .venv/bin/python bench/segment_graph_ab.py DATA BUNDLE_A BUNDLE_B [--threads 2] [--runs 10] [--rounds 100]

Each bundle's ``model.onnx`` gets a bare ONNX Runtime session (``host.create_session``, ``--threads``
intra-op threads, as the ``segment.defects`` runtime opens it); the test images of DATA are preprocessed
with the runtime's own ``host.prepare_images`` (the bundle's size and normalisation). Then, for
``--rounds`` rounds, each bundle runs ``--runs`` single-image inferences in turn (the order flips every
round, after one warm-up pass per bundle), timing each ``session.run`` (wall, ``perf_counter``) and the
preprocessing plus the run. Reports per bundle the median over all its runs, per round the median of
each bundle and the ratio B / A, and the median of those round ratios. A ratio from one process whose
bundles alternate every fraction of a second is what stays meaningful on a VM whose speed moves 10-30 %
(a freeze of the process lands in one block and is mostly filtered by the medians). Keep the blocks short
(``--runs 10``): with blocks of 120 runs (several seconds) on the loaded 2-core VM the same graph's
block medians swung from 23 to 39 ms at 2 threads (notes/issue-16.md, session 7).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10, help="inferences per bundle per round (default 10)")
    ap.add_argument("--rounds", type=int, default=100, help="alternations (default 100)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from host import Bundle, create_session, prepare_images
    from loupe_dl_segment.data import scan

    ds = scan(Path(a.data))
    images = [ds.load(s)[0] for s in ds.test]
    models = []
    for b in a.bundles:
        bundle = Bundle.load(b)
        meta = bundle.meta
        size = (int(meta["input_size"][0]), int(meta["input_size"][1]))
        norm = meta.get("normalisation")
        sess = create_session(bundle.model_file, a.threads, outputs=("probs",))
        name = sess.get_inputs()[0].name
        stage = meta["training"]["params"].get("deep_stage", "stage5")
        models.append({"path": b, "deep_stage": stage, "size": size, "norm": norm, "sess": sess, "input": name})
    for m in models:   # warm-up pass
        for img in images:
            m["sess"].run(["probs"], {m["input"]: prepare_images([img], m["size"], m["norm"])})
    graph = {m["path"]: [] for m in models}
    total = {m["path"]: [] for m in models}
    rounds = []
    cpu0 = time.process_time()
    for r in range(a.rounds):
        order = models if r % 2 == 0 else models[::-1]
        med = {}
        for m in order:
            g, t = [], []
            for i in range(a.runs):
                img = images[i % len(images)]
                t0 = time.perf_counter()
                x = prepare_images([img], m["size"], m["norm"])
                t1 = time.perf_counter()
                m["sess"].run(["probs"], {m["input"]: x})
                t2 = time.perf_counter()
                g.append(1000 * (t2 - t1))
                t.append(1000 * (t2 - t0))
            graph[m["path"]] += g
            total[m["path"]] += t
            med[m["path"]] = (statistics.median(g), statistics.median(t))
        a0 = med[models[0]["path"]]
        row = {"round": r + 1, "order": [m["deep_stage"] for m in order],
               "graph_ms": {m["path"]: round(med[m["path"]][0], 2) for m in models},
               "graph_ratio_to_first": {m["path"]: round(med[m["path"]][0] / a0[0], 3) for m in models[1:]},
               "prep_graph_ratio_to_first": {m["path"]: round(med[m["path"]][1] / a0[1], 3) for m in models[1:]}}
        rounds.append(row)
        print(json.dumps(row), flush=True)
    out = {"threads": a.threads, "runs_per_round": a.runs, "rounds": a.rounds, "process_cpu_s":
           round(time.process_time() - cpu0, 1),
           "bundles": {m["path"]: {"deep_stage": m["deep_stage"], "runs": len(graph[m["path"]]),
                                   "graph_median_ms": round(statistics.median(graph[m["path"]]), 2),
                                   "prep_graph_median_ms": round(statistics.median(total[m["path"]]), 2)}
                       for m in models},
           "median_round_graph_ratio": {m["path"]: round(statistics.median(
               r["graph_ratio_to_first"][m["path"]] for r in rounds), 3) for m in models[1:]},
           "overall_graph_ratio": {m["path"]: round(statistics.median(graph[m["path"]]) /
                                                    statistics.median(graph[models[0]["path"]]), 3)
                                   for m in models[1:]},
           "rounds_detail": rounds}
    print(json.dumps({k: v for k, v in out.items() if k != "rounds_detail"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
