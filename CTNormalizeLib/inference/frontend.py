"""Fixed (non-learned) front-ends applied before a model, identically in training and inference.

``mtf_ratio``: the in-plane kernel conversion of :mod:`CTNormalizeLib.classical.mtf_ratio`
with a fixed Wiener term, so the network starts from the physically converted image and
learns only what a linear filter cannot do (noise, z detail, residual texture).
"""

from __future__ import annotations

import numpy as np

FRONTENDS = ("mtf_ratio",)
MTF_LAMBDA = 0.04  # fixed Wiener term: the same in training and inference (no noise estimate)


def apply_frontend(name, hu: np.ndarray, spacing, source_kernel: str, target_kernel: str) -> np.ndarray:
    """``hu [z, y, x]`` through the front-end ``name`` (None: unchanged). Never modifies ``hu``."""
    if name is None or source_kernel == target_kernel or not source_kernel or not target_kernel:
        return hu
    if name != "mtf_ratio":
        raise ValueError(f"unknown front-end {name!r}; known: {FRONTENDS}")
    from ..classical.mtf_ratio import convert_kernel

    return convert_kernel(hu, spacing, source_kernel, target_kernel, lam=MTF_LAMBDA)
