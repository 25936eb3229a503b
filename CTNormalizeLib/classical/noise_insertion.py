"""Physics-based noise insertion: FBP-like noise with a given kernel's texture and a given std.

Filtered back-projection turns white projection noise into image noise with power
``|f| W(f)^2`` (ramp times the kernel's apodization squared), so white Gaussian noise
shaped by ``sqrt(|f|) W(f)`` in 2D has a CT scan's noise texture. Its std is set per
region: the soft-tissue level inside the body and the measured air-to-tissue ratio
outside it (the patient's attenuation makes noise stronger inside), blended over a few
millimetres so no edge appears. Slices get independent noise (the slice profile's
z correlation of overlapping reconstructions is not modelled).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from ..signature.kernel_class import as_transfer
from ..signature.measure import TYPICAL_AIR_TO_TISSUE
from ._fft import filter_slices
from ..imaging import body_mask

BLEND_MM = 3.0


def shaped_noise(shape, spacing, kernel, seed: int, chunk: int = 8) -> np.ndarray:
    """Unit-std float32 noise ``[z, y, x]`` with the FBP texture of ``kernel`` (class or Transfer)."""
    w = as_transfer(kernel)
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(shape, dtype=np.float32)
    noise = filter_slices(white, spacing[-2:], lambda f: np.sqrt(f) * w(f), pad=0, chunk=chunk)
    scale = float(np.std(noise[:, shape[1] // 4: 3 * shape[1] // 4, shape[2] // 4: 3 * shape[2] // 4]))
    return noise / np.float32(max(scale, 1e-12))


def std_map(hu: np.ndarray, spacing, sigma_tissue: float, air_to_tissue: Optional[float]) -> np.ndarray:
    """Per-voxel noise std: ``sigma_tissue`` in the body, times the air ratio outside, blended."""
    ratio = air_to_tissue if air_to_tissue and 0.05 < air_to_tissue < 1.5 else TYPICAL_AIR_TO_TISSUE
    body = body_mask(hu).astype(np.float32)
    pixel = math.sqrt(spacing[1] * spacing[2])
    body = ndi.gaussian_filter(body, (0, BLEND_MM / pixel, BLEND_MM / pixel))
    return (np.float32(sigma_tissue) * (np.float32(ratio) + (1 - np.float32(ratio)) * body)).astype(np.float32)


def insert_noise(hu: np.ndarray, spacing, kernel, sigma_tissue: float, air_to_tissue: Optional[float] = None,
                 seed: int = 0) -> np.ndarray:
    """``hu`` plus FBP-like noise of ``kernel``'s texture with std ``sigma_tissue`` in soft tissue.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU (not modified).
    spacing : sequence of float
        ``(z, y, x)`` mm.
    kernel : str or Transfer
        Texture of the added noise (the target's transfer).
    sigma_tissue : float
        Std (HU) to add inside the body.
    air_to_tissue : float, optional
        Noise outside the body relative to inside (default 0.5).
    seed : int

    Returns
    -------
    np.ndarray
        float32 ``[z, y, x]``.
    """
    noise = shaped_noise(hu.shape, spacing, kernel, seed)
    noise *= std_map(hu, spacing, sigma_tissue, air_to_tissue)
    return (np.asarray(hu, np.float32) + noise).astype(np.float32)


#: Add noise only when the output is this much quieter than the target (relative std).
INSERT_BELOW = 0.9
#: Warn when the ``target`` texture's output is this much noisier than the target (relative std).
WARN_ABOVE = 1.15
NOISIER_THAN_TARGET = "OUTPUT_NOISIER_THAN_TARGET"


def texture_step(state, plan, seed: int = 0) -> None:
    """``target`` texture: top the output's noise up to the target's std with the target's texture."""
    from ..signature.measure import measure_noise_hu

    want = plan.target_signature.noise_hu
    if plan.texture != "target" or want is None:
        return
    if want <= 0.0:  # a noise-free source carried to the target at its own dose stays noise-free
        state.record("noise_insertion", False, {"target_noise_hu": want}, "the target's noise is 0 HU: none is added")
        return
    have = measure_noise_hu(state.hu, state.spacing, plan.target_signature.transfer)
    if have is None:
        state.record("noise_insertion", False, {"target_noise_hu": want},
                     "the output's noise cannot be measured, so none is added")
        return
    if have >= INSERT_BELOW * want:
        state.record("noise_insertion", False, {"noise_hu": have, "target_noise_hu": want},
                     "the output is already as noisy as the target")
        if have > WARN_ABOVE * want:
            state.warnings.append({
                "code": NOISIER_THAN_TARGET,
                "message": (f"The output's noise ({have:.1f} HU in soft tissue) is {100 * (have / want - 1):.0f} % above "
                            f"the target protocol's ({want:.1f} HU): noise cannot be taken out in this step, so "
                            "noise-sensitive measures (emphysema index, texture features) will read as a noisier "
                            "scan; --texture clean removes more."),
            })
        return
    add = float(np.sqrt(max(want ** 2 - have ** 2, 0.0)))
    state.hu = insert_noise(state.hu, state.spacing, plan.target_signature.transfer, add,
                            plan.source_signature.air_to_tissue, seed=seed)
    state.noise_hu = want
    state.record("noise_insertion", True, {"added_hu": add, "measured_before_hu": have, "target_noise_hu": want},
                 "FBP-like noise with the target kernel's texture added to reach the target's noise")
