"""``loupe dataset analyze DATA``: what is in a class-folder (or MVTec-style) image set, and what is wrong with it.

Reports class counts per split, the image-size distribution (a text histogram
and a PNG chart), unreadable or corrupt files, exact duplicates (by content
hash, flagging ones that sit in two classes or in both train and test), and
images whose channel count or bit depth differs from the majority. With
``--resize-to`` it writes a copy of the set with every image at one size.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host import IMAGE_EXTENSIONS, Command, UsageError, decode_image, read_image, resize_to
CHANNEL_NAMES = {1: "gray", 3: "colour", 4: "colour+alpha"}


@dataclass
class FileInfo:
    path: Path
    rel: str
    split: str
    cls: str
    sha256: str
    width: int = 0
    height: int = 0
    channels: int = 0
    depth: str = ""
    error: str | None = None


@dataclass
class Analysis:
    root: Path
    files: list[FileInfo] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)

    @property
    def readable(self) -> list[FileInfo]:
        return [f for f in self.files if f.error is None]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for f in self.files:
            out[f.split][f.cls] += 1
        return {s: dict(sorted(c.items())) for s, c in sorted(out.items())}

    def corrupt(self) -> list[dict[str, str]]:
        return [{"file": f.rel, "error": f.error} for f in self.files if f.error is not None]

    def duplicates(self) -> list[dict[str, Any]]:
        groups: dict[str, list[FileInfo]] = defaultdict(list)
        for f in self.files:
            groups[f.sha256].append(f)
        out = []
        for digest, fs in groups.items():
            if len(fs) < 2:
                continue
            classes = sorted({f.cls for f in fs})
            splits = sorted({f.split for f in fs})
            out.append({"sha256": digest, "files": [f.rel for f in fs],
                        "conflicting_classes": len(classes) > 1, "classes": classes,
                        "across_splits": len(splits) > 1})
        return sorted(out, key=lambda d: d["files"][0])

    def formats(self) -> tuple[Counter, Counter]:
        return Counter(f.channels for f in self.readable), Counter(f.depth for f in self.readable)

    def channel_mismatches(self) -> list[dict[str, Any]]:
        ch, dp = self.formats()
        if not ch:
            return []
        main_ch, main_dp = ch.most_common(1)[0][0], dp.most_common(1)[0][0]
        return [{"file": f.rel, "channels": f.channels, "depth": f.depth,
                 "expected_channels": main_ch, "expected_depth": main_dp}
                for f in self.readable if f.channels != main_ch or f.depth != main_dp]

    def sizes(self) -> Counter:
        return Counter((f.width, f.height) for f in self.readable)

    def to_dict(self) -> dict[str, Any]:
        ch, dp = self.formats()
        sizes = self.sizes()
        return {
            "data": str(self.root),
            "n_files": len(self.files),
            "n_readable": len(self.readable),
            "counts": self.counts(),
            "sizes": [{"width": w, "height": h, "count": n} for (w, h), n in sizes.most_common()],
            "uniform_size": len(sizes) <= 1,
            "channels": {CHANNEL_NAMES.get(k, str(k)): v for k, v in sorted(ch.items())},
            "depths": dict(sorted(dp.items())),
            "corrupt": self.corrupt(),
            "duplicates": self.duplicates(),
            "channel_mismatches": self.channel_mismatches(),
            "ignored_files": self.other_files,
        }


# ------------------------------------------------------------------ scanning


def _split_and_class(rel: Path) -> tuple[str, str]:
    parts = rel.parts[:-1]
    if not parts:
        return "-", "-"
    if parts[0] in ("train", "test", "val", "validation", "ground_truth", "unlabelled"):
        return parts[0], "/".join(parts[1:]) or "-"
    return "-", "/".join(parts)


def analyze(root: Path, progress=None) -> Analysis:
    import cv2
    import numpy as np

    from host import use_opencv

    use_opencv(cv2)

    if not root.is_dir():
        raise UsageError(f"{root}: data folder not found")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts))
    result = Analysis(root)
    images = [p for p in paths if p.suffix.lower() in IMAGE_EXTENSIONS]
    result.other_files = [str(p.relative_to(root)) for p in paths if p.suffix.lower() not in IMAGE_EXTENSIONS]
    for i, p in enumerate(images):
        rel = p.relative_to(root)
        split, cls = _split_and_class(rel)
        try:
            data = p.read_bytes()
        except OSError as exc:
            result.files.append(FileInfo(p, str(rel), split, cls, "", error=f"unreadable: {exc}"))
            continue
        info = FileInfo(p, str(rel), split, cls, hashlib.sha256(data).hexdigest())
        try:  # the host's one reader: header budget first, then OpenCV
            img, why = (decode_image(np.frombuffer(data, np.uint8), str(rel)), "") if data else (None, "")
        except ValueError as exc:
            img, why = None, str(exc)
        if img is None:
            info.error = "empty file" if not data else (
                why if "budget" in why else "cannot decode (corrupt, truncated or not an image)")
        else:
            info.height, info.width = img.shape[:2]
            info.channels = 1 if img.ndim == 2 else img.shape[2]
            info.depth = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}.get(img.dtype, str(img.dtype))
            if info.depth == "8-bit" and len(data) > 16:
                # a PNG/JPEG that decodes but lost its tail still decodes in OpenCV: check the end markers
                if p.suffix.lower() == ".png" and b"IEND" not in data[-16:]:
                    info.error = "truncated PNG (no IEND chunk)"
                elif p.suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
                    info.error = "truncated JPEG (no end-of-image marker)"
        result.files.append(info)
        if progress is not None and (i % 200 == 0 or i == len(images) - 1):
            progress(i + 1, len(images))
    return result


# ------------------------------------------------------------------ reporting


def text_histogram(sizes: Counter, width: int = 40, max_rows: int = 15) -> list[str]:
    """Rows ``WxH  count  ####``, the most common sizes first; the rest binned by longer side."""
    if not sizes:
        return ["  (no readable images)"]
    total = sum(sizes.values())
    common = sizes.most_common()
    rows = common[:max_rows]
    top = rows[0][1]
    lines = [f"  {f'{w}x{h}':>11} {n:>7} {100 * n / total:5.1f}%  {'#' * max(1, round(width * n / top))}"
             for (w, h), n in rows]
    rest = common[max_rows:]
    if rest:
        bins: Counter = Counter()
        for (w, h), n in rest:
            side = max(w, h)
            lo = 1 << max(0, side.bit_length() - 1)
            bins[lo] += n
        lines.append(f"  ... {len(rest)} other sizes, by longer side:")
        for lo in sorted(bins):
            n = bins[lo]
            lines.append(f"  {f'{lo}-{2 * lo - 1}px':>11} {n:>7} {100 * n / total:5.1f}%  "
                         f"{'#' * max(1, round(width * n / top))}")
    return lines


