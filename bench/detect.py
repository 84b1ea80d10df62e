"""Benchmark: few-shot object detection on generated parts scenes.

    OMP_NUM_THREADS=2 .venv/bin/python bench/detect.py [--n-train 40] [--n-test 100] [--work DIR] [--json OUT]

1. Generates the scenes (``loupe_trainer.detect.samples``: screws, nuts, washers and
   brackets at any rotation, 3-8 per scene, on scikit-image photographs with clutter),
   320 x 320, 40 for training and 100 for testing.
2. Trains ``loupe train detect DATA --out BUNDLE`` with its defaults (the wall-clock
   time of the whole command, export included).
3. Scores it with ``loupe eval --json``: mAP50, mAP50:95, count accuracy, ms per image
   in the runtime.
4. Times ``loupe run`` (a recipe with the ``detect.objects`` step, JSONL report): the
   median of the per-frame step times the runner records.
5. The classical reference on the same scenes: Otsu threshold (on the absolute
   difference from a median-blurred background), connected components, and a
   nearest-template class on shape features (Hu moments, fill ratio, holes,
   elongation) learnt from the training boxes; scored with the same mAP code.

Everything runs with 2 threads (``--threads N`` for eval and ``loupe run``; the training's own
``--train-args --threads N``). Besides the wall-clock figures, ``runtime_cpu`` is the runtime's CPU time
per image on 1 thread (honest on a shared machine). Figures go to stdout (and ``--json``).

With a verifier in the bundle (the default training; ``--train-args --no-verify`` trains the detector alone) it
also scores the same bundle's detector alone (a copy without the verifier: ``loupe eval``), times ``loupe run`` with
the tool's ``verify: false``, and times the runtime with and without the verifier in one process, image by image.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOUPE = [str(Path(sys.executable).with_name("loupe"))]


def loupe(*args, threads: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "LOUPE_ORT_THREADS": str(threads)}
    r = subprocess.run(LOUPE + [str(a) for a in args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"loupe {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}")
    return r


# ------------------------------------------------------------------ classical reference


def _segment(bgr: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bg = cv2.medianBlur(g, 31)
    diff = cv2.absdiff(g, bg)
    _, m = cv2.threshold(diff, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))


def _features(mask: np.ndarray) -> np.ndarray:
    cnts, hier = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not cnts:
        return np.zeros(10)
    outer = max(range(len(cnts)), key=lambda i: cv2.contourArea(cnts[i]))
    c = cnts[outer]
    holes = sum(1 for i in range(len(cnts)) if hier[0][i][3] == outer and cv2.contourArea(cnts[i]) > 4)
    area = max(cv2.contourArea(c), 1.0)
    (_, _), (w, h), _ = cv2.minAreaRect(c)
    hull = max(cv2.contourArea(cv2.convexHull(c)), 1.0)
    hu = cv2.HuMoments(cv2.moments(mask, binaryImage=True)).ravel()[:5]
    hu = -np.sign(hu) * np.log10(np.abs(hu) + 1e-12)
    return np.r_[hu / 10, float(mask.sum() / 255) / area, min(holes, 2), max(w, h) / max(min(w, h), 1),
                 area / hull, 0.0]


def classical_fit(samples) -> tuple[np.ndarray, np.ndarray]:
    from loupe_dl_detect.data import read_image

    feats, labels = [], []
    for s in samples:
        img = read_image(s.image)
        m = _segment(img)
        for b, c in zip(s.boxes_xyxy(img.shape[:2]).astype(int), s.labels):
            crop = m[max(0, b[1]):b[3], max(0, b[0]):b[2]]
            if crop.size:
                feats.append(_features(crop))
                labels.append(int(c))
    return np.asarray(feats), np.asarray(labels)


def classical_predict(img: np.ndarray, templates, labels, min_area: int = 60):
    m = _segment(img)
    n, cc, stats, _ = cv2.connectedComponentsWithStats(m)
    boxes, scores, cls = [], [], []
    for i in range(1, n):
        x, y, w, h, a = stats[i]
        if a < min_area or w > img.shape[1] * 0.5 or h > img.shape[0] * 0.5:
            continue
        f = _features((cc[y:y + h, x:x + w] == i).astype(np.uint8) * 255)
        d = np.linalg.norm(templates - f, axis=1)
        k = int(np.argmin(d))
        boxes.append([x, y, x + w, y + h])
        scores.append(1.0 / (1.0 + d[k]))
        cls.append(int(labels[k]))
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores), np.asarray(cls, np.int64)


def classical(data: Path) -> dict:
    from loupe_dl_detect.data import load, read_image, scan
    from loupe_dl_detect.metrics import counts_match, evaluate_detections

    ds = scan(data)
    templates, labels = classical_fit(ds.train)
    preds, gts, exact, times = [], [], [], []
    for s in ds.test:
        img = read_image(s.image)
        t0 = time.perf_counter()
        p = classical_predict(img, templates, labels)
        times.append((time.perf_counter() - t0) * 1e3)
        _, gb, gl = load(s)
        preds.append(p)
        gts.append((gb, gl))
        exact.append(counts_match(p[2], gl, len(ds.classes)))
    m = evaluate_detections(preds, gts, len(ds.classes))
    return {"map50": round(m["map50"], 4), "map50_95": round(m["map50_95"], 4),
            "count_accuracy": round(float(np.mean(exact)), 4), "ms_per_image": round(statistics.median(times), 2)}


# ------------------------------------------------------------------ loupe


def time_loupe_run(bundle: Path, images: Path, work: Path, threads: int = 2, verify: bool = True) -> dict:
    sys.path.insert(0, str(ROOT))
    from host import model_sha256

    recipe = work / "detect-recipe.yaml"
    params = {"model": {"path": str(bundle), "sha256": model_sha256(bundle)}, "threads": threads}
    if not verify:
        params["verify"] = False            # a bundle with a verifier, run as the detector alone
    recipe.write_text(json.dumps({
        "loupe_recipe": 1, "name": "parts",
        "inspect": [{"tool": "detect.objects", "name": "parts", "params": params,
                     "limits": {"count": {"min": 1}}}]}))
    report = work / "run.jsonl"
    report.unlink(missing_ok=True)
    loupe("run", recipe, "--source", f"folder:{images}", "--report", f"jsonl:{report}", "-q", threads=threads)
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    step = [r["timings_ms"]["parts"] for r in rows if "parts" in r.get("timings_ms", {})]
    if not step:
        sys.exit(f"loupe run produced no timed frames ({len(rows)} rows in {report})")
    return {"images": len(rows), "median_ms": round(statistics.median(step), 2),
            "p90_ms": round(float(np.percentile(step, 90)), 2)}


def cpu_per_image(bundle: Path, images: Path) -> dict:
    """Per-image time of the runtime (preprocess, ONNX Runtime on 1 thread, decode, NMS) as CPU time of the
    calling thread, beside the wall time: on a shared machine (or one whose processes get paused) the CPU
    time is what the image costs; the wall time is what it cost here."""
    from host import Bundle
    from loupe_dl_detect.data import read_image
    from loupe_dl_detect.model import Detector

    b = Bundle.load(bundle)
    det = Detector(b, threads=1)
    # a bundle with a verifier: the detector alone too, in the same process, interleaved image by image
    alone = Detector(b, threads=1, verify=False) if det.verifier is not None else None
    cpu, wall, cpu0, wall0 = [], [], [], []
    for p in sorted(images.glob("*.png")):
        img = read_image(p)
        for d, c, w in ((det, cpu, wall), (alone, cpu0, wall0)):
            if d is None:
                continue
            d.predict(img)           # warm-up on the same image, so caches are alike for every image
            c0, w0 = time.thread_time(), time.perf_counter()
            d.predict(img)
            c.append((time.thread_time() - c0) * 1e3)
            w.append((time.perf_counter() - w0) * 1e3)
    out = {"images": len(cpu), "median_cpu_ms": round(statistics.median(cpu), 2),
           "median_wall_ms": round(statistics.median(wall), 2), "threads": 1}
    if alone is not None:
        out["detector_alone"] = {"median_cpu_ms": round(statistics.median(cpu0), 2),
                                 "median_wall_ms": round(statistics.median(wall0), 2)}
    return out


def without_verifier(bundle: Path, out: Path) -> Path:
    """A copy of a bundle without its verifier (the detector alone at its own threshold), for ``loupe eval``."""
    sys.path.insert(0, str(ROOT))
    from host import Bundle, write_bundle

    b = Bundle.load(bundle)
    meta = {k: v for k, v in b.meta.items() if k != "verifier"}
    name = b.meta["verifier"]["file"]
    files = {n: b.path / n for n in b.files if n not in ("bundle.json", "manifest.json", name)}
    write_bundle(out, meta, files)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/loupe-bench-detect")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--int8", action="store_true", help="also optimise to int8 and score that bundle")
    ap.add_argument("--threads", type=int, default=2, help="threads for eval and loupe run (training: "
                                                           "--train-args --threads N)")
    ap.add_argument("--no-classical", action="store_true", help="skip the classical reference")
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="extra loupe train detect flags")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "plugins" / "trainer"))
    from loupe_trainer.detect.samples import make_parts_dataset

    work = Path(a.work)
    data = work / "data"
    if not (data / "test" / "annotations.json").is_file():
        make_parts_dataset(data, a.n_train, a.n_test, a.size, a.seed)
    res: dict = {"n_train": a.n_train, "n_test": a.n_test, "size": a.size, "threads": a.threads}
    if not a.no_classical:
        res["classical"] = classical(data)
        print("classical:", res["classical"], flush=True)
    bundle = work / "bundle"
    import resource

    t0 = time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    loupe("train", "detect", data, "--out", bundle, "-q", *a.train_args, threads=a.threads)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["train_seconds"] = round(time.perf_counter() - t0, 1)
    # CPU seconds of the training process: on a shared machine, cpu / threads estimates the idle wall time
    res["train_cpu_seconds"] = round((c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime), 1)
    meta = json.loads((bundle / "bundle.json").read_text())
    res["training"] = meta["metrics"]
    ev = json.loads(loupe("eval", bundle, data, "--json", "--out", work / "report", threads=a.threads).stdout)
    res["loupe"] = {k: ev[k] for k in ("map50", "map50_95", "per_class_ap50", "count_accuracy", "n_images",
                                       "ms_per_image")}
    print("loupe:", res["loupe"], "train s:", res["train_seconds"], flush=True)
    res["loupe_run"] = time_loupe_run(bundle, data / "test" / "images", work, a.threads)
    print("loupe run:", res["loupe_run"], flush=True)
    if "verifier" in meta:             # the default training: the same bundle's detector alone, for comparison
        alone = without_verifier(bundle, work / "bundle-detector-alone")
        ev0 = json.loads(loupe("eval", alone, data, "--json", threads=a.threads).stdout)
        res["detector_alone"] = {k: ev0[k] for k in ("map50", "map50_95", "count_accuracy", "min_score",
                                                     "ms_per_image")}
        res["verifier"] = {k: meta["verifier"][k] for k in ("min_score", "candidate_score", "max_candidates",
                                                            "train_crops", "threshold_rule", "out_of_fold", "parity")}
        print("the same bundle's detector alone:", res["detector_alone"], flush=True)
        res["loupe_run_detector_alone"] = time_loupe_run(bundle, data / "test" / "images", work, a.threads,
                                                         verify=False)
        print("loupe run, verify: false:", res["loupe_run_detector_alone"], flush=True)
    res["runtime_cpu"] = cpu_per_image(bundle, data / "test" / "images")
    print("runtime, 1 thread:", res["runtime_cpu"], flush=True)
    if a.int8:
        q = work / "bundle-int8"
        loupe("optimize", bundle, "--method", "int8", "--out", q, threads=a.threads)
        ev8 = json.loads(loupe("eval", q, data, "--json", threads=a.threads).stdout)
        res["int8"] = {k: ev8[k] for k in ("map50", "map50_95", "count_accuracy", "ms_per_image")}
        res["int8_run"] = time_loupe_run(q, data / "test" / "images", work, a.threads)
        print("int8:", res["int8"], res["int8_run"], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
