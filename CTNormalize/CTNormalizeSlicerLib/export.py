"""Saving results: the tables as CSV, the run report (JSON + HTML), and the normalized volume
as a derived DICOM series in Slicer's DICOM database.

The DICOM series is written by the engine's writer (``CTNormalizeLib.io.dicom_write``), called
from :func:`dicom_writer` only, so the module follows the engine when that writer changes.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from typing import Callable, Optional

from . import nodes, tables, tags
from .i18n import _


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "result"


def report_html(output_node) -> str:
    """A self-contained HTML page of a normalized volume's run report (provenance, QC, steps)."""
    from CTNormalizeLib.contracts.report import RunReport

    rr = RunReport.from_dict(json.loads(nodes.provenance(output_node).get("report") or "{}"))
    rows = [("method", rr.method), ("why this method", rr.method_reason), ("model sha256", rr.model_sha256 or ""),
            ("device", rr.device), ("source protocol", rr.source_spec), ("target protocol", rr.target_spec),
            ("noise", rr.noise_summary), ("engine version", rr.engine_version)]
    qc, steps, warnings = rr.qc, rr.steps, rr.warnings

    def table(pairs):
        return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                                   for k, v in pairs) + "</table>"

    parts = [f"<h1>CT Normalize: {html.escape(output_node.GetName())}</h1>",
             "<p>Research use only, not for diagnosis.</p>", "<h2>Run</h2>", table(rows)]
    if qc:
        parts += ["<h2>Quality checks</h2>", table(sorted((k, json.dumps(v)) for k, v in qc.items()))]
    if steps:
        parts += ["<h2>Steps</h2>", "<ol>" + "".join(f"<li>{html.escape(json.dumps(s))}</li>" for s in steps) + "</ol>"]
    if warnings:
        parts += ["<h2>Warnings</h2>", "<ul>" + "".join(
            f"<li>{html.escape(str(w.get('message', w)))}</li>" for w in warnings) + "</ul>"]
    style = "body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}td,th{vertical-align:top}"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(parts)}</body></html>"


def save_results(folder: str, table_nodes=(), output_node=None) -> list[str]:
    """Write each table as ``<name>.csv`` and the output's run report as JSON + HTML; returns the files."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for table in table_nodes:
        if table is not None:
            written.append(tables.write_csv(table, os.path.join(folder, _safe(table.GetName()) + ".csv")))
    if output_node is not None and nodes.provenance(output_node).get("report"):
        stem = os.path.join(folder, _safe(output_node.GetName()) + "_report")
        with open(stem + ".json", "w", encoding="utf-8") as fh:
            fh.write(nodes.provenance(output_node)["report"])
        with open(stem + ".html", "w", encoding="utf-8") as fh:
            fh.write(report_html(output_node))
        written += [stem + ".json", stem + ".html"]
    if not written:
        raise ValueError(_("There are no results to save yet."))
    return written


def dicom_writer():
    """The engine's DICOM writer module, or None when this engine has none."""
    try:
        from CTNormalizeLib.io import dicom_write
    except ImportError:
        return None
    return dicom_write


def _source_volume(input_node):
    """The input as the writer expects it: meta with its DICOM folder and series when from DICOM."""
    import slicer

    meta = tags.volume_tags(input_node)
    uids = (input_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    db = getattr(slicer, "dicomDatabase", None)
    path = db.fileForInstance(uids[0]) if uids and db is not None else ""
    if path:
        meta.update(source_format="DICOM", source_path=os.path.dirname(path))
    else:
        meta.update(source_format="volume")
    return nodes.volume_for_engine(input_node, meta)


def export_dicom(output_node, input_node=None, import_folder: Optional[Callable[[str], None]] = None) -> dict:
    """Write the normalized volume as a derived DICOM series of its input and import it.

    The series takes the patient and study of the volume ``output_node`` was made from (its
    node reference, :func:`nodes.input_of`); ``input_node``, when given (the panel's "Original"),
    must be that volume: another scan would file the series under its patient.
    ``import_folder(path)`` adds the written files to the DICOM database (default: Slicer's
    ``DICOMUtils.importDicom`` with copying, so the temp folder can go). Returns
    ``{"series_instance_uid", "files", "warnings"}``.
    """
    writer = dicom_writer()
    if writer is None:
        raise RuntimeError(_("This version of the CT Normalize engine cannot write DICOM yet."))
    report = json.loads(nodes.provenance(output_node).get("report") or "{}")
    if not report:
        raise ValueError(_("'{name}' was not made by CT Normalize (no run report).").format(name=output_node.GetName()))
    made_from = nodes.input_of(output_node)
    if made_from is None and input_node is not None and input_node.GetName() == \
            nodes.provenance(output_node).get("inputName") and not output_node.GetNodeReferenceID(nodes.INPUT_REFERENCE):
        made_from = input_node  # a result imported before the reference existed: its recorded input name must match
    if made_from is None:
        raise ValueError(_("The volume '{name}' was made from is no longer in the scene: the DICOM series needs its "
                           "patient and study.").format(name=output_node.GetName()))
    if input_node is not None and input_node is not made_from:
        raise ValueError(_("'{name}' was made from '{source}', not from '{chosen}': its DICOM series would be filed "
                           "under another scan's patient and study. Choose the volume it was made from as the "
                           "original.").format(name=output_node.GetName(), source=made_from.GetName(),
                                               chosen=input_node.GetName()))
    input_node = made_from
    if import_folder is None:
        import_folder = _import_with_dicom_utils
    tmp = tempfile.mkdtemp(prefix="CTNormalize-dicom-")
    try:
        series_dir = os.path.join(tmp, "series")
        written = writer.write_derived_series(nodes.volume_for_engine(output_node), series_dir,
                                              _source_volume(input_node), writer.derivation_from_report(report))
        import_folder(series_dir)
        return {"series_instance_uid": written.series_instance_uid, "files": written.n_files,
                "warnings": list(written.warnings)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _import_with_dicom_utils(folder: str) -> None:
    from DICOMLib import DICOMUtils

    DICOMUtils.importDicom(folder, copyFiles=True)
