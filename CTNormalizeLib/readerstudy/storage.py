"""Files of a reader study: ``study.json``, ``key.json``, blinded ``items/*.nrrd``.

Layout of a study directory::

    study.json          design, questions, items (per study) or readers' items (per reader),
                        seed, version; no truth
    key.json            blinded image id -> {"case": manifest case id, "variant": ...}, and
                        item-level truth; may be written elsewhere (``key_path``) so readers
                        cannot open it
    items/007_A.nrrd    blinded images: voxels (int16 HU) and geometry only
    answers/<reader>.jsonl  one line per answer (see :mod:`.answers`)

The reading side (:func:`load_study`, :mod:`.answers`, the Slicer Logic) never opens the key.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import BadInputError

FORMAT = "ctnormalize-readerstudy"
VERSION = 1
STUDY_FILE = "study.json"
KEY_FILE = "key.json"
ITEMS_DIR = "items"
ANSWERS_DIR = "answers"

PathLike = Union[str, os.PathLike]


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and ``os.replace``.

    Own helper until ``CTNormalizeLib.io.atomic`` lands; the temp file is removed on any error.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def read_image(path: PathLike):
    """Read a CT image file or DICOM series folder into a SimpleITK image (HU).

    The small seam where ``CTNormalizeLib.io.read_volume`` replaces SimpleITK once it lands.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"Image {path} does not exist.")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise BadInputError(f"{path} is a folder without a DICOM series.")
            if len(series) > 1:
                raise BadInputError(f"{path} holds {len(series)} DICOM series; give one series per folder.")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise BadInputError(f"Cannot read image {path}: {str(exc).strip().splitlines()[-1]}") from None


def write_blinded_image(src: PathLike, dst: PathLike) -> dict:
    """Write ``src`` to ``dst`` (NRRD) with voxels and geometry only.

    Every image is rebuilt from its voxel array, so no metadata (file name, series
    description, DICOM tags, NRRD keys) is carried over, and stored as int16 rounded HU so
    that the voxel type does not tell an original (integer) from a normalized (float) scan.

    Returns
    -------
    dict
        ``{"size", "spacing"}`` of the written image, for geometry checks.
    """
    import SimpleITK as sitk

    img = read_image(src)
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInputError(f"{src} is not a 3D scalar image.")
    arr = sitk.GetArrayFromImage(img).astype(np.float64)
    arr = np.clip(np.rint(arr), -32768, 32767).astype(np.int16)
    out = sitk.GetImageFromArray(arr)
    out.SetSpacing(img.GetSpacing())
    out.SetOrigin(img.GetOrigin())
    out.SetDirection(img.GetDirection())
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=".tmp", suffix=".nrrd", dir=dst.parent)
    os.close(fd)
    try:
        sitk.WriteImage(out, tmp, useCompression=True)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"size": list(out.GetSize()), "spacing": [round(s, 4) for s in out.GetSpacing()]}


def nrrd_header(path: PathLike) -> str:
    """The text header of a NRRD file (up to the blank line), for blinding checks."""
    with open(path, "rb") as f:
        data = f.read(65536)
    end = data.find(b"\n\n")
    return data[: end if end >= 0 else len(data)].decode("latin-1")
