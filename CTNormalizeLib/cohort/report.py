"""``cohort.html``: one self-contained page (figures embedded) characterizing a cohort.

Before normalization alone (``ctnormalize characterize``) or before and after
(``ctnormalize batch``): scanners and kernels (from tags and from pixels), slice
thicknesses, noise and NPS, emphysema index and key radiomic features per
scanner/kernel group, each with a plot, and a table of the spread between groups.
The page is ``Resources/Templates/cohort.html.j2``, on the reports' shared base
(:mod:`CTNormalizeLib.htmlreport`).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .stats import fmt, quantities, spread_table
from .tables import case_group, warning_codes


def _join(values) -> str:
    vals = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(vals) if vals else "—"


def _groups(records: list) -> list:
    out: dict = {}
    for rec in records:
        out.setdefault(case_group(rec), []).append(rec.get("before") or {})
    rows = []
    for name, sigs in sorted(out.items()):
        rows.append([name, len(sigs), _join(s.get("vendor") for s in sigs), _join(s.get("kernel_tag") for s in sigs),
                     _join(s.get("kernel_class_tag") for s in sigs), _join(s.get("kernel_class_pixels") for s in sigs),
                     _join(fmt(s.get("thickness_mm")) for s in sigs if s.get("thickness_mm"))])
    return rows


def _spread_rows(records: list, after: bool) -> list:
    rows = []
    for r in spread_table(records, after):
        b, a = r["before"], r.get("after") or {}
        key = "sd" if r.get("position") else "cv"  # a position on the HU scale: the SD of the means, in HU

        def cell(s):
            v = s.get(key)
            return fmt(v) if v is None or key == "cv" else f"SD {fmt(v)} {r['unit']}".strip()

        cls = ""
        if after and b.get(key) is not None and a.get(key) is not None:
            cls = "good" if a[key] < b[key] else ("bad" if a[key] > b[key] else "")
        rows.append({"label": r["label"], "unit": r["unit"], "groups": b["groups"],
                     "cv_before": cell(b), "cv_after": cell(a), "cv_class": cls,
                     "p_before": fmt(b["p"], 2), "p_after": fmt(a.get("p"), 2)})
    return rows


def _case_rows(records: list, after: bool) -> tuple:
    """``(header, rows)`` of the per-case table (after-columns only with ``after``)."""
    emph = after and any(r.get("emphysema") for r in records)
    header = ["case", "group", "status", "kernel class (pixels, before)"] + (["after"] if after else []) \
        + ["thickness (before)"] + (["after"] if after else []) + ["noise σ tissue (HU, before)"] \
        + (["after"] if after else []) + (["LAA% before", "LAA% after"] if emph else []) \
        + ["seconds", "warnings (— above: why)", "error"]
    rows = []
    for rec in records:
        b, a = rec.get("before") or {}, rec.get("after") or {}
        e = rec.get("emphysema") or {}
        row = [rec.get("case"), case_group(rec), rec.get("status"), b.get("kernel_class_pixels") or "—"]
        row += [a.get("kernel_class_pixels") or "—"] if after else []
        row += [_thickness(b)] + ([_thickness(a)] if after else [])
        row += [fmt(b.get("noise_tissue_hu"))] + ([fmt(a.get("noise_tissue_hu"))] if after else [])
        if emph:
            row += [fmt((e.get("original") or {}).get("laa_percent")), fmt((e.get("normalized") or {}).get("laa_percent"))]
        # the reasons behind a "—" (KERNEL_NOT_MEASURED, NO_LUNGS, ...) were only in the JSON records
        said = list(b.get("warnings") or []) + list(rec.get("input_warnings") or []) + list(rec.get("warnings") or [])
        row += [fmt(rec.get("seconds")), warning_codes(said).replace(";", "; "), rec.get("error") or ""]
        rows.append(row)
    return header, rows


def _thickness(sig: dict) -> str:
    """A scan's slice thickness and where it comes from (an output interpolated to thinner slices reads thicker
    from its pixels than its target's tag would say: the two must be told apart)."""
    value, source = sig.get("thickness_mm"), sig.get("thickness_source")
    return fmt(value) if value is None or not source else f"{fmt(value)} ({'pixels' if source == 'image' else source})"


METHOD_NOTES = (
    ("signature", "each scan's measured image-quality signature (signature.measure_signature, DICOM tags as "
                  "priors)"),
    ("noise σ", "full-band noise standard deviation in soft tissue (fat and muscle), and in air outside the body"),
    ("NPS", "noise power spectrum in uniform ROIs (air around the body, else soft tissue), radially averaged; its "
            "mean frequency rises with kernel sharpness"),
    ("kernel class from pixels, MTF50", "the in-plane transfer fitted to the noise texture, and its closest kernel "
                                        "class; — where the texture could not be fitted"),
    ("emphysema index", "LAA% below the threshold and Perc15 in the engine's lung mask, measured on each image"),
    ("radiomics", "pyradiomics with the CT preset on the case's segments, the same settings for both images; "
                  "every segment is one sample of its group"),
)
#: what a characterization (no normalization) does not measure
_AFTER_ONLY = ("emphysema index", "radiomics")


def _method_notes(after: bool) -> dict:
    """The "how it was measured" notes for a batch (``after``) or a characterization (headers and signatures only)."""
    if not after:
        return {k: v for k, v in METHOD_NOTES if k not in _AFTER_ONLY}
    notes = dict(METHOD_NOTES)
    notes["signature"] += ", on the original and on the normalized scan"
    return notes


def cohort_html(records: list, after: bool = True, settings: dict | None = None, title: str | None = None) -> str:
    """The HTML page for the records of a batch (or of a characterization, ``after=False``)."""
    from ..evaluate.report import versions
    from ..htmlreport import render
    from ..version import __version__
    from .figures import census_figure, nps_figure, quantity_figure

    measured = [r for r in records if r.get("before")]
    status: dict = {}
    for r in records:
        status[r.get("status")] = status.get(r.get("status"), 0) + 1
    settings = settings or {}
    sub = (f"{len(records)} cases ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))}); "
           + (f"target {settings.get('target')}, method {settings.get('method')}; " if after else
              "headers and the measured signature only, no normalization; ")
           + f"{_dt.datetime.now():%Y-%m-%d %H:%M}, CTNormalize {__version__}.")
    figures = [(q.label, quantity_figure(measured, q, after)) for q in quantities(measured)]
    if any((r.get("before") or {}).get("nps") for r in measured):
        figures.insert(min(3, len(figures)), ("mean noise power spectrum per group", nps_figure(measured, after)))
    header, cases = _case_rows(records, after)
    provenance = {**settings, **{f"version {k}": v for k, v in versions().items()}}
    return render(
        "cohort.html.j2",
        title=title or ("CTNormalize cohort: before and after normalization" if after
                        else "CTNormalize cohort characterization"),
        subtitle=sub, after=after, census=census_figure(measured, after) if measured else None,
        groups=_groups(measured), spread=_spread_rows(measured, after), figures=figures,
        case_header=header, cases=cases, method=_method_notes(after), provenance=provenance)


def write_cohort_html(path, records: list, after: bool = True, settings: dict | None = None) -> Path:
    """Write :func:`cohort_html` atomically."""
    from ..io.atomic import atomic_write_text

    return atomic_write_text(path, cohort_html(records, after, settings))
