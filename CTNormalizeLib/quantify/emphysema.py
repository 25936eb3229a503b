"""Emphysema index (:func:`emphysema_index`): LAA% below a threshold, Perc15, lung volume, per lung and zone.

Definitions (standard densitometry, e.g. the COPDGene convention):

- ``laa_percent``: 100 x (lung voxels with HU **strictly below** the threshold) / (lung voxels).
- ``perc15_hu``: the 15th percentile of lung HU (numpy's linear interpolation).
- ``lung_volume_ml``: lung voxels x voxel volume.
- zones: the lung's z extent (first to last slice holding lung) cut into three runs of
  slices, as equal as whole slices allow, named upper / middle / lower from the superior
  end. Superior is LPS +z, taken from the volume's direction; with a bare array the ITK
  default (identity) is assumed, i.e. the **last** slice is the most superior.

No smoothing is applied: the index is measured on the HU as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from ..version import __version__
from ..errors import BadInputError
from ..imaging.inputs import unpack_volume
from ..imaging.lung_split import split_left_right
from ..imaging.lungs import LungMask, lung_mask
from ..imaging.orientation import superior_is_last
from .lungcheck import segment_lungs

DEFAULT_THRESHOLD = -950.0
ZONES = ("upper", "middle", "lower")


def _stats(values: np.ndarray, threshold: float, voxel_ml: float) -> dict:
    n = int(values.size)
    if n == 0:
        return {"laa_percent": None, "perc15_hu": None, "lung_volume_ml": 0.0,
                "emphysema_volume_ml": 0.0, "mean_hu": None, "voxels": 0}
    below = int(np.count_nonzero(values < threshold))
    return {
        "laa_percent": 100.0 * below / n,
        "perc15_hu": float(np.percentile(values, 15)),
        "lung_volume_ml": n * voxel_ml,
        "emphysema_volume_ml": below * voxel_ml,
        "mean_hu": float(values.mean(dtype=np.float64)),
        "voxels": n,
    }


def zone_slices(lungs: np.ndarray, direction=None) -> dict:
    """``{"upper"|"middle"|"lower": slice}`` of z indices over the lung extent."""
    zs = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if zs.size == 0:
        return {z: slice(0, 0) for z in ZONES}
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    edges = [z0 + int(round(k * (z1 - z0) / 3.0)) for k in range(4)]
    low_to_high = [slice(edges[k], edges[k + 1]) for k in range(3)]
    # low index first: if the last slice is superior, the low thirds are the lower zone
    names = ("lower", "middle", "upper") if superior_is_last(direction) else ("upper", "middle", "lower")
    return dict(zip(names, low_to_high))


@dataclass
class EmphysemaResult:
    """Emphysema measures of one CT.

    Attributes
    ----------
    laa_percent, perc15_hu, lung_volume_ml, emphysema_volume_ml, mean_hu : float
        Whole-lung values.
    per_lung : dict
        ``{"left": {...}, "right": {...}}`` with the same keys.
    per_zone : dict
        ``{"upper": {...}, "middle": {...}, "lower": {...}}`` plus ``z_range`` (index slices).
    threshold : float
    mask_source : str
        ``"engine"`` or ``"user:<path>"`` (or ``"array"`` for a bare array).
    lung_method : str
    engine_version : str
    emphysema_mask : np.ndarray
        bool ``[z, y, x]``: lung voxels below the threshold.
    lung : LungMask
    warnings : list of dict
    """

    laa_percent: Optional[float]
    perc15_hu: Optional[float]
    lung_volume_ml: float
    emphysema_volume_ml: float
    mean_hu: Optional[float]
    per_lung: dict
    per_zone: dict
    threshold: float
    mask_source: str
    lung_method: str
    engine_version: str
    emphysema_mask: np.ndarray = field(repr=False)
    lung: LungMask = field(repr=False)
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (no arrays)."""
        return {
            "laa_percent": self.laa_percent,
            "perc15_hu": self.perc15_hu,
            "lung_volume_ml": self.lung_volume_ml,
            "emphysema_volume_ml": self.emphysema_volume_ml,
            "mean_hu": self.mean_hu,
            "per_lung": self.per_lung,
            "per_zone": self.per_zone,
            "provenance": {
                "threshold_hu": self.threshold,
                "threshold_rule": "HU < threshold",
                "mask_source": self.mask_source,
                "lung_method": self.lung_method,
                "engine_version": self.engine_version,
            },
            "warnings": list(self.warnings),
        }


