"""Kernel conversion by the ratio of kernel MTFs, ``H(f) = MTF_target(f) / MTF_source(f)``.

Both MTFs are :class:`~CTNormalizeLib.signature.Transfer` curves: the source's as
measured from its noise texture (or a kernel class's nominal curve, the same one the
simulator's FBP apodization uses), the target's nominal or measured on a reference scan. Where the ratio exceeds 1 (sharpening) the division
would amplify noise without bound where the source MTF is small, so there the filter is
Wiener-regularized: ``H = max(1, M_t M_s / (M_s^2 + lambda))`` with
``lambda = (noise_std / signal_scale)^2``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..signature.kernel_class import as_transfer
from ._fft import filter_slices

#: The structure contrast the Wiener prior assumes (HU) where the noise in the image is noise the output
#: keeps: the ``mtf_ratio`` method alone, and the chain's target texture (whose noise should become the
#: target's texture, so only a cap against blow-up is wanted). Not validated.
SIGNAL_SCALE_HU = 100.0
#: The prior of the chain's clean texture (denoise -> kernel step: the noise left is error to keep down).
#: Chosen on validation scans of our simulator by scripts/choose_wiener_signal.py (its candidates, figures
#: and rule are recorded in Resources/Methods/classical.json, validation.wiener_signal_hu): a denoiser
#: leaves more, and more structured, error than the noise it books, and fine structure has less contrast.
CLEAN_CHAIN_SIGNAL_SCALE_HU = 35.0
MIN_LAMBDA = 1e-3


def chain_signal_scale(texture: str) -> float:
    """The Wiener prior (HU) of the chain's kernel step for ``texture`` (read when called)."""
    return CLEAN_CHAIN_SIGNAL_SCALE_HU if texture == "clean" else SIGNAL_SCALE_HU


def with_chain_prior(options: dict | None, texture: str) -> dict:
    """``options`` with the chain's prior for ``texture`` as ``wiener_signal_hu`` (unless it sets one)."""
    return {"wiener_signal_hu": chain_signal_scale(texture), **(options or {})}


def step_lambda(noise_hu: float | None, options: dict | None) -> tuple[float, float | None]:
    """``(lambda, prior)`` of a kernel step: ``options["wiener_lambda"]`` where given (prior None), else from
    ``noise_hu`` and the prior ``options["wiener_signal_hu"]`` (default :data:`SIGNAL_SCALE_HU`)."""
    lam = (options or {}).get("wiener_lambda")
    if lam is not None:
        return lam, None
    prior = (options or {}).get("wiener_signal_hu")
    prior = SIGNAL_SCALE_HU if prior is None else float(prior)
    return wiener_lambda(noise_hu, prior), prior


def wiener_lambda(noise_std: float | None, signal_scale: float | None = None) -> float:
    """Regularization ``lambda`` from the image noise (HU std): ``(noise/signal_scale)^2``, at least 1e-3
    (``signal_scale`` default :data:`SIGNAL_SCALE_HU`, read when called)."""
    if signal_scale is None:
        signal_scale = SIGNAL_SCALE_HU
    if noise_std is None or not np.isfinite(noise_std):
        noise_std = 20.0
    return float(max(MIN_LAMBDA, (float(noise_std) / signal_scale) ** 2))


#: A conversion between a measured curve and the nominal curve of the class it reads as, which changes
#: contrast by more than this fraction below :data:`COARSE_BAND_C_PER_MM`, is a within-class harmonization
#: that moves the emphysema index (binned lung1 did 15 %, LAA 3.8 -> 7.0 %, while the kernel fit could take a
#: cusped roll-off, p < 2; an edge-enhanced kernel converted to its class's plain curve does 12-13 %).
WITHIN_CLASS_GAIN_LIMIT = 0.05
COARSE_BAND_C_PER_MM = 0.15


def _within_class_warning(plan, transfer, nyquist: float) -> Optional[dict]:
    """KERNEL_WITHIN_CLASS_GAIN when a measured source is converted to the nominal curve of its own class
    and that changes contrast at coarse scales by more than :data:`WITHIN_CLASS_GAIN_LIMIT`."""
    src, tgt = plan.source_signature, plan.target_signature
    if not src.transfer_measured or not src.kernel or src.kernel != tgt.kernel:
        return None
    f = np.linspace(0.0, min(COARSE_BAND_C_PER_MM, nyquist), 32)
    gain = float(np.max(np.abs(transfer(f) - 1.0)))
    if gain <= WITHIN_CLASS_GAIN_LIMIT:
        return None
    return {"code": "KERNEL_WITHIN_CLASS_GAIN",
            "message": f"The source reads as a {src.kernel} kernel, like the target, but its measured curve differs "
                       f"from the {tgt.kernel} class's nominal one: the conversion changes contrast by up to "
                       f"{100 * gain:.0f} % at coarse scales (below {COARSE_BAND_C_PER_MM:g} c/mm), which moves the "
                       f"emphysema index and texture features. To keep the source's kernel, give --source "
                       f"kernel={src.kernel} --kernel-from labels."}


#: The chain's kernel step amplifies no frequency more than this factor times the most any conversion
#: between the engine's kernel classes does there (:func:`class_gain_envelope`): a measured source transfer
#: far smoother than any clinical kernel (an in-plane crop without air, whose noise texture is read in
#: tissue, where anatomy adds low-frequency power) would otherwise ask for gains of ~9x at mid frequencies.
GAIN_ENVELOPE_MARGIN = 1.5


def class_gain_envelope(lam: float):
    """``f -> max over class pairs of H(f)``: the most a conversion between two kernel classes amplifies at f."""
    from ..protocols.kernels import KERNEL_CLASSES

    pairs = [mtf_ratio_transfer(a, b, lam) for i, a in enumerate(KERNEL_CLASSES) for b in KERNEL_CLASSES[i + 1:]]

    def envelope(f):
        return np.max([h(f) for h in pairs], axis=0)

    return envelope


