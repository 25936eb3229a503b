"""Frequency-decomposition normalization (after Gallardo-Estrella et al., Eur Radiol 2016).

Each axial slice is split into band-pass images by differences of Gaussians at doubling
scales, ``B_i = G_{s(i-1)} * I - G_{s(i)} * I`` (``s(0) = 0``), plus the low-pass
residual ``G_{s(last)} * I``. The standard deviation of each band inside the lungs (its
"energy") is measured and every band is rescaled to a reference energy; the residual,
which carries the mean HU, is kept. Because the bands are linear radial filters, the
rescaled sum is itself one radial filter, applied by FFT.

References come from a reference volume (its lungs), a dict of energies, or (in the
pipeline) the source converted to the target protocol by the physics model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError
from ._fft import filter_slices, pad_width, radial_frequency

DEFAULT_SIGMAS_MM = (0.5, 1.0, 2.0, 4.0, 8.0)
GAIN_RANGE = (0.02, 10.0)


@dataclass
class BandEnergies:
    """Per-band std inside a mask; ``std[i]`` belongs to the band between ``sigmas_mm[i-1]`` and ``sigmas_mm[i]``."""

    sigmas_mm: tuple
    std: tuple

    def to_dict(self) -> dict:
        return {"sigmas_mm": list(self.sigmas_mm), "std": [float(s) for s in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> "BandEnergies":
        try:
            return cls(tuple(float(s) for s in d["sigmas_mm"]), tuple(float(s) for s in d["std"]))
        except (KeyError, TypeError, ValueError):
            raise BadInputError(
                "Reference band energies must be a dict {'sigmas_mm': [...], 'std': [...]}."
            ) from None


def _gauss(f, sigma_mm):
    return np.exp(-2.0 * np.pi**2 * (sigma_mm**2) * f**2)


def band_transfer(sigmas_mm, i: int):
    """Radial transfer function of band ``i`` (``i == len(sigmas)`` is the low-pass residual)."""
    sig = (0.0,) + tuple(sigmas_mm)
    if i == len(sigmas_mm):
        return lambda f: _gauss(f, sig[-1])
    return lambda f: _gauss(f, sig[i]) - _gauss(f, sig[i + 1])


def lung_slices(mask: np.ndarray, max_slices: int | None) -> np.ndarray:
    """Indices of at most ``max_slices`` slices that contain mask voxels, evenly spread."""
    zs = np.flatnonzero(np.asarray(mask).reshape(mask.shape[0], -1).any(axis=1))
    if max_slices is None or len(zs) <= max_slices:
        return zs
    return zs[np.unique(np.linspace(0, len(zs) - 1, max_slices).round().astype(int))]


def band_energies(hu: np.ndarray, spacing, mask: np.ndarray, sigmas_mm=DEFAULT_SIGMAS_MM,
                  max_slices: int | None = 32, chunk: int = 8, progress=None) -> BandEnergies:
    """Std of each band-pass image over the voxels of ``mask``.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : tuple of float
        ``(z, y, x)`` mm.
    mask : np.ndarray of bool
        Voxels to measure (normally the lungs).
    sigmas_mm : sequence of float
        Increasing Gaussian scales (mm).
    max_slices : int or None
        Measure on at most this many mask slices, evenly spread (the energies are global
        statistics); None = all.
    """
    from scipy import fft as sfft

    hu = np.asarray(hu, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != hu.shape or not mask.any():
        raise BadInputError("Band energies need a non-empty mask (lungs) of the volume's shape.")
    nz, ny, nx = hu.shape
    pad = 16
    py, px = pad_width(ny, pad), pad_width(nx, pad)
    ly, lx = py // 2, px // 2
    shape = (ny + py, nx + px)
    f = radial_frequency(shape, spacing[-2:])
    transfers = [band_transfer(sigmas_mm, i)(f).astype(np.float32) for i in range(len(sigmas_mm))]
    s1 = np.zeros(len(sigmas_mm))
    s2 = np.zeros(len(sigmas_mm))
    n = 0
    zs = list(lung_slices(mask, max_slices))
    for k in range(0, len(zs), chunk):
        sel = zs[k:k + chunk]
        m = mask[sel]
        block = np.pad(hu[sel], ((0, 0), (ly, py - ly), (lx, px - lx)), mode="reflect")
        spec = sfft.rfft2(block, axes=(1, 2), workers=-1)
        for i, h in enumerate(transfers):
            b = sfft.irfft2(spec * h, s=shape, axes=(1, 2), workers=-1)[:, ly:ly + ny, lx:lx + nx][m]
            s1[i] += b.sum(dtype=np.float64)
            s2[i] += np.square(b, dtype=np.float64).sum()
        n += int(m.sum())
        if progress is not None:
            progress("band_energies", min(1.0, (k + len(sel)) / len(zs)))
    std = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))
    return BandEnergies(tuple(float(s) for s in sigmas_mm), tuple(float(s) for s in std))


def _solve_gains(hu, spacing, mask, sig, ref, gains0, max_sample_slices):
    """Gains whose output reaches the reference band energies despite the overlap of DoG bands.

    Band ``i`` of the output is ``sum_j g_j D_i D_j I`` (``D`` the band filters, the
    residual with gain 1), so its variance is the quadratic form ``g^T C_i g`` with
    ``C_i`` the covariance of the ``D_i D_j I`` over the lungs. The ``C_i`` are measured
    on a subsample of lung slices and the gains fitted by bounded least squares on the
    relative energy error.
    """
    from scipy import fft as sfft
    from scipy.optimize import least_squares

    zs = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    zs = zs[np.unique(np.linspace(0, len(zs) - 1, min(len(zs), max_sample_slices)).round().astype(int))]
    nb = len(sig)
    ny, nx = hu.shape[1:]
    py, px = pad_width(ny, 16), pad_width(nx, 16)
    ly, lx = py // 2, px // 2
    shape = (ny + py, nx + px)
    f = radial_frequency(shape, spacing[-2:])
    parts = [band_transfer(sig, i)(f) for i in range(nb + 1)]
    block = np.pad(np.asarray(hu[zs], np.float32), ((0, 0), (ly, py - ly), (lx, px - lx)), mode="reflect")
    spec = sfft.rfft2(block, axes=(1, 2), workers=-1)
    m = mask[zs]
    covs = []
    for i in range(nb):
        ys = np.stack([sfft.irfft2(spec * (parts[i] * parts[j]), s=shape, axes=(1, 2), workers=-1)
                       [:, ly:ly + ny, lx:lx + nx][m] for j in range(nb + 1)])
        covs.append(np.cov(ys))

    def resid(g):
        gg = np.append(g, 1.0)
        return np.array([np.sqrt(max(gg @ c @ gg, 0.0)) for c in covs]) / np.maximum(ref, 1e-6) - 1.0

    lo, hi = GAIN_RANGE
    fit = least_squares(resid, np.clip(gains0, lo * 1.01, hi * 0.99), bounds=(lo, hi))
    return np.asarray(fit.x)


def normalize_bands(hu: np.ndarray, spacing, reference: BandEnergies | dict, mask: np.ndarray,
                    source: BandEnergies | None = None, refine: bool = True, max_sample_slices: int = 8,
                    chunk: int = 8, progress=None):
    """Rescale each band's energy inside ``mask`` to the reference's.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU (not modified).
    spacing : tuple of float
        ``(z, y, x)`` mm.
    reference : BandEnergies or dict
        Target energies; their ``sigmas_mm`` define the bands.
    mask : np.ndarray of bool
        Where the source energies are measured (lungs).
    source : BandEnergies, optional
        Precomputed source energies (same sigmas).
    refine : bool
        Solve for the gains that reach the reference energies given the bands' overlap
        (:func:`_solve_gains`); False gives the plain one-shot ratio of the paper.
    max_sample_slices : int
        Lung slices the refinement measures on.

    Returns
    -------
    out : np.ndarray
        float32 ``[z, y, x]``.
    info : dict
        ``sigmas_mm``, ``source_std``, ``reference_std``, ``gains``.
    """
    if isinstance(reference, dict):
        reference = BandEnergies.from_dict(reference)
    sig = reference.sigmas_mm
    if list(sig) != sorted(sig) or min(sig) <= 0:
        raise BadInputError("Band scales (sigmas_mm) must be positive and increasing.")
    if source is None:
        source = band_energies(hu, spacing, mask, sig, chunk=chunk)
    ref = np.asarray(reference.std)
    gains = np.clip(ref / np.maximum(np.asarray(source.std), 1e-6), *GAIN_RANGE)
    parts = [band_transfer(sig, i) for i in range(len(sig) + 1)]

    def make_transfer(g):
        def transfer(f):
            h = parts[-1](f)
            for gi, p in zip(g, parts[:-1]):
                h = h + gi * p(f)
            return h
        return transfer

    if refine:
        gains = _solve_gains(hu, spacing, mask, sig, ref, gains, max_sample_slices)
    transfer = make_transfer(gains)

    out = filter_slices(hu, spacing[-2:], transfer, chunk=chunk, progress=progress, stage="frequency_decomposition")
    info = {
        "sigmas_mm": list(sig),
        "source_std": [float(s) for s in source.std],
        "reference_std": [float(s) for s in reference.std],
        "gains": [float(g) for g in gains],
    }
    return out, info


def _predicted_reference(state, plan, mask, options):
    """The target's band energies predicted by the physics chain (denoise + MTF ratio) on lung slices."""
    from .chain import run as run_chain  # noqa: F401  (same steps, in-plane only)
    from . import denoise, mtf_ratio
    from .state import ChainState

    zs = lung_slices(mask, 32)
    sub = ChainState(hu=state.hu[zs], spacing=state.spacing, transfer=state.transfer, noise_hu=state.noise_hu,
                     thickness=state.thickness)
    src, tgt = sub.transfer, plan.target_signature.transfer
    options = mtf_ratio.with_chain_prior(options, plan.texture)
    lam = mtf_ratio.step_lambda(sub.noise_hu, options)[0]
    post = (lambda x: mtf_ratio.convert_kernel(x, sub.spacing, src, tgt, lam=lam))
    denoise.denoise_step(sub, plan, post=post, options=options)
    mtf_ratio.kernel_step(sub, plan, options=options)
    return band_energies(sub.hu, sub.spacing, mask[zs])


