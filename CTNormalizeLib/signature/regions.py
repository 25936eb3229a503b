"""Where on a slice noise can be measured: air outside the body, fat, muscle, lung.

Regions are drawn on a smoothed copy of the slice, so that the noise itself does not
decide which voxels count (thresholding raw noisy values would truncate the noise
distribution). Air is kept away from the body edge, from padding outside the field of
view (a repeated value far below air, e.g. -2000 or -3024), from clipping at the
display floor (-1024), which truncates the noise, and from the body's convex hull (a
crop's cut lungs touch the image border like outside air).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

FAT_HU = (-150.0, -50.0)
MUSCLE_HU = (10.0, 70.0)
LUNG_HU = (-950.0, -600.0)
SOFT_HU = (-200.0, 200.0)
AIR_BELOW_HU = -900.0
BODY_ABOVE_HU = -500.0
#: In-plane width of the smoothing that draws the regions, mm.
SMOOTH_MM = 5.0
#: Keep air this far from the body, mm (the body's blur and streaks near the skin).
AIR_MARGIN_MM = 6.0


@dataclass
class SliceRegions:
    """Boolean masks of one slice ``z`` (``*_roi`` un-eroded for ROI placement, the others eroded)."""

    z: int
    smooth: np.ndarray
    body: np.ndarray
    air: np.ndarray
    fat: np.ndarray
    muscle: np.ndarray
    lung: np.ndarray
    soft: np.ndarray
    air_roi: np.ndarray
    tissue_roi: np.ndarray
    clipped_air: int = 0
    window: int = 5


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a 2D mask, filled (``skimage.morphology.convex_hull_image`` is 20x slower)."""
    edge = mask & ~ndi.binary_erosion(mask)
    pts = np.argwhere(edge)
    if pts.shape[0] < 3:
        return mask
    from scipy.spatial import ConvexHull, QhullError
    from skimage.draw import polygon_perimeter

    try:
        v = pts[ConvexHull(pts).vertices]
    except QhullError:  # all on a line
        return mask
    # a convex polygon holds one run of columns per row: fill between its perimeter's ends
    rr, cc = polygon_perimeter(v[:, 0], v[:, 1], mask.shape)
    lo = np.full(mask.shape[0], mask.shape[1], int)
    hi = np.full(mask.shape[0], -1, int)
    np.minimum.at(lo, rr, cc)
    np.maximum.at(hi, rr, cc)
    cols = np.arange(mask.shape[1])
    return mask | ((cols[None, :] >= lo[:, None]) & (cols[None, :] <= hi[:, None]))


def pad_value(hu: np.ndarray, idx) -> float | None:
    """The padding value outside the field of view, if the volume has one (else None)."""
    vmin = float(np.min(hu[idx]))
    if vmin < -1100.0 and np.count_nonzero(hu[idx] == vmin) > 1e-3 * hu[idx].size:
        return vmin
    return None


def clip_level(hu: np.ndarray, idx) -> float | None:
    """The clip level near air (e.g. -1024) when the minimum sits there, else None."""
    vmin = float(np.min(hu[idx]))
    return vmin if -1100.0 <= vmin <= -950.0 else None


def slice_indices(nz: int, max_slices: int) -> np.ndarray:
    """Up to ``max_slices`` evenly spread slice indices."""
    return np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))


def slice_regions(hu: np.ndarray, spacing, max_slices: int = 16, smooth_mm: float = SMOOTH_MM) -> list[SliceRegions]:
    """The measurement regions of up to ``max_slices`` evenly spread slices.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : sequence of float
        ``(z, y, x)`` mm.
    max_slices : int
    smooth_mm : float
        Width of the smoothing that draws the regions.

    Returns
    -------
    list of SliceRegions
    """
    pixel = math.sqrt(spacing[1] * spacing[2])
    window = max(3, int(round(smooth_mm / pixel)) | 1)
    idx = slice_indices(hu.shape[0], max_slices)
    pad = pad_value(hu, idx)
    clip = clip_level(hu, idx)
    erode = np.ones((3, 3), bool)
    r_edge = window // 2 + 1
    margin = max(1, int(round(AIR_MARGIN_MM / pixel)))
    out = []
    for k in idx:
        x = hu[k].astype(np.float32)
        smooth = ndi.uniform_filter(x, 2 * window - 1, mode="nearest")
        valid = (ndi.minimum_filter(x, window, mode="nearest") > pad + 0.5) if pad is not None \
            else np.ones(x.shape, bool)
        body = ndi.binary_fill_holes(_largest_component(smooth > BODY_ABOVE_HU))
        # Air counts as outside only beyond the body's convex hull: when the field of view
        # cuts the chest, cut lungs touch the image border like outside air, and their
        # vessels read as a smooth kernel (lung1 cropped to 300 px: MTF50 0.14 c/mm, 0.30 whole).
        near_body = ndi.binary_dilation(_hull(body), erode, iterations=margin + r_edge)
        air_roi = ~near_body & (smooth < AIR_BELOW_HU) & valid
        if clip is not None:
            # windows touching the clip floor truncate the noise: keep air well above it
            low = ndi.maximum_filter((x <= clip + 0.5).astype(np.uint8), window) > 0
            clipped = int(np.count_nonzero(air_roi & low))
            air_roi &= ~low
        else:
            clipped = 0
        inner = ndi.binary_erosion(body, erode, iterations=r_edge)
        fat = inner & (smooth >= FAT_HU[0]) & (smooth <= FAT_HU[1]) & valid
        muscle = inner & (smooth >= MUSCLE_HU[0]) & (smooth <= MUSCLE_HU[1]) & valid
        lung = inner & (smooth >= LUNG_HU[0]) & (smooth <= LUNG_HU[1]) & valid
        soft = inner & (smooth >= SOFT_HU[0]) & (smooth <= SOFT_HU[1]) & valid
        tissue_roi = inner & (smooth >= FAT_HU[0]) & (smooth <= MUSCLE_HU[1]) & valid
        out.append(SliceRegions(
            z=int(k), smooth=smooth, body=body,
            air=ndi.binary_erosion(air_roi, erode, iterations=r_edge),
            fat=ndi.binary_erosion(fat, erode, iterations=r_edge),
            muscle=ndi.binary_erosion(muscle, erode, iterations=r_edge),
            lung=ndi.binary_erosion(lung, erode, iterations=r_edge),
            soft=ndi.binary_erosion(soft, erode, iterations=max(1, r_edge // 2)),
            air_roi=air_roi, tissue_roi=tissue_roi, clipped_air=clipped, window=window))
    return out
