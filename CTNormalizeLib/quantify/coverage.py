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
    return _extent_warning(reference.shape[0] * reference.spacing[0], other.shape[0] * other.spacing[0],
                           other_name, reference_name)


def output_extent_warning(n_in: int, s_in: float, s_out: float) -> list[dict]:
    """``[warning]`` when a normalized output on ``s_out`` mm slices will cover another length along z than
    its ``n_in`` input slices ``s_in`` mm apart (by more than :data:`TOLERANCE`), else [].

    The output's slices run from the centre of the input's first slice to the last one's (the z grid
    rule, :func:`~CTNormalizeLib.imaging.zgrid.grid_positions`), so thick -> thin leaves out about half
    a source slice at each end: on a short crop that is a large part of it.
    """
    from ..imaging.zgrid import target_slice_count

    n_out = target_slice_count(int(n_in), float(s_in), float(s_out))
    return _extent_warning(n_in * float(s_in), n_out * float(s_out), "The output", "the input",
                           why=f" (its {n_out} slices run from the centre of the input's first slice to its last one's)")


def _extent_warning(before: float, after: float, other_name: str, reference_name: str, why: str = "") -> list[dict]:
    if abs(after - before) <= TOLERANCE * before:
        return []
    return [{"code": Z_EXTENT_DIFFERS,
             "message": f"{other_name} covers {after:.4g} mm along z, {reference_name} {before:.4g} mm "
                        f"({100 * (after / before - 1):+.1f} %){why}: volumes (lung volume, its thirds) differ by "
                        "about that much before any normalization effect; compare fractions (LAA %, Perc15)."}]
