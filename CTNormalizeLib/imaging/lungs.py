"""Lung masks from HU thresholds and connected components (no deep-learning weights).

Two masks:

- :func:`threshold_lung_mask` -- fast: air below -400 HU inside the body, large components
  only. Enough to pick the voxels whose statistics the classical methods measure.
- :func:`lung_mask` -- the segmentation used for quantification:

  1. smooth (Gaussian, ~1 mm) so that the noise of sharp or low-dose scans cannot punch
     holes or break the thresholds;
  2. body: tissue above -500 HU, largest 3D component, holes filled per axial slice;
  3. lungs: air below -400 HU inside the body; components touching the in-plane border
     (air outside the body) and small ones (bowel gas) are dropped;
  4. trachea and main bronchi removed (:mod:`.airways`);
  5. left/right split (:mod:`.lung_split`);
  6. holes filled per lung (closing + per-slice hole filling), so vessels inside the
     lungs stay lung; filled rings around a small dark lumen are bronchi and are taken out
     again (densitometry excludes the airways).

Convention: the trachea and main bronchi are removed; smaller bronchi inside the lungs stay
lung unless seen as a ring (a wall around a dark lumen), as in common lung masks. Bronchial
walls running in-plane look like vessels and are kept. Against a ground truth that excludes
every airway (the simulator's phantom) this costs a few Dice points and about 1 LAA% point
at 20 % emphysema (see Testing/Python/test_quantify_phantom.py).

Written on scipy/scikit-image rather than a library because no maintained weight-free
lung segmenter exists as a package; the steps follow Hu, Hoffman & Reinhardt (IEEE TMI
2001) in simplified form.

Orientation: arrays are ``[z, y, x]`` with ITK geometry. The superior end is taken
from ``direction`` (LPS +z is superior); without a direction the ITK default (identity)
is assumed, i.e. the **last** slice is the most superior and a larger column index is
patient left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from ..errors import BadInputError
from .airways import airway_rings, find_trachea, track_airways
from .body import BODY_HU, body_mask
from .inputs import unpack_volume
from .lung_split import split_left_right
from .morphology import border_labels, disk, fill_holes_per_slice, inplane
from .orientation import superior_is_last
from .progress import Progress, no_progress

LUNG_HU = -400.0
SMOOTH_MM = 1.0


@dataclass
class LungMask:
    """A lung segmentation on the grid of a CT volume.

    Attributes
    ----------
    lungs, left, right : np.ndarray
        bool ``[z, y, x]``; ``lungs == left | right`` for the engine's masks.
    body : np.ndarray or None
        bool body mask (None for user masks).
    airways : np.ndarray or None
        bool mask of the airways that were removed (None for user masks): trachea and main
        bronchi tracked from the top, and bronchi seen inside the lungs as a wall around a lumen.
    method : str
        How the mask was made (``"engine: ..."`` or ``"user:<path>"``).
    warnings : list of dict
        ``{"code", "message"}`` entries.
    spacing : tuple of float
        Voxel size (z, y, x) in mm.
    """

    lungs: np.ndarray
    left: np.ndarray
    right: np.ndarray
    body: Optional[np.ndarray] = None
    airways: Optional[np.ndarray] = None
    method: str = "engine"
    warnings: list = field(default_factory=list)
    spacing: tuple = (1.0, 1.0, 1.0)

    @property
    def source(self) -> str:
        """``"engine"`` or ``"user:<path>"``."""
        return self.method if self.method.startswith("user:") else "engine"

    def labelmap(self) -> np.ndarray:
        """uint8 ``[z, y, x]``: 0 background, 1 right lung, 2 left lung (the `lungmask` convention)."""
        lab = np.zeros(self.lungs.shape, dtype=np.uint8)
        lab[self.lungs] = 1
        lab[self.left] = 2
        return lab

    def volume_ml(self) -> float:
        return float(self.lungs.sum()) * float(np.prod(self.spacing)) / 1000.0


def threshold_lung_mask(hu: np.ndarray, threshold: float = LUNG_HU) -> np.ndarray:
    """Fast lung mask: air below ``threshold`` inside the body, components of at least 2 % of the largest.

    No airway removal and no left/right split; about 3x faster than :func:`lung_mask`.
    """
    body = body_mask(hu)
    smooth = ndi.uniform_filter(np.asarray(hu, dtype=np.float32), size=(1, 3, 3))
    air = (smooth < threshold) & body
    lab, n = ndi.label(air)
    if n == 0:
        return air
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    # keep components of at least 2 % of the largest: both lungs, not bowel gas specks
    keep = np.flatnonzero(sizes >= 0.02 * sizes.max())
    lut = np.zeros(n + 1, bool)
    lut[keep] = True
    lung = ndi.binary_closing(lut[lab], structure=np.ones((1, 5, 5), bool))
    return lung & body


def _smooth(hu: np.ndarray, spacing) -> np.ndarray:
    sigma = [SMOOTH_MM / float(s) for s in spacing]
    sigma = [s if s >= 0.3 else 0.0 for s in sigma]
    return ndi.gaussian_filter(hu.astype(np.float32, copy=False), sigma=sigma, mode="nearest")


def _keep_large(mask: np.ndarray, share: float) -> np.ndarray:
    """The components of ``mask`` of at least ``share`` of the largest one's size."""
    lab, n = ndi.label(mask)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = sizes >= share * sizes.max()
    keep[0] = False
    return keep[lab]


