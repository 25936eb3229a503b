"""Create a blinded reader study from a CSV manifest (see :mod:`.manifest`).

The steps: check the request and the manifest, blind the cases (new case ids, shuffled
image letters), draw the items per study or per reader (:func:`.design.draw_items`),
record the truth of every image shown in the key, and write the study folder in a
staging folder that is renamed into place.
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import BadInputError
from ..io.atomic import atomic_output_dir
from . import design as D
from . import storage as S
from .manifest import PROTOCOL_SUFFIX, read_manifest


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
    truth = {"kernel": p.kernel, "dose": float(p.dose), "thickness": float(p.thickness)}
    if p.profile not in (None, "gaussian"):
        truth["profile"] = p.profile  # recorded with the truth; readers are not asked for it
    return truth


def _check_request(design: str, out_dir: Path, readers, per_reader: bool) -> list[str]:
    """The cleaned reader names, after checking the design, the output folder and the readers."""
    D.check_design(design)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BadInputError(f"{out_dir} exists and is not an empty folder; choose a new study folder.")
    readers = [r.strip() for r in (readers or []) if r.strip()]
    if per_reader and not readers:
        raise BadInputError("A study randomized per reader needs the reader names (--readers NAME,NAME).")
    if readers and not per_reader:
        raise BadInputError("Reader names are used only by a study randomized per reader: add --per-reader, or leave "
                            "--readers out (every reader of a shared order reads under any name).")
    if len(set(readers)) != len(readers):
        raise BadInputError(f"Reader names repeat: {readers}.")
    return readers


def _choose_variants(design: str, all_variants: list[str], variants, reference: str) -> list[str]:
    """The variants to show: the requested ones or the design's default, checked against the design."""
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
    return chosen


def _check_cases(cases: list[dict], chosen: list[str], design: str) -> None:
    """Every case has an existing image (and, for the protocol design, a protocol) per chosen variant."""
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


def _blind(cases: list[dict], chosen: list[str], rng) -> list[tuple]:
    """``(blinded case id, manifest case, {variant: blinded image id})`` in blinded-id order.

    Cases get numbers in a random order; within a case the variants get the letters A, B, ...
    in a random order.
    """
    width = max(3, len(str(len(cases))))
    order = rng.permutation(len(cases))
    blinded = []
    letters = [chr(ord("A") + i) for i in range(len(chosen))]
    for num, idx in enumerate(order, start=1):
        c = cases[int(idx)]
        cid = f"{num:0{width}d}"
        perm = rng.permutation(len(chosen))
        blinded.append((cid, c, {chosen[int(j)]: f"{cid}_{letters[k]}" for k, j in enumerate(perm)}))
    blinded.sort(key=lambda t: t[0])
    return blinded


def _image_truth(blinded, used: set, design: str) -> dict:
    """Blinded image id -> its truth (case, variant, source file; protocol for that design), for shown images."""
    truth = {}
    for cid, c, imgs in blinded:
        for v, img in imgs.items():
            if img in used:
                t = {"case": c["case"], "blinded_case": cid, "variant": v, "source": str(Path(c["images"][v]).resolve())}
                if design == "protocol":
                    t["protocol"] = _protocol_truth(c["protocols"][v], f"Manifest line {c['line']}")
                truth[img] = t
    return truth


def _protocol_options(image_truth: dict) -> dict:
    """The answer options of the protocol design: every kernel class, and the doses and thicknesses shown."""
    from ..protocols import KERNEL_CLASSES

    return {
        "kernel": list(KERNEL_CLASSES),
        "dose": sorted({t["protocol"]["dose"] for t in image_truth.values()}, reverse=True),
        "thickness": sorted({t["protocol"]["thickness"] for t in image_truth.values()}),
    }


def _item_truth(it: dict, image_truth: dict, design: str) -> dict:
    ts = {side: image_truth[img] for side, img in it["views"].items()}
    if design == "pair":
        return {"case": ts["A"]["case"], "A": ts["A"]["variant"], "B": ts["B"]["variant"]}
    out = {"case": ts["A"]["case"], "variant": ts["A"]["variant"]}
    if design == "protocol":
        out["protocol"] = ts["A"]["protocol"]
    return out


