"""Every Loupe chart's drawing, with matplotlib: the ``loupe eval`` / ``loupe dataset`` PNGs and the desktop app.

Public as ``host.charts`` (``from host import charts``). matplotlib is optional for the host: nothing here
imports it until a chart is drawn, and the plugins that draw charts declare it. Each ``draw_*`` function
draws on a matplotlib ``Axes`` it is given, so the same drawing goes into a PNG (``figure()`` +
``save()``, Agg canvas, no pyplot) or into a Qt widget (the desktop app's ``FigureCanvasQTAgg``).

One look everywhere: the series colours ``SERIES``, the verdict colours ``VERDICT_COLOURS`` (good images
and passing cells green, defects and failing cells red), the confusion-matrix rule ``confusion_style``, and
the legend rule: a legend goes *outside* the axes, under them (``legend_below``), laid out by matplotlib's
constrained layout, so at any width it covers neither the title nor the data; it wraps onto more rows when
the chart is narrow. ``Palette`` carries the background / text colours (``LIGHT`` for reports, the desktop
app passes its dark theme's).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .imaging import VERDICT_COLOURS, confusion_style

#: series colours (curves, stacked bars), the same in every chart
SERIES = ["#3d8bfd", "#f0b429", "#9b59b6", "#00bcd4", "#ff8a3d", "#e377c2", "#8c564b", "#7f7f7f"]


@dataclass(frozen=True)
class Palette:
    background: str = "#ffffff"
    text: str = "#222222"
    muted: str = "#666666"
    grid: str = "#dddddd"
    #: colour of an empty confusion cell (the background the status colours are blended over)
    cell: str = "#ffffff"
    #: text on a strongly coloured cell
    on_colour: str = "#111111"


LIGHT = Palette()


def _rgb(colour: str) -> np.ndarray:
    c = colour.lstrip("#")
    return np.array([int(c[k:k + 2], 16) / 255 for k in (0, 2, 4)])


def figure(width_in: float = 5.2, height_in: float = 4.0, dpi: int = 110):
    """A ``Figure`` with constrained layout on an Agg canvas (no pyplot state: safe in threads, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path) -> None:
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=fig.dpi, facecolor=fig.get_facecolor())


def style(fig, ax, palette: Palette = LIGHT, title: str = "", xlabel: str = "", ylabel: str = "",
          fontsize: float = 9.0, grid: str | None = "both") -> None:
    """Colours, title, labels and grid of one chart."""
    fig.set_facecolor(palette.background)
    ax.set_facecolor(palette.background)
    for side, spine in ax.spines.items():
        spine.set_color(palette.grid if side in ("left", "bottom") else palette.background)
        spine.set_visible(side in ("left", "bottom"))
    ax.tick_params(colors=palette.muted, labelsize=fontsize - 1)
    if title:  # the figure's title, from its left edge, wrapped to its width: never cut, never under a legend
        import textwrap

        chars = max(12, int(fig.get_figwidth() * 72 / ((fontsize + 1) * 0.62)) - 2)
        fig.suptitle(textwrap.fill(title, chars), x=0.02, ha="left", color=palette.text, fontsize=fontsize + 1,
                     fontweight="bold")
    if xlabel:
        ax.set_xlabel(xlabel, color=palette.muted, fontsize=fontsize)
    if ylabel:
        ax.set_ylabel(ylabel, color=palette.muted, fontsize=fontsize)
    if grid:
        ax.grid(True, axis=grid, color=palette.grid, lw=0.7)
        ax.set_axisbelow(True)


