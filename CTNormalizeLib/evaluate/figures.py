"""Figures of the evaluation (matplotlib, Agg), returned as PNG bytes.

Every function builds one figure and closes it; :func:`to_png` is the common exit.
"""

from __future__ import annotations

import io
import math

import numpy as np

ROLE_COLORS = {"source": "#d62728", "output": "#1f77b4", "replicate": "#2ca02c", "target": "#000000"}
# methods get colours that never collide with the roles' red / green / black
METHOD_PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def series_colors(labels) -> dict:
    """Colour per series label: the role colours for source/output/replicate/target, the palette otherwise."""
    out, k = {}, 0
    for lab in labels:
        if lab in ROLE_COLORS:
            out[lab] = ROLE_COLORS[lab]
        else:
            out[lab] = METHOD_PALETTE[k % len(METHOD_PALETTE)]
            k += 1
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def to_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of ``fig``; the figure is closed."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _centre(mask: np.ndarray | None, shape) -> tuple[int, int, int]:
    if mask is not None and mask.any():
        zs, ys, xs = np.nonzero(mask)
        # sagittal through the centre of the larger lung half, not the mediastinum
        half = xs < shape[2] // 2
        xc = int(np.median(xs[half])) if half.sum() > (~half).sum() else int(np.median(xs[~half]))
        return int(np.median(zs)), int(np.median(ys)), xc
    return shape[0] // 2, shape[1] // 2, shape[2] // 2


