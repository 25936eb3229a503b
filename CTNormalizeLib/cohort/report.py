"""``cohort.html``: one self-contained page (figures embedded) characterizing a cohort.

Before normalization alone (``ctnormalize characterize``) or before and after
(``ctnormalize batch``): scanners and kernels (from tags and from pixels), slice
thicknesses, noise and NPS, emphysema index and key radiomic features per
scanner/kernel group, each with a plot, and a table of the spread between groups.
The page uses the style of the evaluation reports (:mod:`CTNormalizeLib.evaluate.report`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path

from .stats import fmt, quantities, spread_table
from .tables import case_group

TEMPLATE = "cohort.html.j2"  # in Resources/Templates


def _img(png: bytes, caption: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    cap = html.escape(caption)
    return f'<figure><img alt="{cap}" src="data:image/png;base64,{b64}"/><figcaption>{cap}</figcaption></figure>'


def _join(values) -> str:
    vals = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(vals) if vals else "—"


def _groups(records: list) -> list:
    out: dict = {}
    for rec in records:
        out.setdefault(case_group(rec), []).append(rec.get("before") or {})
    rows = []
    for name, sigs in sorted(out.items()):
        rows.append({"name": name, "n": len(sigs), "vendor": _join(s.get("vendor") for s in sigs),
                     "kernel_tag": _join(s.get("kernel_tag") for s in sigs),
                     "class_tag": _join(s.get("kernel_class_tag") for s in sigs),
                     "class_pixels": _join(s.get("kernel_class_pixels") for s in sigs),
                     "thickness": _join(fmt(s.get("thickness_mm")) for s in sigs if s.get("thickness_mm"))})
    return rows


def _spread_rows(records: list, after: bool) -> list:
    rows = []
    for r in spread_table(records, after):
        b, a = r["before"], r.get("after") or {}
        cls = ""
        if after and b.get("cv") is not None and a.get("cv") is not None:
            cls = "better" if a["cv"] < b["cv"] else ("worse" if a["cv"] > b["cv"] else "")
        rows.append({"label": r["label"], "unit": r["unit"], "groups": b["groups"],
                     "cv_before": fmt(b["cv"]), "cv_after": fmt(a.get("cv")), "cv_class": cls,
                     "p_before": fmt(b["p"], 2), "p_after": fmt(a.get("p"), 2)})
    return rows


def _case_rows(records: list) -> list:
    rows = []
    for rec in records:
        b, a = rec.get("before") or {}, rec.get("after") or {}
        e = rec.get("emphysema") or {}
        rows.append({
            "case": rec.get("case"), "group": case_group(rec), "status": rec.get("status"),
            "class_before": b.get("kernel_class_pixels") or "—", "class_after": a.get("kernel_class_pixels") or "—",
            "thick_before": fmt(b.get("thickness_mm")), "thick_after": fmt(a.get("thickness_mm")),
            "noise_before": fmt(b.get("noise_tissue_hu")), "noise_after": fmt(a.get("noise_tissue_hu")),
            "laa_before": fmt((e.get("original") or {}).get("laa_percent")),
            "laa_after": fmt((e.get("normalized") or {}).get("laa_percent")),
            "seconds": fmt(rec.get("seconds")), "error": rec.get("error") or ""})
    return rows


METHOD_NOTES = (
    ("signature", "each scan's measured image-quality signature (signature.measure_signature, DICOM tags as "
                  "priors), on the original and on the normalized scan"),
    ("noise σ", "full-band noise standard deviation in soft tissue (fat and muscle), and in air outside the body"),
    ("NPS", "noise power spectrum in uniform ROIs (air around the body, else soft tissue), radially averaged; its "
            "mean frequency rises with kernel sharpness"),
    ("kernel class from pixels, MTF50", "the in-plane transfer fitted to the noise texture, and its closest kernel "
                                        "class; — where the texture could not be fitted"),
    ("emphysema index", "LAA% below the threshold and Perc15 in the engine's lung mask, measured on each image"),
    ("radiomics", "pyradiomics with the CT preset on the case's segments, the same settings for both images; "
                  "every segment is one sample of its group"),
)


def cohort_html(records: list, after: bool = True, settings: dict | None = None, title: str | None = None) -> str:
    """The HTML page for the records of a batch (or of a characterization, ``after=False``)."""
    import jinja2

    from .. import __version__
    from ..evaluate.report import _CSS, versions
    from ..resources import resource_path
    from .figures import census_figure, nps_figure, quantity_figure

    measured = [r for r in records if r.get("before")]
    status = {}
    for r in records:
        status[r.get("status")] = status.get(r.get("status"), 0) + 1
    settings = settings or {}
    sub = (f"{len(records)} cases ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))}); "
           + (f"target {settings.get('target')}, method {settings.get('method')}; " if after else
              "headers and image noise only, no normalization; ")
           + f"{_dt.datetime.now():%Y-%m-%d %H:%M}, CTNormalize {__version__}.")
    figures = [_img(quantity_figure(measured, q, after), q.label) for q in quantities(measured)]
    if any((r.get("before") or {}).get("nps") for r in measured):
        figures.insert(min(3, len(figures)),
                       _img(nps_figure(measured, after), "mean noise power spectrum per group"))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_path("Templates"))),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    provenance = [(k, v) for k, v in settings.items()] + [(f"version {k}", v) for k, v in versions().items()]
    return env.get_template(TEMPLATE).render(
        title=title or ("CTNormalize cohort: before and after normalization" if after
                        else "CTNormalize cohort characterization"),
        subtitle=sub, css=_CSS, after=after,
        census=_img(census_figure(measured, after), "scanners, kernel classes and slice thicknesses")
        if measured else "<p class='note'>No case could be measured.</p>",
        groups=_groups(measured), spread=_spread_rows(measured, after), figures=figures,
        cases=_case_rows(records), emphysema=any(r.get("emphysema") for r in records),
        method=METHOD_NOTES, provenance=provenance)


def write_cohort_html(path, records: list, after: bool = True, settings: dict | None = None) -> Path:
    """Write :func:`cohort_html` atomically."""
    from ..io.atomic import atomic_write_text

    return atomic_write_text(path, cohort_html(records, after, settings))