def legend_below(fig, ax, palette: Palette = LIGHT, fontsize: float = 8.0, width_px: float | None = None):
    """The legend of ``ax`` under the chart, outside the axes (constrained layout makes room for it), in as
    many columns as fit the figure's width; ``None`` when nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    width_px = width_px or fig.get_figwidth() * fig.dpi
    char_px = fontsize * fig.dpi / 72 * 0.6
    widest = max(len(s) for s in labels) * char_px + 3.2 * fontsize * fig.dpi / 72
    ncol = max(1, min(len(labels), int(width_px * 0.95 // widest)))
    leg = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=fontsize, frameon=False,
                     labelcolor=palette.text, handlelength=1.4, columnspacing=1.2)
    return leg


def empty(fig, text: str, palette: Palette = LIGHT, title: str = "", fontsize: float = 9.0) -> None:
    """A chart with no data yet: its title and a message."""
    import textwrap

    fig.set_facecolor(palette.background)
    if title:
        fig.text(0.02, 0.97, title, ha="left", va="top", color=palette.text, fontsize=fontsize + 1,
                 fontweight="bold")
    width_chars = max(16, int(fig.get_figwidth() * 72 / (fontsize * 0.6)) - 4)
    fig.text(0.5, 0.5, textwrap.fill(text, width_chars), ha="center", va="center", color=palette.muted,
             fontsize=fontsize)


# ------------------------------------------------------------------ the charts


def draw_lines(ax, curves: dict[str, tuple[Sequence[float], Sequence[float]]], colours: dict[str, str] | None = None,
               last_value: bool = True) -> None:
    """Curves over a shared x axis (loss / metrics per epoch); each label ends with its last value."""
    colours = colours or {}
    for k, (name, (xs, ys)) in enumerate(curves.items()):
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        ok = np.isfinite(ys)
        if not ok.any():
            continue
        label = f"{name}  {ys[ok][-1]:.4g}" if last_value else name
        ax.plot(xs[ok], ys[ok], color=colours.get(name, SERIES[k % len(SERIES)]), lw=1.8,
                marker="o" if ok.sum() <= 12 else None, ms=3, label=label)
    _auto_ticks(ax)


def _auto_ticks(ax) -> None:
    """1 / 2 / 2.5 / 5 x 10^k ticks, as many as the axis length leaves room for (fewer on a narrow chart)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10]))


def draw_roc(ax, fpr, tpr, auc: float, operating_point: tuple[float, float] | None = None,
             palette: Palette = LIGHT, threshold_label: str = "threshold") -> None:
    """The image-level ROC with the chance diagonal and the operating point (the threshold in use)."""
    ax.plot([0, 1], [0, 1], color=palette.muted, lw=1, ls="--", label="chance")
    ax.plot(fpr, tpr, color=SERIES[0], lw=2, label=f"ROC (AUROC {auc:.3f})")
    if operating_point is not None:
        fx, ty = operating_point
        ax.plot([fx], [ty], "o", ms=8, mfc=VERDICT_COLOURS["review"], mec=palette.text,
                label=f"{threshold_label}: TPR {ty:.2f}, FPR {fx:.2f}")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    _auto_ticks(ax)


def draw_score_histogram(ax, groups: Sequence[tuple[str, Sequence[float]]], threshold: float | None = None,
                         x_range: tuple[float, float] | None = None, bins: int = 30,
                         colours: Sequence[str] = (VERDICT_COLOURS["pass"], VERDICT_COLOURS["fail"]),
                         palette: Palette = LIGHT) -> None:
    """Overlaid histograms of scores per group (good / defect) on shared bins, and the threshold line."""
    vals = [np.asarray(v, float) for _, v in groups]
    if x_range is not None:
        lo, hi = x_range
    else:
        allv = np.concatenate([v for v in vals if len(v)] + ([np.array([threshold])] if threshold is not None
                                                                else []))
        lo, hi = float(allv.min()), float(allv.max())
        pad = 0.04 * (hi - lo) if hi > lo else 0.5
        lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    for k, ((name, _), v) in enumerate(zip(groups, vals)):
        ax.hist(np.clip(v, lo, hi), edges, color=colours[k % len(colours)], alpha=0.7 if k == 0 else 0.6,
                label=f"{name} (n={len(v)})")
    if threshold is not None:
        ax.axvline(threshold, color=palette.text, lw=1.5, ls="--", label=f"threshold {threshold:.3g}")
    ax.set_xlim(lo, hi)
    ax.yaxis.get_major_locator().set_params(integer=True)


