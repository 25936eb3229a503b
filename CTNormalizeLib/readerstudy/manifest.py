"""The CSV manifest a reader study is created from.

Manifest (CSV with a header row)::

    case,original,normalized,source,source_protocol
    LUNG1-001,/data/orig/1.nrrd,/data/norm/1.nrrd,/data/src/1.nrrd,"kernel=sharp,dose=0.25,thickness=2"

The first column is the case id; every other column is an image variant (a file or a DICOM
series folder; relative paths are relative to the manifest), except columns named
``<variant>_protocol``, which give that variant's protocol spec (needed by the ``protocol``
design). Empty rows and rows whose case id starts with ``#`` are skipped.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import BadInputError

PROTOCOL_SUFFIX = "_protocol"


def read_manifest(path) -> tuple[list[dict], list[str]]:
    """Read a manifest.

    Returns
    -------
    cases : list of dict
        ``{"case": id, "images": {variant: Path}, "protocols": {variant: spec}}`` in file order.
    variants : list of str
        Variant names in column order.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"Manifest {path} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise BadInputError(f"Manifest {path} needs a header row and at least one case row.")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2 or not all(header):
        raise BadInputError(f"Manifest {path}: the header must name the case column and each variant column.")
    if len(set(header)) != len(header):
        raise BadInputError(f"Manifest {path}: duplicate column names in the header {header}.")
    variants = [h for h in header[1:] if not h.endswith(PROTOCOL_SUFFIX)]
    for h in header[1:]:
        if h.endswith(PROTOCOL_SUFFIX) and h[: -len(PROTOCOL_SUFFIX)] not in variants:
            raise BadInputError(f"Manifest {path}: column {h!r} names no variant column.")
    cases, seen = [], set()
    for lineno, row in enumerate(rows[1:], start=2):
        row = [c.strip() for c in row] + [""] * (len(header) - len(row))
        cid = row[0]
        if cid.startswith("#"):
            continue
        if not cid:
            raise BadInputError(f"Manifest {path}, line {lineno}: the case id is empty.")
        if cid in seen:
            raise BadInputError(f"Manifest {path}, line {lineno}: case {cid!r} appears twice.")
        seen.add(cid)
        images, protocols = {}, {}
        for h, val in zip(header[1:], row[1:]):
            if not val:
                continue
            if h.endswith(PROTOCOL_SUFFIX):
                protocols[h[: -len(PROTOCOL_SUFFIX)]] = val
            else:
                p = Path(val)
                images[h] = p if p.is_absolute() else (path.parent / p)
        cases.append({"case": cid, "images": images, "protocols": protocols, "line": lineno})
    if not cases:
        raise BadInputError(f"Manifest {path} has no case rows.")
    return cases, variants
