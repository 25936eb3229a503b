"""Result tables (vtkMRMLTableNode): radiomics and emphysema, original vs normalized.

Every table records its method details (engine version, thresholds, params file) as node
attributes and column descriptions, so a results section can cite them.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

EMPHYSEMA_MEASURES = (
    ("laa_percent", "LAA%", "%"),
    ("perc15_hu", "Perc15", "HU"),
    ("lung_volume_ml", "Lung volume", "ml"),
)
REGIONS_ORDER = ("whole", "left", "right", "upper", "middle", "lower")


def percent_difference(original: Optional[float], normalized: Optional[float]) -> float:
    """100 * (normalized - original) / |original|; NaN when undefined."""
    if original is None or normalized is None:
        return math.nan
    try:
        o, n = float(original), float(normalized)
    except (TypeError, ValueError):
        return math.nan
    if not (math.isfinite(o) and math.isfinite(n)) or o == 0:
        return math.nan
    return 100.0 * (n - o) / abs(o)


def _number(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def fill_table(table_node, columns: list[tuple[str, str]], rows: list[list],
               descriptions: Optional[dict] = None, units: Optional[dict] = None) -> None:
    """Replace a table node's content. ``columns`` is ``[(name, "string"|"double"), ...]``."""
    import vtk

    table = table_node.GetTable()
    was = table_node.StartModify()
    table_node.RemoveAllColumns()
    arrays = []
    for name, kind in columns:
        arr = vtk.vtkStringArray() if kind == "string" else vtk.vtkDoubleArray()
        arr.SetName(name)
        arr.SetNumberOfValues(len(rows))
        arrays.append((arr, kind))
    for r, row in enumerate(rows):
        for (arr, kind), value in zip(arrays, row):
            if kind == "string":
                arr.SetValue(r, "" if value is None else str(value))
            else:
                arr.SetValue(r, _number(value))
    for arr, _ in arrays:
        table.AddColumn(arr)
    for name, text in (descriptions or {}).items():
        table_node.SetColumnDescription(name, text)
    for name, text in (units or {}).items():
        table_node.SetColumnUnitLabel(name, text)
    table.Modified()
    table_node.EndModify(was)


# -- radiomics ---------------------------------------------------------------------------
def radiomics_rows(result, original: str = "original", normalized: str = "normalized",
                   segment_names: Optional[dict] = None) -> list[list]:
    """Rows ``[segment, feature, original, normalized, % difference]`` from radiomics JSON.

    Accepts the tidy form (a list of ``{segment, image, feature, value}``, possibly under a
    ``"rows"``/``"features"``/``"tidy"`` key) and the nested form
    ``{image: {segment: {feature: value}}}``. ``segment_names`` maps label values to names.
    """
    tidy = _tidy_radiomics(result)
    names = {str(k): v for k, v in (segment_names or {}).items()}
    values: dict = {}
    order: list = []
    for rec in tidy:
        seg = str(rec.get("segment", rec.get("label", "")))
        seg = names.get(str(rec.get("label", "")), names.get(seg, names.get(_label_number(seg), seg)))
        feat = str(rec.get("feature", ""))
        img = str(rec.get("image", ""))
        key = (seg, feat)
        if key not in values:
            values[key] = {}
            order.append(key)
        values[key][img] = rec.get("value")
    rows = []
    for seg, feat in order:
        v = values[(seg, feat)]
        o, n = v.get(original), v.get(normalized)
        if _number(o) != _number(o) and _number(n) != _number(n):
            continue  # diagnostics and other non-numeric entries
        rows.append([seg, feat, _number(o), _number(n), percent_difference(o, n)])
    return rows


def _label_number(text: str) -> str:
    """"label_3" / "Label 3" / "3" -> "3" (the engine names unnamed labels by value)."""
    import re

    m = re.fullmatch(r"(?:label[ _-]?)?(\d+)", text.strip(), flags=re.IGNORECASE)
    return m.group(1) if m else text


