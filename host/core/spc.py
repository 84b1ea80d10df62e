"""Statistical process control: individuals / moving-range and X-bar / R charts, the Western Electric
rules, and process capability (Cp, Cpk, Pp, Ppk).

The formulas and constants are those of the NIST/SEMATECH e-Handbook of Statistical Methods,
section 6.3.2 (control charts for variables: X-bar and R, individuals and moving range) and
section 6.1.6 (process capability). Pure numpy, in the host's public face (``host.spc``): the HTML
report's SPC section and ``loupe results spc`` (loupe-results, which draws the PNG charts) share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: subgroup size n -> (A2, D3, D4, d2)   (NIST e-Handbook 6.3.2.1; d2 of n=2 is the moving-range constant)
CONSTANTS: dict[int, tuple[float, float, float, float]] = {
    2: (1.880, 0.0, 3.267, 1.128),
    3: (1.023, 0.0, 2.574, 1.693),
    4: (0.729, 0.0, 2.282, 2.059),
    5: (0.577, 0.0, 2.114, 2.326),
    6: (0.483, 0.0, 2.004, 2.534),
    7: (0.419, 0.076, 1.924, 2.704),
    8: (0.373, 0.136, 1.864, 2.847),
    9: (0.337, 0.184, 1.816, 2.970),
    10: (0.308, 0.223, 1.777, 3.078),
}

RULES = {
    1: "one point beyond 3 sigma",
    2: "two of three consecutive points beyond 2 sigma on the same side",
    3: "four of five consecutive points beyond 1 sigma on the same side",
    4: "eight consecutive points on the same side of the centre line",
}


@dataclass
class Chart:
    """One control chart: the plotted points, centre line and limits."""

    name: str  # "individuals", "moving range", "x-bar", "range"
    points: list[float]
    center: float
    ucl: float
    lcl: float
    sigma: float | None = None  # sigma of the plotted points (zones for the Western Electric rules)
    violations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "center": self.center, "ucl": self.ucl, "lcl": self.lcl, "sigma": self.sigma,
                "n_points": len(self.points), "violations": self.violations}


def western_electric(x: np.ndarray, center: float, sigma: float) -> list[dict[str, Any]]:
    """Points that break the four Western Electric rules (each flagged at the point that completes the run).

    Returns ``[{"rule": 1..4, "index": i, "side": "above"|"below", "description": ...}]``, sorted by index.
    """
    out: list[dict[str, Any]] = []
    if sigma <= 0 or len(x) == 0:
        return out
    z = (np.asarray(x, dtype=float) - center) / sigma
    n = len(z)
    for i in range(n):
        if abs(z[i]) > 3:
            out.append(_v(1, i, z[i]))
        for rule, window, need, beyond in ((2, 3, 2, 2.0), (3, 5, 4, 1.0)):
            if i + 1 >= window:
                w = z[i + 1 - window:i + 1]
                for sign in (1, -1):
                    # the point completing the run must itself be in the zone
                    if sign * z[i] > beyond and np.count_nonzero(sign * w > beyond) >= need:
                        out.append(_v(rule, i, sign))
        if i + 1 >= 8:
            w = z[i - 7:i + 1]
            if np.all(w > 0) or np.all(w < 0):
                out.append(_v(4, i, w[-1]))
    return out


def _v(rule: int, i: int, side: float) -> dict[str, Any]:
    return {"rule": rule, "index": int(i), "side": "above" if side > 0 else "below", "description": RULES[rule]}


def _above_ucl(i: int) -> dict[str, Any]:
    return {"rule": 1, "index": int(i), "side": "above", "description": "range above the upper control limit"}


def individuals(x: np.ndarray) -> tuple[Chart, Chart, float]:
    """Individuals (X) and moving-range (MR, span 2) charts; returns them and sigma within (MR-bar / d2)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        raise ValueError("an individuals chart needs at least 2 values")
    mr = np.abs(np.diff(x))
    mr_bar = float(mr.mean())
    _, d3, d4, d2 = CONSTANTS[2]
    sigma = mr_bar / d2
    center = float(x.mean())
    xc = Chart("individuals", x.tolist(), center, center + 3 * sigma, center - 3 * sigma, sigma)
    xc.violations = western_electric(x, center, sigma)
    mc = Chart("moving range", mr.tolist(), mr_bar, d4 * mr_bar, d3 * mr_bar)
    mc.violations = [_above_ucl(i + 1) for i in np.flatnonzero(mr > mc.ucl)]  # index of the later point
    return xc, mc, sigma


