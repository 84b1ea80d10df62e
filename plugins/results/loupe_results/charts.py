"""Control charts as PNG (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(charts, res: dict[str, Any], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main, disp = charts
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=False, gridspec_kw={"height_ratios": [3, 2]})
    try:
        for ax, c in zip(axes, (main, disp)):
            x0 = 1 if c is disp and res["subgroup"] == 1 else 0  # moving range i belongs to point i+1
            xs = list(range(x0, x0 + len(c.points)))
            ax.plot(xs, c.points, "o-", color="#1f77b4", ms=3, lw=1)
            ax.axhline(c.center, color="#2ca02c", lw=1.2, label=f"centre {c.center:.4g}")
            ax.axhline(c.ucl, color="#d62728", lw=1, ls="--", label=f"UCL {c.ucl:.4g}")
            ax.axhline(c.lcl, color="#d62728", lw=1, ls="--", label=f"LCL {c.lcl:.4g}")
            if c.sigma:
                for k in (1, 2):
                    for sgn in (1, -1):
                        ax.axhline(c.center + sgn * k * c.sigma, color="#999999", lw=0.6, ls=":")
            bad = sorted({v["index"] for v in c.violations})
            if bad:
                pts = [c.points[i - x0] for i in bad]
                ax.plot(bad, pts, "o", color="#d62728", ms=7, mfc="none", mew=1.5, label="rule violation")
            if c is main:
                for lim, name in ((res.get("lsl"), "LSL"), (res.get("usl"), "USL")):
                    if lim is not None:
                        ax.axhline(lim, color="#ff7f0e", lw=1, ls="-.", label=f"{name} {lim:.4g}")
            ax.set_ylabel(c.name)
            ax.legend(loc="upper right", fontsize=7, ncol=3)
            ax.grid(alpha=0.2)
        cap = "  ".join(f"{k} {res[k]:.3g}" for k in ("cp", "cpk", "pp", "ppk") if res.get(k) is not None)
        axes[0].set_title(f"{title}: {res['chart']}, n={res['n']}  {cap}", fontsize=10)
        axes[1].set_xlabel("subgroup" if res["subgroup"] > 1 else "frame")
        fig.tight_layout()
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
