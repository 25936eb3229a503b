"""SimpleITK image -> :class:`~CTNormalizeLib.volume.Volume` (shared by the file and DICOM readers)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from ._sitk import sitk

from ..errors import BadInputError
from ..volume import Volume


def image_to_volume(image: sitk.Image, meta: Optional[dict] = None) -> Volume:
    """A SimpleITK image as a :class:`Volume` (float32 ``[z,y,x]``, spacing in array order).

    A 2D image becomes a volume with one slice (z spacing 1 mm), which
    :func:`~CTNormalizeLib.io.validate.validate_ct` refuses as 2D.

    Raises
    ------
    BadInputError
        For multi-component (e.g. RGB) pixels or more than 3 dimensions.
    """
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise BadInputError(
            f"The image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            f"({image.GetPixelIDTypeAsString()}); a CT is one HU value per voxel."
        )
    if dim > 3:
        size = image.GetSize()
        if all(s == 1 for s in size[3:]):
            image = image[(slice(None),) * 3 + (0,) * (dim - 3)]
            dim = 3
        else:
            raise BadInputError(f"The image has {dim} dimensions (size {size}); a 3D volume is needed.")
    arr = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if dim == 2:
        sx, sy = image.GetSpacing()
        ox, oy = image.GetOrigin()
        d = image.GetDirection()
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
        return Volume(arr[None], (1.0, sy, sx), (ox, oy, 0.0), direction, dict(meta or {}))
    spacing = tuple(reversed(image.GetSpacing()))
    return Volume(arr, spacing, image.GetOrigin(), image.GetDirection(), dict(meta or {}))