def draw_bars(ax, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
              colours: Sequence[str] = SERIES, palette: Palette = LIGHT, fontsize: float = 8.0) -> None:
    """Stacked bars per label (e.g. train / test images per class), each bar's total above it."""
    x = np.arange(len(labels))
    base = np.zeros(len(labels))
    for k, (name, vals) in enumerate(series):
        v = np.asarray(vals, float)
        ax.bar(x, v, 0.7, bottom=base, color=colours[k % len(colours)], label=name)
        base += v
    for i, total in enumerate(base):
        ax.text(i, total, f"{total:g}", ha="center", va="bottom", color=palette.text, fontsize=fontsize)
    ax.set_ylim(0, max(float(base.max(initial=0)), 1.0) * 1.15)
    names = [s if len(s) <= 14 else s[:13] + "…" for s in labels]
    rotate = len(labels) > 4
    ax.set_xticks(x, names, rotation=35 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor")
    ax.yaxis.get_major_locator().set_params(integer=True)


def draw_sizes(ax, sizes: dict[tuple[int, int], int], palette: Palette = LIGHT, label_top: int = 4,
               fontsize: float = 8.0) -> None:
    """Image sizes: a width x height scatter, dot area ~ how many images share the size; the most common
    sizes labelled."""
    if not sizes:
        return
    top = max(sizes.values())
    items = sorted(sizes.items(), key=lambda kv: -kv[1])
    ws = [w for (w, _), _ in items]
    hs = [h for (_, h), _ in items]
    ax.scatter(ws, hs, s=[30 + 400 * n / top for _, n in items], color=SERIES[0], alpha=0.6,
               edgecolors=palette.text, linewidths=0.5)
    hi = max(max(ws), max(hs)) * 1.15
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    for (w, h), n in items[:label_top]:
        right = w > 0.5 * hi  # label on the side with room, so it stays inside the axes
        ax.annotate(f"{w}×{h} ({n})", (w, h), xytext=(-10 if right else 10, 8), textcoords="offset points",
                    ha="right" if right else "left", color=palette.text, fontsize=fontsize)


def confusion_rgb(matrix, palette: Palette = LIGHT) -> np.ndarray:
    """N x N x 3 floats: each cell's colour under ``confusion_style`` (its status colour blended over the
    palette's cell colour by its strength)."""
    style_ = confusion_style(matrix)
    n = len(style_)
    bg = _rgb(palette.cell)
    rgb = np.tile(bg, (n, n, 1)) if n else np.zeros((0, 0, 3))
    for i in range(n):
        for j in range(n):
            status, strength = style_[i][j]
            if status != "none":
                rgb[i, j] = bg + (_rgb(VERDICT_COLOURS[status]) - bg) * strength
    return rgb


def draw_confusion(ax, matrix, classes: Sequence[str], palette: Palette = LIGHT, fontsize: float | None = None,
                   show_rate: bool = True) -> None:
    """The confusion matrix (rows = true class, columns = predicted), coloured by ``confusion_style``;
    each cell shows its count and its share of the row. Cell (i, j) is centred on data (x=j, y=i)."""
    cm = np.asarray(matrix, dtype=np.float64)
    n = len(classes)
    rgb = confusion_rgb(cm, palette)
    # as 8-bit (rounded): a full-strength cell is exactly its verdict colour (floats would be truncated)
    ax.imshow(np.round(rgb * 255).astype(np.uint8), interpolation="nearest")
    fs = fontsize or (9 if n <= 12 else 7)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    bg = _rgb(palette.cell)
    for i in range(n):
        for j in range(n):
            if cm[i, j] or i == j:
                light = float(np.dot(rgb[i, j], [0.299, 0.587, 0.114]))
                text_colour = "#111111" if light > 0.5 else "#f2f2f2"
                if np.allclose(rgb[i, j], bg):
                    text_colour = palette.text
                ax.text(j, i, f"{int(cm[i, j])}" + (f"\n{100 * rate[i, j]:.0f}%" if show_rate else ""),
                        ha="center", va="center", fontsize=fs, color=text_colour)
    names = [c if len(c) <= 16 else c[:15] + "…" for c in classes]
    ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=fs)
    ax.set_yticks(range(n), names, fontsize=fs)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color=palette.grid, lw=0.8)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", colors=palette.text)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("predicted class", color=palette.muted, fontsize=fs)
    ax.set_ylabel("true class", color=palette.muted, fontsize=fs)


def save_confusion(matrix, classes: Sequence[str], path, title: str = "") -> None:
    """The confusion matrix as a PNG of its own (``loupe eval --out``), sized for its number of classes."""
    import textwrap

    n = len(classes)
    side = min(14.0, max(4.5, 0.62 * n + 2.2))
    fig = figure(side + 0.6, side)
    ax = fig.add_subplot()
    draw_confusion(ax, matrix, classes)
    ax.set_title(textwrap.fill(title or "confusion matrix", 40 + 4 * n), fontsize=9)
    save(fig, path)


__all__ = ["LIGHT", "SERIES", "Palette", "confusion_rgb", "draw_bars", "draw_confusion", "draw_lines", "draw_roc",
           "draw_score_histogram", "draw_sizes", "empty", "figure", "legend_below", "save", "save_confusion", "style"]

