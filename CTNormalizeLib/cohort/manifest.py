"""The cases of a cohort: from a manifest CSV or found under a folder.

A manifest has the columns ``case`` and ``input`` (a CT file or a DICOM series folder),
optionally ``source`` (a protocol spec for that case), a segments column (labelmap or
``.seg.nrrd`` for radiomics; ``segments`` unless told otherwise), ``group`` (the
scanner/kernel group in the cohort report) and any other columns, which are kept.
Relative paths are taken from the manifest's folder.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import BadInputError

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
# Files under an input folder that are masks, not CTs.
MASK_NAME = re.compile(r"(\.seg\.nrrd$)|((_|-)(label|labels|mask|seg|segmentation)(\.[a-z.]+)$)"
                       r"|(^(label|labels|mask|seg|segmentation)(_|-))", re.IGNORECASE)


@dataclass
class Case:
    """One case of a cohort.

    Attributes
    ----------
    name : str
        As given (the manifest's ``case``).
    input : str
        Absolute path of the CT file or DICOM folder.
    folder : str
        A file-system-safe, unique name for the case's output folder.
    source : str or None
        Protocol spec for this case (overrides the batch's ``--source``).
    segments : str or None
        Absolute path of the segments for radiomics.
    series_uid : str or None
        For a DICOM folder with several series.
    group : str or None
        The scanner/kernel group given in the manifest.
    extra : dict
        Every other manifest column.
    """

    name: str
    input: str
    folder: str = ""
    source: Optional[str] = None
    segments: Optional[str] = None
    series_uid: Optional[str] = None
    group: Optional[str] = None
    extra: dict = field(default_factory=dict)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def _assign_folders(cases: list) -> list:
    used: set = set()
    for c in cases:
        base = _safe(c.name)
        name, k = base, 1
        while name.lower() in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name.lower())
        c.folder = name
    return cases


def _resolve(base: Path, text: Optional[str]) -> Optional[str]:
    if text is None or not str(text).strip():
        return None
    p = Path(str(text).strip()).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def _not_a_manifest(p: Path, why: str) -> BadInputError:
    return BadInputError(f"{p} is not a manifest (a CSV text file with the columns case,input): {why}. A cohort "
                         "command reads a manifest or a folder of CTs; for one scan use "
                         f"`ctnormalize info {p}` or `ctnormalize normalize {p} ...`, or put it in a folder of its own.")


def read_manifest(path, segments_column: str = "segments") -> list:
    """The cases of a manifest CSV.

    Raises
    ------
    BadInputError
        Missing file, no ``case``/``input`` columns, an empty or duplicate case name.
        (A missing input file is not an error here: that case fails alone.)
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"Manifest not found: {p}")
    if any(p.name.lower().endswith(x) for x in (*VOLUME_SUFFIXES, ".dcm")):
        raise _not_a_manifest(p, "its name is a scan's")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in ("case", "input") if c not in cols]
            if missing:
                raise BadInputError(f"Manifest {p} needs the columns case,input; missing: {', '.join(missing)} "
                                    f"(columns found: {', '.join(cols) or 'none'}).")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError:
        raise _not_a_manifest(p, "it is not text, perhaps a scan") from None
    base = p.parent.resolve()
    cases, seen = [], set()
    for i, row in enumerate(rows, start=2):
        name = row.get("case", "")
        if not name:
            raise BadInputError(f"Manifest {p}, line {i}: empty case name.")
        if name in seen:
            raise BadInputError(f"Manifest {p}: case {name!r} appears twice.")
        seen.add(name)
        known = {"case", "input", "source", "series_uid", "group", segments_column}
        cases.append(Case(
            name=name, input=_resolve(base, row.get("input")) or "", source=row.get("source") or None,
            segments=_resolve(base, row.get(segments_column)), series_uid=row.get("series_uid") or None,
            group=row.get("group") or None, extra={k: v for k, v in row.items() if k not in known}))
    if not cases:
        raise BadInputError(f"Manifest {p} lists no cases.")
    return _assign_folders(cases)


def _is_volume_file(p: Path) -> bool:
    low = p.name.lower()
    return any(low.endswith(s) for s in VOLUME_SUFFIXES) and not MASK_NAME.search(p.name)


#: A batch case's output folder holds this file (see :mod:`.case`); its scans are outputs, not inputs.
CASE_RECORD = "record.json"


def find_inputs(folder, exclude=(), skip_case_outputs: bool = False) -> list:
    """Every CT under ``folder``: volume files (masks by name left out) and DICOM series.

    A folder holding several DICOM series gives one case per series. Case names are the
    paths relative to ``folder`` (with the series number appended where needed). Folders in
    ``exclude`` that lie inside ``folder`` (a batch's output folder) are not searched; with
    ``skip_case_outputs``, neither are batch case folders (they hold a ``record.json``) and
    what lies below them (a derived DICOM series), whose scans are normalized outputs, not
    inputs to normalize again.
    """
    from ..io.dicom import is_dicom_file, list_series

    root = Path(folder)
    if not root.is_dir():
        raise BadInputError(f"Input folder not found: {root}")
    top = root.resolve()
    excluded = {e for e in (Path(x).resolve() for x in exclude) if top in e.parents}  # -o above: nothing
    cases, outputs = [], 0
    for d in sorted([root, *(q for q in root.rglob("*") if q.is_dir())]):  # a folder before its subfolders
        r = d.resolve()
        if skip_case_outputs and (r / CASE_RECORD).is_file() and r != top:
            excluded.add(r)
            outputs += 1
        if r in excluded or any(p in excluded for p in r.parents):
            continue
        files = sorted(f for f in d.iterdir() if f.is_file())
        rel = d.relative_to(root).as_posix()
        for f in files:
            if _is_volume_file(f):
                name = f.relative_to(root).as_posix()
                cases.append(Case(name=name, input=str(f.resolve())))
        if any(is_dicom_file(f) for f in files):
            series = list_series(d)
            for k, s in enumerate(series, start=1):
                name = rel if rel != "." else root.name
                if len(series) > 1:
                    name = f"{name}#{k}"
                cases.append(Case(name=name, input=str(d.resolve()), series_uid=s.uid if len(series) > 1 else None))
    if not cases and outputs:
        raise BadInputError(f"Every CT under {root} is in an earlier batch's case folders ({outputs} of them, with a "
                            f"{CASE_RECORD}): those are normalized outputs. To normalize them again, list them in "
                            "a manifest CSV.")
    if not cases:
        raise BadInputError(f"No CT found under {root} (volume files {', '.join(VOLUME_SUFFIXES)} or DICOM series).")
    return _assign_folders(cases)


def load_cases(source, segments_column: str = "segments") -> list:
    """Cases from a manifest CSV file or, for a folder, from :func:`find_inputs` (without earlier batches'
    case folders: their scans are normalized outputs, not the cohort)."""
    p = Path(source)
    return find_inputs(p, skip_case_outputs=True) if p.is_dir() else read_manifest(p, segments_column)