def size_chart(sizes: Counter, path: Path, title: str = "") -> None:
    """PNG, drawn with ``host.charts`` (matplotlib, Agg) like every Loupe chart: a width-vs-height scatter
    (dot area ~ count) and a bar chart of the most common sizes."""
    from host import charts

    fig = charts.figure(9.5, 4.2)
    ax, bx = fig.subplots(1, 2, width_ratios=[1, 1.1])
    if sizes:
        charts.draw_sizes(ax, dict(sizes))
        rows = sizes.most_common(12)[::-1]
        bx.barh([f"{w}×{h}" for (w, h), _ in rows], [n for _, n in rows], color=charts.SERIES[0])
        for k, (_, n) in enumerate(rows):
            bx.text(n, k, f" {n}", va="center", fontsize=8)
        bx.set_xlim(0, rows[-1][1] * 1.15)
        bx.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.grid(alpha=0.3)
    ax.set_title("sizes (dot area ~ images)", fontsize=10)
    bx.set_xlabel("images")
    bx.set_title("most common sizes", fontsize=10)
    fig.suptitle(title or "image size distribution")
    charts.save(fig, path)


def _parse_size(spec: str, sizes: Counter) -> tuple[int, int]:
    s = spec.lower().strip()
    if s in ("median", "mode"):
        if not sizes:
            raise UsageError("--resize-to: no readable images")
        if s == "mode":
            return sizes.most_common(1)[0][0]
        import numpy as np

        ws = np.repeat([w for w, _ in sizes], list(sizes.values()))
        hs = np.repeat([h for _, h in sizes], list(sizes.values()))
        return int(np.median(ws)), int(np.median(hs))
    try:
        w, h = (int(v) for v in s.split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
        return w, h
    except ValueError:
        raise UsageError(f"--resize-to {spec!r}: expected WIDTHxHEIGHT (e.g. 224x224), 'median' or 'mode'") from None


def resize_copy(result: Analysis, size: tuple[int, int], out: Path, progress=None) -> int:
    """Write every readable image, resized to ``size`` (w, h), to ``out`` with the same relative paths."""
    import cv2
    import numpy as np

    from host import use_opencv

    use_opencv(cv2)

    out = Path(out)
    if out.resolve() == result.root.resolve() or result.root.resolve() in out.resolve().parents:
        raise UsageError(f"--resize-out {out}: must lie outside the data folder {result.root}")
    n = 0
    for f in result.readable:
        img = read_image(f.path)
        img = resize_to(img, (size[1], size[0]))  # size is (width, height)
        dst = out / f.rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(dst.suffix if dst.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif",
                                                                    ".tiff") else ".png", img)
        if ok:
            buf.tofile(str(dst))
            n += 1
        if progress is not None and n % 200 == 0:
            progress(n, len(result.readable))
    return n