def _write_images(stage: Path, blinded, image_truth: dict, crop: bool, progress) -> tuple[int, list]:
    """Write the shown images of every case; returns ``(cases cropped, geometry warnings)``."""
    n_cropped, warnings = 0, []
    clean: dict = {}  # variant -> cases whose shown image has the clean texture (CTNormalize's header says so)
    for k, (cid, c, imgs) in enumerate(blinded):
        if not any(img in image_truth for img in imgs.values()):
            continue
        # Crop over every variant of the case, shown or not, so that all its images that
        # any reader sees share one extent.
        todo = sorted((img, v) for v, img in imgs.items())
        vols = [S.read_for_blinding(c["images"][v]) for _, v in todo]
        for (img, v), vol in zip(todo, vols):
            if img in image_truth and str(vol.meta.get("ctnormalize_texture", "")).strip() == "clean":
                clean.setdefault(v, []).append(c["case"])
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
    for v, cases in sorted(clean.items()):
        warnings.append({"code": "CLEAN_TEXTURE_VARIANT", "message": (
            f"Variant {v!r} has the clean texture in {len(cases)} case(s) ({', '.join(cases[:5])}"
            f"{', ...' if len(cases) > 5 else ''}): its noise was removed, which readers recognise at a glance. "
            "For a reader study make it with `ctnormalize normalize ... --texture target` (docs/readerstudy.md).")})
    return n_cropped, warnings


def create_study(manifest, out_dir, design: str, seed: int, per_reader: bool = False,
                 readers: Optional[Sequence[str]] = None, variants: Optional[Sequence[str]] = None,
                 reference: str = "original", key_path=None, title: str = "",
                 crop: bool = True, progress=None) -> dict:
    """Create a blinded study folder.

    Parameters
    ----------
    manifest : path
        CSV manifest (see :mod:`.manifest`).
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
    out_dir = Path(out_dir)
    readers = _check_request(design, out_dir, readers, per_reader)
    cases, all_variants = read_manifest(manifest)
    chosen = _choose_variants(design, all_variants, variants, reference)
    _check_cases(cases, chosen, design)

    rng = np.random.default_rng(D.reader_seed(seed, None))
    blinded = _blind(cases, chosen, rng)
    draw_cases = [(cid, imgs) for cid, _, imgs in blinded]
    if per_reader:
        drawn = {r: D.draw_items(design, draw_cases, chosen,
                                 np.random.default_rng(D.reader_seed(seed, r)), reference) for r in readers}
        all_items = [it for items in drawn.values() for it in items]
    else:
        items = D.draw_items(design, draw_cases, chosen, rng, reference)
        all_items = items
    image_truth = _image_truth(blinded, {img for it in all_items for img in it["views"].values()}, design)

    study_id = str(uuid.uuid4())
    study = {
        "format": S.FORMAT, "version": S.VERSION, "study_id": study_id, "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # No seed here: with the seed, the case count and this (public) code, anyone could
        # replay the draw and unblind the study. The seed is kept in the key.
        "design": design,
        "randomization": "per-reader" if per_reader else "per-study",
        "n_cases": len(blinded),
        "questions": D.questions(design, _protocol_options(image_truth) if design == "protocol" else None),
        "window": {"width": 1500, "level": -600},
    }
    key = {
        "format": S.FORMAT + "-key", "version": S.VERSION, "study_id": study_id, "design": design,
        "seed": int(seed), "reference": reference, "variants": chosen,
        "manifest": str(Path(manifest).resolve()),  # analyze never writes over it
        "cases": {cid: c["case"] for cid, c, _ in blinded},
        "images": image_truth,
    }
    if per_reader:
        study["readers"] = drawn
        key["readers"] = {r: {it["id"]: _item_truth(it, image_truth, design) for it in its} for r, its in drawn.items()}
    else:
        study["items"] = items
        key["items"] = {it["id"]: _item_truth(it, image_truth, design) for it in items}

    with atomic_output_dir(out_dir) as stage:
        (stage / S.ITEMS_DIR).mkdir()
        (stage / S.ANSWERS_DIR).mkdir()
        os.chmod(stage / S.ANSWERS_DIR, 0o777 & ~_umask())  # readers on a shared drive append here
        n_cropped, warnings = _write_images(stage, blinded, image_truth, crop, progress)
        S.write_json(stage / S.STUDY_FILE, study)
        if key_path is None:
            S.write_json(stage / S.KEY_FILE, key)
    if key_path is not None:
        Path(key_path).parent.mkdir(parents=True, exist_ok=True)
        S.write_json(key_path, key)
    return {"study_dir": str(out_dir), "key": str(key_path or out_dir / S.KEY_FILE), "design": design,
            "randomization": study["randomization"], "n_cases": len(blinded), "n_items": len(all_items),
            "n_images": len(image_truth), "n_cases_cropped": n_cropped, "variants": chosen,
            "warnings": warnings}
