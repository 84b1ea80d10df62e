"""The per-image anomaly evaluation report that ``loupe eval BUNDLE DATA --out DIR`` writes.

``DIR/scores.csv``      one row per test image: file, type, score, verdict, correct
``DIR/index.html``      metrics, the ROC and score histogram, then every image sorted by score (highest first),
                        missed defects and false rejects flagged, each image's heatmap beside its ground truth
``DIR/heatmaps/*.png``  those side-by-side panels, with a legend
``DIR/roc.png``, ``DIR/score_histogram.png``, ``DIR/metrics.json``

Scores are normalised (1.0 = the bundle's threshold); a verdict is ``fail`` above 1.0, as with a recipe's
default limit ``score: {max: 1.0}``.
"""
from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from host import VERDICT_COLOURS


def _e(s: Any) -> str:
    """Escaped for HTML; a file name that is not valid UTF-8 gets one U+FFFD per undecodable byte."""
    s = str(s)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        try:
            s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            s = s.encode("utf-8", "replace").decode("utf-8")
    return html.escape(s, quote=True)


def write_report(out: Path, result: dict[str, Any], rows: list[dict[str, Any]], norm_scores: np.ndarray,
                 labels: np.ndarray, bundle, data: Path) -> Path:
    from . import plots
    from .metrics import roc_curve

    out = Path(out)
    rows = sorted(rows, key=lambda r: -r["score"])
    with open(out / "scores.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        w.writerow(["file", "type", "score", "verdict", "correct"])
        for r in rows:
            w.writerow([r["file"], r["type"], f"{r['score']:.4f}", r["verdict"], str(r["correct"]).lower()])
    charts = []
    if norm_scores.size:
        good, bad = norm_scores[labels == 0], norm_scores[labels == 1]
        if good.size and bad.size:
            fpr, tpr, _ = roc_curve(norm_scores, labels)
            c = result["confusion"]
            op = (c["fp"] / max(c["fp"] + c["tn"], 1), c["tp"] / max(c["tp"] + c["fn"], 1))
            plots.roc_plot(fpr, tpr, result["image_auroc"], out / "roc.png", op)
            charts.append("roc.png")
        plots.histogram_plot(good, bad, out / "score_histogram.png", 1.0)
        charts.append("score_histogram.png")
    (out / "metrics.json").write_text(json.dumps({**result, "images": rows}, indent=2, default=float))
    (out / "index.html").write_text(_page(result, rows, charts, bundle, data), encoding="utf-8")
    return out / "index.html"


def _page(result: dict[str, Any], rows: list[dict[str, Any]], charts: list[str], bundle, data: Path) -> str:
    missed = sum(1 for r in rows if r["flag"] == "missed defect")
    rejects = sum(1 for r in rows if r["flag"] == "false reject")
    body = []
    for r in rows:
        flag = f'<span class="flag">{_e(r["flag"])}</span>' if r["flag"] else ""
        body.append(
            f'<tr class="{"wrong" if r["flag"] else "ok"}" data-flag="{_e(r["flag"] or "correct")}">'
            f'<td>{_e(r["file"])}<br><small>{_e(r["type"])}</small></td>'
            f'<td class=num>{r["score"]:.3f}</td><td><span class="v {r["verdict"]}">{r["verdict"]}</span></td>'
            f'<td>{flag or "correct"}</td>'
            f'<td><a href="{_e(r["heatmap"])}"><img src="{_e(r["heatmap"])}" loading=lazy alt=""></a></td></tr>')
    per_type = "".join(f"<tr><td>{_e(k)}</td><td class=num>{v:.3f}</td></tr>"
                       for k, v in (result.get("per_type_auroc") or {}).items())
    pixel = f" · pixel AUROC <b>{result['pixel_auroc']:.3f}</b>" if "pixel_auroc" in result else ""
    c = result["confusion"]
    imgs = "".join(f'<img src="{x}" alt="">' for x in charts)
    colours = " ".join(f".v.{k}{{background:{v}}}" for k, v in VERDICT_COLOURS.items())
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Loupe anomaly evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:20px;color:#222}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}} .num{{text-align:right}}
.v{{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;color:#111;font-weight:bold;
text-transform:uppercase}} {colours} .flag{{color:#fff;background:#c0392b;border-radius:3px;padding:1px 6px}}
tr.wrong{{background:#fdecea}} td img{{max-width:min(660px,90vw)}} .charts img{{max-width:48%;min-width:300px}}
button{{margin-right:6px}}</style></head><body>
<h1>Anomaly evaluation</h1>
<p>bundle <code>{_e(bundle.path)}</code> on <code>{_e(data)}</code></p>
<p>image AUROC <b>{result['image_auroc']:.3f}</b>{pixel} · at the threshold (score 1.0): F1 {result['f1']:.3f},
recall {result['recall']:.3f}, precision {result['precision']:.3f} · {result['n_images']} images
({result['n_good']} good, {result['n_defective']} defective) · {result['ms_per_image']:.1f} ms per image</p>
<p><b>{missed}</b> missed defects (defective, scored at or below 1.0) · <b>{rejects}</b> false rejects
(good, scored above 1.0) · TP {c['tp']} FP {c['fp']} FN {c['fn']} TN {c['tn']}</p>
<div class=charts>{imgs}</div>
{f"<h2>Per defect type</h2><table><tr><th>type</th><th>AUROC vs good</th></tr>{per_type}</table>" if per_type else ""}
<h2>Images, highest score first</h2>
<p>each: the heatmap with the regions above the threshold (outlined in the verdict's colour, labelled with
their score; the peak when no pixel is above it) | the ground truth mask (magenta). Scores: 1.0 is the
threshold; the colour scale reaches red at 1.5. <a href="scores.csv">scores.csv</a></p>
<p><button data-f="">all {len(rows)}</button><button data-f="missed defect">missed defects {missed}</button>
<button data-f="false reject">false rejects {rejects}</button><button data-f="correct">correct
{len(rows) - missed - rejects}</button></p>
<table id=images><tr><th>file</th><th>score</th><th>verdict</th><th></th><th>heatmap | ground truth</th></tr>
{"".join(body)}</table>
<script>document.querySelectorAll('button[data-f]').forEach(b=>b.onclick=()=>{{const f=b.dataset.f;
document.querySelectorAll('#images tr[data-flag]').forEach(r=>r.style.display=(!f||r.dataset.flag===f)?'':'none')}});
</script></body></html>"""
