"""Files for the quantify package: CT volumes in, label images (masks, segments) in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..io import read_volume as _read_volume
from ..volume import Volume


def read_volume(path, allow_missing_slices: bool = False) -> Volume:
    """Read a CT volume with :func:`CTNormalizeLib.io.read_volume` (a missing file is a BadInputError)."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"Input file not found: {path}")
    return _read_volume(path, allow_missing_slices=allow_missing_slices)


def read_image(path):
    """Read any image with SimpleITK (see :func:`CTNormalizeLib.io.read.read_image`)."""
    from ..io.read import read_image as _read_image

    return _read_image(path)


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
    from ..io.write import write_image

    img = image_from_array(np.asarray(mask, dtype=np.uint8), reference)
    return write_image(img, path, compress=True)
