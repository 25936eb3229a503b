"""Small IO bridge for the quantify package.

Uses :func:`CTNormalizeLib.io.read_volume` / ``write_volume`` when that module provides
them, and falls back to SimpleITK otherwise, so quantify works while io evolves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..volume import Volume


def read_volume(path) -> Volume:
    """Read a CT volume (any SimpleITK format or what ``CTNormalizeLib.io`` reads)."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"Input file not found: {path}")
    try:
        from ..io import read_volume as _io_read  # type: ignore[attr-defined]
    except ImportError:
        _io_read = None
    if _io_read is not None:
        return _io_read(path)
    return volume_from_image(read_image(path), meta={"source_path": str(path)})


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


def volume_from_image(image, meta=None) -> Volume:
    """A :class:`Volume` from a 3D SimpleITK image (HU as float32)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise BadInputError("Expected a 3D scalar volume.")
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    return Volume(hu=arr, spacing=tuple(reversed(image.GetSpacing())), origin=image.GetOrigin(),
                  direction=image.GetDirection(), meta=dict(meta or {}))


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

    from ..io.atomic import atomic_output

    img = image_from_array(np.asarray(mask, dtype=np.uint8), reference)
    with atomic_output(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)
    return Path(path)