def xbar_r(x: np.ndarray, n: int) -> tuple[Chart, Chart, float]:
    """X-bar and R charts over consecutive subgroups of ``n`` (an incomplete last subgroup is left out)."""
    if n not in CONSTANTS:
        raise ValueError(f"subgroup size must be 2..10, got {n}")
    x = np.asarray(x, dtype=float)
    k = len(x) // n
    if k < 2:
        raise ValueError(f"an X-bar/R chart needs at least 2 subgroups of {n} values (got {len(x)} values)")
    g = x[:k * n].reshape(k, n)
    means = g.mean(axis=1)
    ranges = g.max(axis=1) - g.min(axis=1)
    a2, d3, d4, d2 = CONSTANTS[n]
    xbb, rbar = float(means.mean()), float(ranges.mean())
    xc = Chart("x-bar", means.tolist(), xbb, xbb + a2 * rbar, xbb - a2 * rbar, a2 * rbar / 3)
    xc.violations = western_electric(means, xbb, a2 * rbar / 3)
    rc = Chart("range", ranges.tolist(), rbar, d4 * rbar, d3 * rbar)
    rc.violations = [_above_ucl(int(i)) for i in np.flatnonzero(ranges > rc.ucl)]
    return xc, rc, rbar / d2


def capability(mean: float, sigma: float | None, lsl: float | None, usl: float | None) -> tuple[float | None,
                                                                                                  float | None]:
    """(Cp, Cpk) for a process of ``mean`` and ``sigma`` against the specification limits.

    Cp = (USL - LSL) / 6 sigma; Cpk = min(USL - mean, mean - LSL) / 3 sigma (NIST e-Handbook 6.1.6).
    With one limit only, Cp is undefined (None) and Cpk is that side's index.
    """
    if sigma is None or not sigma > 0:
        return None, None
    cp = (usl - lsl) / (6 * sigma) if lsl is not None and usl is not None else None
    sides = []
    if usl is not None:
        sides.append((usl - mean) / (3 * sigma))
    if lsl is not None:
        sides.append((mean - lsl) / (3 * sigma))
    return cp, (min(sides) if sides else None)


def analyse(values: np.ndarray, lsl: float | None, usl: float | None, subgroup: int = 1) -> dict[str, Any]:
    """Charts, rule violations and capability of a measurement series, as one JSON-able dict."""
    x = np.asarray(values, dtype=float)
    if subgroup <= 1:
        main, disp, sigma_within = individuals(x)
        kind = "individuals/moving-range"
    else:
        main, disp, sigma_within = xbar_r(x, subgroup)
        kind = "x-bar/r"
    mean = float(x.mean())
    sigma_overall = float(x.std(ddof=1)) if len(x) > 1 else None
    cp, cpk = capability(mean, sigma_within, lsl, usl)
    pp, ppk = capability(mean, sigma_overall, lsl, usl)
    return {"chart": kind, "subgroup": max(subgroup, 1), "n": int(len(x)), "mean": mean,
            "sigma_within": sigma_within, "sigma_overall": sigma_overall, "lsl": lsl, "usl": usl,
            "cp": cp, "cpk": cpk, "pp": pp, "ppk": ppk,
            "charts": [main.to_dict(), disp.to_dict()],
            "_charts": (main, disp)}
