"""Files for the quantify package: CT volumes in, label images (masks, segments) in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..io import atomic_output
from ..io import read_volume as _read_volume
from ..volume import Volume


def read_volume(path) -> Volume:
    """Read a CT volume with :func:`CTNormalizeLib.io.read_volume` (a missing file is a BadInputError)."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"Input file not found: {path}")
    return _read_volume(path)


def read_image(path):
    """Read any image with SimpleITK; a missing or unreadable file is a BadInputError."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"Input file not found: {path}")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise BadInputError(f"Cannot read {path}: {str(exc).strip().splitlines()[-1]}") from exc


def image_from_array(arr: np.ndarray, reference: Volume):
    """A SimpleITK image of ``arr`` ([z,y,x]) on the geometry of ``reference``."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(reversed(reference.spacing)))
    img.SetOrigin(reference.origin)
    img.SetDirection(reference.direction)
    return img


def write_mask(path, mask: np.ndarray, reference: Volume):
    """Write a uint8 label array on the reference geometry, atomically (NRRD/NIfTI by suffix)."""
    import SimpleITK as sitk

    img = image_from_array(np.asarray(mask, dtype=np.uint8), reference)
    with atomic_output(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)
    return Path(path)