def print_report(d: dict[str, Any], chart: Path | None, out=sys.stdout) -> None:
    p = lambda s="": print(s, file=out)  # noqa: E731
    p(f"data set {d['data']}: {d['n_files']} image files, {d['n_readable']} readable")
    p()
    p("class counts")
    for split, counts in d["counts"].items():
        label = "" if split == "-" else f"{split}: "
        total = sum(counts.values())
        p(f"  {label}{total} images in {len(counts)} classes")
        for c, n in counts.items():
            p(f"    {c:<24} {n:>7}")
    p()
    sizes = Counter({(s["width"], s["height"]): s["count"] for s in d["sizes"]})
    p(f"image sizes ({len(sizes)} distinct{', uniform' if d['uniform_size'] else ''})")
    for line in text_histogram(sizes):
        p(line)
    if not d["uniform_size"]:
        p("  sizes vary: --resize-to WxH|median|mode --resize-out DIR writes a copy at one size")
    if chart is not None:
        p(f"  chart: {chart}")
    p()
    p("formats: " + ", ".join(f"{k} {v}" for k, v in d["channels"].items()) + "; "
      + ", ".join(f"{k} {v}" for k, v in d["depths"].items()))
    p()
    for key, title in (("corrupt", "corrupt or unreadable files"), ("duplicates", "exact duplicates"),
                       ("channel_mismatches", "channel / depth mismatches")):
        items = d[key]
        p(f"{title}: {len(items) if items else 'none'}")
        for it in items[:50]:
            if key == "corrupt":
                p(f"  {it['file']}: {it['error']}")
            elif key == "duplicates":
                flags = (" [DIFFERENT CLASSES]" if it["conflicting_classes"] else "") + \
                        (" [IN TRAIN AND TEST]" if it["across_splits"] else "")
                p(f"  {' = '.join(it['files'])}{flags}")
            else:
                p(f"  {it['file']}: {CHANNEL_NAMES.get(it['channels'], it['channels'])} {it['depth']} "
                  f"(most images: {CHANNEL_NAMES.get(it['expected_channels'], it['expected_channels'])} "
                  f"{it['expected_depth']})")
        if len(items) > 50:
            p(f"  ... and {len(items) - 50} more (see --json)")
    if d["ignored_files"]:
        p(f"\nnot images (ignored): {len(d['ignored_files'])}")


class DatasetCommand(Command):
    name = "dataset"
    help = "analyse an image data set: class counts, sizes, corrupt files, duplicates, channel mismatches"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="dataset_action", metavar="ACTION")
        sub.required = True
        a = sub.add_parser("analyze", aliases=["analyse"], help="report on the images under DATA")
        a.add_argument("data", metavar="DATA")
        a.add_argument("--json", action="store_true", help="print one JSON object")
        a.add_argument("--out", metavar="DIR", default="dataset-analysis",
                       help="where the size chart and analysis.json go (default ./dataset-analysis)")
        a.add_argument("--resize-to", metavar="WxH", help="write a copy of the set at one size: WxH, median or mode")
        a.add_argument("--resize-out", metavar="DIR", help="folder for the resized copy (with --resize-to)")
        a.add_argument("--strict", action="store_true",
                       help="exit with status 1 when corrupt files, duplicates or mismatches were found")

    def run(self, args: argparse.Namespace) -> int:
        root = Path(args.data)
        if args.resize_to and not args.resize_out:
            raise UsageError("--resize-to needs --resize-out DIR")
        quiet = args.json

        def prog(done, total):
            if not quiet and sys.stderr.isatty():
                print(f"\rscanning {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

        result = analyze(root, prog)
        d = result.to_dict()
        from .segment.analyze import add_segmentation, print_segmentation  # segmentation sets

        seg = add_segmentation(root, d)
        from .detect.analyze import add_detection, print_detection  # detection sets

        det = add_detection(root, d)
        out = Path(args.out)
        chart = out / "size_distribution.png"
        size_chart(result.sizes(), chart, f"image sizes of {root.name} ({d['n_readable']} images)")
        d["chart"] = str(chart)
        if args.resize_to:
            size = _parse_size(args.resize_to, result.sizes())
            n = resize_copy(result, size, Path(args.resize_out))
            d["resized"] = {"size": list(size), "out": args.resize_out, "images": n}
        (out / "analysis.json").write_text(json.dumps(d, indent=2))
        if args.json:
            print(json.dumps(d))
        else:
            print_report(d, chart)
            if seg is not None:
                print_segmentation(seg)
            if det is not None:
                print_detection(det)
            if args.resize_to:
                print(f"\nresized {d['resized']['images']} images to {size[0]}x{size[1]} -> {args.resize_out}")
        problems = (d["corrupt"] or d["duplicates"] or d["channel_mismatches"] or (seg or {}).get("mask_problems")
                    or (det or {}).get("outside"))
        return 1 if (args.strict and problems) else 0
