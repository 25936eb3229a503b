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


def field_of_view(shape, spacing) -> float:
    """In-plane field of view (mm): the larger of the two in-plane extents."""
    return float(max(shape[1] * spacing[1], shape[2] * spacing[2]))