def mtf_ratio_transfer(source_kernel, target_kernel, lam: float = 0.04):
    """The radial transfer function ``f -> H(f)`` (f in cycles/mm) converting source to target kernel.

    ``source_kernel``/``target_kernel`` are kernel classes, vendor names or
    :class:`~CTNormalizeLib.signature.Transfer` curves. ``H = M_t/M_s`` where that is
    <= 1, and ``max(1, M_t M_s/(M_s^2+lam))`` where the plain ratio would exceed 1, so H
    is continuous and never amplifies beyond what the Wiener estimate supports.
    """
    src, tgt = as_transfer(source_kernel), as_transfer(target_kernel)

    def transfer(f):
        ms = src(f)
        mt = tgt(f)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ms > 1e-12, mt / np.maximum(ms, 1e-12), 0.0)
        wiener = np.maximum(1.0, mt * ms / (ms * ms + lam))
        return np.where(ratio <= 1.0, ratio, np.minimum(ratio, wiener))

    return transfer


def convert_kernel(hu: np.ndarray, spacing, source_kernel, target_kernel,
                   noise_std: float | None = None, lam: float | None = None, chunk: int = 8,
                   progress=None) -> np.ndarray:
    """Convert the reconstruction kernel of a volume slice by slice.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU (not modified).
    spacing : tuple of float
        ``(z, y, x)`` mm; the in-plane pair sets the frequency axis.
    source_kernel, target_kernel : str or Transfer
        Kernel classes, vendor names or measured transfers.
    noise_std : float, optional
        Image noise (HU) for the Wiener term; ignored when ``lam`` is given.
    lam : float, optional
        Wiener regularization; default from ``noise_std`` (:func:`wiener_lambda`).
    chunk : int
        Slices per FFT batch.
    progress : callable, optional
        ``progress("mtf_ratio", fraction)``.

    Returns
    -------
    np.ndarray
        float32 ``[z, y, x]``.
    """
    if lam is None:
        lam = wiener_lambda(noise_std)
    transfer = mtf_ratio_transfer(source_kernel, target_kernel, lam)
    return filter_slices(hu, spacing[-2:], transfer, chunk=chunk, progress=progress, stage="mtf_ratio")


def kernel_step(state, plan, progress=None, options: dict | None = None) -> None:
    """The chain's kernel step: the measured source transfer -> the target's, on ``state``."""
    from ..signature.transfer import band_noise_factor
    from .state import same_transfer

    src, tgt = state.transfer, plan.target_signature.transfer
    nyq = plan.source_signature.nyquist
    if same_transfer(src, tgt, nyq):
        state.record("mtf_ratio", False, {"source": src.to_dict(), "target": tgt.to_dict()},
                     "the source already has the target's in-plane transfer")
        return
    lam, prior = step_lambda(state.noise_hu, options)
    plain, envelope = mtf_ratio_transfer(src, tgt, lam), class_gain_envelope(lam)

    def transfer(f):
        return np.minimum(plain(f), np.maximum(1.0, GAIN_ENVELOPE_MARGIN * envelope(f)))

    f = np.linspace(0.0, nyq, 256)
    capped = bool(np.any(plain(f) > transfer(f) + 1e-6))
    within = _within_class_warning(plan, transfer, nyq)
    if within:
        state.warnings.append(within)
    if capped:
        state.warnings.append({
            "code": "KERNEL_GAIN_CAPPED",
            "message": f"Converting the measured source kernel ({src.mtf50:.2f} c/mm MTF50) to the target's asks for up "
                       f"to {float(np.max(plain(f))):.1f}x at some frequencies, more than any conversion between "
                       "clinical kernel classes; the gain was capped. The source kernel reading may be wrong (e.g. a "
                       "crop without air around the body): give it with --source kernel=... if you know it."})
    state.hu = filter_slices(state.hu, state.spacing[-2:], transfer, progress=progress, stage="mtf_ratio")
    px = plan.source_signature.pixel_mm
    if state.noise_hu is not None:
        state.noise_hu *= band_noise_factor(tgt, px) / band_noise_factor(src, px)
    state.transfer = tgt
    state.record("mtf_ratio", True, {"source": src.to_dict(), "target": tgt.to_dict(), "wiener_lambda": lam,
                                     "wiener_signal_hu": prior,
                                     "noise_hu": state.noise_hu, "gain_capped": capped},
                 "per-slice 2D filter MTF_target/MTF_source (measured source transfer), Wiener-regularized "
                 "where it sharpens")


def run(volume, plan, progress=None, reference=None, options: dict | None = None):
    """The ``mtf_ratio`` method: the kernel step alone."""
    from .state import finish, partial_warning, start

    state = start(volume, plan)
    kernel_step(state, plan, progress, options=options)
    partial_warning(state, plan, "mtf_ratio", ("kernel",))
    return finish(volume, state, plan, "mtf_ratio")


def frontend_noise_factor(source_kernel, target_kernel, lam: float, pixel_mm: float, n: int = 128) -> float:
    """How the MTF-ratio filter changes FBP noise std: ``sqrt(sum |f| (H W_s)^2 / sum |f| W_s^2)``."""
    ws = as_transfer(source_kernel)
    h = mtf_ratio_transfer(source_kernel, target_kernel, lam)
    f = np.fft.fftfreq(n, d=pixel_mm)
    fr = np.hypot(*np.meshgrid(f, f))
    base = np.sum(fr * ws(fr) ** 2)
    return float(np.sqrt(np.sum(fr * (h(fr) * ws(fr)) ** 2) / max(base, 1e-12)))
