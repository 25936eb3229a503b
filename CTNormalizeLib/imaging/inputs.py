"""Accept a :class:`~CTNormalizeLib.volume.Volume` or a bare array with its spacing."""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from ..volume import Volume


def unpack_volume(hu, spacing, direction, what: str):
    """``(array, spacing, direction)`` from a :class:`Volume` or an array with its spacing.

    Raises :class:`BadInputError` naming ``what`` when the array is not 3D or has no spacing.
    """
    if isinstance(hu, Volume):
        spacing = hu.spacing if spacing is None else spacing
        direction = hu.direction if direction is None else direction
        hu = hu.hu
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise BadInputError(f"{what} needs a 3D [z,y,x] volume, got shape {hu.shape}.")
    if spacing is None:
        raise BadInputError(f"{what} needs the voxel spacing (z, y, x) in mm.")
    return hu, spacing, direction
