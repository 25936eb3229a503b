"""The independent scanner: slice profile, radon projection, compound-Poisson noise, iradon FBP.

A truth volume (HU, any z spacing, square in-plane grid) becomes a scan in four steps:

1. **Slice profile** (rect or triangle, FWHM = slice thickness) applied to the attenuation
   map along z: output slice ``k`` is centred on the truth's first slice plus
   ``k * thickness`` (contiguous slices), weights = the profile integrated over each truth
   voxel's z extent.
2. **Projection** with ``skimage.transform.radon`` (parallel beam, ``n_views`` over 180
   degrees, detector sample = pixel size).
3. **Noise** in the count domain: fixed tube current (no AEC), a bowtie-shaped flux
   across the detector, photons in proportion to detector area and dose; detected counts
   are Poisson, each detected photon adds a Gamma(k, 1/k) signal (energy-integrating
   detector, compound Poisson), plus Gaussian read noise; the signal is floored and logged.
4. **Reconstruction** with ``skimage.transform.iradon`` and the protocol's filter, linear
   interpolation.

None of this shares code with ``CTNormalizeLib.simulate`` or ``protocols.kernels``: it is
the evaluation's second opinion on the physics, never used for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...errors import BadInputError
from ...volume import Volume
from .physics import HeldOutPhysics

REFERENCE_VIEWS = 400  # photons_full is quoted for this many views per rotation


def _profile_cdf(t: np.ndarray, width: float, profile: str) -> np.ndarray:
    """CDF of a unit-area slice profile of FWHM ``width`` centred at 0."""
    if profile == "rect":
        return np.clip(t / width + 0.5, 0.0, 1.0)
    u = np.clip(t / width, -1.0, 1.0)  # triangle with base 2 * width
    return np.where(u < 0, 0.5 * (1 + u) ** 2, 1 - 0.5 * (1 - u) ** 2)


def slice_weights(n_truth: int, dz: float, thickness: float, profile: str) -> np.ndarray:
    """Weights ``[n_out, n_truth]`` mapping truth slices onto the scan's slices.

    Output slice ``k`` is centred at ``k * thickness`` (truth slice 0 at 0); rows are
    normalized, so slices near the ends average only what the truth has.
    """
    if thickness < dz - 1e-6:
        raise BadInputError(f"A {thickness:.4g} mm slice is thinner than the truth's {dz:.4g} mm spacing.")
    extent = (n_truth - 1) * dz
    centres = np.arange(0.0, extent + 1e-6, thickness)
    z = np.arange(n_truth) * dz
    lo, hi = z - dz / 2, z + dz / 2
    w = _profile_cdf(hi[None, :] - centres[:, None], thickness, profile) \
        - _profile_cdf(lo[None, :] - centres[:, None], thickness, profile)
    return w / w.sum(axis=1, keepdims=True)


@dataclass
class Sinograms:
    """Noise-free line integrals of a truth volume at one slice profile (shared by protocols)."""

    sino: np.ndarray  # float32 [n_out, n_det, n_views], line integrals (dimensionless)
    theta: np.ndarray  # degrees
    weights: np.ndarray  # [n_out, n_truth]
    pixel_mm: float
    shape: tuple  # in-plane (n, n)
    truth: Volume
    thickness_mm: float
    slice_profile: str
    mu_water: float


def _check_truth(truth: Volume):
    if truth.hu.ndim != 3 or truth.hu.shape[1] != truth.hu.shape[2]:
        raise BadInputError(f"The independent scanner needs a square in-plane grid, got {truth.hu.shape}.")
    if abs(truth.spacing[1] - truth.spacing[2]) > 1e-6:
        raise BadInputError(f"The independent scanner needs square pixels, got {truth.spacing[1:]}.")


def project(truth: Volume, physics: HeldOutPhysics, progress=None) -> Sinograms:
    """Slice profile and radon projection of a truth volume (no noise).

    Only ``thickness_mm``, ``slice_profile``, ``n_views`` and ``mu_water`` of ``physics``
    matter here, so one projection serves every filter and dose.
    """
    from skimage.transform import radon

    _check_truth(truth)
    w = slice_weights(truth.shape[0], truth.spacing[0], physics.thickness_mm, physics.slice_profile)
    mu = np.clip(physics.mu_water * (1.0 + truth.hu.astype(np.float64) / 1000.0), 0.0, None)
    theta = (np.arange(physics.n_views) + 0.5) * 180.0 / physics.n_views
    d = truth.spacing[1]
    out = []
    for k in range(w.shape[0]):
        img = np.tensordot(w[k], mu, axes=1)
        out.append((radon(img, theta, circle=False) * d).astype(np.float32))
        if progress:
            progress("project", (k + 1) / w.shape[0])
    return Sinograms(np.stack(out), theta, w, d, truth.shape[1:], truth, physics.thickness_mm,
                     physics.slice_profile, physics.mu_water)


def incident_photons(n_det: int, pixel_mm: float, physics: HeldOutPhysics) -> np.ndarray:
    """Unattenuated photons per detector sample per view (bowtie across the detector)."""
    u = (np.arange(n_det) - n_det // 2) * pixel_mm
    r = np.clip(np.abs(u) / physics.bowtie_radius_mm, 0.0, 1.0)
    shape = np.exp(np.log(physics.bowtie_edge) * (1.0 - np.sqrt(1.0 - r**2)))
    per_view = physics.photons_full * physics.dose * pixel_mm * physics.thickness_mm * REFERENCE_VIEWS / physics.n_views
    return per_view * shape


def noisy_line_integrals(sino: np.ndarray, pixel_mm: float, physics: HeldOutPhysics,
                         rng: np.random.Generator) -> np.ndarray:
    """One noisy measurement of a ``[n_det, n_views]`` sinogram of line integrals."""
    i0 = incident_photons(sino.shape[0], pixel_mm, physics)[:, None]
    counts = rng.poisson(i0 * np.exp(-sino.astype(np.float64)))
    k = physics.swank_k
    signal = rng.gamma(counts * k, 1.0 / k) if np.isfinite(k) else counts.astype(np.float64)
    signal += rng.normal(0.0, physics.electronic_std, size=signal.shape)
    return np.log(i0 / np.maximum(signal, physics.count_floor))


def reconstruct(sino: np.ndarray, theta: np.ndarray, n: int, pixel_mm: float, filter_name: str) -> np.ndarray:
    """FBP of one ``[n_det, n_views]`` sinogram of line integrals into ``mu`` (1/mm), ``n x n``."""
    from skimage.transform import iradon

    return iradon(sino / pixel_mm, theta, output_size=n, filter_name=filter_name, interpolation="linear",
                  circle=False)


def scan(proj: Sinograms, physics: HeldOutPhysics, seed: Optional[int], noise: bool = True,
         progress=None) -> Volume:
    """Acquire and reconstruct a scan from shared projections.

    Parameters
    ----------
    proj : Sinograms
        From :func:`project` with the same thickness, profile, views and water attenuation.
    physics : HeldOutPhysics
    seed : int or None
        Noise seed (ignored without noise); one stream per slice, so results do not depend
        on how slices are chunked.
    noise : bool
        False gives the noise-free scan (same filter, same slice profile).

    Returns
    -------
    Volume
        HU ``[n_out, n, n]``, spacing ``(thickness, d, d)``, origin of the truth (the first
        slice is centred on the truth's first slice); meta holds only ``Modality`` and
        ``SliceThickness`` (a tagless scan as far as the kernel goes).
    """
    if (physics.thickness_mm, physics.slice_profile, physics.mu_water) != \
            (proj.thickness_mm, proj.slice_profile, proj.mu_water) or physics.n_views != len(proj.theta):
        raise BadInputError("These projections were made for another slice profile, view count or energy.")
    if noise and seed is None:
        raise BadInputError("A noisy scan needs a seed.")
    n, d = proj.shape[0], proj.pixel_mm
    out = np.empty((proj.sino.shape[0], n, n), np.float32)
    for k in range(proj.sino.shape[0]):
        s = proj.sino[k]
        if noise:
            s = noisy_line_integrals(s, d, physics, np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x1D5, k]))
        mu = reconstruct(s, proj.theta, n, d, physics.filter)
        out[k] = 1000.0 * (mu / physics.mu_water - 1.0)
        if progress:
            progress("reconstruct", (k + 1) / proj.sino.shape[0])
    t = proj.truth
    meta = {"Modality": "CT", "SliceThickness": f"{physics.thickness_mm:g}"}
    return Volume(out, (physics.thickness_mm, d, d), t.origin, t.direction, meta)


def truth_on_scan_grid(proj: Sinograms) -> Volume:
    """The truth averaged by the slice profile onto the scan's slices (no in-plane blur, no noise)."""
    t = proj.truth
    hu = np.tensordot(proj.weights, t.hu.astype(np.float64), axes=1).astype(np.float32)
    return Volume(hu, (proj.thickness_mm, *t.spacing[1:]), t.origin, t.direction, {"Modality": "CT"})


def mask_on_scan_grid(proj: Sinograms, mask: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A truth-grid mask on the scan's slices: voxels whose profile-weighted occupancy is >= 0.5."""
    if mask is None:
        return None
    return np.tensordot(proj.weights, np.asarray(mask, dtype=np.float64), axes=1) >= 0.5


def simulate(truth: Volume, physics: HeldOutPhysics, seed: Optional[int], noise: bool = True) -> Volume:
    """Project and scan a truth volume in one call (see :func:`project` and :func:`scan`)."""
    return scan(project(truth, physics), physics, seed, noise)


def simulate_set(truth: Volume, source: HeldOutPhysics, target: HeldOutPhysics, seed: int,
                 progress=None) -> dict:
    """Source scan, target scan, target replicate and noise-free target of one truth.

    Source and target may differ in slice thickness, profile, views and energy: each is then
    projected on its own (a thin scan and a thick one of the same patient, slice 0 of both
    centred on the truth's first slice); the replicate is the target protocol with
    independent noise.

    Returns
    -------
    dict
        ``source`` (on the source's slices), ``target``, ``replicate``, ``target_noise_free``
        (Volumes on the target's slices), ``truth`` (profile-averaged truth on the target's
        slices) and ``projections`` (the target's).
    """
    key = lambda p: (p.thickness_mm, p.slice_profile, p.n_views, p.mu_water)  # noqa: E731
    shared = key(source) == key(target)
    k = 0 if shared else 1  # the source's own projection, when it has one, is the second of the parts
    parts = 5 + k
    step = (lambda name, a: (lambda st, f: progress(name, (a + f) / parts))) if progress else (lambda name, a: None)
    proj = project(truth, target, step("project", 0))
    src_proj = proj if shared else project(truth, source, step("project source", 1))
    seeds = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x4E1D]).generate_state(3)
    return {
        "source": scan(src_proj, source, int(seeds[0]), progress=step("source", 1 + k)),
        "target": scan(proj, target, int(seeds[1]), progress=step("target", 2 + k)),
        "replicate": scan(proj, target, int(seeds[2]), progress=step("replicate", 3 + k)),
        "target_noise_free": scan(proj, target, None, noise=False, progress=step("noise-free", 4 + k)),
        "truth": truth_on_scan_grid(proj),
        "projections": proj,
    }
