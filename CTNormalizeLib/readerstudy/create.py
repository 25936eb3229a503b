"""Create a blinded reader study from a CSV manifest.

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
import datetime as _dt
import os
import uuid
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import BadInputError
from . import design as D
from . import storage as S

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


def _default_variants(design: str, variants: list[str], reference: str) -> list[str]:
    if design in ("single", "pair"):
        others = [v for v in variants if v != reference and v != "source"]
        if reference in variants and others:
            return [reference, others[0]] if design == "pair" or len(others) == 1 else [reference] + others
    return list(variants)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _geo_text(variant: str, geo: dict) -> str:
    return f"{variant}: {geo['size']} @ {geo['spacing']}"


def _protocol_truth(spec: str, where: str) -> dict:
    from ..protocols import parse_spec

    p = parse_spec(spec)
    if p.kernel is None or p.dose is None or p.thickness is None:
        raise BadInputError(f"{where}: protocol {spec!r} must give kernel, dose and thickness.")
    return {"kernel": p.kernel, "dose": float(p.dose), "thickness": float(p.thickness)}


def create_study(manifest, out_dir, design: str, seed: int, per_reader: bool = False,
                 readers: Optional[Sequence[str]] = None, variants: Optional[Sequence[str]] = None,
                 reference: str = "original", key_path=None, title: str = "",
                 crop: bool = True, progress=None) -> dict:
    """Create a blinded study folder.

    Parameters
    ----------
    manifest : path
        CSV manifest (see module docstring).
    out_dir : path
        New study folder; must not exist or be empty. Written in a staging folder and
        renamed into place, so a failed run leaves nothing behind.
    design : {"single", "pair", "protocol"}
    seed : int
        Random seed; the same manifest, options and seed give the same study.
    per_reader : bool
        Draw assignments and order per reader (``readers`` required) instead of once.
    readers : sequence of str, optional
        Reader names for per-reader studies.
    variants : sequence of str, optional
        Variants to show. Default: single = the reference and every other variant except
        ``source``; pair = the reference and the first other variant; protocol = all.
    reference : str
        Name of the original (ground-truth acquisition) variant. Default ``original``.
    key_path : path, optional
        Where to write the key; default ``<out_dir>/key.json``. Keep it away from readers.
    title : str
        Free text shown to readers; it must not reveal the truth.
    crop : bool
        Crop the variants of a case to their common extent when they share a voxel grid
        but differ in size (e.g. one slice more), so the slice count reveals nothing.
    progress : callable(stage, fraction), optional

    Returns
    -------
    dict
        Summary: ``{"study_dir", "key", "design", "n_cases", "n_items", "n_images", "warnings"}``.
    """
    D.check_design(design)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BadInputError(f"{out_dir} exists and is not an empty folder; choose a new study folder.")
    readers = [r.strip() for r in (readers or []) if r.strip()]
    if per_reader and not readers:
        raise BadInputError("A study randomized per reader needs the reader names (--readers NAME,NAME).")
    if len(set(readers)) != len(readers):
        raise BadInputError(f"Reader names repeat: {readers}.")
    cases, all_variants = read_manifest(manifest)
    chosen = list(variants) if variants else _default_variants(design, all_variants, reference)
    unknown = [v for v in chosen if v not in all_variants]
    if unknown:
        raise BadInputError(f"Variant(s) {', '.join(unknown)} are not manifest columns ({', '.join(all_variants)}).")
    if len(set(chosen)) != len(chosen):
        raise BadInputError(f"Variants repeat: {chosen}.")
    if design in ("single", "pair") and reference not in chosen:
        raise BadInputError(
            f"The {design} design needs the reference variant {reference!r} among the variants {chosen} "
            f"(set it with --reference).")
    if design == "pair" and len(chosen) != 2:
        raise BadInputError(f"The pair design shows exactly two variants, got {chosen}.")
    if len(chosen) < (1 if design == "protocol" else 2):
        raise BadInputError(f"The {design} design needs more variants than {chosen}.")
    for c in cases:
        missing = [v for v in chosen if v not in c["images"]]
        if missing:
            raise BadInputError(f"Manifest line {c['line']}: case {c['case']!r} has no image for {', '.join(missing)}.")
        if design == "protocol":
            for v in chosen:
                if v not in c["protocols"]:
                    raise BadInputError(
                        f"Manifest line {c['line']}: the protocol design needs a {v}{PROTOCOL_SUFFIX} column value "
                        f"for case {c['case']!r}.")
    for c in cases:
        for v in chosen:
            if not Path(c["images"][v]).exists():
                raise BadInputError(f"Manifest line {c['line']}: {v} image {c['images'][v]} does not exist.")

    rng = np.random.default_rng(D.reader_seed(seed, None))
    width = max(3, len(str(len(cases))))
    order = rng.permutation(len(cases))
    blinded = []  # (blinded case id, manifest case, {variant: image id})
    letters = [chr(ord("A") + i) for i in range(len(chosen))]
    for num, idx in enumerate(order, start=1):
        c = cases[int(idx)]
        cid = f"{num:0{width}d}"
        perm = rng.permutation(len(chosen))
        blinded.append((cid, c, {chosen[int(j)]: f"{cid}_{letters[k]}" for k, j in enumerate(perm)}))
    blinded.sort(key=lambda t: t[0])
    draw_cases = [(cid, imgs) for cid, _, imgs in blinded]

    if per_reader:
        drawn = {r: D.draw_items(design, draw_cases, chosen,
                                 np.random.default_rng(D.reader_seed(seed, r)), reference) for r in readers}
        used = {img for items in drawn.values() for it in items for img in it["views"].values()}
    else:
        items = D.draw_items(design, draw_cases, chosen, rng, reference)
        used = {img for it in items for img in it["views"].values()}

    image_truth, warnings = {}, []
    for cid, c, imgs in blinded:
        for v, img in imgs.items():
            if img in used:
                t = {"case": c["case"], "blinded_case": cid, "variant": v, "source": str(c["images"][v])}
                if design == "protocol":
                    t["protocol"] = _protocol_truth(c["protocols"][v], f"Manifest line {c['line']}")
                image_truth[img] = t

    protocol_options = None
    if design == "protocol":
        from ..protocols import KERNEL_CLASSES

        protocol_options = {
            "kernel": list(KERNEL_CLASSES),
            "dose": sorted({t["protocol"]["dose"] for t in image_truth.values()}, reverse=True),
            "thickness": sorted({t["protocol"]["thickness"] for t in image_truth.values()}),
        }

    def item_truth(it):
        ts = {side: image_truth[img] for side, img in it["views"].items()}
        if design == "pair":
            return {"case": ts["A"]["case"], "A": ts["A"]["variant"], "B": ts["B"]["variant"]}
        out = {"case": ts["A"]["case"], "variant": ts["A"]["variant"]}
        if design == "protocol":
            out["protocol"] = ts["A"]["protocol"]
        return out

    study_id = str(uuid.uuid4())
    study = {
        "format": S.FORMAT, "version": S.VERSION, "study_id": study_id, "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # No seed here: with the seed, the case count and this (public) code, anyone could
        # replay the draw and unblind the study. The seed is kept in the key.
        "design": design,
        "randomization": "per-reader" if per_reader else "per-study",
        "n_cases": len(blinded),
        "questions": D.questions(design, protocol_options),
        "window": {"width": 1500, "level": -600},
    }
    key = {
        "format": S.FORMAT + "-key", "version": S.VERSION, "study_id": study_id, "design": design,
        "seed": int(seed), "reference": reference, "variants": chosen,
        "cases": {cid: c["case"] for cid, c, _ in blinded},
        "images": image_truth,
    }
    if per_reader:
        study["readers"] = drawn
        key["readers"] = {r: {it["id"]: item_truth(it) for it in its} for r, its in drawn.items()}
    else:
        study["items"] = items
        key["items"] = {it["id"]: item_truth(it) for it in items}

    from ..io.atomic import atomic_output_dir

    with atomic_output_dir(out_dir) as stage:
        (stage / S.ITEMS_DIR).mkdir()
        (stage / S.ANSWERS_DIR).mkdir()
        os.chmod(stage / S.ANSWERS_DIR, 0o777 & ~_umask())  # readers on a shared drive append here
        n_cropped = 0
        for k, (cid, c, imgs) in enumerate(blinded):
            if not any(img in image_truth for img in imgs.values()):
                continue
            # Crop over every variant of the case, shown or not, so that all its images that
            # any reader sees share one extent.
            todo = sorted((img, v) for v, img in imgs.items())
            vols = [S.read_for_blinding(c["images"][v]) for _, v in todo]
            if crop and (len({v.hu.shape for v in vols}) > 1 or len({v.origin for v in vols}) > 1):
                cropped = S.crop_to_common_extent(vols)
                if cropped is not None:
                    n_cropped += any(a.hu.shape != b.hu.shape for a, b in zip(vols, cropped))
                    vols = cropped
            for (img, _), vol in zip(todo, vols):
                if img in image_truth:
                    S.write_blinded_volume(vol, S.image_path(stage, img))
            geos = {v: S.geometry_of(vol) for (_, v), vol in zip(todo, vols)}
            del vols
            if progress:
                progress("write", (k + 1) / len(blinded))
            if len({(tuple(g["size"]), tuple(g["spacing"]), tuple(g["origin"])) for g in geos.values()}) > 1:
                warnings.append({"code": "GEOMETRY_DIFFERS", "message": (
                    f"Case {c['case']}: the variants differ in size, spacing or position "
                    f"({'; '.join(_geo_text(v, g) for v, g in geos.items())}); "
                    f"a reader who inspects the geometry could tell them apart.")})
        S.write_json(stage / S.STUDY_FILE, study)
        if key_path is None:
            S.write_json(stage / S.KEY_FILE, key)
    if key_path is not None:
        Path(key_path).parent.mkdir(parents=True, exist_ok=True)
        S.write_json(key_path, key)
    n_items = sum(len(v) for v in drawn.values()) if per_reader else len(items)
    return {"study_dir": str(out_dir), "key": str(key_path or out_dir / S.KEY_FILE), "design": design,
            "randomization": study["randomization"], "n_cases": len(blinded), "n_items": n_items,
            "n_images": len(image_truth), "n_cases_cropped": n_cropped, "variants": chosen,
            "warnings": warnings}
