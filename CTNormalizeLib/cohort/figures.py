"""Figures of the cohort report (matplotlib, Agg), returned as PNG bytes."""

from __future__ import annotations

import io

import numpy as np

from ..protocols.kernels import KERNEL_CLASSES
from .stats import Quantity, by_group, counts
from .tables import case_group

BEFORE, AFTER = "#c0504d", "#4f81bd"


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _figure(*args, **kw):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, layout="constrained", **kw)


def _strip(ax, groups: dict, names: list, colour: str, title: str):
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        vals = np.asarray(groups.get(name, []), float)
        if not len(vals):
            continue
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(vals)), vals, s=22, color=colour, alpha=0.8, zorder=3)
        ax.hlines(vals.mean(), i - 0.3, i + 0.3, color="k", lw=2, zorder=4)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def quantity_figure(records: list, q: Quantity, after: bool = True) -> bytes:
    """Values of ``q`` per group (points, black bar = group mean), before | after, same y-axis."""
    before = by_group(records, q, "before")
    sides = [("before normalization", before, BEFORE)]
    if after:
        sides.append(("after normalization", by_group(records, q, "after"), AFTER))
    names = sorted(set().union(*(s[1] for s in sides)))
    fig, axes = _figure(1, len(sides), figsize=(1.3 + 0.62 * len(names) * len(sides), 2.8), sharey=True,
                        squeeze=False)
    for ax, (title, groups, colour) in zip(axes[0], sides):
        _strip(ax, groups, names, colour, title)
    axes[0][0].set_ylabel(f"{q.label}" + (f" ({q.unit})" if q.unit else ""), fontsize=9)
    return _png(fig)


def _mean_curves(records: list, side: str) -> dict:
    """``{group: (f, mean NPS)}`` on a common frequency grid per group."""
    curves: dict = {}
    for rec in records:
        sig = rec.get(side) or {}
        if sig.get("nps_f") and sig.get("nps"):
            curves.setdefault(case_group(rec), []).append((np.asarray(sig["nps_f"]), np.asarray(sig["nps"])))
    out = {}
    for name, items in curves.items():
        fmax = min(f.max() for f, _ in items)
        grid = np.linspace(min(f.min() for f, _ in items), fmax, 40)
        out[name] = (grid, np.mean([np.interp(grid, f, p) for f, p in items], axis=0))
    return dict(sorted(out.items()))


def nps_figure(records: list, after: bool = True) -> bytes:
    """Mean radial noise power spectrum per group, before | after."""
    sides = [("before normalization", "before")] + ([("after normalization", "after")] if after else [])
    fig, axes = _figure(1, len(sides), figsize=(2.9 * len(sides), 2.8), sharey=True, squeeze=False)
    for ax, (title, side) in zip(axes[0], sides):
        for name, (f, p) in _mean_curves(records, side).items():
            ax.plot(f, p, lw=1.8, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("spatial frequency (cycles/mm)", fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("NPS (HU² mm²)", fontsize=9)
    return _png(fig)


def _bars(ax, series: list, title: str, order=None):
    """Grouped bars: ``series`` is ``[(label, {category: count}, colour)]``."""
    cats = list(order) if order else []
    for _, d, _ in series:
        cats += [c for c in d if c not in cats]
    cats = [c for c in cats if any(d.get(c) for _, d, _ in series)]
    width = 0.8 / max(1, len(series))
    for k, (label, d, colour) in enumerate(series):
        x = np.arange(len(cats)) + (k - (len(series) - 1) / 2) * width
        ax.bar(x, [d.get(c, 0) for c in cats], width, label=label, color=colour)
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("cases", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    if len(series) > 1:
        ax.legend(fontsize=7)


def census_figure(records: list, after: bool = True) -> bytes:
    """Scanners, kernel classes (from tags and from pixels) and slice thicknesses of the cohort."""
    scanners: dict = {}
    for rec in records:
        sig = rec.get("before") or {}
        name = " ".join(v for v in (sig.get("vendor"), sig.get("model")) if v) or "unknown"
        scanners[name] = scanners.get(name, 0) + 1
    fig, axes = _figure(1, 3, figsize=(12, 3.4))
    _bars(axes[0], [("cases", scanners, "#777777")], "scanners (tags)")
    kernels = [("from tags", counts(records, "kernel_class_tag"), "#9bbb59"),
               ("from pixels, before", counts(records, "kernel_class_pixels"), BEFORE)]
    if after:
        kernels.append(("from pixels, after", counts(records, "kernel_class_pixels", "after"), AFTER))
    _bars(axes[1], kernels, "kernel class", order=list(KERNEL_CLASSES) + ["unknown"])
    thick = [("before", counts(records, "thickness_mm"), BEFORE)]
    if after:
        thick.append(("after", counts(records, "thickness_mm", "after"), AFTER))
    _bars(axes[2], thick, "slice thickness (mm)")
    return _png(fig)