def _as_lungmask(lung, hu, spacing, direction) -> LungMask:
    if lung is None:
        return lung_mask(hu, spacing, direction)
    if isinstance(lung, LungMask):
        m = lung
    else:
        arr = np.asarray(lung)
        if arr.dtype == bool or set(np.unique(arr).tolist()) <= {0, 1}:
            lungs = arr.astype(bool)
            left, right, how, w = split_left_right(lungs, spacing, direction)
            m = LungMask(lungs=lungs, left=left, right=right, method=f"array (left/right by {how})",
                         warnings=w, spacing=tuple(spacing))
        else:
            # label array: 1 = right, 2 = left (LungMask.labelmap convention)
            m = LungMask(lungs=arr != 0, left=arr == 2, right=arr == 1, method="array (labels 1=R, 2=L)",
                         spacing=tuple(spacing))
    if m.lungs.shape != hu.shape:
        raise BadInputError(f"The lung mask's shape {m.lungs.shape} differs from the CT's {hu.shape}.")
    return m


def emphysema_index(hu, spacing=None, lung: Union[LungMask, np.ndarray, None] = None,
              threshold: float = DEFAULT_THRESHOLD, direction=None) -> EmphysemaResult:
    """Measure the emphysema index of a chest CT.

    Parameters
    ----------
    hu : np.ndarray or Volume
        HU ``[z, y, x]``; a Volume brings its spacing and direction.
    spacing : tuple of float, optional
        ``(z, y, x)`` mm (required with a bare array).
    lung : LungMask, np.ndarray or None
        The lung mask; a bool array (left/right split by the engine) or a label array
        (1 = right, 2 = left); None runs :func:`~CTNormalizeLib.imaging.lung_mask`.
    threshold : float
        LAA threshold in HU (voxels strictly below count), default -950.
    direction : tuple of 9 float, optional
        ITK direction; decides which zone is upper (default identity: last slice superior).

    Returns
    -------
    EmphysemaResult

    Raises
    ------
    NoLungsError
        The engine's segmentation (``lung=None``) found no aerated lung (code ``NO_LUNGS``).
    """
    from .provenance import clean_texture_warnings

    meta = getattr(hu, "meta", None) or {}  # a Volume's tags; a bare array has none
    hu, spacing, direction = unpack_volume(hu, spacing, direction, "emphysema_index")
    if not np.isfinite(threshold):
        raise BadInputError(f"The LAA threshold must be a finite HU value, not {threshold}.")
    spacing = tuple(float(s) for s in spacing)
    threshold = float(threshold)
    if lung is None:
        m = segment_lungs(hu, spacing, direction)
    else:
        m = _as_lungmask(lung, hu, spacing, direction)
    warnings = list(m.warnings) + clean_texture_warnings(meta, "its emphysema index reads low and Perc15 high")
    if not m.lungs.any():
        raise BadInputError("The lung mask is empty: nothing to measure.")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    whole = _stats(hu[m.lungs], threshold, voxel_ml)
    per_lung = {side: _stats(hu[getattr(m, side)], threshold, voxel_ml) for side in ("left", "right")}
    per_zone = {}
    for name, sl in zone_slices(m.lungs, direction).items():
        st = _stats(hu[sl][m.lungs[sl]], threshold, voxel_ml)
        st["z_range"] = [sl.start, sl.stop]
        per_zone[name] = st
    emph = m.lungs & (hu < threshold)
    if whole["voxels"] < 1000:
        warnings.append({"code": "SMALL_LUNG", "message": f"Only {whole['voxels']} lung voxels: the index is noisy."})
    source = m.source if m.method.startswith(("user:", "engine")) else "array"
    return EmphysemaResult(
        laa_percent=whole["laa_percent"], perc15_hu=whole["perc15_hu"], lung_volume_ml=whole["lung_volume_ml"],
        emphysema_volume_ml=whole["emphysema_volume_ml"], mean_hu=whole["mean_hu"],
        per_lung=per_lung, per_zone=per_zone, threshold=threshold, mask_source=source,
        lung_method=m.method, engine_version=__version__, emphysema_mask=emph, lung=m, warnings=warnings)


def emphysema_dice(mask_a, mask_b) -> float:
    """Dice overlap 2|A∩B| / (|A| + |B|) of two emphysema masks of the same shape.

    Accepts bool arrays or :class:`EmphysemaResult` objects. Two empty masks agree
    perfectly (1.0).
    """
    a = mask_a.emphysema_mask if isinstance(mask_a, EmphysemaResult) else np.asarray(mask_a, dtype=bool)
    b = mask_b.emphysema_mask if isinstance(mask_b, EmphysemaResult) else np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise BadInputError(f"Emphysema masks differ in shape: {a.shape} vs {b.shape}.")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total
