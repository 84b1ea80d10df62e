"""A browsable HTML report: thumbnails with overlays and heatmaps, verdicts, measurements."""
from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

import numpy as np

from ..core.contracts import Reporter
from ..core.types import FrameResult, Shape, jsonable
from .imaging import blend_heatmap, encode_png, thumbnail, to_uint8

COLOURS = {"pass": "#2ecc71", "fail": "#e74c3c", "review": "#f39c12", "error": "#8e44ad", "info": "#00bcd4"}


class HtmlReporter(Reporter):
    """Writes ``DIR/index.html`` and ``DIR/img/*.png``.

    Images are kept for every non-passing frame (up to ``max_images``) and for
    the first passing ones, so a long run's report stays a browsable size;
    every frame still gets a row.
    """

    scheme = "html"
    description = "HTML report with thumbnails, overlays, heatmaps, verdicts and measurements"
    max_images = 1000
    max_pass_images = 200
    thumb_side = 480

    def open(self) -> None:
        self._dir = Path(self.target)
        (self._dir / "img").mkdir(parents=True, exist_ok=True)
        self._cards: list[str] = []
        self._counts = {"pass": 0, "review": 0, "fail": 0, "error": 0}
        self._images = 0
        self._pass_images = 0

    def write(self, result: FrameResult) -> None:
        self._counts[result.verdict] += 1
        img_html = ""
        want = result.image is not None and self._images < self.max_images and (
            result.verdict != "pass" or self._pass_images < self.max_pass_images)
        if want:
            try:
                img_html = self._render_image(result)
                self._images += 1
                self._pass_images += result.verdict == "pass"
            except Exception as exc:  # a report must never stop a run
                img_html = f"<div class=noimg>image not rendered: {html.escape(str(exc))}</div>"
        self._cards.append(self._card(result, img_html))

    def _render_image(self, result: FrameResult) -> str:
        full = to_uint8(result.image)
        h, w = full.shape[:2]
        small, scale = thumbnail(full, self.thumb_side)
        if small.ndim == 2:
            small = np.repeat(small[:, :, None], 3, axis=2)
        for r in result.results:
            if r.heatmap is None:
                continue
            x, y, rw, rh = r.roi if r.roi is not None else (0, 0, w, h)
            x0, y0 = int(x * scale), int(y * scale)
            x1, y1 = min(small.shape[1], int((x + rw) * scale)), min(small.shape[0], int((y + rh) * scale))
            if x1 > x0 and y1 > y0:
                small[y0:y1, x0:x1] = blend_heatmap(small[y0:y1, x0:x1], np.asarray(r.heatmap, dtype=np.float32))
        name = f"{len(self._cards):06d}.png"
        (self._dir / "img" / name).write_bytes(encode_png(small))
        shapes = "".join(_svg(s) for r in result.results for s in r.overlays)
        return (f'<div class=imgbox><img src="img/{name}" loading=lazy>'
                f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none">{shapes}</svg></div>')

    def _card(self, result: FrameResult, img_html: str) -> str:
        rows = []
        for r in result.results:
            meas = ", ".join(f"{html.escape(k)}={html.escape(_fmt(v))}" for k, v in r.measurements.items()
                             if not isinstance(v, (list, dict, np.ndarray)) and jsonable(v) is not None)
            extra = ""
            if r.failures:
                extra += f'<div class=fails>{html.escape("; ".join(r.failures))}</div>'
            if r.error:
                extra += f'<div class=fails>{html.escape(r.error)}</div>'
            rows.append(f'<tr><td><span class="v {r.verdict}">{r.verdict}</span></td>'
                        f'<td>{html.escape(r.step)}<br><small>{html.escape(r.tool)}</small></td>'
                        f'<td>{meas}{extra}</td><td>{r.ms:.2f}&nbsp;ms</td></tr>')
        err = f'<div class=fails>{html.escape(result.error)}</div>' if result.error else ""
        # the file and its folder: in a labelled tree (good/, scratch/...) the folder is what tells images apart
        title = os.path.join(*Path(result.path).parts[-2:]) if result.path else result.key
        return (f'<div class="card {result.verdict}" data-v="{result.verdict}">{img_html}'
                f'<div class=head><span class="v {result.verdict}">{result.verdict}</span> '
                f'<b title="{html.escape(result.key)}">{html.escape(title)}</b> '
                f'<small>#{result.index} · {result.total_ms:.1f} ms</small></div>{err}'
                f'<table>{"".join(rows)}</table></div>')

    def close(self) -> None:
        if not hasattr(self, "_cards"):
            return
        run = self.run
        total = sum(self._counts.values())
        counts = " ".join(f'<button data-f="{k}"><span class="v {k}">{k}</span> {v}</button>'
                          for k, v in self._counts.items())
        page = PAGE.format(
            title=html.escape(run.recipe.name), recipe_hash=run.recipe_hash[:16], source=html.escape(run.source),
            run_id=run.run_id, when=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started)),
            total=total, counts=counts, cards="\n".join(self._cards),
            recipe=html.escape(json.dumps(run.recipe.to_dict(), indent=2, default=jsonable)))
        tmp = self._dir / "index.html.tmp"
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, self._dir / "index.html")


