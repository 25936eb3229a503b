"""The lung mask the classical methods measure their statistics in.

By default the fast threshold mask (air inside the body), which is enough to pick the
voxels whose statistics the frequency-decomposition and histogram methods compare; with
``full`` the lung segmentation of :func:`CTNormalizeLib.imaging.lung_mask`.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from ..imaging import lung_mask as segment_lungs
from ..imaging import threshold_lung_mask


def lung_mask(hu: np.ndarray, spacing=(1.0, 1.0, 1.0), full: bool = False) -> np.ndarray:
    """Boolean lung mask.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : tuple of float
        ``(z, y, x)`` mm.
    full : bool
        True: the lung segmentation :func:`CTNormalizeLib.imaging.lung_mask` (airways
        removed, vessels filled; about 3x slower), falling back to the threshold mask when
        it finds no lungs. False: the threshold mask (air inside the body).
    """
    if not full:
        return threshold_lung_mask(hu)
    try:
        m = segment_lungs(hu, spacing).lungs
    except BadInputError:  # no body / no air inside it: the threshold mask says what there is
        return threshold_lung_mask(hu)
    return m if m.any() else threshold_lung_mask(hu)
