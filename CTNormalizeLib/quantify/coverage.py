"""Whether two scans of one patient cover the same length along z (so that their volumes compare)."""

from __future__ import annotations

#: Warning code of two scans whose z coverage differs by more than :data:`TOLERANCE`.
Z_EXTENT_DIFFERS = "Z_EXTENT_DIFFERS"
TOLERANCE = 0.02


def z_extent_warning(reference, other, other_name: str = "The normalized scan",
                     reference_name: str = "the original") -> list[dict]:
    """``[warning]`` when ``other`` covers another length along z (slices x spacing) than ``reference``, else [].

    Thick -> thin outputs run from the first slice's centre to the last one's, so the lung volumes
    differ by that much before any normalization effect; fractions (LAA %, Perc15) compare.
    """
    before = reference.shape[0] * reference.spacing[0]
    after = other.shape[0] * other.spacing[0]
    if abs(after - before) <= TOLERANCE * before:
        return []
    return [{"code": Z_EXTENT_DIFFERS,
             "message": f"{other_name} covers {after:.4g} mm along z, {reference_name} {before:.4g} mm "
                        f"({100 * (after / before - 1):+.1f} %): volumes (lung volume, its thirds) differ by about "
                        "that much before any normalization effect; compare fractions (LAA %, Perc15)."}]
