"""Files of a reader study: ``study.json``, ``key.json``, blinded ``items/*.nrrd``.

Layout of a study directory::

    study.json          design, questions, items (per study) or readers' items (per reader),
                        version; no truth, and no seed (it would let anyone replay the draw)
    key.json            blinded image id -> {"case": manifest case id, "variant": ...},
                        item-level truth and the seed; may be written elsewhere (``key_path``) so readers
                        cannot open it
    items/007_A.nrrd    blinded images: voxels (int16 HU) and geometry only
    answers/<reader>.jsonl  one line per answer (see :mod:`.answers`)

The reading side (:func:`load_study`, :mod:`.answers`, the Slicer Logic) never opens the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import BadInputError
from ..io.atomic import atomic_write_text

FORMAT = "ctnormalize-readerstudy"
VERSION = 1
STUDY_FILE = "study.json"
KEY_FILE = "key.json"
ITEMS_DIR = "items"
ANSWERS_DIR = "answers"

PathLike = Union[str, os.PathLike]


def write_json(path: PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_study(study_dir: PathLike) -> dict:
    """Read ``study.json`` of ``study_dir`` (and nothing else).

    Raises
    ------
    BadInputError
        When the folder is not a reader study or was written by a newer version.
    """
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise BadInputError(f"{study_dir} is not a reader study: it has no {STUDY_FILE}.")
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"Cannot read {path}: {exc}.") from None
    if study.get("format") != FORMAT:
        raise BadInputError(f"{path} is not a CTNormalize reader study (format {study.get('format')!r}).")
    if int(study.get("version", 0)) > VERSION:
        raise BadInputError(
            f"{path} was written by a newer CTNormalize (study version {study.get('version')}); update CTNormalize.")
    return study


def load_key(study_dir: PathLike, key_path: PathLike = None) -> dict:
    """Read the key (analysis only). ``key_path`` defaults to ``<study_dir>/key.json``."""
    path = Path(key_path) if key_path else Path(study_dir) / KEY_FILE
    if not path.is_file():
        raise BadInputError(f"The study key {path} does not exist; pass the key file with --key.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"Cannot read the study key {path}: {exc}.") from None


def image_path(study_dir: PathLike, image_id: str) -> Path:
    """Path of a blinded image."""
    return Path(study_dir) / ITEMS_DIR / f"{image_id}.nrrd"


def read_for_blinding(src: PathLike):
    """Read a CT file or DICOM series folder as a :class:`~CTNormalizeLib.volume.Volume` (HU)."""
    from ..io import read_volume

    vol = read_volume(src, validate=False)
    if vol.hu.ndim != 3:
        raise BadInputError(f"{src} is not a 3D scalar image.")
    return vol


def crop_to_common_extent(volumes: list, tol: float = 0.01):
    """Crop volumes on one grid to the physical extent they all cover.

    Variants of a case often differ by a slice or two (e.g. a normalized scan on the
    target z grid is one slice shorter than the original), which a reader would see as a
    different slice count. When every volume has the same spacing and direction and their
    voxel grids are aligned (origins an integer number of voxels apart), each is cropped
    to the common box, so all end up with the same size and origin.

    Returns
    -------
    list of Volume or None
        The cropped volumes, or None when the grids differ (different spacing, direction or
        misaligned origins), in which case nothing can be cropped.
    """
    first = volumes[0]
    sp = np.asarray(first.spacing, float)  # z, y, x
    dirs = np.asarray(first.direction, float).reshape(3, 3)
    offsets = []
    for v in volumes:
        if not np.allclose(v.spacing, first.spacing, rtol=1e-4, atol=1e-5) or \
                not np.allclose(v.direction, first.direction, atol=1e-5):
            return None
        # Origin of v in index units of the first volume, array order (z, y, x).
        off_xyz = dirs.T @ (np.asarray(v.origin) - np.asarray(first.origin)) / sp[::-1]
        off = off_xyz[::-1]
        if np.any(np.abs(off - np.round(off)) > tol):
            return None
        offsets.append(np.round(off).astype(int))
    lo = np.max(offsets, axis=0)
    hi = np.min([o + np.asarray(v.hu.shape) for o, v in zip(offsets, volumes)], axis=0)
    if np.any(hi <= lo):
        return None
    out = []
    for o, v in zip(offsets, volumes):
        a, b = lo - o, hi - o
        hu = v.hu[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
        origin = np.asarray(v.origin) + dirs @ (a[::-1] * sp[::-1])
        out.append(v.with_array(hu, origin=tuple(origin)))
    return out


#: The HU range every blinded image is stored in: the 12-bit range scanners store. An original's air
#: sits on its floor (-1024) while a normalized scan's noise reaches below it, so without a common range
#: the lowest value in Slicer's window/level or histogram told the original apart.
BLIND_RANGE_HU = (-1024, 3071)


def write_blinded_volume(vol, dst: PathLike) -> dict:
    """Write ``vol`` to ``dst`` (NRRD) with voxels and geometry only.

    The image is rebuilt as a new :class:`~CTNormalizeLib.volume.Volume` with empty ``meta``,
    so no file name, series description, DICOM tag or header key is carried over. Voxels are
    stored as int16 rounded HU, clipped to :data:`BLIND_RANGE_HU`, so that neither the voxel
    type (integer or float) nor the value range tells an original from a normalized scan.

    Returns
    -------
    dict
        ``{"size", "spacing"}`` (ITK order) of the written image, for geometry checks.
    """
    from ..io import write_volume
    from ..volume import Volume

    hu = np.clip(np.rint(vol.hu), *BLIND_RANGE_HU)
    blind = Volume(hu, spacing=vol.spacing, origin=vol.origin, direction=vol.direction, meta={})
    write_volume(blind, dst, dtype="int16", compress=True, write_tags=False)
    return geometry_of(vol)


def geometry_of(vol) -> dict:
    """``{"size", "spacing", "origin"}`` in ITK order, rounded for comparisons."""
    return {"size": list(vol.hu.shape[::-1]), "spacing": [round(s, 4) for s in vol.spacing[::-1]],
            "origin": [round(o, 3) for o in vol.origin]}


def nrrd_header(path: PathLike) -> str:
    """The text header of a NRRD file (up to the blank line), for blinding checks."""
    with open(path, "rb") as f:
        data = f.read(65536)
    end = data.find(b"\n\n")
    return data[: end if end >= 0 else len(data)].decode("latin-1")
