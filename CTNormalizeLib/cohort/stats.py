"""Cohort quantities per case and their spread between scanner/kernel groups.

A quantity is one number per case (or per case and segment for radiomics), measured on
the original scan ("before") and on the normalized one ("after"). The spread between
groups is given two ways: the coefficient of variation of the group means (std of the
means over their mean's magnitude; how far apart the groups sit) and the Kruskal-Wallis
p-value (scipy; whether the groups' distributions differ). Normalization that removes
the protocol effect lowers the CV and raises the p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .tables import case_group

#: Radiomic features shown in the report when present (first-order and texture).
KEY_FEATURES = ("original_firstorder_Mean", "original_firstorder_Entropy", "original_glcm_Contrast",
                "original_glcm_Correlation", "original_glszm_ZoneEntropy")


@dataclass(frozen=True)
class Quantity:
    """A per-case number: ``key`` names it, ``get(record, side)`` reads it (side: before/after)."""

    key: str
    label: str
    unit: str
    get: Callable[[dict, str], list]
    #: a position on the HU scale (Perc15, a mean HU), whose zero is arbitrary: its spread is the SD of the
    #: group means in its unit, not a CV
    position: bool = False


def _sig(field: str):
    def get(rec, side):
        v = (rec.get(side) or {}).get(field)
        return [v] if v is not None else []
    return get


def _emph(field: str):
    def get(rec, side):
        e = (rec.get("emphysema") or {}).get("original" if side == "before" else "normalized")
        v = (e or {}).get(field)
        return [v] if v is not None else []
    return get


def _feature(name: str):
    def get(rec, side):
        col = "original" if side == "before" else "normalized"
        return [r[col] for r in (rec.get("radiomics") or {}).get("rows", [])
                if r.get("feature") == name and r.get(col) is not None]
    return get


def quantities(records: list) -> list:
    """The quantities the records hold, in report order."""
    out = [Quantity("noise_tissue_hu", "noise σ in soft tissue", "HU", _sig("noise_tissue_hu")),
           Quantity("noise_air_hu", "noise σ in air", "HU", _sig("noise_air_hu")),
           Quantity("nps_mean_frequency", "NPS mean frequency", "cycles/mm", _sig("nps_mean_frequency")),
           Quantity("mtf50", "noise-texture MTF50", "cycles/mm", _sig("mtf50"))]
    if any(r.get("emphysema") for r in records):
        out += [Quantity("laa_percent", "emphysema index LAA%", "%", _emph("laa_percent")),
                Quantity("perc15_hu", "Perc15", "HU", _emph("perc15_hu"), position=True)]
    names = {row.get("feature") for r in records for row in (r.get("radiomics") or {}).get("rows", [])}
    from ..quantify.radiomics import is_hu_position

    out += [Quantity(f, f.replace("original_", ""), "HU" if is_hu_position(f) else "", _feature(f),
                     position=is_hu_position(f)) for f in KEY_FEATURES if f in names]
    return out


def by_group(records: list, q: Quantity, side: str) -> dict:
    """``{group: [values]}`` of quantity ``q`` on ``side`` over the cases that have it."""
    groups: dict = {}
    for rec in records:
        vals = [float(v) for v in q.get(rec, side) if v is not None and math.isfinite(float(v))]
        if vals:
            groups.setdefault(case_group(rec), []).extend(vals)
    return dict(sorted(groups.items()))


def spread(groups: dict, position: bool = False) -> dict:
    """Between-group spread: ``sd`` and ``cv`` of the group means and the Kruskal-Wallis ``p``.

    ``sd`` and ``cv`` are None with fewer than two groups, ``cv`` also with a zero overall mean and
    for a ``position`` on the HU scale (its zero is arbitrary: a CV of Perc15 or a mean HU says
    nothing); ``p`` is None with fewer than two groups, a group of a single case (the test then has
    nothing to rank within groups: k groups of one case each always give the same p) or when every
    value is the same.
    """
    from scipy.stats import kruskal

    means = [float(np.mean(v)) for v in groups.values() if len(v)]
    out = {"groups": len(means), "n": int(sum(len(v) for v in groups.values())), "sd": None, "cv": None, "p": None}
    if len(means) < 2:
        return out
    out["sd"] = float(np.std(means, ddof=1))
    centre = abs(float(np.mean(means)))
    if centre > 0 and not position:
        out["cv"] = out["sd"] / centre
    values = [np.asarray(v, float) for v in groups.values() if len(v)]
    if min(len(v) for v in values) >= 2 and len({float(x) for v in values for x in v}) > 1:
        try:
            out["p"] = float(kruskal(*values).pvalue)
        except ValueError:
            out["p"] = None
    return out


def spread_table(records: list, after: bool = True) -> list:
    """One row per quantity: label, unit, ``before`` and (with ``after``) ``after`` spreads."""
    rows = []
    for q in quantities(records):
        row = {"key": q.key, "label": q.label, "unit": q.unit, "position": q.position,
               "before": spread(by_group(records, q, "before"), q.position)}
        if after:
            row["after"] = spread(by_group(records, q, "after"), q.position)
        rows.append(row)
    return rows


def counts(records: list, field: str, side: str = "before") -> dict:
    """``{value: number of cases}`` of a signature field (None counts as ``unknown``)."""
    out: dict = {}
    for rec in records:
        v = (rec.get(side) or {}).get(field)
        key = "unknown" if v is None or v == "" else (f"{v:g}" if isinstance(v, float) else str(v))
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def fmt(v: Optional[float], digits: int = 3) -> str:
    """A number for a table cell (— for None)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}g}"
