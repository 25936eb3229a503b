"""The tidy CSV tables of a batch: ``batch.csv``, ``emphysema.csv``, ``radiomics.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

BATCH_COLUMNS = ["case", "status", "output", "error", "seconds", "group", "input", "method", "source_spec",
                 "target_spec", "warnings", "input_sha256", "engine_version"]
EMPHYSEMA_REGIONS = ("lungs", "left", "right", "upper", "middle", "lower")
EMPHYSEMA_MEASURES = ("laa_percent", "perc15_hu", "lung_volume_ml")


def warning_codes(warnings) -> str:
    """``CODE;CODE`` of a case's warnings, once each; a measurement's warning names the image it is about
    (``normalized:CLEAN_TEXTURE_INPUT`` read as if the case's input were a clean-texture scan)."""
    return ";".join(dict.fromkeys(f"{w['scope']}:{w.get('code', '')}" if w.get("scope") else w.get("code", "")
                                  for w in warnings or []))


def case_group(rec: dict) -> str:
    """The scanner/kernel group of a case: the manifest's ``group``, else vendor + kernel
    from the tags, else the kernel class read from the pixels, else ``unknown``."""
    if rec.get("group"):
        return str(rec["group"])
    sig = rec.get("before") or {}
    vendor, kernel = sig.get("vendor"), sig.get("kernel_tag")
    if vendor or kernel:
        return " ".join(str(v) for v in (vendor, kernel) if v)
    if sig.get("kernel_class_pixels"):
        return f"{sig['kernel_class_pixels']} (from pixels)"
    return "unknown"


def _csv(rows: list, columns: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def batch_rows(records: list) -> tuple:
    """``(rows, columns)`` of ``batch.csv``: one row per case; manifest columns are kept."""
    extra_cols: list = []
    rows = []
    for rec in records:
        warnings = list(rec.get("input_warnings") or []) + list(rec.get("warnings") or [])
        row = {
            "case": rec.get("case"), "status": rec.get("status"), "output": rec.get("output", ""),
            "error": rec.get("error", ""), "seconds": rec.get("seconds"), "group": case_group(rec),
            "input": rec.get("input"), "method": rec.get("method"), "source_spec": rec.get("source_spec"),
            "target_spec": rec.get("target_spec"),
            "warnings": warning_codes(warnings),
            "input_sha256": rec.get("input_sha256"), "engine_version": rec.get("engine_version"),
        }
        for k, v in (rec.get("extra") or {}).items():
            if k not in row:
                row[k] = v
                if k not in extra_cols:
                    extra_cols.append(k)
        rows.append(row)
    return rows, BATCH_COLUMNS + extra_cols


def _region(d: Optional[dict], region: str) -> Optional[dict]:
    if not d:
        return None  # no lungs found in that image (NO_LUNGS)
    if region == "lungs":
        return d
    return (d.get("per_lung") or {}).get(region) or (d.get("per_zone") or {}).get(region)


def emphysema_rows(records: list) -> list:
    """Tidy emphysema table: case, group, region, measure, original, normalized, difference."""
    rows = []
    for rec in records:
        e = rec.get("emphysema")
        if not e or rec.get("status") not in ("done", "skipped"):
            continue
        for region in EMPHYSEMA_REGIONS:
            a, b = _region(e["original"], region), _region(e["normalized"], region)
            if a is None or b is None:
                continue
            for m in EMPHYSEMA_MEASURES:
                va, vb = a.get(m), b.get(m)
                rows.append({"case": rec["case"], "group": case_group(rec), "region": region, "measure": m,
                             "original": va, "normalized": vb,
                             "difference": None if va is None or vb is None else vb - va})
    return rows


def radiomics_rows(records: list) -> list:
    """Tidy radiomics table: case, group, segment, feature, original, normalized, difference, percent."""
    rows = []
    for rec in records:
        rad = rec.get("radiomics")
        if not rad or rec.get("status") not in ("done", "skipped"):
            continue
        for r in rad.get("rows", []):
            rows.append({"case": rec["case"], "group": case_group(rec), "segment": r.get("segment"),
                         "feature": r.get("feature"), "original": r.get("original"),
                         "normalized": r.get("normalized"),
                         "difference": r.get("normalized_minus_original"),
                         "percent_difference": r.get("normalized_pct_vs_original")})
    return rows


def write_tables(outdir, records: list) -> dict:
    """Write ``batch.csv`` (always) and ``emphysema.csv`` / ``radiomics.csv`` (when any case has
    them), atomically. Returns ``{name: path}``."""
    from ..io.atomic import atomic_write_text

    out = Path(outdir)
    rows, cols = batch_rows(records)
    written = {"batch": atomic_write_text(out / "batch.csv", _csv(rows, cols))}
    emph = emphysema_rows(records)
    if emph:
        written["emphysema"] = atomic_write_text(out / "emphysema.csv", _csv(
            emph, ["case", "group", "region", "measure", "original", "normalized", "difference"]))
    rad = radiomics_rows(records)
    if rad:
        written["radiomics"] = atomic_write_text(out / "radiomics.csv", _csv(
            rad, ["case", "group", "segment", "feature", "original", "normalized", "difference",
                  "percent_difference"]))
    return written
