"""What every optimiser shares: the bundle's model file and data, model inputs, and the record.

``model_file(bundle)``            name of the ONNX graph in the bundle (``model_file`` or ``model`` key).
``training_data(bundle)``         the folder the bundle was trained on, from its metadata (or ``None``).
``calibration_images(bundle, calib, n, seed)``
                                  model inputs (float32 (1, 3, H, W), prepared exactly as the runtime
                                  prepares them) from ``--calib DATA`` or the bundle's training images,
                                  never from its test split.
``held_out_images(bundle, data, n)``
                                  model inputs from the evaluation split (for parity between graphs).
``evaluate(bundle, data)``        the runtime's own ``evaluate`` (what ``loupe eval`` prints).
``finish(parent, out, files, record, ...)``
                                  writes the optimised bundle: the parent's files with the graph
                                  replaced, metadata with ``optimization`` (method, settings, parent
                                  sha256, parity against the parent, accuracy of both), atomically.
``lineage(parent, record)``       that ``optimization`` record and the inherited history, for
                                  optimisers that write their bundle through a trainer (prune).
``rewrite(bundle, meta)``         the same files again under new metadata (records added afterwards).

Wall times (how long the optimisation took, when it ran, ms per image of either bundle, CPU timings) go
to the bundle's ``log.json`` under ``"optimization"``, never into ``bundle.json``: the manifest does not
hash ``log.json``, so optimising the same bundle the same way twice gives the same sha256.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from host import IMAGE_EXTENSIONS as IMAGE_EXTS, Bundle, BundleError, BundleMeta, Progress, UsageError, read_bundle_meta, write_bundle

from . import labelled

#: metric compared between parent and optimised bundle, by task
KEY_METRIC = {"classify": "accuracy", "anomaly": "image_auroc", "segment": "mean_iou", "detect": "map50"}


def _info(bundle: Bundle) -> BundleMeta:
    return bundle.info or read_bundle_meta(bundle.meta, bundle.path / "bundle.json")


def model_file(bundle: Bundle) -> str:
    return _info(bundle).model_file


def input_size(bundle: Bundle) -> tuple[int, int]:
    return _info(bundle).input_size


def training_data(bundle: Bundle) -> Path | None:
    tr = bundle.meta.get("training") or {}
    for key in ("data", "root"):
        if tr.get(key) and Path(tr[key]).is_dir():
            return Path(tr[key])
    return None


def _read(path: Path) -> np.ndarray | None:
    from loupe_dl_anomaly.data import read_image

    try:
        return read_image(path)
    except (ValueError, OSError):
        return None


def prepare(bundle: Bundle) -> Callable[[np.ndarray], np.ndarray]:
    """decoded image -> model input, exactly as the task's runtime prepares it."""
    size = input_size(bundle)
    if bundle.task == "classify":
        from host import DEFAULT_NORMALISATION
        from host import prepare_images as preprocess

        norm = bundle.meta.get("normalisation") or DEFAULT_NORMALISATION
        return lambda img: preprocess([img], size, norm)
    if bundle.task == "anomaly":
        from loupe_dl_anomaly.data import prepare as _prep

        return lambda img: _prep(img, size)
    if bundle.task in labelled.DATA_MODULES:
        return labelled.prepare(bundle, size)
    raise UsageError(f"{bundle.path}: cannot optimise {bundle.task!r} bundles (only classify and anomaly)")