def _tidy_radiomics(result) -> list[dict]:
    if isinstance(result, dict):
        for key in ("rows", "tidy", "features", "results"):
            if isinstance(result.get(key), list):
                return result[key]
        out = []
        for img, by_seg in result.items():
            if not isinstance(by_seg, dict):
                continue
            for seg, feats in by_seg.items():
                if isinstance(feats, dict):
                    for feat, val in feats.items():
                        out.append({"image": img, "segment": seg, "feature": feat, "value": val})
        return out
    if isinstance(result, list):
        return [r for r in result if isinstance(r, dict)]
    return []


def radiomics_table(table_node, result, params_file: str = "", engine_version: str = "",
                    segment_names: Optional[dict] = None) -> int:
    """Fill ``table_node`` with feature | original | normalized | % difference; returns rows."""
    rows = radiomics_rows(result, segment_names=segment_names)
    fill_table(
        table_node,
        [("segment", "string"), ("feature", "string"), ("original", "double"),
         ("normalized", "double"), ("% difference", "double")],
        rows,
        descriptions={"% difference": "100 * (normalized - original) / |original|",
                      "original": "Feature on the original volume",
                      "normalized": "Feature on the normalized volume (same settings, same mask)"},
        units={"% difference": "%"},
    )
    table_node.SetAttribute("CTNormalize.radiomicsParams", params_file or "")
    table_node.SetAttribute("CTNormalize.engineVersion", engine_version or "")
    return len(rows)


# -- emphysema ---------------------------------------------------------------------------
def emphysema_regions(result: dict) -> dict:
    """``{region: {measure: value}}`` from one emphysema result (whole, left/right, zones)."""
    regions = {"whole": {k: result.get(k) for k, _, _ in EMPHYSEMA_MEASURES}}
    for group in ("per_lung", "per_zone"):
        for name, stats in (result.get(group) or {}).items():
            if isinstance(stats, dict):
                regions[name] = {k: stats.get(k) for k, _, _ in EMPHYSEMA_MEASURES}
    return regions


def emphysema_rows(original: dict, normalized: dict) -> list[list]:
    """Rows ``[region, measure, unit, original, normalized, difference]``."""
    ro, rn = emphysema_regions(original), emphysema_regions(normalized)
    names = [r for r in REGIONS_ORDER if r in ro or r in rn]
    names += [r for r in list(ro) + list(rn) if r not in names]
    rows = []
    for region in names:
        for key, label, unit in EMPHYSEMA_MEASURES:
            o = (ro.get(region) or {}).get(key)
            n = (rn.get(region) or {}).get(key)
            diff = _number(n) - _number(o)
            rows.append([region, label, unit, _number(o), _number(n), diff])
    return rows


def emphysema_table(table_node, original: dict, normalized: dict) -> int:
    """Fill ``table_node`` with LAA%, Perc15 and lung volume per lung and zone, both volumes."""
    rows = emphysema_rows(original, normalized)
    prov = original.get("provenance", {}) if isinstance(original, dict) else {}
    threshold = prov.get("threshold_hu", "")
    fill_table(
        table_node,
        [("region", "string"), ("measure", "string"), ("unit", "string"), ("original", "double"),
         ("normalized", "double"), ("difference", "double")],
        rows,
        descriptions={"difference": "normalized - original (absolute, in the measure's unit)",
                      "measure": f"LAA% = % of lung voxels with HU < {threshold}; Perc15 = 15th HU percentile"},
    )
    table_node.SetAttribute("CTNormalize.emphysemaThresholdHU", str(threshold))
    table_node.SetAttribute("CTNormalize.lungMaskSource", str(prov.get("mask_source", "")))
    table_node.SetAttribute("CTNormalize.lungMethod", str(prov.get("lung_method", "")))
    table_node.SetAttribute("CTNormalize.engineVersion", str(prov.get("engine_version", "")))
    return len(rows)


def column_names(table_node) -> list[str]:
    t = table_node.GetTable()
    return [t.GetColumnName(i) for i in range(t.GetNumberOfColumns())]


def iter_rows(table_node) -> Iterable[list]:
    t = table_node.GetTable()
    for r in range(t.GetNumberOfRows()):
        yield [t.GetValue(r, c).ToString() for c in range(t.GetNumberOfColumns())]