def run(volume, plan, progress=None, reference=None, options: dict | None = None):
    """The ``frequency_decomposition`` method: lung band energies scaled to a reference.

    ``reference``: a reference volume (its lungs) or a dict of band energies; None
    predicts the target's energies from the source by the physics chain.
    """
    from ..volume import Volume
    from .masks import lung_mask
    from .state import finish, partial_warning, start

    options = options or {}
    state = start(volume, plan)
    mask = lung_mask(state.hu, state.spacing, full=options.get("full_lung_mask", False))
    if not mask.any():
        raise BadInputError("No lungs found in the volume; frequency-decomposition normalization measures "
                            "band energies inside the lungs.")
    if isinstance(reference, dict):
        ref, how = BandEnergies.from_dict(reference), "given band energies"
    elif isinstance(reference, Volume):
        ref_mask = lung_mask(reference.hu, reference.spacing)
        if not ref_mask.any():
            raise BadInputError("No lungs found in the reference volume; band energies are measured in the lungs.")
        ref, how = band_energies(reference.hu, reference.spacing, ref_mask), "reference volume's lungs"
    elif reference is None:
        ref, how = _predicted_reference(state, plan, mask, options), "predicted by the physics chain"
    else:
        raise BadInputError("The reference must be a Volume or a dict of band energies.")
    state.hu, info = normalize_bands(state.hu, state.spacing, ref, mask, progress=progress)
    state.record("frequency_decomposition", True, {**info, "reference": how, "lung_voxels": int(mask.sum())},
                 "band energies inside the lungs scaled to the reference")
    partial_warning(state, plan, "frequency_decomposition", ("kernel", "noise"))
    return finish(volume, state, plan, "frequency_decomposition")