def _training_paths(bundle: Bundle, data: Path) -> list[Path]:
    """The images a bundle was (or could have been) trained on: never its test split."""
    if bundle.task == "classify":
        from loupe_dl_classify.data import scan, stratified_split

        try:
            folders = scan(data, classes=[str(c) for c in bundle.meta.get("classes", [])] or None)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        train = folders.train
        split = bundle.meta.get("split")
        if not folders.has_test and split and split.get("test_fraction"):
            keep, _ = stratified_split([s.label for s in train], split["test_fraction"], split["seed"])
            train = [train[i] for i in keep]
        return [s.path for s in train]
    if bundle.task in labelled.DATA_MODULES:
        return labelled.training_paths(bundle, data)
    root = data / "train" if (data / "train").is_dir() else data
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def calibration_images(bundle: Bundle, calib: str | None, n: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """Up to ``n`` model inputs for calibration / fine-tuning, and where they came from."""
    if calib:
        data = Path(calib)
        if not data.is_dir():
            raise UsageError(f"--calib {calib}: folder not found")
        root = data / "train" if (data / "train").is_dir() else data
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        source = str(data.resolve())
    else:
        data = training_data(bundle)
        if data is None:
            raise UsageError(f"{bundle.path / 'bundle.json'}: the training data folder recorded in the bundle "
                             f"({(bundle.meta.get('training') or {}).get('data') or (bundle.meta.get('training') or {}).get('root')}) "
                             f"is not available here; give calibration images with --calib DATA")
        paths = _training_paths(bundle, data)
        source = f"{data.resolve()} (training images)"
    if not paths:
        raise UsageError(f"{source}: no images found for calibration")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    prep = prepare(bundle)
    out = []
    for i in order:
        img = _read(paths[i])
        if img is not None:
            out.append(prep(img).astype(np.float32))
        if len(out) >= n:
            break
    if not out:
        raise UsageError(f"{source}: none of the images could be read")
    return out, source


def eval_data(bundle: Bundle, data: str | None) -> Path | None:
    if data:
        p = Path(data)
        if not p.is_dir():
            raise UsageError(f"--data {data}: folder not found")
        return p
    return training_data(bundle)


def held_out_images(bundle: Bundle, data: Path | None, n: int) -> list[np.ndarray]:
    """Model inputs from the evaluation split of ``data`` (test/ or the trainer's held-out share)."""
    if data is None:
        return []
    paths: list[Path] = []
    if bundle.task == "classify":
        from loupe_dl_classify.data import scan, test_samples

        try:
            folders = scan(data, classes=[str(c) for c in bundle.meta.get("classes", [])] or None)
            samples, _ = test_samples(folders, bundle.meta.get("split"))
            paths = [s.path for s in samples]
        except ValueError:
            paths = []
    elif bundle.task in labelled.DATA_MODULES:
        paths = labelled.eval_paths(bundle, data)
    else:
        test = data / "test"
        if test.is_dir():
            paths = sorted(p for p in test.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    rng = np.random.default_rng(1)
    prep = prepare(bundle)
    out = []
    for i in rng.permutation(len(paths)):
        img = _read(paths[i])
        if img is not None:
            out.append(prep(img).astype(np.float32))
        if len(out) >= n:
            break
    return out


def runtime_for(task: str):
    if task == "classify":
        from loupe_dl_classify.tool import ClassifyRuntime

        return ClassifyRuntime()
    if task == "anomaly":
        from loupe_dl_anomaly.runtime import AnomalyRuntime

        return AnomalyRuntime()
    if task == "segment":
        from loupe_dl_segment.tool import SegmentRuntime

        return SegmentRuntime()
    if task == "detect":
        from loupe_dl_detect.tool import DetectRuntime

        return DetectRuntime()
    raise UsageError(f"no runtime for {task!r} bundles")


def evaluate(bundle: Bundle, data: Path) -> dict[str, Any]:
    return runtime_for(bundle.task).evaluate(bundle, data, None, Progress())


def _strip(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "mean_iou", "defect_iou", "map50", "map50_95", "count_accuracy", "image_auroc",
            "pixel_auroc", "f1", "n_images")
    return {k: m[k] for k in keys if k in m}


def accuracy_check(parent: Bundle, child: Bundle, data: Path | None, max_drop: float,
                   progress: Progress, parent_metrics: dict | None = None) -> dict[str, Any]:
    """Evaluate both bundles on the same held-out data with the runtime; points lost on the key metric."""
    if data is None:
        progress.log("no evaluation data (the training folder is gone and no --data given): accuracy not checked")
        return {"checked": False, "reason": "no evaluation data available; give --data DATA"}
    key = KEY_METRIC[parent.task]
    progress.update("accuracy check", 0, 2)
    pm = parent_metrics if parent_metrics is not None else evaluate(parent, data)
    progress.update("accuracy check", 1, 2)
    cm = evaluate(child, data)
    progress.update("accuracy check", 2, 2)
    if key not in pm or key not in cm:
        return {"checked": False, "reason": f"the evaluation gave no {key!r} (does {data} have a test split "
                                             f"with both classes?)", "parent": _strip(pm), "optimized": _strip(cm)}
    drop = 100.0 * (float(pm[key]) - float(cm[key]))
    res = {"checked": True, "data": str(data.resolve()), "metric": key, "parent": _strip(pm),
           "optimized": _strip(cm), "drop_points": round(drop, 3), "max_drop_points": max_drop,
           "within_tolerance": bool(drop <= max_drop + 1e-9),
           # a wall time: record_accuracy moves it to log.json
           "ms_per_image": {k: m["ms_per_image"] for k, m in (("parent", pm), ("optimized", cm))
                            if "ms_per_image" in m}}
    msg = f"{key}: parent {pm[key]:.4f}, optimised {cm[key]:.4f} ({-drop:+.2f} points)"
    progress.log(msg if res["within_tolerance"] else msg + f" -- MORE than the {max_drop:g} points allowed")
    return res


def lineage(parent: Bundle, record: dict[str, Any]) -> dict[str, Any]:
    """Metadata of a bundle optimised from ``parent``: its ``optimization`` record (with the parent's path and
    hashes, and when) and the ``optimization_history`` it inherits (the parent's own record last)."""
    history = list(parent.meta.get("optimization_history", []))
    if parent.meta.get("optimization"):
        history.append(parent.meta["optimization"])
    out: dict[str, Any] = {"optimization": {
        **record, "parent": {"path": str(parent.path.resolve()), "sha256": parent.sha256,
                             "model_sha256": parent.files.get(model_file(parent))}}}
    if history:
        out["optimization_history"] = history
    return out


def merge_log(old: dict[str, Any], new: dict[str, Any] | None) -> dict[str, Any]:
    """``log.json`` contents: ``old`` with ``new`` added (the ``optimization`` entries merged key by key)."""
    out = dict(old)
    for k, v in (new or {}).items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_log(**facts: Any) -> dict[str, Any]:
    """Unhashed facts of this optimisation for ``log.json``, with the time it was written."""
    return {"optimization": {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **facts}}


def rewrite(bundle: Bundle, meta: dict[str, Any], out: Path | None = None, log: dict[str, Any] | None = None) -> Bundle:
    """Write ``bundle``'s files again with new metadata (in place unless ``out`` is given), atomically; its
    ``log.json`` is kept, with ``log`` merged in."""
    files = {n: bundle.path / n for n in bundle.files if n not in ("bundle.json", "manifest.json")}
    return write_bundle(out or bundle.path, meta, files, log=merge_log(bundle.log, log))


def finish(parent: Bundle, out: Path, model_path: Path, record: dict[str, Any], *, extra_files: dict | None = None,
           meta_update: dict | None = None, log: dict[str, Any] | None = None) -> Bundle:
    """Write the optimised bundle (the parent's other files unchanged, the graph replaced); ``log``: wall
    times for ``log.json`` (``run_log(...)``), never in ``record``."""
    files: dict[str, Any] = {}
    for name in parent.files:
        if name not in ("bundle.json", "manifest.json"):
            files[name] = parent.path / name
    files[model_file(parent)] = model_path
    files.update(extra_files or {})
    meta = dict(parent.meta)
    meta.update(meta_update or {})
    meta.update(lineage(parent, record))
    try:
        return write_bundle(out, meta, files, log=merge_log(run_log(), log))
    except OSError as exc:
        raise UsageError(f"{out}: cannot write the bundle: {exc}") from None


def record_accuracy(parent: Bundle, child: Bundle, data, params, progress: Progress, t0: float,
                    parent_metrics: dict | None = None) -> Bundle:
    """Run the accuracy check on the written bundle and rewrite its record with the result."""
    acc = accuracy_check(parent, child, data, params.max_drop, progress, parent_metrics)
    meta = dict(child.meta)
    meta["optimization"] = {**meta["optimization"], "accuracy": {k: v for k, v in acc.items() if k != "ms_per_image"}}
    seconds = round(time.perf_counter() - t0, 1)
    progress.log(f"optimised in {seconds:g} s")
    facts = {"seconds": seconds, "ms_per_image": acc.get("ms_per_image", {})}
    if "created" not in (child.log.get("optimization") or {}):  # prune writes through a trainer, not finish()
        facts.update(run_log()["optimization"])
    out = rewrite(child, meta, log={"optimization": facts})
    if params.strict and acc.get("checked") and not acc["within_tolerance"]:
        raise UsageError(f"{out.path}: {acc['metric']} dropped {acc['drop_points']:.2f} points "
                         f"(more than --max-drop {params.max_drop:g}); the bundle was written for inspection")
    return out


def require_float(bundle: Bundle, method: str) -> None:
    """int8 / fp16 / prune start from a float32 graph: refuse an already quantised or halved bundle."""
    done = (bundle.meta.get("optimization") or {}).get("method")
    if done in ("int8", "fp16"):
        parent = (bundle.meta["optimization"].get("parent") or {}).get("path", "its parent bundle")
        raise UsageError(f"{bundle.path}: this bundle is already {done}; run --method {method} on the float32 "
                         f"bundle it was made from ({parent})")
