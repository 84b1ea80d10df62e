"""A browsable HTML report for triage: thumbnails with overlays and heatmaps, verdicts, measurements.

``html:DIR`` writes ``DIR/index.html``, ``DIR/img/*.jpg`` (PNG when Pillow is missing) and
``DIR/frames.jsonl``, the report's own record of every frame it was given (one JSON object a line, flushed
per frame). The page is rebuilt from that record when the run closes, so ``loupe run --resume`` *appends* to
the report of the interrupted run (same recipe hash) instead of replacing it; a run without ``--resume``
starts the report afresh.

The page sorts frames by severity, file order or any measurement, filters them by step and verdict, and
opens with a summary per step (verdict counts, what failed, measurement ranges). Overlays are drawn with
their statuses resolved against the step's verdict (``imaging.overlay_status``). Every text is escaped;
file names that are not valid UTF-8 are shown with replacement characters.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core import spc
from ..core.contracts import Reporter
from ..core.types import FrameResult, Shape, jsonable
from .imaging import (VERDICT_COLOURS, blend_heatmap, encode_jpeg, encode_png, overlay_status, thumbnail,
                      to_uint8)

COLOURS = VERDICT_COLOURS  # kept for importers of the old name
SEVERITY = {"pass": 0, "review": 1, "fail": 2, "error": 3}
RECORD = "frames.jsonl"


def clean(s: Any) -> str:
    """``str(s)`` safe to write as UTF-8: lone surrogates (the undecodable bytes of a file name, as Python
    decodes them) become U+FFFD."""
    s = str(s)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        try:  # the raw bytes of a file name back, then one U+FFFD per byte that is not UTF-8
            return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            return s.encode("utf-8", "replace").decode("utf-8")


def esc(s: Any) -> str:
    return html.escape(clean(s), quote=True)


class HtmlReporter(Reporter):
    """Writes ``DIR/index.html``, ``DIR/img/`` and ``DIR/frames.jsonl`` (see the module docstring).

    Images are kept for every non-passing frame (up to ``max_images``) and for the first passing ones, so a
    long run's report stays a browsable size; every frame still gets a card.
    """

    scheme = "html"
    description = "HTML report for triage: thumbnails, overlays, heatmaps, sort and filter, a summary per step"
    max_images = 1000
    max_pass_images = 200
    thumb_side = 480

    def open(self) -> None:
        self._dir = Path(self.target)
        (self._dir / "img").mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] = {}
        record = self._dir / RECORD
        earlier = self._read_record(record) if self.run.resume else None
        if earlier is None:
            for old in (self._dir / "img").glob("[0-9]*.*"):
                old.unlink()
            self._file = record.open("w", encoding="utf-8")
            self._file.write(json.dumps({"loupe_html": 1, "recipe_hash": self.run.recipe_hash}) + "\n")
        else:
            for rec in earlier:
                self._records[rec["key"]] = rec
            self._file = record.open("a", encoding="utf-8")
        self._seq = 1 + max((r.get("seq", 0) for r in self._records.values()), default=0)
        self._images = sum(1 for r in self._records.values() if r.get("img"))
        self._pass_images = sum(1 for r in self._records.values() if r.get("img") and r["verdict"] == "pass")
        self._file.flush()

    def _read_record(self, path: Path) -> list[dict[str, Any]] | None:
        """The frames of an earlier run of the same recipe, or ``None`` (no record, another recipe)."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        if not lines:
            return None
        try:
            head = json.loads(lines[0])
        except ValueError:
            return None
        if head.get("recipe_hash") != self.run.recipe_hash:
            return None
        out = []
        for line in lines[1:]:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
        return out

    def write(self, result: FrameResult) -> None:
        img = None
        want = result.image is not None and self._images < self.max_images and (
            result.verdict != "pass" or self._pass_images < self.max_pass_images)
        rec = self._record(result)
        if want:
            try:
                img = self._render_image(result, rec)
                self._images += 1
                self._pass_images += result.verdict == "pass"
            except Exception as exc:  # a report must never stop a run
                rec["img_error"] = clean(f"image not rendered: {exc}")
        rec["img"] = img
        self._seq += 1
        self._records[rec["key"]] = rec
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()

    def _record(self, result: FrameResult) -> dict[str, Any]:
        steps = []
        for r in result.results:
            meas = {clean(k): jsonable(v) for k, v in r.measurements.items()
                    if not isinstance(v, (list, tuple, dict, np.ndarray))}
            steps.append({"step": clean(r.step), "tool": clean(r.tool), "verdict": r.verdict,
                          "meas": {k: v for k, v in meas.items() if v is None or isinstance(v, (int, float, str))},
                          "failures": [clean(f) for f in r.failures], "error": clean(r.error) if r.error else None,
                          "ms": round(float(r.ms), 3)})
        path = clean(result.path) if result.path else None
        title = os.path.join(*Path(path).parts[-2:]) if path and Path(path).parts else clean(result.key)
        return {"seq": self._seq, "key": clean(result.key), "title": title, "index": int(result.index),
                "verdict": result.verdict, "error": clean(result.error) if result.error else None,
                "total_ms": round(float(result.total_ms), 3), "steps": steps}

    def _render_image(self, result: FrameResult, rec: dict[str, Any]) -> str:
        full = to_uint8(result.image)
        h, w = full.shape[:2]
        small, scale = thumbnail(full, self.thumb_side)
        if small.ndim == 2:
            small = np.repeat(small[:, :, None], 3, axis=2)
        small = np.ascontiguousarray(small)
        for r in result.results:
            if r.heatmap is None:
                continue
            x, y, rw, rh = r.roi if r.roi is not None else (0, 0, w, h)
            x0, y0 = int(x * scale), int(y * scale)
            x1, y1 = min(small.shape[1], int((x + rw) * scale)), min(small.shape[0], int((y + rh) * scale))
            if x1 > x0 and y1 > y0:
                small[y0:y1, x0:x1] = blend_heatmap(small[y0:y1, x0:x1], np.asarray(r.heatmap, dtype=np.float32))
        data = encode_jpeg(small)
        name = f"{self._seq:06d}.jpg" if data is not None else f"{self._seq:06d}.png"
        (self._dir / "img" / name).write_bytes(data if data is not None else encode_png(small))
        font = max(w, h) / 26.0
        rec["w"], rec["h"] = w, h
        rec["svg"] = "".join(_svg(s, st, font) for r in result.results for s in r.overlays
                             if (st := overlay_status(s.status, r.verdict)) is not None)
        return name

    def close(self) -> None:
        if not hasattr(self, "_records"):
            return
        self._file.close()
        page = build_page(list(self._records.values()), self.run)
        tmp = self._dir / "index.html.tmp"
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, self._dir / "index.html")


