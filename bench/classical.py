"""Benchmark of the classical tools: each tool on a 1-megapixel image beside the bare OpenCV call it wraps.

Both sides run in the same process, interleaved (tool, bare, tool, bare, ...), on the same image and with
the same parameters, so machine load affects them alike. The table gives the median ms of each and
their ratio (target: <= 1.1).

    .venv/bin/python bench/classical.py [--repeat N] [--only ID ...] [--json] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from host import StepContext


def _images() -> dict[str, np.ndarray]:
    """1000x1000 test images built from a real photo (skimage astronaut) and rendered codes."""
    import skimage.data

    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    bgr = cv2.resize(photo, (1000, 1000), interpolation=cv2.INTER_CUBIC)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    # parts: 120 dark discs on a light plate with an uneven light (blob, shape, circles)
    plate = np.full((1000, 1000), 210, np.uint8)
    rng = np.random.default_rng(0)
    for i in range(12):
        for j in range(10):
            cv2.circle(plate, (50 + 80 * i + int(rng.integers(-5, 5)), 60 + 95 * j), int(rng.integers(15, 28)), 40, -1,
                       lineType=cv2.LINE_AA)
    yy, xx = np.mgrid[0:1000, 0:1000]
    plate = np.clip(plate * (0.75 + 0.25 * xx / 999.0) + rng.normal(0, 3, plate.shape), 0, 255).astype(np.uint8)
    qr = cv2.QRCodeEncoder.create().encode("LOUPE-BENCH-0001")
    qr = cv2.resize(qr, None, fx=10, fy=10, interpolation=cv2.INTER_NEAREST)
    page = np.full((1000, 1000), 235, np.uint8)
    page[300:300 + qr.shape[0], 350:350 + qr.shape[1]] = qr
    return {"bgr": bgr, "gray": gray, "plate": plate, "qr": page}


def _cases(img: dict[str, np.ndarray], tmp: Path) -> list[tuple[str, dict, str, Callable, str]]:
    """(tool id, params, image key, bare callable, description of the bare call)."""
    gray, bgr, plate = img["gray"], img["bgr"], img["plate"]
    tpl = gray[400:480, 450:550].copy()
    cv2.imwrite(str(tmp / "tpl.png"), tpl)
    clahe = cv2.createCLAHE(2.0, (8, 8))
    k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    remap_x = remap_y = None

    def bare_ff(f=plate):
        x = f.astype(np.float32)
        bg = cv2.blur(cv2.blur(x, (51, 51)), (51, 51))
        return cv2.divide(x, bg, scale=cv2.mean(bg)[0], dtype=cv2.CV_8U)

    def bare_blob(g=plate):
        _, m = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
        cs, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        return [(cv2.moments(c), cv2.arcLength(c, True), cv2.boundingRect(c)) for c in cs]

    def bare_shape(g=plate):
        _, m = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
        cs, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(cs, key=cv2.contourArea)
        return cv2.minEnclosingCircle(c), cv2.fitEllipse(c), cv2.minAreaRect(c), cv2.convexHull(c)

    n, w = 801, 20
    t = np.arange(n, dtype=np.float32)
    s = np.arange(w, dtype=np.float32) - (w - 1) / 2.0
    remap_x = (100 + t[None, :] + 0 * s[:, None]).astype(np.float32)
    remap_y = (500 + 0 * t[None, :] + s[:, None]).astype(np.float32)

    def bare_caliper(g=gray):
        band = cv2.remap(g, remap_x, remap_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return band.mean(axis=0)

    def bare_intensity(b=bgr):
        g = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)
        return (cv2.meanStdDev(g), cv2.minMaxLoc(g), cv2.mean(b), cv2.calcHist([g], [0], None, [256], [0, 256]))

    qr_det = cv2.QRCodeDetector()
    bar_det = cv2.barcode.BarcodeDetector()
    lo, hi = np.array([0]), np.array([127])
    return [
        ("classical.gray", {}, "bgr", lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), "cvtColor BGR2GRAY"),
        ("classical.color", {"to": "hsv"}, "bgr", lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV), "cvtColor BGR2HSV"),
        ("classical.resize", {"scale": 0.5}, "bgr",
         lambda: cv2.resize(bgr, (500, 500), interpolation=cv2.INTER_AREA), "resize INTER_AREA"),
        ("classical.crop", {"x": 100, "y": 100, "width": 600, "height": 600}, "bgr",
         lambda: bgr[100:700, 100:700].copy(), "slice + copy"),
        ("classical.rotate", {"angle": 90}, "bgr", lambda: cv2.rotate(bgr, cv2.ROTATE_90_COUNTERCLOCKWISE),
         "rotate 90"),
        ("classical.gaussian", {"sigma": 1.5}, "gray", lambda: cv2.GaussianBlur(gray, (0, 0), 1.5), "GaussianBlur"),
        ("classical.median", {"ksize": 5}, "gray", lambda: cv2.medianBlur(gray, 5), "medianBlur 5"),
        ("classical.clahe", {}, "gray", lambda: clahe.apply(gray), "CLAHE.apply"),
        ("classical.normalize", {}, "gray",
         lambda: cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U), "normalize MINMAX"),
        ("classical.threshold", {"method": "otsu"}, "gray",
         lambda: cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU), "threshold OTSU"),
        ("classical.morphology", {"operation": "open", "size": 3}, "gray",
         lambda: cv2.morphologyEx(gray, cv2.MORPH_OPEN, k3), "morphologyEx OPEN"),
        ("classical.flatfield", {"method": "blur", "size": 51}, "plate", bare_ff, "2x blur + divide (float32)"),
        ("classical.blob", {"polarity": "dark", "min_area": 0}, "plate", bare_blob,
         "threshold + findContours + moments/arcLength/boundingRect"),
        ("classical.shape", {"circle_fit": "enclosing"}, "plate", bare_shape,
         "threshold + findContours + fits of the largest"),
        ("classical.caliper", {"start": [100, 500], "end": [900, 500], "width": 20, "sigma": 0}, "gray",
         bare_caliper, "remap 801x20 band + mean"),
        ("classical.pattern", {"template": "tpl.png", "min_score": 0.5}, "gray",
         lambda: cv2.minMaxLoc(cv2.matchTemplate(gray, tpl, cv2.TM_CCOEFF_NORMED)), "matchTemplate + minMaxLoc"),
        ("classical.intensity", {}, "bgr", bare_intensity, "cvtColor + meanStdDev + minMaxLoc + mean + calcHist"),
        ("classical.pixel_count", {"outline": False}, "gray",
         lambda: cv2.countNonZero(cv2.inRange(gray, lo, hi)), "inRange + countNonZero"),
        ("classical.presence", {}, "gray", lambda: (cv2.countNonZero(cv2.inRange(gray, lo, hi)), cv2.mean(gray)),
         "inRange + countNonZero + mean"),
        ("classical.lines", {}, "gray",
         lambda: cv2.HoughLinesP(cv2.Canny(gray, 50, 150), 1, np.pi / 180, 50, minLineLength=30, maxLineGap=5),
         "Canny + HoughLinesP"),
        ("classical.circles", {"min_radius": 10, "max_radius": 40}, "plate",
         lambda: cv2.HoughCircles(cv2.medianBlur(plate, 5), cv2.HOUGH_GRADIENT_ALT, 1.5, 20, param1=300,
                                  param2=0.8, minRadius=10, maxRadius=40), "medianBlur + HoughCircles ALT"),
        ("classical.qrcode", {}, "qr", lambda: qr_det.detectAndDecodeMulti(img["qr"]), "detectAndDecodeMulti"),
        ("classical.barcode", {"retry_smoothed": False, "retry_scales": []}, "gray",
         lambda: bar_det.detectAndDecodeWithType(gray), "barcode detectAndDecodeWithType (no code)"),
    ]


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def run(repeat: int, only: list[str] | None) -> list[dict[str, Any]]:
    from host import create_plugin_manager

    pm = create_plugin_manager()
    cat = pm.catalogue
    img = _images()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for tool_id, params, key, bare, what in _cases(img, Path(d)):
            if only and tool_id not in only:
                continue
            cls = cat.tool(tool_id).cls
            tool = cls(cls.Params.model_validate(params), StepContext(step="bench", base_dir=Path(d)))
            call = tool.process if cls.stage == "preprocess" else tool.inspect
            image = img[key]
            call(image), bare()  # warm-up
            # enough repetitions for ~0.4 s per side, at least `repeat`
            probe = max(_time(lambda: call(image)), 0.01)
            n = max(repeat, min(200, int(400 / probe)))
            ts, tb = [], []
            for i in range(n):
                if i % 2:
                    tb.append(_time(bare))
                    ts.append(_time(lambda: call(image)))
                else:
                    ts.append(_time(lambda: call(image)))
                    tb.append(_time(bare))
            mt, mb = statistics.median(ts), statistics.median(tb)
            rows.append({"tool": tool_id, "image": f"{image.shape[1]}x{image.shape[0]}"
                         + ("x3" if image.ndim == 3 else ""), "runs": n, "tool_ms": mt, "bare_ms": mb,
                         "ratio": mt / mb if mb > 0 else math.inf, "bare": what})
            tool.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15, help="at least this many timed runs per side (default 15)")
    ap.add_argument("--only", nargs="*", metavar="ID", help="tool ids to run (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's choice)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    rows = run(args.repeat, args.only)
    meta = {"opencv": cv2.__version__, "threads": cv2.getNumThreads(), "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if args.json:
        print(json.dumps({"meta": meta, "results": rows}, indent=1))
        return 0
    print(f"OpenCV {meta['opencv']}, {meta['threads']} threads, {meta['cpus']} CPUs, "
          f"load {meta['load_avg_1min']:.2f}; medians, tool and bare call interleaved\n")
    print(f"| {'tool':<22} | {'image':<11} | {'tool ms':>8} | {'bare ms':>8} | {'ratio':>5} | bare OpenCV call |")
    print(f"|{'-' * 24}|{'-' * 13}|{'-' * 10}|{'-' * 10}|{'-' * 7}|------------------|")
    for r in rows:
        print(f"| {r['tool']:<22} | {r['image']:<11} | {r['tool_ms']:8.3f} | {r['bare_ms']:8.3f} | "
              f"{r['ratio']:5.2f} | {r['bare']} |")
    over = [r["tool"] for r in rows if r["ratio"] > 1.1]
    print(f"\n{len(rows) - len(over)}/{len(rows)} tools within 1.1x of the bare call"
          + (f"; above: {', '.join(over)}" if over else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
