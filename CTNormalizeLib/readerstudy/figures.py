"""Plots of a reader-study analysis (matplotlib Agg): scores, ROC, Likert ratings, confusion matrices."""

from __future__ import annotations

import numpy as np

from ..htmlreport import fmt_fixed
from . import design as D


def mean_sd(s: dict) -> str:
    """``mean ± sd`` of a score group (``—`` when empty)."""
    if not s or s.get("mean") is None:
        return "—"
    return f"{s['mean']:.2f} ± {s['sd']:.2f}" if s.get("sd") is not None else f"{s['mean']:.2f}"


def variant_colours(variants, reference: str) -> dict:
    """One colour per variant, the same in every panel and figure: the reference first, then by name."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    ordered = sorted(variants, key=lambda v: (v != reference, v))
    return {v: palette[k % len(palette)] for k, v in enumerate(ordered)}


def score_distribution_figure(result: dict):
    """Bar chart of score counts (0-5) per shown variant, one panel per reader plus pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    readers = result["readers"]
    panels = list(readers.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    scores = np.arange(D.SCORE_MIN, D.SCORE_MAX + 1)
    ref = result["study"].get("reference", "original")
    colour = variant_colours({v for _, m in panels for v in (m.get("score_counts") or {})}, ref)
    for ax, (name, m) in zip(axes[0], panels):
        counts = sorted((m.get("score_counts") or {}).items(), key=lambda vc: (vc[0] != ref, vc[0]))  # reference first
        k = max(len(counts), 1)
        width = 0.8 / k
        for j, (variant, c) in enumerate(counts):
            g = m["groups"][variant]
            ax.bar(scores + (j - (k - 1) / 2) * width, c, width, color=colour[variant],
                   label=f"{variant} ({mean_sd(g)})")
        ax.set_xticks(scores)
        ax.set_xlabel("score (0 = certainly synthetic, 5 = certainly original)")
        ax.set_title(f"{name}: accuracy {fmt_fixed(m.get('accuracy'), 2)}, AUC {fmt_fixed(m.get('auc'), 2)}")
        ax.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    axes[0][0].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("images")
    fig.tight_layout()
    return fig


def roc_figure(result: dict):
    """ROC curves of detecting normalized images from the score, per reader and pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
    curves = list(result["readers"].items()) + [("pooled", result["pooled"])]
    for name, m in curves:
        if not m.get("roc"):
            continue
        x, y = zip(*m["roc"])
        ci = m.get("auc_ci")
        ci_txt = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        ax.plot(x, y, marker="o", ms=3, lw=2 if name == "pooled" else 1.3,
                color="k" if name == "pooled" else None, label=f"{name}: AUC {m['auc']:.2f}{ci_txt}")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("1 − specificity (originals called synthetic)")
    ax.set_ylabel("sensitivity (normalized called synthetic)")
    ax.set_title("Detecting normalized images")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def likert_figure(result: dict, reference: str):
    """Mean ± sd Likert rating per item and variant (pooled over readers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    likert = result["pooled"].get("likert", {})
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    variants = sorted({v for e in likert.values() for v in e if v not in ("paired_difference", "wilcoxon")},
                      key=lambda v: (v != reference, v))
    colour = variant_colours(variants, reference)
    x = np.arange(len(D.LIKERT_ITEMS))
    width = 0.8 / max(len(variants), 1)
    for j, v in enumerate(variants):
        means = [likert[i][v]["mean"] or 0 for i in D.LIKERT_ITEMS]
        sds = [likert[i][v]["sd"] or 0 for i in D.LIKERT_ITEMS]
        ax.bar(x + (j - (len(variants) - 1) / 2) * width, means, width, yerr=sds, capsize=3, label=v,
               color=colour[v])
    ax.set_xticks(x, [i for i in D.LIKERT_ITEMS])
    ax.set_ylim(0, 5.5)
    ax.set_ylabel("rating (1–5), mean ± sd")
    ax.set_title("Image quality ratings, all readers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(result: dict):
    """Protocol-guess confusion matrices (pooled), one panel per field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = result["pooled"]["confusion"]
    fig, axes = plt.subplots(1, len(conf), figsize=(4.0 * len(conf), 3.8))
    from ..protocols.kernels import KERNEL_CLASSES

    for ax, (field, c) in zip(np.atleast_1d(axes), conf.items()):
        mat = np.asarray(c["matrix"])
        order = list(range(len(c["labels"])))
        if all(v in KERNEL_CLASSES for v in c["labels"]):  # smooth to very sharp, not alphabetical
            order.sort(key=lambda k: KERNEL_CLASSES.index(c["labels"][k]))
        mat = mat[np.ix_(order, order)]
        ax.imshow(mat, cmap="Blues", vmin=0, vmax=max(int(mat.max()), 1))  # a one-value matrix is dark, not blank
        labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in (c["labels"][k] for k in order)]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for (i, j), n in np.ndenumerate(mat):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > mat.max() / 2 else "black")
        ax.set_xlabel("guess")
        ax.set_ylabel("truth")
        ax.set_title(f"{field}: {c['accuracy']:.0%} correct")
    fig.tight_layout()
    return fig
