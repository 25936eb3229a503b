"""Checks that a volume is a usable 3D CT in Hounsfield units."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError, NotCTError
from ..volume import Volume

# HU-likeness thresholds. Air is -1000 HU; lung parenchyma -900..-700. A CT that shows
# any air or lung has its low percentile well below AIR_CEILING; MR, PET, raw stored
# values (intercept not applied) or [0, 1]-scaled data do not.
AIR_CEILING = -500.0
LOW_FLOOR = -1200.0  # below this (except padding) nothing in a patient is HU
HIGH_CEILING = 4000.0  # dense bone ~2000; metal can exceed, but not at the 99.5th percentile
LOW_PCT, HIGH_PCT = 0.5, 99.5
_MAX_SAMPLES = 2_000_000


def _sample(hu: np.ndarray) -> np.ndarray:
    flat = hu.reshape(-1)
    if flat.size > _MAX_SAMPLES:
        flat = flat[:: flat.size // _MAX_SAMPLES + 1]
    return flat


def hu_summary(hu: np.ndarray) -> dict:
    """Minimum and maximum (of every finite voxel) and 0.5/1/50/99/99.5th percentiles (of a subsample)."""
    s = _sample(hu)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return {}
    p = np.percentile(s, [LOW_PCT, 1, 50, 99, HIGH_PCT])
    with np.errstate(invalid="ignore"):
        lo, hi = float(np.nanmin(hu)), float(np.nanmax(hu))
    if not (np.isfinite(lo) and np.isfinite(hi)):  # infinities: the extremes of the finite voxels
        finite = hu[np.isfinite(hu)]
        lo, hi = float(finite.min()), float(finite.max())
    return {"min": lo, "p0.5": float(p[0]), "p1": float(p[1]), "p50": float(p[2]),
            "p99": float(p[3]), "p99.5": float(p[4]), "max": hi}


def _without_padding(s: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Drop a padding value (outside the field of view): the minimum, if it is far below air
    and frequent (e.g. -3024, -2048, -2000)."""
    lo = float(s.min())
    if lo < -1100:
        at_min = s == lo
        if at_min.mean() > 1e-3:
            return s[~at_min], lo
    return s, None


def validate_ct(volume: Volume, check_values: bool = True) -> None:
    """Raise a clear error unless ``volume`` is a 3D CT in HU.

    Checks, in order: at least 2 voxels along every axis (``BadInputError``: "needs a 3D
    volume, got 1 slice"); finite, positive spacing and a non-degenerate direction
    (oblique directions are fine); no NaN/inf (``BadInputError`` with the count);
    ``Modality`` tag, when present, is ``CT`` (``NotCTError`` naming it); with
    ``check_values``, HU-like values: some air or lung (0.5th percentile below -500 HU)
    and no implausible range (``NotCTError`` naming what was found).

    Parameters
    ----------
    volume : Volume
    check_values : bool
        Also check that the values look like HU (set False for e.g. a tightly cropped
        soft-tissue CT with no air).
    """
    hu = volume.hu
    if hu.ndim != 3:
        raise BadInputError(f"Needs a 3D volume, got an array with {hu.ndim} dimensions {hu.shape}.")
    nz, ny, nx = hu.shape
    if nz < 2:
        src = volume.meta.get("source_path")
        if volume.meta.get("source_format") != "DICOM":
            hint = "A 2D image cannot be normalized: CTNormalize needs the scan's slices as one 3D volume."
        elif src and Path(src).is_dir():
            hint = (f"The folder {src} holds one slice of this series: the other slices are missing "
                    "(copy the whole series into it).")
        else:
            hint = "For a DICOM series, pass the folder that holds all its slices."
        raise BadInputError(f"Needs a 3D volume, got {nz} slice ({nx} x {ny} pixels). {hint}")
    if ny < 2 or nx < 2:
        raise BadInputError(f"Needs a 3D volume, got size {nx} x {ny} x {nz} (x, y, z).")
    sp = np.asarray(volume.spacing, dtype=float)
    if not (np.all(np.isfinite(sp)) and np.all(sp > 0)):
        raise BadInputError(f"Voxel spacing must be positive, got {tuple(sp)} mm (z, y, x).")
    d = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-3:
        raise BadInputError(f"Degenerate direction matrix {tuple(d.ravel())}.")

    bad = int(hu.size - np.count_nonzero(np.isfinite(hu)))
    if bad:
        n_nan = int(np.count_nonzero(np.isnan(hu)))
        raise BadInputError(
            f"The volume has {bad} non-finite voxel(s) ({n_nan} NaN, {bad - n_nan} inf) of {hu.size}; "
            "a CT must have finite HU everywhere."
        )

    modality = str(volume.meta.get("Modality", "")).strip().upper()
    if modality and modality != "CT":
        raise NotCTError(f"The image's Modality is {modality!r}, not 'CT'; CTNormalize works on CT only.")

    if not check_values:
        return
    s, pad = _without_padding(_sample(hu))
    if s.size == 0:
        raise NotCTError(f"Every voxel equals {pad:g}; this is not a CT image.")
    lo, p1, hi = (float(v) for v in np.percentile(s, [LOW_PCT, 1, HIGH_PCT]))
    vmin, vmax = float(s.min()), float(s.max())
    if lo > AIR_CEILING:
        hint = ""
        if -100 <= vmin and lo <= 100 and vmax > 800:
            hint = " (stored values without the rescale intercept, or another modality such as MR?)"
        raise NotCTError(
            f"Minimum value {vmin:g}, {LOW_PCT:g}th percentile {lo:g}, 1st percentile {p1:g}: no air or lung "
            f"near -1000 HU; this does not look like CT in HU{hint}. "
            "(A CT cropped to soft tissue only, with no air, also fails this check.)"
        )
    if lo < LOW_FLOOR:
        raise NotCTError(
            f"{LOW_PCT:g}th percentile {lo:g} (minimum {vmin:g}): far below air (-1000 HU); "
            "these values are not HU (wrong rescale?)."
        )
    if hi > HIGH_CEILING:
        raise NotCTError(
            f"{HIGH_PCT:g}th percentile {hi:g} (maximum {vmax:g}): above any tissue or bone in HU; "
            "these values are not HU (wrong rescale?)."
        )
