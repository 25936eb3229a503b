"""Body and lung masks for the paired metrics.

The body mask is :func:`CTNormalizeLib.quantify.body.body_mask`, the lung mask
``CTNormalizeLib.quantify.lung.lung_mask``. All
metrics of one comparison use masks computed once, on the **target**, so that
differences between source, output and replicate reflect HU only.
"""

from __future__ import annotations

import numpy as np

from ..quantify.body import body_mask  # noqa: F401  (re-exported for the paired metrics)
from ..quantify.lung import lung_mask as _engine_lung_mask


def lung_mask(hu: np.ndarray, spacing, direction=None) -> tuple[np.ndarray, str]:
    """Lung mask of ``hu`` (the engine's segmentation) and where it came from.

    Returns
    -------
    (mask, source)
        ``source`` is ``"quantify.lung"``.
    """
    return _engine_lung_mask(hu, spacing, direction).lungs, "quantify.lung"
