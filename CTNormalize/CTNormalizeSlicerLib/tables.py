"""Result tables (vtkMRMLTableNode): radiomics and emphysema, original vs normalized.

They are filled from the engine's typed results (``CTNormalizeLib.contracts.results``).
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
def radiomics_rows(report, original: str = "original", normalized: str = "normalized",
                   segment_names: Optional[dict] = None) -> list[list]:
    """Rows ``[segment, feature, original, normalized, difference, % difference]`` of a ``RadiomicsReport``.

    Non-numeric entries (pyradiomics diagnostics) are left out. ``segment_names`` maps the
    labelmap values the module exported to the segment names the user sees. A position on the
    HU scale (the original image's first-order mean, median, ...) has no percent, as in the
    engine's tables: its zero is arbitrary.
    """
    from CTNormalizeLib.quantify.radiomics import is_hu_position

    names = {str(k): v for k, v in (segment_names or {}).items()}
    labels = {f.segment: str(f.label) for f in report.features}
    rows = []
    for (seg, feat), by_image in report.values().items():
        o, n = by_image.get(original), by_image.get(normalized)
        pct = math.nan if is_hu_position(feat) else percent_difference(o, n)
        rows.append([names.get(labels.get(seg, ""), seg), feat, _number(o), _number(n), _number(n) - _number(o), pct])
    return rows


def radiomics_table(table_node, report, params_file: str = "", segment_names: Optional[dict] = None) -> int:
    """Fill ``table_node`` with feature | original | normalized | difference | % difference; returns rows."""
    rows = radiomics_rows(report, segment_names=segment_names)
    fill_table(
        table_node,
        [("segment", "string"), ("feature", "string"), ("original", "double"),
         ("normalized", "double"), ("difference", "double"), ("% difference", "double")],
        rows,
        descriptions={"difference": "normalized - original (in the feature's unit)",
                      "% difference": "100 * (normalized - original) / |original|; empty for a position on "
                                      "the HU scale (first-order mean, median, min, max, percentiles)",
                      "original": "Feature on the original volume",
                      "normalized": "Feature on the normalized volume (same settings, same mask)"},
        units={"% difference": "%"},
    )
    prov = report.provenance
    table_node.SetAttribute("CTNormalize.radiomicsParams", params_file or str(prov.get("params_path", "")))
    table_node.SetAttribute("CTNormalize.pyradiomicsVersion", str(prov.get("pyradiomics_version", "")))
    table_node.SetAttribute("CTNormalize.engineVersion", str(prov.get("engine_version", "")))
    return len(rows)


# -- emphysema ---------------------------------------------------------------------------
def emphysema_rows(original, normalized) -> list[list]:
    """Rows ``[region, measure, unit, original, normalized, difference]`` of two ``EmphysemaMeasurement``."""
    ro, rn = original.regions(), normalized.regions()
    names = [r for r in REGIONS_ORDER if r in ro or r in rn]
    names += [r for r in list(ro) + list(rn) if r not in names]
    rows = []
    for region in names:
        for key, label, unit in EMPHYSEMA_MEASURES:
            o = getattr(ro.get(region), key, None)
            n = getattr(rn.get(region), key, None)
            rows.append([region, label, unit, _number(o), _number(n), _number(n) - _number(o)])
    return rows


def emphysema_table(table_node, original, normalized) -> int:
    """Fill ``table_node`` with LAA%, Perc15 and lung volume per lung and zone, both volumes."""
    rows = emphysema_rows(original, normalized)
    prov = original.provenance
    fill_table(
        table_node,
        [("region", "string"), ("measure", "string"), ("unit", "string"), ("original", "double"),
         ("normalized", "double"), ("difference", "double")],
        rows,
        descriptions={"difference": "normalized - original (absolute, in the measure's unit)",
                      "measure": f"LAA% = % of lung voxels with HU < {prov.threshold_hu:g}; "
                                 "Perc15 = 15th HU percentile"},
    )
    table_node.SetAttribute("CTNormalize.emphysemaThresholdHU", f"{prov.threshold_hu:g}")
    table_node.SetAttribute("CTNormalize.lungMaskSource", prov.mask_source)
    table_node.SetAttribute("CTNormalize.lungMethod", prov.lung_method)
    table_node.SetAttribute("CTNormalize.engineVersion", prov.engine_version)
    return len(rows)


def write_csv(table_node, path: str) -> str:
    """Write a table node as CSV (header + rows, method attributes as trailing comment lines)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(column_names(table_node))
        writer.writerows(iter_rows(table_node))
        for name in sorted(table_node.GetAttributeNames() or ()):
            if name.startswith("CTNormalize."):
                fh.write(f"# {name[len('CTNormalize.'):]}: {table_node.GetAttribute(name)}\n")
    return path


def column_names(table_node) -> list[str]:
    t = table_node.GetTable()
    return [t.GetColumnName(i) for i in range(t.GetNumberOfColumns())]


def iter_rows(table_node) -> Iterable[list]:
    t = table_node.GetTable()
    for r in range(t.GetNumberOfRows()):
        yield [t.GetValue(r, c).ToString() for c in range(t.GetNumberOfColumns())]
