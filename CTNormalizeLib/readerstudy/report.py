"""HTML report of a reader-study analysis (template ``Resources/Templates/readerstudy.html.j2``).

The plots come from :mod:`.figures`; this module puts the tables in display form.
"""

from __future__ import annotations

from pathlib import Path

from ..evaluate.figures import to_png
from ..htmlreport import fmt_fixed, render
from . import design as D
from . import figures as F
from .figures import mean_sd
from .storage import atomic_write_text

PNG_DPI = 110


def _ci(ci) -> str:
    return f"{ci[0]:.3f} – {ci[1]:.3f}" if ci else "—"


def _per_reader(design: str, readers: list) -> dict:
    """Header and rows of the per-reader table of ``design``."""
    rows = []
    if design == "single":
        header = ["reader", "n", "accuracy", "sensitivity", "specificity", "AUC", "95% CI", "score mean ± sd",
                  "Mann–Whitney p"]
        for name, m in readers:
            groups = ", ".join(f"{v}: {mean_sd(g)}" for v, g in (m.get("groups") or {}).items())
            rows.append([name, m["n"], fmt_fixed(m["accuracy"]), fmt_fixed(m["sensitivity"]),
                         fmt_fixed(m["specificity"]), fmt_fixed(m["auc"]), _ci(m.get("auc_ci")), groups or "—",
                         fmt_fixed((m.get("mann_whitney") or {}).get("p"), 4)])
    elif design == "pair":
        header = ["reader", "n", "accuracy", "95% CI", "binomial p"]
        for name, m in readers:
            rows.append([name, m["n"], fmt_fixed(m["accuracy"]), _ci(m.get("auc_ci")),
                         fmt_fixed((m.get("binomial_test") or {}).get("p"), 4)])
    else:
        header = (["reader", "n", "all fields correct"] + [f"{f} correct" for f in D.PROTOCOL_FIELDS]
                  + ["all correct, by variant"])
        for name, m in readers:
            fa = m["field_accuracy"]
            rows.append([name, m["n"], fmt_fixed(m["accuracy"])] + [fmt_fixed(fa[f]) for f in D.PROTOCOL_FIELDS]
                        + [", ".join(f"{v}: {a:.2f}" for v, a in m["accuracy_by_variant"].items())])
    return {"header": header, "rows": rows}


def _by_variant(readers: list) -> dict:
    """Header and rows of the single design's detection of each variant against the originals."""
    rows = []
    for name, m in readers:
        for variant, v in (m.get("by_variant") or {}).items():
            rows.append([name, variant, v["n_normalized"], v["n_original"], fmt_fixed(v["sensitivity"]),
                         fmt_fixed(v["auc"]), _ci(v.get("auc_ci")),
                         fmt_fixed((v.get("mann_whitney") or {}).get("p"), 4)])
    header = ["reader", "variant", "n variant", "n originals", "sensitivity", "AUC", "95% CI", "Mann–Whitney p"]
    n_variants = len({variant for _, m in readers for variant in (m.get("by_variant") or {})})
    return {"header": header, "rows": rows, "n_variants": n_variants}  # one variant: the table above


def _likert(readers: list) -> list:
    """Per reader: rows of item | mean ± sd per variant | paired difference | Wilcoxon p."""
    out = []
    for name, m in readers:
        rows = []
        for item in D.LIKERT_ITEMS:
            e = m["likert"][item]
            variants = [v for v in e if v not in ("paired_difference", "wilcoxon")]
            rows.append([item, "; ".join(f"{v}: {mean_sd(e[v])}" for v in variants),
                         mean_sd(e["paired_difference"]), fmt_fixed((e.get("wilcoxon") or {}).get("p"), 4)])
        out.append({"name": name, "rows": rows})
    return out


def _figures(result: dict, design: str, reference: str) -> dict:
    if design == "single":
        return {"scores": to_png(F.score_distribution_figure(result), PNG_DPI),
                "roc": to_png(F.roc_figure(result), PNG_DPI)}
    if design == "pair":
        return {"likert": to_png(F.likert_figure(result, reference), PNG_DPI)}
    return {"confusion": to_png(F.confusion_figure(result), PNG_DPI)}


def render_html(result: dict) -> str:
    """The report as a self-contained HTML page."""
    st = result["study"]
    design = st["design"]
    ref = st.get("reference", "original")
    readers = list(result["readers"].items()) + [("all readers (pooled)", result["pooled"])]
    ag = result.get("agreement", {})
    cases = [[c["case"], c["item"], c["reader"], c["shown"], c["answer"], fmt_fixed(c["correct"]),
              fmt_fixed(c.get("time_spent_s"), 1),
              f"{c['window']['width']:g}/{c['window']['level']:g}" if c.get("window") else "—"]
             for c in result["cases"]]
    return render("readerstudy.html.j2",
                  title="Reader study report" + (f": {st['title']}" if st.get("title") else ""),
                  study=st, design=design, reference=ref, warnings=result.get("warnings", []),
                  per_reader=_per_reader(design, readers),
                  by_variant=_by_variant(readers) if design == "single" else None,
                  likert=_likert(readers) if design == "pair" else [],
                  figures=_figures(result, design, ref),
                  agreement_note=ag.get("note"),
                  agreement=[[k.replace("_", " "), fmt_fixed(v)] for k, v in ag.items() if k not in ("readers", "note")],
                  cases=cases)


def write_report(result: dict, path) -> Path:
    """Write the HTML report atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_html(result))
    return path
