"""CPU time per image of segmentation bundles, split into the stages of the per-image path.

    OMP_NUM_THREADS=1 .venv/bin/python bench/segment_speed.py DATA BUNDLE [BUNDLE ...] [--threads 1]

Opens each bundle once (``Segmenter``, ONNX Runtime with ``--threads`` intra-op threads) and runs the
test images of DATA through what the ``segment.defects`` tool does per frame: preprocessing, the ONNX
graph, upsampling the probabilities to the image, thresholding, regions and measurements. Reports the
median CPU time (``time.process_time``, user + system of this process) per image and per stage. CPU
time, unlike wall time, stays meaningful on a loaded machine (it is still inflated by cache and core
sharing); with one thread it is an upper bound on the latency of an idle core.
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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=60, help="test images to time (default 60)")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the images (default 3)")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import cv2
    import numpy as np

    from host import Bundle, prepare_images
    from loupe_dl_segment.data import scan
    from loupe_dl_segment.model import Segmentation, Segmenter, find_regions, label_map, measure

    ds = scan(Path(a.data))
    images = [ds.load(s)[0] for s in ds.test[:a.images]]
    out = {}
    for b in a.bundles:
        seg = Segmenter(Bundle.load(b), threads=a.threads)
        stages: dict[str, list[float]] = {k: [] for k in ("preprocess", "graph", "upsample", "threshold",
                                                          "regions", "total")}
        for r in range(a.repeat + 1):
            for img in images:
                c0 = time.process_time()
                x = prepare_images([img], seg.size, seg.norm)
                c1 = time.process_time()
                p = seg.run(x)[0]
                c2 = time.process_time()
                h, w = img.shape[:2]
                if (h, w) != p.shape[1:]:
                    p = np.ascontiguousarray(cv2.resize(np.ascontiguousarray(p.transpose(1, 2, 0)), (w, h),
                                                        interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
                                             .transpose(2, 0, 1))
                c3 = time.process_time()
                labels = label_map(p, seg.threshold)
                c4 = time.process_time()
                labels, regions = find_regions(labels, p, seg.n_classes, 0)
                measure(Segmentation(p, labels, seg.classes, regions))
                c5 = time.process_time()
                if r:   # the first pass warms up
                    for k, v in zip(stages, (c1 - c0, c2 - c1, c3 - c2, c4 - c3, c5 - c4, c5 - c0)):
                        stages[k].append(1000 * v)
        out[b] = {k: round(statistics.median(v), 2) for k, v in stages.items()}
        out[b]["output"] = list(seg.run(prepare_images(images[:1], seg.size, seg.norm)).shape)
        print(b, json.dumps(out[b]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
