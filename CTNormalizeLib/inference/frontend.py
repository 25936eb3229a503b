"""Fixed (non-learned) front-ends applied before a model, identically in training and inference.

``mtf_ratio``: the in-plane kernel conversion of :mod:`CTNormalizeLib.classical.mtf_ratio`
between kernel classes with a fixed Wiener term, so the network starts from the physically
converted image and learns only what a linear filter cannot do (noise, z detail, residual
texture). ``mtf_ratio_measured``: the same from the source's *measured* transfer to the
target's (signature-conditioned models).
"""

from __future__ import annotations

import numpy as np

FRONTENDS = ("mtf_ratio", "mtf_ratio_measured")
MTF_LAMBDA = 0.04  # fixed Wiener term: the same in training and inference (no noise estimate)


def apply_frontend(name, hu: np.ndarray, spacing, source_kernel, target_kernel, lam=None) -> np.ndarray:
    """``hu [z, y, x]`` through the front-end ``name`` (None: unchanged). Never modifies ``hu``.

    ``source_kernel``/``target_kernel`` are kernel classes (``mtf_ratio``) or measured
    transfers (``mtf_ratio_measured``); ``lam`` the card's fixed Wiener term.
    """
    if name is None or source_kernel is None or target_kernel is None or source_kernel == target_kernel:
        return hu
    if name not in FRONTENDS:
        raise ValueError(f"unknown front-end {name!r}; known: {FRONTENDS}")
    from ..classical.mtf_ratio import convert_kernel

    return convert_kernel(hu, spacing, source_kernel, target_kernel, lam=MTF_LAMBDA if lam is None else float(lam))
