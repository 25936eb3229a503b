"""Lung masks for quantification: the engine's segmentation or a user-provided mask file.

The segmentation itself is :func:`CTNormalizeLib.imaging.lung_mask` (shared with the
classical methods and the evaluation); this module reads a user's mask onto a CT's grid
(:func:`load_lung_mask`) and splits it into left and right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..errors import BadInputError
from ..imaging.lung_split import side_of, split_left_right
from ..imaging.lungs import LungMask, lung_mask  # noqa: F401  (quantify's lung API)
from ..imaging.orientation import left_is_larger_x
from ..volume import Volume, grid_differences


def load_lung_mask(path, reference_volume: Volume) -> LungMask:
    """Read a user-provided lung mask on the grid of ``reference_volume``.

    Any nonzero voxel is lung. With two or more label values, each label goes to the
    left or right lung by the side of its centroid (so 1/2 masks and lobe masks both
    work whatever their numbering); with one label the engine's left/right split is used.

    Raises
    ------
    BadInputError
        Missing/unreadable file, not 3D, empty mask, or geometry different from the CT.
    """
    import SimpleITK as sitk

    from ._io import read_image

    path = Path(path)
    img = read_image(path)
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInputError(f"Lung mask {path} must be a 3D scalar label image.")
    problems = grid_differences(img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection(),
                                reference_volume)
    if problems:
        raise BadInputError(f"Lung mask {path} does not match the CT's geometry: " + "; ".join(problems)
                            + ". Resample the mask onto the CT grid first.")
    arr = sitk.GetArrayFromImage(img)
    lungs = arr != 0
    if not lungs.any():
        raise BadInputError(f"Lung mask {path} is empty (no nonzero voxel).")
    direction = reference_volume.direction
    values = np.unique(arr[lungs])
    warnings: list = []
    if values.size >= 2:
        midline = float(np.nonzero(lungs)[2].mean())
        left = np.zeros_like(lungs)
        right = np.zeros_like(lungs)
        coms = ndi.center_of_mass(lungs, arr, values)
        for v, c in zip(values, coms):
            tgt = left if side_of(c[2], midline, left_is_larger_x(direction)) == "left" else right
            tgt |= arr == v
        how = "labels by side"
    else:
        left, right, how, warnings = split_left_right(lungs, reference_volume.spacing, direction)
    return LungMask(lungs=lungs, left=left, right=right, body=None, airways=None,
                    method=f"user:{path}", warnings=warnings, spacing=tuple(reference_volume.spacing))