def _lung_candidates(sm: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Air inside the body, not touching the in-plane border, in components of >= 10 % of the largest."""
    cand = (sm < LUNG_HU) & body
    lab, n = ndi.label(cand)
    if n == 0:
        raise BadInputError("No air found inside the body: no lungs to segment.")
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    sizes[border_labels(lab)] = 0
    if sizes.max() == 0:
        raise BadInputError("All air touches the image border: no lungs inside the body were found.")
    keep = sizes >= 0.1 * sizes.max()
    keep[0] = False
    return keep[lab]


def _fill_lung(mask: np.ndarray, spacing) -> np.ndarray:
    """Close (2 mm disk, in-plane) and fill holes per slice, so vessels stay lung."""
    if not mask.any():
        return mask
    r = max(1.0, 2.0 / float(min(spacing[1], spacing[2])))
    pad = int(np.ceil(r)) + 1
    padded = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))
    closed = ndi.binary_closing(padded, structure=inplane(disk(r)))[:, pad:-pad, pad:-pad]
    return fill_holes_per_slice(closed | mask)


def _fill_sides(left, right, sm, spacing, body, airways):
    """Both lungs hole-filled, bronchial rings taken out, overlap resolved: ``(left, right, airways)``."""
    left_f = _fill_lung(left, spacing) & body & ~airways
    right_f = _fill_lung(right, spacing) & body & ~airways
    rings = airway_rings(left, left_f, sm, spacing) | airway_rings(right, right_f, sm, spacing)
    left_f &= ~rings
    right_f &= ~rings
    overlap = left_f & right_f
    if overlap.any():
        left_f &= ~(overlap & right)
        right_f &= ~(overlap & ~right)
    return left_f, right_f, airways | rings


def lung_mask(hu, spacing=None, direction=None, progress: Progress = None) -> LungMask:
    """Segment the lungs of a chest CT without deep-learning weights.

    Parameters
    ----------
    hu : np.ndarray or Volume
        HU array ``[z, y, x]`` (or a :class:`Volume`, whose spacing and direction are used).
    spacing : tuple of float, optional
        Voxel size ``(z, y, x)`` in mm; required with a bare array.
    direction : tuple of 9 float, optional
        ITK direction cosines; decides which end is superior and which side is left.
        Default: identity (last slice superior, larger column index = patient left).
    progress : callable(stage, fraction), optional

    Returns
    -------
    LungMask
        ``lungs``, ``left``, ``right``, ``body``, ``airways`` (removed), ``method``,
        ``warnings``.

    Raises
    ------
    BadInputError
        Not a 3D array, or no lung-like air found inside a body.
    """
    hu, spacing, direction = unpack_volume(hu, spacing, direction, "lung_mask")
    spacing = tuple(float(s) for s in spacing)
    report = progress or no_progress
    warnings: list = []

    report("smooth", 0.0)
    sm = _smooth(hu, spacing)
    report("body", 0.15)
    body = body_mask(sm, threshold=BODY_HU, sigma=0)  # sm is already smoothed
    if not body.any():
        raise BadInputError("No body found (nothing above -500 HU): is this a CT in HU?")

    report("lungs", 0.3)
    cand = _lung_candidates(sm, body)

    report("airways", 0.45)
    top_first = superior_is_last(direction)
    seed = find_trachea(cand, body, spacing, top_first)
    if seed is None:
        airways = np.zeros_like(cand)
        warnings.append({"code": "NO_TRACHEA",
                         "message": "No trachea found in the superior slices; airways were not removed."})
        midline = None
    else:
        airways = track_airways(cand, sm, spacing, seed[0], seed[1], top_first)
        midline = float(np.nonzero(seed[1])[1].mean())
    lungs = cand & ~airways
    if not lungs.any():
        raise BadInputError("No lungs left after removing the airways.")
    lungs = _keep_large(lungs, 0.02)

    report("left/right", 0.6)
    if midline is None:
        xs = np.nonzero(body.any(axis=(0, 1)))[0]
        midline = 0.5 * (xs[0] + xs[-1])
    left, right, how, w = split_left_right(lungs, spacing, direction, midline_x=midline)
    warnings += w

    report("fill", 0.8)
    left_f, right_f, airways = _fill_sides(left, right, sm, spacing, body, airways)
    lungs = left_f | right_f
    for name, m in (("left", left_f), ("right", right_f)):
        if not m.any():
            warnings.append({"code": "ONE_LUNG", "message": f"No {name} lung was found."})
    report("done", 1.0)
    method = (f"engine: smooth {SMOOTH_MM:g} mm, body > {BODY_HU:g} HU, lungs < {LUNG_HU:g} HU inside body, "
              f"airways {'tracked from trachea' if seed is not None else 'not found'}, "
              f"left/right by {how}, holes filled per slice, bronchi rings removed")
    return LungMask(lungs=lungs, left=left_f, right=right_f, body=body, airways=airways,
                    method=method, warnings=warnings, spacing=spacing)