def _fmt(v) -> str:
    v = jsonable(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _svg(s: Shape) -> str:
    c = getattr(s, "color", "") or COLOURS.get(s.status, COLOURS["info"])
    style = f'stroke="{c}" fill="none" stroke-width="2" vector-effect="non-scaling-stroke"'
    pts = s.points
    label = ""
    if s.label and pts:
        label = (f'<text x="{pts[0][0]:.1f}" y="{pts[0][1]:.1f}" fill="{c}" font-size="14" '
                 f'font-family="sans-serif">{html.escape(s.label)}</text>')
    if s.kind == "rect" and len(pts) == 2:
        (x0, y0), (x1, y1) = pts
        return f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" {style}/>' + label
    if s.kind == "circle" and pts:
        return f'<circle cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="{s.radius:.1f}" {style}/>' + label
    if s.kind == "ellipse" and pts:
        (cx, cy), (a, b) = pts[0], s.axes
        return (f'<ellipse cx="{cx:.1f}" cy="{cy:.1f}" rx="{a:.1f}" ry="{b:.1f}" '
                f'transform="rotate({s.angle:.1f} {cx:.1f} {cy:.1f})" {style}/>') + label
    if s.kind in ("line", "polyline", "polygon") and pts:
        tag = "polygon" if s.kind == "polygon" else "polyline"
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        return f'<{tag} points="{p}" {style}/>' + label
    if s.kind == "point" and pts:
        return f'<circle cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="3" fill="{c}"/>' + label
    return label


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Loupe report: {title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:0;background:#1e2227;color:#ddd}}
header{{padding:12px 20px;background:#14171a;position:sticky;top:0;z-index:2;border-bottom:1px solid #333}}
h1{{font-size:20px;margin:0 0 6px}} header small{{color:#999}}
button{{background:#2a2f35;color:#ddd;border:1px solid #444;border-radius:4px;padding:3px 10px;margin-right:6px;cursor:pointer}}
.grid{{display:flex;flex-wrap:wrap;gap:12px;padding:16px;align-items:flex-start}}
.card{{background:#262b31;border-radius:6px;width:500px;padding:8px;border-left:5px solid #555}}
.card.pass{{border-color:#2ecc71}} .card.fail{{border-color:#e74c3c}} .card.review{{border-color:#f39c12}} .card.error{{border-color:#8e44ad}}
.imgbox{{position:relative;line-height:0}} .imgbox img{{width:100%;image-rendering:auto}}
.imgbox svg{{position:absolute;left:0;top:0;width:100%;height:100%}}
.v{{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;color:#111;font-weight:bold;text-transform:uppercase}}
.v.pass{{background:#2ecc71}} .v.fail{{background:#e74c3c}} .v.review{{background:#f39c12}} .v.error{{background:#b07cc6}}
.head{{margin:6px 0}} table{{width:100%;font-size:12px;border-collapse:collapse}} td{{border-top:1px solid #333;padding:3px;vertical-align:top}}
.fails{{color:#ff8a80;font-size:12px}} .noimg{{color:#999;font-size:12px}} pre{{font-size:11px;padding:16px;color:#aaa}}
</style></head><body>
<header><h1>{title}</h1>
<small>run {run_id} · {when} · source {source} · recipe {recipe_hash} · {total} frames</small><br>
<div style="margin-top:6px"><button data-f="all">all {total}</button>{counts}</div></header>
<div class=grid>
{cards}
</div>
<details><summary style="padding:0 16px">recipe</summary><pre>{recipe}</pre></details>
<script>
document.querySelectorAll('button[data-f]').forEach(b=>b.onclick=()=>{{
 const f=b.dataset.f; document.querySelectorAll('.card').forEach(c=>{{
 c.style.display=(f==='all'||c.dataset.v===f)?'':'none'}})}});
</script></body></html>
"""
