"""Benchmark: image classification from few samples on Fashion-MNIST (issue 5).

    OMP_NUM_THREADS=2 .venv/bin/python bench/classify.py [--per 10 100] [--work DIR] [--json OUT]

Uses the Debian ``dataset-fashion-mnist`` IDX files (gzipped or not) from
/usr/share/datasets/fashion-mnist. For each training-set size (N images per
class, drawn with a fixed seed from the 60k training set) it scores on the full
10k test set, side by side:

* an RBF-SVM on raw pixels (scikit-learn defaults, pixels / 255);
* a logistic regression on frozen, globally pooled ImageNet EfficientNet-Lite0
  features (the 1280-channel head) at 96 px;
* Loupe: ``loupe train classify`` with its defaults (wall-clock training time
  of the whole command, export included), scored by ``loupe eval --json``.

With ``--unlabelled N`` each size is trained a second time with N further training images (their labels
hidden, drawn from the rest of the train split) in ``DATA/unlabelled/``, which the trainer pseudo-labels
for its head.

Then it times inference through ``loupe run`` (a recipe with the ``classify.cnn``
step, JSONL report) on test images stored at the model's input size: the median
of the per-frame times the runner records. Everything runs with 2 threads.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
LOUPE = [str(Path(sys.executable).with_name("loupe"))]


def read_idx(stem: str) -> np.ndarray:
    from loupe_trainer.datasets import fashion_mnist_file, read_idx as read

    try:
        return read(fashion_mnist_file(stem, FMNIST))
    except FileNotFoundError as exc:
        sys.exit(str(exc))


def draw(y: np.ndarray, per: int, seed: int) -> np.ndarray:
    """Indices of the bench's training images: ``per`` of each class, the draw ``seed`` (a smaller ``per`` of the
    same seed takes the first of the same images)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in range(10)])


