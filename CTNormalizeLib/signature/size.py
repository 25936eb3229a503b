"""Patient size: the water-equivalent diameter (AAPM TG-220) and the field of view."""

from __future__ import annotations

import math

import numpy as np

from .regions import SliceRegions


def water_equivalent_diameter(hu_slice: np.ndarray, body: np.ndarray, pixel_area_mm2: float) -> float:
    """TG-220 water-equivalent diameter (mm) of one slice inside ``body``.

    ``D_w = 2 sqrt(A_w / pi)`` with ``A_w = sum(HU/1000 + 1) * pixel area`` over the body.
    """
    rel = np.clip(hu_slice[body].astype(np.float64) / 1000.0 + 1.0, 0.0, None)
    return float(2.0 * math.sqrt(rel.sum() * pixel_area_mm2 / math.pi))


def median_wed(hu: np.ndarray, spacing, regions: list[SliceRegions]) -> float | None:
    """Median water-equivalent diameter over the measured slices (None without a body)."""
    area = float(spacing[1] * spacing[2])
    vals = [water_equivalent_diameter(hu[r.z], r.body, area) for r in regions if r.body.any()]
    return float(np.median(vals)) if vals else None


#: A body touching this fraction of the image border is cut by the field of view.
TRUNCATED_BORDER_FRACTION = 0.05


def body_truncated(regions: list[SliceRegions]) -> bool:
    """True when the body is cut by the image border on most measured slices (TG-220: the
    water-equivalent diameter is then a lower bound)."""
    cut = []
    for r in regions:
        b = r.body
        if not b.any():
            continue
        border = np.concatenate([b[0], b[-1], b[:, 0], b[:, -1]])
        cut.append(border.mean() > TRUNCATED_BORDER_FRACTION)
    return bool(cut) and float(np.mean(cut)) > 0.5


def field_of_view(shape, spacing) -> float:
    """In-plane field of view (mm): the larger of the two in-plane extents."""
    return float(max(shape[1] * spacing[1], shape[2] * spacing[2]))
