"""Split a lung mask into the left and the right lung."""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from .orientation import left_is_larger_x


def side_of(mask_centroid_x: float, midline_x: float, left_larger: bool) -> str:
    """``"left"`` or ``"right"``: the patient side of a column position against the midline."""
    return "left" if (mask_centroid_x > midline_x) == left_larger else "right"


def _markers_by_erosion(big, spacing, midline_x, left_larger):
    """Two marker regions (1 = left, 2 = right) where eroding the touching lungs separates them, or None.

    Returns ``(markers, dist)``, ``dist`` being the in-plane distance map the watershed grows on.
    """
    dist = np.zeros(big.shape, dtype=np.float32)
    for z in range(big.shape[0]):
        if big[z].any():
            dist[z] = ndi.distance_transform_edt(big[z], sampling=spacing[1:])
    for t in np.arange(1.0, 25.0, 1.0):
        core = dist > t
        clab, cn = ndi.label(core)
        if cn < 2:
            if cn == 0:
                break
            continue
        csz = np.bincount(clab.ravel())
        csz[0] = 0
        co = np.argsort(csz)[::-1]
        p, q = int(co[0]), int(co[1])
        if csz[q] < 0.1 * csz[p]:
            continue
        ccom = ndi.center_of_mass(core, clab, [p, q])
        sp = side_of(ccom[0][2], midline_x, left_larger)
        sq = side_of(ccom[1][2], midline_x, left_larger)
        if sp != sq:
            markers = np.zeros(big.shape, dtype=np.int32)
            markers[clab == p] = 1 if sp == "left" else 2
            markers[clab == q] = 1 if sq == "left" else 2
            return markers, dist
    return None, dist


def split_left_right(lungs: np.ndarray, spacing, direction=None, midline_x: Optional[float] = None):
    """Split a lung mask into ``(left, right, how, warnings)``.

    Separate components are assigned by side of the midline; lungs that touch are
    eroded (in-plane distance threshold) until two large parts on both sides appear,
    then grown back with a watershed on the distance map. As a last resort the mask is
    cut at the midline (with a warning).
    """
    left_larger = left_is_larger_x(direction)
    warnings: list = []
    left = np.zeros_like(lungs)
    right = np.zeros_like(lungs)
    if not lungs.any():
        return left, right, "empty", warnings
    if midline_x is None:
        midline_x = float(np.nonzero(lungs)[2].mean())
    lab, n = ndi.label(lungs)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1]
    a, b = int(order[0]), int(order[1]) if n >= 2 else 0
    com = [None] + list(ndi.center_of_mass(lungs, lab, range(1, n + 1))) if n else [None]

    def side(i):
        return side_of(com[i][2], midline_x, left_larger)

    if n >= 2 and sizes[b] >= 0.15 * sizes[a] and side(a) != side(b):
        for i in range(1, n + 1):
            tgt = left if side(i) == "left" else right
            tgt |= lab == i
        return left, right, "components", warnings

    # Lungs touch: find where the big component separates under erosion.
    big = lab == a
    markers, dist = _markers_by_erosion(big, spacing, midline_x, left_larger)
    if markers is not None:
        from skimage.segmentation import watershed

        ws = watershed(-dist, markers=markers, mask=big)
        left |= ws == 1
        right |= ws == 2
        how = "erosion+watershed"
    else:
        cols = np.arange(lungs.shape[2])[None, None, :]
        on_left = (cols > midline_x) if left_larger else (cols <= midline_x)
        left |= big & on_left
        right |= big & ~on_left
        how = "midline cut"
        warnings.append({"code": "LUNG_SPLIT_MIDLINE",
                         "message": "The lungs could not be separated by erosion; they were cut at the midline."})
    # Remaining (smaller) components go to the side of their centroid.
    for i in range(1, n + 1):
        if i == a:
            continue
        tgt = left if side(i) == "left" else right
        tgt |= lab == i
    return left, right, how, warnings
