"""Numeric encodings for FiLM conditioning: a protocol pair (v1/v2 models) or measured signatures (v3)."""

from __future__ import annotations

import math

import numpy as np

from ..protocols.kernels import KERNEL_CLASSES

#: Length of :func:`protocol_features` for one protocol.
PROTOCOL_FEATURES = len(KERNEL_CLASSES) + 3
#: Length of :func:`pair_features`.
PAIR_FEATURES = 2 * PROTOCOL_FEATURES + 2


def protocol_features(p) -> list[float]:
    """One protocol as numbers: one-hot kernel class, log2 dose, thickness/2, z spacing/2.

    ``Protocol.vector()`` gives dose and thickness linearly; the network sees log dose
    (noise scales as 1/sqrt(dose), so equal ratios should look alike) and thickness in
    units near 1. Missing fields take the reference values (full dose, 1 mm).
    """
    onehot = [1.0 if p.kernel == k else 0.0 for k in KERNEL_CLASSES]
    dose = float(p.dose) if p.dose else 1.0
    thick = float(p.ssp_fwhm) if p.thickness else 1.0
    zsp = float(p.z_spacing) if p.z_spacing else thick
    return onehot + [math.log2(dose), thick / 2.0, zsp / 2.0]


def pair_features(source, target) -> list[float]:
    """Source features, target features, then log2 of the dose and thickness ratios."""
    s, t = protocol_features(source), protocol_features(target)
    sd = float(source.dose or 1.0)
    td = float(target.dose or 1.0)
    st = float(source.ssp_fwhm or 1.0)
    tt = float(target.ssp_fwhm or 1.0)
    return s + t + [math.log2(td / sd), math.log2(tt / st)]


# -- signature conditioning (ctn-conditioned-v3 and later) ------------------------------------

#: Points, as fractions of the pixel Nyquist, where the source and target transfers are sampled.
TRANSFER_POINTS = (1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)
#: Length of :func:`signature_features`.
SIGNATURE_FEATURES = 2 + 2 * len(TRANSFER_POINTS) + 2
NOISE_UNIT_HU = 20.0


def signature_features(source_transfer, target_transfer, source_noise_hu, input_noise_hu, pixel_mm: float,
                       source_thickness: float, target_thickness: float) -> list[float]:
    """The measured source and the target as numbers for a signature-conditioned network.

    ``log2`` of the source's noise and of the noise in the network's input (after the
    front-end), in units of 20 HU; both transfers sampled at fixed fractions of the pixel
    Nyquist (what the convolution kernels see, whatever the pixel size); ``log2`` of the
    thickness ratio; the pixel size in mm.
    """
    f_nyq = 0.5 / float(pixel_mm)
    f = np.array([f_nyq * t for t in TRANSFER_POINTS])
    ns = math.log2(max(float(source_noise_hu or 0.0), 0.5) / NOISE_UNIT_HU)
    ni = math.log2(max(float(input_noise_hu or 0.0), 0.5) / NOISE_UNIT_HU)
    ws = [float(v) for v in source_transfer(f)]
    wt = [float(v) for v in target_transfer(f)]
    return [ns, ni] + ws + wt + [math.log2(float(target_thickness) / float(source_thickness)), float(pixel_mm)]


def plan_features(plan, frontend_lambda: float) -> list[float]:
    """:func:`signature_features` of a plan (the input noise through the fixed front-end)."""
    from ..classical.mtf_ratio import frontend_noise_factor

    s, t = plan.source_signature, plan.target_signature
    noise_in = None
    if s.noise_hu is not None:
        noise_in = s.noise_hu * frontend_noise_factor(s.transfer, t.transfer, frontend_lambda, s.pixel_mm)
    t_s = plan.source_ssp_mm
    return signature_features(s.transfer, t.transfer, s.noise_hu, noise_in, s.pixel_mm, t_s, t.thickness_mm)


# -- denoiser conditioning (ctn-denoise-v1) -----------------------------------------------------

#: Length of :func:`denoise_features`.
DENOISE_FEATURES = 1 + len(TRANSFER_POINTS)


def denoise_features(noise_hu: float, transfer, pixel_mm: float) -> list[float]:
    """The noise to remove as numbers: ``log2`` of its std in units of 20 HU, and the in-plane
    transfer (which shapes its power spectrum, ``|f| W(f)^2``) at fixed fractions of Nyquist.

    ``noise_hu`` is also the denoiser's strength knob: a larger value removes more.
    """
    f_nyq = 0.5 / float(pixel_mm)
    f = np.array([f_nyq * t for t in TRANSFER_POINTS])
    ns = math.log2(max(float(noise_hu or 0.0), 0.5) / NOISE_UNIT_HU)
    return [ns] + [float(v) for v in transfer(f)]
