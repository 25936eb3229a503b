"""HTML report of a reader-study analysis, with embedded matplotlib (Agg) plots."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from . import design as D
from .storage import atomic_write_text


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


def _ms(s: dict) -> str:
    if not s or s.get("mean") is None:
        return "–"
    return f"{s['mean']:.2f} ± {s['sd']:.2f}" if s.get("sd") is not None else f"{s['mean']:.2f}"


def _table(header, rows) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def score_distribution_figure(result: dict):
    """Bar chart of score counts (0-5) per shown variant, one panel per reader plus pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    readers = result["readers"]
    panels = list(readers.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    scores = np.arange(D.SCORE_MIN, D.SCORE_MAX + 1)
    for ax, (name, m) in zip(axes[0], panels):
        ref = result["study"].get("reference", "original")
        counts = sorted((m.get("score_counts") or {}).items(), key=lambda vc: vc[0] != ref)  # reference first
        k = max(len(counts), 1)
        width = 0.8 / k
        for j, (variant, c) in enumerate(counts):
            g = m["groups"][variant]
            ax.bar(scores + (j - (k - 1) / 2) * width, c, width, label=f"{variant} ({_ms(g)})")
        ax.set_xticks(scores)
        ax.set_xlabel("score (0 = certainly synthetic, 5 = certainly original)")
        ax.set_title(f"{name}: accuracy {_fmt(m.get('accuracy'), 2)}, AUC {_fmt(m.get('auc'), 2)}")
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
                      key=lambda v: v != reference)
    x = np.arange(len(D.LIKERT_ITEMS))
    width = 0.8 / max(len(variants), 1)
    for j, v in enumerate(variants):
        means = [likert[i][v]["mean"] or 0 for i in D.LIKERT_ITEMS]
        sds = [likert[i][v]["sd"] or 0 for i in D.LIKERT_ITEMS]
        ax.bar(x + (j - (len(variants) - 1) / 2) * width, means, width, yerr=sds, capsize=3, label=v)
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
    for ax, (field, c) in zip(np.atleast_1d(axes), conf.items()):
        mat = np.asarray(c["matrix"])
        ax.imshow(mat, cmap="Blues")
        labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in c["labels"]]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for (i, j), n in np.ndenumerate(mat):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > mat.max() / 2 else "black")
        ax.set_xlabel("guess")
        ax.set_ylabel("truth")
        ax.set_title(f"{field}: {c['accuracy']:.0%} correct")
    fig.tight_layout()
    return fig


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}
td:first-child{text-align:left}.warn{color:#a60}h2{margin-top:1.6em}img{max-width:100%}"""


def render_html(result: dict) -> str:
    """The report as a self-contained HTML page."""
    st = result["study"]
    design = st["design"]
    ref = st.get("reference", "original")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Reader study report</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Reader study report{': ' + html.escape(st['title']) if st.get('title') else ''}</h1>",
             f"<p>Design <b>{design}</b>, randomized {html.escape(str(st.get('randomization')))}, "
             f"{st.get('n_cases')} cases, variants {html.escape(', '.join(st.get('variants') or []))} "
             f"(reference: {html.escape(ref)}). Study id {html.escape(str(st.get('study_id')))}.</p>"]
    for w in result.get("warnings", []):
        parts.append(f"<p class='warn'>{html.escape(w['message'])}</p>")

    readers = list(result["readers"].items()) + [("all readers (pooled)", result["pooled"])]
    parts.append("<h2>Per reader</h2>")
    if design == "single":
        parts.append("<p>Positive class: normalized image. Sensitivity = normalized images scored 0–2; "
                     "specificity = originals scored 3–5. AUC of detecting normalized images from the score "
                     "(0.5 = cannot tell), 95% bootstrap CI. Mann–Whitney compares the score groups.</p>")
        rows = []
        for name, m in readers:
            ci = m.get("auc_ci")
            groups = ", ".join(f"{v}: {_ms(g)}" for v, g in (m.get("groups") or {}).items())
            mw = m.get("mann_whitney") or {}
            rows.append([html.escape(name), m["n"], _fmt(m["accuracy"]), _fmt(m["sensitivity"]),
                         _fmt(m["specificity"]), _fmt(m["auc"]),
                         f"{ci[0]:.3f} – {ci[1]:.3f}" if ci else "–", html.escape(groups) or "–",
                         _fmt(mw.get("p"), 4)])
        parts.append(_table(["reader", "n", "accuracy", "sensitivity", "specificity", "AUC", "95% CI",
                             "score mean ± sd", "Mann–Whitney p"], rows))
        parts.append("<h2>Score distributions</h2>" + _png(score_distribution_figure(result)))
        parts.append("<h2>ROC curves</h2>" + _png(roc_figure(result)))
    elif design == "pair":
        parts.append("<p>Accuracy: the original picked correctly (in a two-alternative forced choice this "
                     "equals the AUC; 0.5 = cannot tell). 95% bootstrap CI; binomial test against 0.5.</p>")
        rows = []
        for name, m in readers:
            ci = m.get("auc_ci")
            rows.append([html.escape(name), m["n"], _fmt(m["accuracy"]),
                         f"{ci[0]:.3f} – {ci[1]:.3f}" if ci else "–", _fmt((m.get("binomial_test") or {}).get("p"), 4)])
        parts.append(_table(["reader", "n", "accuracy", "95% CI", "binomial p"], rows))
        parts.append("<h2>Likert ratings</h2><p>Mean ± sd per variant; paired difference "
                     f"(other − {html.escape(ref)}) with the Wilcoxon signed-rank test.</p>")
        for name, m in readers:
            rows = []
            for item in D.LIKERT_ITEMS:
                e = m["likert"][item]
                variants = [v for v in e if v not in ("paired_difference", "wilcoxon")]
                rows.append([item, html.escape("; ".join(f"{v}: {_ms(e[v])}" for v in variants)),
                             _ms(e["paired_difference"]), _fmt((e.get("wilcoxon") or {}).get("p"), 4)])
            parts.append(f"<h3>{html.escape(name)}</h3>" + _table(["item", "mean ± sd", "difference", "Wilcoxon p"], rows))
        parts.append(_png(likert_figure(result, ref)))
    else:
        rows = []
        for name, m in readers:
            fa = m["field_accuracy"]
            rows.append([html.escape(name), m["n"], _fmt(m["accuracy"])] + [_fmt(fa[f]) for f in D.PROTOCOL_FIELDS]
                        + [html.escape(", ".join(f"{v}: {a:.2f}" for v, a in m["accuracy_by_variant"].items()))])
        parts.append(_table(["reader", "n", "all fields correct"] + [f"{f} correct" for f in D.PROTOCOL_FIELDS]
                            + ["all correct, by variant"], rows))
        parts.append("<h2>Confusion matrices (all readers)</h2>" + _png(confusion_figure(result)))

    ag = result.get("agreement", {})
    parts.append("<h2>Inter-reader agreement</h2>")
    if ag.get("note"):
        parts.append(f"<p>{html.escape(ag['note'])}</p>")
    else:
        rows = [[k.replace("_", " "), _fmt(v)] for k, v in ag.items() if k not in ("readers",)]
        parts.append(_table(["measure", "value"], rows))

    parts.append("<h2>Per case</h2>")
    rows = [[html.escape(str(c["case"])), html.escape(str(c["item"])), html.escape(str(c["reader"])),
             html.escape(str(c["shown"])), html.escape(str(c["answer"])), _fmt(c["correct"]),
             _fmt(c.get("time_spent_s"), 1),
             f"{c['window']['width']:g}/{c['window']['level']:g}" if c.get("window") else "–"]
            for c in result["cases"]]
    parts.append(_table(["case", "item", "reader", "shown", "answer", "correct", "time (s)", "final W/L"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: dict, path) -> Path:
    """Write the HTML report atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_html(result))
    return path
