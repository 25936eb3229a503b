"""Is what the lung segmentation found aerated lung? Refuse to measure when it is not.

On a scan without lungs (a water phantom, an abdomen, a head) the threshold segmentation
can still return a few millilitres: the partial-volume rim of the body surface, where
smoothed HU fall below the lung threshold. Aerated lung has a median near -850 HU
(emphysema lower, dense disease rarely above -700 over a whole lung); that rim sits
around -300 to -450 HU. A region whose median is above :data:`MAX_MEDIAN_HU` is not
measured as lung.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError, NoLungsError

#: The median HU above which a segmented region is not taken for aerated lung.
MAX_MEDIAN_HU = -600.0


def require_lungs(hu: np.ndarray, lungs: np.ndarray, spacing) -> None:
    """Raise :class:`~CTNormalizeLib.errors.NoLungsError` unless ``lungs`` looks like aerated lung.

    Parameters
    ----------
    hu : np.ndarray
        HU ``[z, y, x]``.
    lungs : np.ndarray of bool
        The segmented lungs, same shape.
    spacing : tuple of float
        ``(z, y, x)`` mm, for the volume in the message.
    """
    n = int(np.count_nonzero(lungs))
    if n == 0:
        raise NoLungsError("No lungs were found in this scan; there is nothing to measure.")
    median = float(np.median(hu[lungs]))
    if median > MAX_MEDIAN_HU:
        ml = n * float(np.prod(spacing)) / 1000.0
        raise NoLungsError(
            f"No lungs were found: the only lung-like region ({ml:.1f} ml) has a median of {median:.0f} HU, "
            f"not aerated lung (below {MAX_MEDIAN_HU:g} HU); it is likely the body's edge. "
            "Is this a chest CT? Give --lung-mask to measure a region of your choice.")


def segment_lungs(hu: np.ndarray, spacing, direction=None):
    """:func:`~CTNormalizeLib.imaging.lungs.lung_mask`, refusing (``NO_LUNGS``) a scan without lungs.

    ``hu`` must already be a 3D array (the segmentation's own refusals -- no body, no air
    inside it -- are then all about missing lungs, and become :class:`NoLungsError`).
    """
    from ..imaging.lungs import lung_mask

    try:
        m = lung_mask(hu, spacing, direction)
    except NoLungsError:
        raise
    except BadInputError as exc:
        raise NoLungsError(exc.message) from None
    require_lungs(hu, m.lungs, spacing)
    return m