def unlabelled_draw(n_train: int, sel: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` further training images, none of ``sel``, for ``--unlabelled`` (their labels hidden)."""
    return np.random.default_rng(1000 + seed).choice(np.setdiff1d(np.arange(n_train), sel), n, replace=False)


def write_folders(root: Path, x: np.ndarray, y: np.ndarray, size: int | None = None) -> None:
    for c, name in enumerate(NAMES):
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(x, y)):
        if size:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(root / NAMES[label] / f"{i:05d}.png"), img)


def loupe(*args: str, env_threads: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(env_threads)}
    r = subprocess.run(LOUPE + [str(a) for a in args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"loupe {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}")
    return r


# ----------------------------------------------------------------- baselines


def svm_raw(xtr, ytr, xte, yte) -> float:
    from sklearn.svm import SVC

    clf = SVC(kernel="rbf", gamma="scale").fit(xtr.reshape(len(xtr), -1) / 255.0, ytr)
    return float((clf.predict(xte.reshape(len(xte), -1) / 255.0) == yte).mean())


def rgb_images(x: np.ndarray, size: int = 96) -> np.ndarray:
    """Grey images [N, h, w] resized to ``size`` x ``size`` (bilinear) as 3-channel RGB [N, size, size, 3]."""
    return np.stack([cv2.cvtColor(cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2RGB)
                     for im in x])


def pooled_features(x: np.ndarray, size: int = 96) -> np.ndarray:
    import torch

    sys.path.insert(0, str(ROOT / "plugins" / "trainer"))
    from loupe_trainer.backbone import build_backbone, to_tensor

    net = build_backbone()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), 200):
            out.append(net.forward_head(to_tensor(rgb_images(x[s:s + 200], size)))["pooled"].numpy())
    return np.concatenate(out)


def logreg_frozen(ftr, ytr, fte, yte) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(ftr)
    clf = LogisticRegression(max_iter=3000).fit(sc.transform(ftr), ytr)
    return float((clf.predict(sc.transform(fte)) == yte).mean())


# ----------------------------------------------------------------- loupe run


def time_loupe_run(bundle: Path, images: Path, work: Path, threads: int = 2) -> dict:
    sys.path.insert(0, str(ROOT))
    from host import model_sha256

    recipe = work / "classify-recipe.yaml"
    recipe.write_text(json.dumps({
        "loupe_recipe": 1, "name": "fmnist-classify",
        "inspect": [{"tool": "classify.cnn", "name": "cnn",
                     "params": {"model": {"path": str(bundle), "sha256": model_sha256(bundle)},
                                "allowed": NAMES[:5], "min_confidence": 0.5, "threads": threads},
                     "limits": {"ok": {"equals": True}}}]}))
    report = work / "run.jsonl"
    report.unlink(missing_ok=True)
    loupe("run", recipe, "--source", f"folder:{images}", "--report", f"jsonl:{report}", "-q")
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    step = [r["timings_ms"]["cnn"] for r in rows if "cnn" in r.get("timings_ms", {})]
    if not step:
        sys.exit(f"loupe run produced no timed frames ({len(rows)} rows in {report})")
    return {"images": len(rows), "median_ms": statistics.median(step), "p90_ms": float(np.percentile(step, 90))}


def train_and_eval(data: Path, bundle: Path, train_args: list[str]) -> dict:
    """``loupe train classify`` with its defaults (plus ``train_args``), then ``loupe eval`` on DATA/test."""
    t = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    loupe("train", "classify", data, "--out", bundle, "-q", *train_args)
    row = {"train_s": time.perf_counter() - t}
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the training process: / 2 threads ~ the wall time on an otherwise idle 2-core machine
    row["train_cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    meta = json.loads((bundle / "bundle.json").read_text())
    row["train_metrics"] = meta.get("metrics", {})
    ev = json.loads(loupe("eval", bundle, data, "--json").stdout)
    row["loupe"] = ev["accuracy"]
    row["eval_ms_per_image"] = ev["ms_per_image"]
    row["input_size"] = meta["input_size"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per", type=int, nargs="+", default=[10, 100], help="training images per class")
    ap.add_argument("--work", default="/tmp/loupe-bench-classify", help="scratch folder")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-images", type=int, default=1000, help="test images timed through loupe run")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--unlabelled", type=int, default=0,
                    help="also train each size with this many unlabelled images in DATA/unlabelled/")
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                    help="extra options for loupe train classify (last on the line)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    xtr, ytr = read_idx("train-images-idx3-ubyte"), read_idx("train-labels-idx1-ubyte").astype(np.int64)
    xte, yte = read_idx("t10k-images-idx3-ubyte"), read_idx("t10k-labels-idx1-ubyte").astype(np.int64)
    test_dir = work / "test"
    if not test_dir.exists() or sum(1 for _ in test_dir.rglob("*.png")) != len(xte):
        write_folders(test_dir, xte, yte)
    results = {"threads": 2, "test_images": int(len(xte)), "rows": [],
               "cpu": os.cpu_count(), "load_before": os.getloadavg()[0]}
    fte = None
    for per in args.per:
        sel = draw(ytr, per, args.seed)
        row: dict = {"per_class": per}
        if not args.no_baselines:
            t = time.perf_counter()
            row["svm_raw"] = svm_raw(xtr[sel], ytr[sel], xte, yte)
            row["svm_s"] = time.perf_counter() - t
            if fte is None:
                fte = pooled_features(xte)
            t = time.perf_counter()
            row["logreg_lite0_96"] = logreg_frozen(pooled_features(xtr[sel]), ytr[sel], fte, yte)
            row["logreg_s"] = time.perf_counter() - t
            print(f"[{per}/class] SVM raw {row['svm_raw']:.4f}  LR frozen Lite0 {row['logreg_lite0_96']:.4f}",
                  flush=True)
        data = work / f"fmnist-{per}"
        if not data.exists():
            write_folders(data / "train", xtr[sel], ytr[sel])
            (data / "test").symlink_to(test_dir)
        row.update(train_and_eval(data, work / f"model-{per}", args.train_args))
        print(f"[{per}/class] Loupe {row['loupe']:.4f}, training {row['train_s']:.0f} s "
              f"(best epoch {row['train_metrics'].get('best_epoch')}, {row['train_metrics'].get('stopped')})",
              flush=True)
        if args.unlabelled:
            n = args.unlabelled
            data_u = work / f"fmnist-{per}-u{n}"
            if not data_u.exists():
                unl = unlabelled_draw(len(ytr), sel, n, args.seed)
                (data_u / "unlabelled").mkdir(parents=True)
                for i in unl:
                    cv2.imwrite(str(data_u / "unlabelled" / f"{i:05d}.png"), xtr[i])
                (data_u / "train").symlink_to((data / "train").resolve())
                (data_u / "test").symlink_to(test_dir.resolve())
            row["with_unlabelled"] = {"unlabelled": n,
                                      **train_and_eval(data_u, work / f"model-{per}-u{n}", args.train_args)}
            print(f"[{per}/class] Loupe with {n} unlabelled images {row['with_unlabelled']['loupe']:.4f}, "
                  f"training {row['with_unlabelled']['train_s']:.0f} s", flush=True)
        results["rows"].append(row)
    # inference through loupe run, on test images at the model's input size
    last = work / f"model-{args.per[-1]}"
    size = json.loads((last / "bundle.json").read_text())["input_size"][0]
    run_dir = work / f"run-{size}px"
    if not run_dir.exists():  # one flat folder (the folder source does not recurse by default)
        run_dir.mkdir(parents=True)
        for i in range(min(args.run_images, len(xte))):
            img = cv2.resize(xte[i], (size, size), interpolation=cv2.INTER_LINEAR)
            cv2.imwrite(str(run_dir / f"{i:05d}_{NAMES[yte[i]]}.png"), img)
    results["loupe_run"] = {"bundle": str(last), "input_px": size, **time_loupe_run(last, run_dir, work)}
    # the same with one ONNX Runtime thread: on a loaded machine, waking a second worker thread per image
    # costs scheduler latency, which this figure leaves out
    results["loupe_run_1thread"] = time_loupe_run(last, run_dir, work, threads=1)
    results["load_after"] = os.getloadavg()[0]

    print("\n| images/class | RBF-SVM raw pixels | LogReg frozen Lite0 96px | Loupe (defaults) | Loupe training wall "
          "| training CPU s / 2 |")
    print("|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(f"| {r['per_class']} | {r.get('svm_raw', float('nan')):.4f} | "
              f"{r.get('logreg_lite0_96', float('nan')):.4f} | {r['loupe']:.4f} | {r['train_s']:.0f} s | "
              f"{r['train_cpu_s'] / 2:.0f} s |")
        if "with_unlabelled" in r:
            u = r["with_unlabelled"]
            print(f"| {r['per_class']} + {u['unlabelled']} unlabelled | | | {u['loupe']:.4f} | {u['train_s']:.0f} s "
                  f"| {u['train_cpu_s'] / 2:.0f} s |")
    lr = results["loupe_run"]
    print(f"\nloupe run, {lr['images']} images at {lr['input_px']} px: median {lr['median_ms']:.2f} ms/img "
          f"(p90 {lr['p90_ms']:.2f}); with 1 ORT thread {results['loupe_run_1thread']['median_ms']:.2f} ms; "
          f"load average {results['load_before']:.1f} before, "
          f"{results['load_after']:.1f} after")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