def views_figure(panels: dict, spacing, window=(-1350.0, 150.0), diff_window: float = 200.0,
                 mask: np.ndarray | None = None, title: str = "") -> bytes:
    """Axial / coronal / sagittal lung-window views, one column per panel.

    Parameters
    ----------
    panels : dict
        Column title -> ``[z, y, x]`` array, all on one grid (e.g. source, normalized,
        target). A column whose title starts with ``"difference"`` is shown in a
        diverging map over ``+-diff_window`` HU.
    spacing : (z, y, x) mm, for the aspect ratios.
    mask : np.ndarray, optional
        Lung mask; the views pass through its centre.
    """
    plt = _plt()
    names = list(panels)
    shape = next(iter(panels.values())).shape
    zc, yc, xc = _centre(mask, shape)
    dz, dy, dx = spacing
    nz, ny, nx = shape
    # row heights follow the physical extents, so thin slabs do not leave empty bands
    heights = [ny * dy, max(nz * dz, 0.12 * ny * dy), max(nz * dz, 0.12 * ny * dy)]
    width = nx * dx
    col_w = 2.6
    fig_h = col_w * sum(heights) / width + 0.9
    fig, axes = plt.subplots(3, len(names), figsize=(col_w * len(names) + 0.8, fig_h), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    rows = [("axial", lambda a: a[zc], dy / dx), ("coronal", lambda a: a[::-1, yc, :], dz / dx),
            ("sagittal", lambda a: a[::-1, :, xc], dz / dy)]
    for j, name in enumerate(names):
        arr = panels[name]
        diff = name.lower().startswith("difference")
        for i, (plane, cut, aspect) in enumerate(rows):
            ax = axes[i, j]
            img = cut(arr)
            if diff:
                im = ax.imshow(img, cmap="RdBu_r", vmin=-diff_window, vmax=diff_window, aspect=aspect,
                               interpolation="nearest")
            else:
                ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(plane, fontsize=9, rotation=0, ha="right", va="center", labelpad=4)
        if diff:
            cb = fig.colorbar(im, ax=axes[:, j], fraction=0.05, shrink=0.6)
            cb.set_label("HU", fontsize=8)
            cb.ax.tick_params(labelsize=7)
    fig.suptitle(title or f"lung window {window[0]:g}..{window[1]:g} HU", fontsize=10)
    return to_png(fig)


def nps_figure(nps_curves: dict, esf_curves: dict | None = None, title: str = "") -> bytes:
    """Radial NPS per role (left) and the mean edge profile per role (right, when given)."""
    plt = _plt()
    n = 2 if esf_curves else 1
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.6), squeeze=False)
    ax = axes[0, 0]
    if not any(nps_curves.values()):
        ax.text(0.5, 0.5, "no uniform soft-tissue ROIs found:\nNPS not measured", ha="center", va="center",
                transform=ax.transAxes)
    for role, c in nps_curves.items():
        if not c:
            continue
        ax.plot(c["f"], c["nps"], label=role, color=series_colors(nps_curves)[role], lw=1.6 if role != "target" else 2.2,
                ls="--" if role == "target" else "-")
    ax.set_xlabel("spatial frequency (cycles/mm)")
    ax.set_ylabel("NPS (HU$^2$ mm$^2$)")
    ax.set_title("radial noise power spectrum", fontsize=10)
    ax.grid(alpha=0.3)
    if any(nps_curves.values()):
        ax.legend(fontsize=8)
    if esf_curves:
        ax = axes[0, 1]
        for role, c in esf_curves.items():
            if c:
                ax.plot(c["t"], c["esf"], label=role, color=series_colors(esf_curves)[role],
                        ls="--" if role == "target" else "-")
        ax.set_xlabel("distance along the edge normal (mm)")
        ax.set_ylabel("mean HU")
        ax.set_title("edge spread at the body outline", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return to_png(fig)


def bland_altman_figure(series: dict, title: str = "Emphysema index: Bland-Altman vs target") -> bytes:
    """Bland-Altman plot of LAA% against the target's.

    Parameters
    ----------
    series : dict
        Label -> ``(test_values, target_values)``; each label gets its points, its bias
        line and its 95 % limits of agreement (bias +- 1.96 SD).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    cols = series_colors(series)
    for label, (a, b) in series.items():
        a, b = np.asarray(a, float), np.asarray(b, float)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        if not len(a):
            continue
        col = cols[label]
        mean, diff = (a + b) / 2, a - b
        bias = diff.mean()
        sd = diff.std(ddof=1) if len(diff) > 1 else 0.0
        ax.scatter(mean, diff, s=18, color=col, alpha=0.75,
                   label=f"{label}: bias {bias:+.2f}, LoA ±{1.96 * sd:.2f} pt")
        ax.axhline(bias, color=col, lw=1)
        if sd > 0:
            for s in (-1.96, 1.96):
                ax.axhline(bias + s * sd, color=col, lw=0.8, ls=":")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("mean of LAA-950 % (method, target)")
    ax.set_ylabel("LAA-950 %: method − target (pt)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return to_png(fig)


def ccc_bars_figure(ccc: dict, threshold: float = 0.85, title: str = "Radiomic feature agreement (Lin's CCC vs target)") -> bytes:
    """Horizontal bars of CCC per feature, one colour per series, with the reproducibility line.

    ``ccc``: series label -> {feature: CCC}.
    """
    plt = _plt()
    labels = list(ccc)
    feats = sorted({f for d in ccc.values() for f in d})
    if not feats:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.text(0.5, 0.5, "no radiomic features computed", ha="center", va="center")
        ax.axis("off")
        return to_png(fig)
    h = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(feats) * max(1, len(labels)) ** 0.5 + 1.5))
    cols = series_colors(labels)
    y = np.arange(len(feats))
    for k, lab in enumerate(labels):
        vals = [ccc[lab].get(f, np.nan) for f in feats]
        vals = [v if v is not None and math.isfinite(v) else np.nan for v in vals]
        ax.barh(y + k * h - 0.4 + h / 2, vals, height=h, label=lab, color=cols[lab])
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"CCC = {threshold}")
    ax.set_yticks(y)
    ax.set_yticklabels([f.replace("firstorder_", "fo_") for f in feats], fontsize=7)
    ax.set_xlim(min(0.0, np.nanmin([v for d in ccc.values() for v in d.values() if v is not None] + [0])), 1.0)
    ax.set_xlabel("Lin's CCC")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_ylim(len(feats) - 0.5, -0.5)
    fig.tight_layout()
    return to_png(fig)


def gap_heatmap_figure(gaps: dict, title: str = "gap closed per method (from medians over runs)") -> bytes:
    """Heatmap of gap closed: rows = methods, columns = metrics (1 = at the replicate floor)."""
    plt = _plt()
    methods = list(gaps)
    metric_names = sorted({m for d in gaps.values() for m in d}, key=lambda m: list(next(iter(gaps.values()))).index(m)
                          if m in next(iter(gaps.values())) else 99)
    arr = np.array([[np.nan if gaps[me].get(mt) is None else gaps[me][mt] for mt in metric_names] for me in methods],
                   dtype=float)
    fig, ax = plt.subplots(figsize=(0.55 * len(metric_names) + 2.5, 0.45 * len(methods) + 1.8))
    im = ax.imshow(np.clip(arr, -1, 1.2), cmap="RdYlGn", vmin=-1, vmax=1.2, aspect="auto")
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            if np.isfinite(arr[i, j]):
                ax.text(j, i, f"{arr[i, j]:.2f}", ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(len(metric_names)))
    ax.set_xticklabels(metric_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels(methods, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03).set_label("gap closed", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return to_png(fig)


def metric_by_protocol_figure(rows: list, metric: str, unit: str = "", title: str = "") -> bytes:
    """Grouped bars of one metric per source protocol: source, each method, replicate.

    ``rows``: dicts with ``protocol``, ``series`` (label) and ``value``.
    """
    plt = _plt()
    protos = list(dict.fromkeys(r["protocol"] for r in rows))
    series = list(dict.fromkeys(r["series"] for r in rows))
    vals = {(r["protocol"], r["series"]): r["value"] for r in rows}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(protos) + 2), 3.8))
    w = 0.8 / max(1, len(series))
    cols = series_colors(series)
    for k, s in enumerate(series):
        ys = [vals.get((p, s), np.nan) for p in protos]
        ys = [np.nan if y is None else y for y in ys]
        ax.bar(np.arange(len(protos)) + k * w - 0.4 + w / 2, ys, width=w, label=s,
               color=cols[s])
    ax.set_xticks(range(len(protos)))
    ax.set_xticklabels(protos, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"{metric} ({unit})" if unit else metric)
    ax.set_title(title or f"{metric} by source protocol (median over cases)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return to_png(fig)


def feature_error_figure(rel_err: dict, title: str = "Radiomic features: relative error vs target") -> bytes:
    """Horizontal bars of |f - f_target| / |f_target| per feature, one colour per series.

    ``rel_err``: series label -> {feature: relative error}.
    """
    plt = _plt()
    feats = sorted({f for d in rel_err.values() for f in d})
    fig, ax = plt.subplots(figsize=(7.5, 0.2 * max(1, len(feats)) + 1.5))
    if not feats:
        ax.text(0.5, 0.5, "no radiomic features computed", ha="center", va="center")
        ax.axis("off")
        return to_png(fig)
    labels = list(rel_err)
    h = 0.8 / len(labels)
    y = np.arange(len(feats))
    for k, lab in enumerate(labels):
        ax.barh(y + k * h - 0.4 + h / 2, [100 * rel_err[lab].get(f, np.nan) for f in feats], height=h, label=lab,
                color=series_colors(labels)[lab])
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yticks(y)
    ax.set_yticklabels(feats, fontsize=7)
    ax.set_xlabel("relative error (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.invert_yaxis()
    fig.tight_layout()
    return to_png(fig)


def pair_figures(result: dict, output_label: str = "normalized") -> dict:
    """Caption -> PNG for one paired evaluation made with ``keep_arrays=True``."""
    from .agreement import lins_ccc

    arr = result["arrays"]
    out = {}
    panels = {}
    if "source" in arr:
        panels["source"] = arr["source"]
    if "output" in arr:
        panels[output_label] = arr["output"]
    panels["target"] = arr["target"]
    if "output" in arr:
        panels[f"difference ({output_label} − target)"] = arr["output"] - arr["target"]
    elif "source" in arr:
        panels["difference (source − target)"] = arr["source"] - arr["target"]
    out["lung-window views (source | normalized | target | difference)"] = views_figure(
        panels, arr["spacing"], window=result["settings"]["window_hu"], mask=arr["lung"])
    c = result["curves"]
    out["radial NPS in uniform ROIs and mean edge profile"] = nps_figure(c["nps"], c["esf"])
    z = result["emphysema"]["zone_laa"]
    series = {r: (z[r], z["target"]) for r in ("source", "output", "replicate") if r in z}
    out["emphysema index per lung third: Bland-Altman vs target"] = bland_altman_figure(
        series, title="LAA-950 per lung z-third vs target: Bland-Altman")
    feats = result.get("features") or {}
    if "target" in feats:
        segs = sorted(feats["target"])
        roles = [r for r in ("source", "output", "replicate") if r in feats]
        if len(segs) >= 3:
            ccc = {}
            for r in roles:
                names = sorted(feats["target"][segs[0]])
                ccc[r] = {f: lins_ccc([feats[r][s][f] for s in segs], [feats["target"][s][f] for s in segs])
                          for f in names}
            out["radiomic feature CCC across segments"] = ccc_bars_figure(ccc)
        else:
            rel = {r: {f: np.mean([abs(feats[r][s][f] - feats["target"][s][f]) / max(abs(feats["target"][s][f]), 1e-6)
                                   for s in segs]) for f in feats["target"][segs[0]]} for r in roles}
            out["radiomic features: relative error vs target (fewer than 3 segments: no CCC)"] = \
                feature_error_figure(rel)
    return out


def write_figure_pngs(figures: dict, out_dir, prefix: str, caption_end: str) -> list[str]:
    """Write ``{caption: PNG bytes}`` atomically as ``<prefix>_NN_<caption slug>.png``; returns the paths.

    The slug is the caption up to ``caption_end``, non-alphanumerics as ``_``, at most 40 characters.
    """
    from pathlib import Path

    from ..io.atomic import atomic_write_bytes

    out = []
    for i, (cap, png) in enumerate(figures.items()):
        slug = "".join(c if c.isalnum() else "_" for c in cap.split(caption_end)[0])[:40]
        out.append(str(atomic_write_bytes(Path(out_dir) / f"{prefix}_{i:02d}_{slug}.png", png)))
    return out