# ------------------------------------------------------------------ the page


def _fmt(v) -> str:
    v = jsonable(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return "NaN" if v is None else str(v)


def _frame_score(rec: dict[str, Any]) -> float | None:
    """The highest ``score`` measurement of the frame's steps (anomaly and classifier tools), for sorting."""
    vals = [s["meas"].get("score") for s in rec["steps"]]
    vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return max(vals) if vals else None


def _card(rec: dict[str, Any]) -> str:
    rows = []
    numbers: dict[str, float] = {}
    for s in rec["steps"]:
        meas = ", ".join(f"{esc(k)}={esc(_fmt(v))}" for k, v in s["meas"].items())
        for k, v in s["meas"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                numbers[f"{s['step']}.{k}"] = float(v)
        extra = "".join(f"<div class=fails>{esc(f)}</div>" for f in s["failures"])
        if s["error"]:
            extra += f"<div class=fails>{esc(s['error'])}</div>"
        rows.append(f'<tr><td><span class="v {s["verdict"]}">{s["verdict"]}</span></td>'
                    f'<td>{esc(s["step"])}<br><small>{esc(s["tool"])}</small></td>'
                    f'<td>{meas}{extra}</td><td>{s["ms"]:.2f}&nbsp;ms</td></tr>')
    if rec.get("img"):
        img = (f'<div class=imgbox><img src="img/{esc(rec["img"])}" loading=lazy alt="">'
               f'<svg viewBox="0 0 {rec["w"]} {rec["h"]}" preserveAspectRatio="none">{rec.get("svg", "")}</svg></div>')
    elif rec.get("img_error"):
        img = f"<div class=noimg>{esc(rec['img_error'])}</div>"
    else:
        img = ""
    err = f"<div class=fails>{esc(rec['error'])}</div>" if rec.get("error") else ""
    score = _frame_score(rec)
    v = rec["verdict"]
    steps = {s["step"]: s["verdict"] for s in rec["steps"]}
    attrs = (f'data-v="{v}" data-sev="{SEVERITY.get(v, 0)}" data-i="{rec["seq"]}" '
             f'data-nf="{sum(1 for s in rec["steps"] if s["verdict"] in ("fail", "error"))}" '
             f'data-score="{score if score is not None else ""}" data-m="{esc(json.dumps(numbers))}" '
             f'data-s="{esc(json.dumps(steps))}"')
    return (f'<div class="card {v}" {attrs}>{img}'
            f'<div class=head><span class="v {v}">{v}</span> '
            f'<b title="{esc(rec["key"])}">{esc(rec["title"])}</b> '
            f'<small>#{rec["index"]} · {rec["total_ms"]:.1f} ms'
            f'{f" · score {score:.3g}" if score is not None else ""}</small></div>{err}'
            f'<table>{"".join(rows)}</table></div>')


def step_summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step, in recipe order: tool, verdict counts, the measurements that failed most, and the
    min / median / max of each numeric measurement."""
    steps: dict[str, dict[str, Any]] = {}
    for rec in records:
        for s in rec["steps"]:
            d = steps.setdefault(s["step"], {"step": s["step"], "tool": s["tool"],
                                             "counts": {k: 0 for k in SEVERITY}, "failed": {}, "values": {}})
            d["counts"][s["verdict"]] = d["counts"].get(s["verdict"], 0) + 1
            for f in s["failures"]:
                what = re.split(r"[\s=:<>]", f, maxsplit=1)[0] or f
                d["failed"][what] = d["failed"].get(what, 0) + 1
            if s["error"]:
                d["failed"]["error"] = d["failed"].get("error", 0) + 1
            for k, v in s["meas"].items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    d["values"].setdefault(k, []).append(float(v))
    out = []
    for d in steps.values():
        d["ranges"] = {k: (min(v), statistics.median(v), max(v)) for k, v in d.pop("values").items()}
        out.append(d)
    return out


def _summary_html(summary: list[dict[str, Any]]) -> str:
    rows = []
    for d in summary:
        counts = " ".join(f'<span class="v {k}">{n}</span>' for k, n in d["counts"].items() if n)
        failed = ", ".join(f"{esc(k)} ×{n}" for k, n in sorted(d["failed"].items(), key=lambda kv: -kv[1])[:4])
        ranges = "<br>".join(f"{esc(k)}: {_fmt(lo)} · {_fmt(med)} · {_fmt(hi)}"
                             for k, (lo, med, hi) in list(d["ranges"].items())[:6])
        rows.append(f'<tr><td><b>{esc(d["step"])}</b><br><small>{esc(d["tool"])}</small></td><td>{counts}</td>'
                    f'<td>{failed or "–"}</td><td><small>{ranges}</small></td></tr>')
    return ("<table class=summary><tr><th>step</th><th>verdicts</th><th>failed on</th>"
            "<th>measurements: min · median · max</th></tr>" + "".join(rows) + "</table>")


def build_page(records: list[dict[str, Any]], run) -> str:
    counts = {k: 0 for k in SEVERITY}
    for r in records:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    total = len(records)
    summary = step_summary(records)
    measures = sorted({f"{s['step']}.{k}" for r in records for s in r["steps"] for k, v in s["meas"].items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
    sort_opts = ('<option value=sev>severity (worst first)</option><option value=score>score (highest first)'
                 '</option><option value=order>file order</option>'
                 + "".join(f'<option value="m:{esc(m)}">{esc(m)} (highest first)</option>' for m in measures))
    step_opts = '<option value="">every step</option>' + "".join(
        f'<option value="{esc(d["step"])}">{esc(d["step"])}</option>' for d in summary)
    buttons = f'<button data-f="all" class=on>all {total}</button>' + "".join(
        f'<button data-f="{k}"><span class="v {k}">{k}</span> {n}</button>' for k, n in counts.items())
    return PAGE.format(
        title=esc(run.recipe.name), recipe_hash=esc(run.recipe_hash[:16]), source=esc(run.source),
        run_id=esc(run.run_id), when=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started)),
        total=total, buttons=buttons, sort_opts=sort_opts, step_opts=step_opts, summary=_summary_html(summary) + spc_html(records, run),
        cards="\n".join(_card(r) for r in records), colours=_css_colours(),
        recipe=esc(json.dumps(run.recipe.to_dict(), indent=2, default=jsonable)))


def spc_series(records: list[dict[str, Any]], run) -> list[tuple[str, str, float | None, float | None, list[float]]]:
    """(step, measurement, lower limit, upper limit, values in frame order) of every measurement that a
    recipe step limits with ``min`` and/or ``max``: what the SPC section charts."""
    out = []
    for step in getattr(run.recipe, "inspect", []):
        for name, lim in step.limits.items():
            if lim.min is None and lim.max is None:
                continue
            vals = []
            for rec in records:
                for s in rec["steps"]:
                    v = s["meas"].get(name) if s["step"] == step.name else None
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                        vals.append(float(v))
            out.append((step.name, name, lim.min, lim.max, vals))
    return out


def spc_html(records: list[dict[str, Any]], run) -> str:
    """Statistical process control of the run: per limited measurement, an individuals chart (centre line,
    3-sigma control limits from the moving range, the recipe's limits) with its Western Electric rule
    violations, and Cp/Cpk against the recipe's limits (``host.spc``, NIST/SEMATECH 6.3.2 and 6.1.6)."""
    rows, charts = [], []
    for step, name, lsl, usl, vals in spc_series(records, run):
        if len(vals) < 3:
            continue
        res = spc.analyse(np.asarray(vals), lsl, usl)
        main = res["_charts"][0]
        viol = main.violations
        fmt = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
        rows.append(f"<tr><td>{esc(step)}.{esc(name)}</td><td>{res['n']}</td><td>{fmt(res['mean'])}</td>"
                    f"<td>{fmt(res['sigma_within'])}</td><td>{fmt(main.lcl)} · {fmt(main.ucl)}</td>"
                    f"<td>{fmt(lsl)} · {fmt(usl)}</td><td>{fmt(res['cp'])}</td><td>{fmt(res['cpk'])}</td>"
                    f"<td>{len(viol)}</td></tr>")
        charts.append(_spc_svg(f"{step}.{name}", vals, main, lsl, usl))
    if not rows:
        return ""
    return ("<h2>SPC</h2><table class=summary><tr><th>measurement</th><th>n</th><th>mean</th><th>sigma (MR)</th>"
            "<th>control limits</th><th>recipe limits</th><th>Cp</th><th>Cpk</th><th>rule violations</th></tr>"
            + "".join(rows) + "</table><div class=spc>" + "".join(charts) + "</div>")


def _spc_svg(title: str, vals: list[float], chart, lsl: float | None, usl: float | None) -> str:
    w, h, pad = 420, 150, 24
    lines = [v for v in (chart.lcl, chart.center, chart.ucl, lsl, usl) if v is not None]
    lo, hi = min(min(vals), *lines), max(max(vals), *lines)
    span = (hi - lo) or 1.0
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    sx = lambda i: pad + i * (w - 2 * pad) / max(1, len(vals) - 1)  # noqa: E731
    sy = lambda v: h - pad - (v - lo) * (h - 2 * pad) / (hi - lo)  # noqa: E731
    bad = {v["index"] for v in chart.violations}
    hline = lambda v, c, dash: (f'<line x1="{pad}" x2="{w - pad}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="{c}" '  # noqa: E731
                                f'stroke-dasharray="{dash}"/>') if v is not None else ""
    pts = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in enumerate(vals))
    dots = "".join(f'<circle cx="{sx(i):.1f}" cy="{sy(v):.1f}" r="{3 if i in bad else 1.8}" '
                   f'fill="{VERDICT_COLOURS["fail"] if i in bad else "#333"}"/>' for i, v in enumerate(vals))
    return (f'<figure><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">'
            + hline(chart.center, "#2a7", "") + hline(chart.ucl, "#e90", "5 3") + hline(chart.lcl, "#e90", "5 3")
            + hline(lsl, VERDICT_COLOURS["fail"], "2 2") + hline(usl, VERDICT_COLOURS["fail"], "2 2")
            + f'<polyline points="{pts}" fill="none" stroke="#888" stroke-width="1"/>{dots}</svg>'
            f'<figcaption>{esc(title)}: centre (green), control limits (amber), recipe limits (red)'
            f'</figcaption></figure>')


def _css_colours() -> str:
    return " ".join(f".v.{k}{{background:{c}}} .card.{k}{{border-color:{c}}}" for k, c in VERDICT_COLOURS.items())


def _svg(s: Shape, status: str, font: float) -> str:
    """One shape as SVG: drawn twice, a dark wider stroke under the coloured one, so that an outline stays
    visible on a heatmap of the same colour; labels get a dark halo for the same reason."""
    c = s.color if re.fullmatch(r"#[0-9a-fA-F]{6}", s.color or "") else VERDICT_COLOURS.get(status, VERDICT_COLOURS["info"])
    pts = s.points
    label = ""
    if s.label and pts:
        lx, ly = pts[0]
        if s.kind in ("polygon", "polyline") and len(pts) > 2:
            lx, ly = min(p[0] for p in pts), min(p[1] for p in pts) - font * 0.2
        ly = max(ly, font)
        label = (f'<text x="{lx:.1f}" y="{ly:.1f}" fill="{c}" font-size="{font:.1f}" font-weight="bold" '
                 f'font-family="sans-serif" stroke="#000" stroke-width="{font / 5:.1f}" paint-order="stroke" '
                 f'stroke-linejoin="round">{esc(s.label)}</text>')
    geom = ""
    if s.kind == "rect" and len(pts) == 2:
        (x0, y0), (x1, y1) = pts
        geom = (f'<rect x="{min(x0, x1):.1f}" y="{min(y0, y1):.1f}" width="{abs(x1 - x0):.1f}" '
                f'height="{abs(y1 - y0):.1f}"')
    elif s.kind == "circle" and pts:
        geom = f'<circle cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="{s.radius:.1f}"'
    elif s.kind == "ellipse" and pts:
        (cx, cy), (a, b) = pts[0], s.axes
        geom = (f'<ellipse cx="{cx:.1f}" cy="{cy:.1f}" rx="{a:.1f}" ry="{b:.1f}" '
                f'transform="rotate({s.angle:.1f} {cx:.1f} {cy:.1f})"')
    elif s.kind in ("line", "polyline", "polygon") and pts:
        tag = "polygon" if s.kind == "polygon" else "polyline"
        geom = f'<{tag} points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"'
    elif s.kind == "point" and pts:
        r = font / 5
        return (f'<circle cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="{r:.1f}" fill="{c}" stroke="#000" '
                f'stroke-width="1" vector-effect="non-scaling-stroke"/>') + label
    if not geom:
        return label
    return (f'{geom} stroke="#000" stroke-opacity="0.6" fill="none" stroke-width="4" '
            f'vector-effect="non-scaling-stroke"/>'
            f'{geom} stroke="{c}" fill="none" stroke-width="2" vector-effect="non-scaling-stroke"/>' + label)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Loupe report: {title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:0;background:#1e2227;color:#ddd}}
header{{padding:10px 16px;background:#14171a;position:sticky;top:0;z-index:2;border-bottom:1px solid #333}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:16px;margin:14px 16px 6px}} header small{{color:#999}}
.bar{{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin-top:6px}}
button,select{{background:#2a2f35;color:#ddd;border:1px solid #444;border-radius:4px;padding:3px 10px;cursor:pointer}}
button.on{{border-color:#ddd}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px;padding:16px}}
.card{{background:#262b31;border-radius:6px;padding:8px;border-left:5px solid #555;min-width:0}}
.imgbox{{position:relative;line-height:0}} .imgbox img{{width:100%;height:auto}}
.imgbox svg{{position:absolute;left:0;top:0;width:100%;height:100%;overflow:visible}}
.v{{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;color:#111;font-weight:bold;text-transform:uppercase}}
{colours}
.head{{margin:6px 0;overflow-wrap:anywhere}} table{{width:100%;font-size:12px;border-collapse:collapse}}
td,th{{border-top:1px solid #333;padding:3px;vertical-align:top;text-align:left;overflow-wrap:anywhere}}
.spc{{display:flex;flex-wrap:wrap;gap:10px;margin:8px 16px}} .spc figure{{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:4px}} .spc figcaption{{font-size:12px;color:#555}}
.summary{{margin:0 16px;width:auto;max-width:1100px}} .summary .v{{margin-right:4px}}
.fails{{color:#ff8a80;font-size:12px}} .noimg{{color:#999;font-size:12px}} pre{{font-size:11px;padding:16px;color:#aaa}}
#shown{{color:#999;font-size:12px}}
</style></head><body>
<header><h1>{title}</h1>
<small>run {run_id} · {when} · source {source} · recipe {recipe_hash} · {total} frames</small>
<div class=bar>{buttons}
<label>step <select id=step>{step_opts}</select></label>
<label>sort <select id=sort>{sort_opts}</select></label><span id=shown></span></div></header>
<h2>Summary per step</h2>
{summary}
<div class=grid id=grid>
{cards}
</div>
<details><summary style="padding:0 16px">recipe</summary><pre>{recipe}</pre></details>
<script>
const grid=document.getElementById('grid'), cards=[...grid.querySelectorAll('.card')];
let verdict='all';
function num(x){{const v=parseFloat(x);return isNaN(v)?-Infinity:v}}
function apply(){{
 const step=document.getElementById('step').value, sort=document.getElementById('sort').value;
 let n=0;
 cards.forEach(c=>{{
  const v=step?(JSON.parse(c.dataset.s)[step]||''):c.dataset.v;
  const show=(verdict==='all'||v===verdict)&&(!step||v!=='');
  c.style.display=show?'':'none'; n+=show;}});
 const key=c=>{{
  if(sort==='order')return[-num(c.dataset.i)];
  if(sort==='score')return[num(c.dataset.score),-num(c.dataset.i)];
  if(sort.startsWith('m:'))return[num(JSON.parse(c.dataset.m)[sort.slice(2)]),-num(c.dataset.i)];
  return[num(c.dataset.sev),num(c.dataset.nf),num(c.dataset.score),-num(c.dataset.i)];}};
 const sorted=cards.slice().sort((a,b)=>{{const ka=key(a),kb=key(b);
  for(let i=0;i<ka.length;i++){{if(ka[i]!==kb[i])return kb[i]>ka[i]?1:-1}}return 0}});
 sorted.forEach(c=>grid.appendChild(c));
 document.getElementById('shown').textContent=n+' shown';
}}
document.querySelectorAll('button[data-f]').forEach(b=>b.onclick=()=>{{
 verdict=b.dataset.f;document.querySelectorAll('button[data-f]').forEach(x=>x.classList.toggle('on',x===b));apply()}});
document.getElementById('step').onchange=apply;document.getElementById('sort').onchange=apply;apply();
</script></body></html>
"""
