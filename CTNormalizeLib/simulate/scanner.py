"""Simulate a CT acquisition + reconstruction protocol from a high-quality volume.

Per fine slice of the input (treated as one detector row of the same width):

1. attenuation ``mu = mu_water (1 + HU/1000)`` (>= 0), parallel-beam forward projection;
2. expected counts ``N0 exp(-p)`` with ``N0`` set by the dose, the bin size and an
   automatic exposure control (AEC) that scales the tube current with the slice's
   water-equivalent diameter, so that full dose gives about the same centre noise for a
   small or a large patient (and the same noise as :func:`noise_reference`);
3. Poisson photon noise plus Gaussian electronic noise, floor at a fraction of a count, log;
4. the noisy log projections of neighbouring rows are combined with the slice-sensitivity
   profile of the requested thickness (z-interpolation in projection space, as helical
   scanners do), sampled at the protocol's z spacing;
5. filtered back-projection with the ramp filter times ``protocols.kernel_mtf(kernel, f)``.

Noise therefore falls as ``1/sqrt(dose)`` and ``1/sqrt(thickness)``, rises with sharper
kernels, has the streaky, attenuation-dependent texture of FBP, and neighbouring output
slices are correlated when the spacing is smaller than the thickness.

The input's own noise and blur (real CT) are kept; a simulated slice cannot be thinner
than the input's native thickness.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np

from ..errors import BadInputError
from ..imaging.progress import ProgressFn
from ..protocols import Protocol, kernel_class, kernel_mtf
from ..volume import Volume
from . import projector, slice_profile

SIMULATOR_VERSION = "1.0"


@dataclass(frozen=True)
class ScannerConfig:
    """Physical constants of the simulated scanner.

    Attributes
    ----------
    mu_water : float
        Linear attenuation of water, 1/mm (about 65 keV effective energy at 120 kVp).
    i0_ref : float
        Full-dose unattenuated photons in a 1 mm x 1 mm detector bin for one view of a
        1000-view half rotation, before AEC. Calibrated so that a full-dose, standard
        kernel, 1 mm scan has about 12 HU noise in water at the AEC reference size.
    electronic_std : float
        Electronic noise per bin, counts.
    count_floor : float
        Counts are floored here before the log (photon starvation gives streaks).
    aec_reference_wed : float
        Water-equivalent diameter (mm) at which AEC leaves the tube current unchanged.
    aec_strength : float
        0 = fixed tube current; 1 = current scaled by ``exp(mu_water (WED - ref))``,
        which keeps the noise at the centre of a round patient constant.
    views : int or None
        Views per 180 degrees (None = matched to the image size).
    """

    mu_water: float = 0.0195
    i0_ref: float = 6.9e5
    electronic_std: float = 6.0
    count_floor: float = 0.5
    aec_reference_wed: float = 250.0
    aec_strength: float = 1.0
    views: Optional[int] = None


DEFAULT_SCANNER = ScannerConfig()

#: HU below which a pixel is air for the water-equivalent diameter (outside the patient).
WED_AIR_HU = -980.0
#: Bounds of the tube-current modulation factor.
AEC_LIMITS = (1 / 50.0, 50.0)
#: Below this many expected photons a ray gets exact Poisson counts (above, one normal draw serves).
POISSON_BELOW = 100.0


@dataclass
class Projections:
    """Noise-free line integrals of every fine slice of a truth volume (reusable across protocols)."""

    sino: np.ndarray  # float32 [nz, views, n_det]
    geometry: projector.ParallelGeometry
    wed: np.ndarray  # water-equivalent diameter per slice (mm), z-smoothed
    shape: tuple
    spacing: tuple
    detector: ScannerConfig


def native_thickness(truth: Volume) -> float:
    """The input's own slice thickness: ``SliceThickness`` from meta if larger than the z spacing."""
    sz = float(truth.spacing[0])
    try:
        t = float(str(truth.meta.get("SliceThickness", "")).split("\\")[0])
    except ValueError:
        t = 0.0
    return max(sz, t if math.isfinite(t) else 0.0)


def _water_equivalent_diameter(hu: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """AAPM TG-220 water-equivalent diameter (mm) of each slice of ``[b, y, x]`` HU."""
    rel = np.clip(hu / 1000.0 + 1.0, 0.0, None)
    rel[hu < WED_AIR_HU] = 0.0  # air and noise outside the patient
    area = rel.reshape(rel.shape[0], -1).sum(axis=1) * dy * dx
    return 2.0 * np.sqrt(area / np.pi)


def _check_truth(truth: Volume):
    hu = truth.hu
    if hu.ndim != 3 or min(hu.shape) < 1 or hu.shape[1] < 8 or hu.shape[2] < 8:
        raise BadInputError(f"The simulator needs a 3D volume [z, y, x] with at least 8x8 pixels, got shape {hu.shape}.")
    if not all(s > 0 for s in truth.spacing):
        raise BadInputError(f"Voxel spacing must be positive, got {truth.spacing}.")


def _chunk(ny: int, nx: int) -> int:
    # About 1 Mpixel per chunk: well under a second per chunk, so SIGTERM cancels quickly.
    return max(1, 1_000_000 // (ny * nx))


def project_truth(truth: Volume, detector: ScannerConfig | None = None,
                  progress: Optional[ProgressFn] = None) -> Projections:
    """Forward-project every slice of ``truth`` once (share the result between protocols).

    Parameters
    ----------
    truth : Volume
        High-quality volume in HU.
    detector : ScannerConfig, optional
    progress : callable, optional
        ``progress("project", fraction)`` per chunk.
    """
    _check_truth(truth)
    det = detector or DEFAULT_SCANNER
    nz, ny, nx = truth.hu.shape
    _, dy, dx = truth.spacing
    geom = projector.ParallelGeometry(ny, nx, dy, dx, views=det.views)
    sino = np.empty((nz, geom.n_views, geom.n_det), np.float32)
    wed = np.empty(nz)
    def report(fraction):
        if progress is not None:
            progress("project", fraction)

    step = _chunk(ny, nx)
    for z0 in range(0, nz, step):
        hu = truth.hu[z0:z0 + step].astype(np.float32)
        mu = np.clip(det.mu_water * (1.0 + hu / 1000.0), 0.0, None)
        sino[z0:z0 + step] = projector.forward_project(mu, geom)
        wed[z0:z0 + step] = _water_equivalent_diameter(hu, dy, dx)
        report((z0 + len(hu)) / nz)
    return Projections(sino, geom, smoothed_wed(wed, float(truth.spacing[0])), truth.hu.shape, truth.spacing, det)


def smoothed_wed(wed: np.ndarray, z_spacing: float) -> np.ndarray:
    """Per-slice water-equivalent diameters smoothed along z as tube-current modulation follows them (sigma 5 mm)."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(wed, np.float64), sigma=max(5.0 / z_spacing, 1e-3), mode="nearest")


def truth_wed(truth: Volume) -> np.ndarray:
    """:func:`smoothed_wed` of every slice of ``truth`` (what the AEC of :func:`project_truth` sees)."""
    _, dy, dx = truth.spacing
    hu = np.asarray(truth.hu, np.float32)
    wed = np.concatenate([_water_equivalent_diameter(hu[z0:z0 + 64], dy, dx) for z0 in range(0, len(hu), 64)])
    return smoothed_wed(wed, float(truth.spacing[0]))


def complete_protocol(protocol: Protocol, truth: Volume, on_thin: str = "error") -> Protocol:
    """Fill the fields the simulator needs and check them against the input.

    Missing kernel -> ``standard``; missing dose -> 1; missing thickness -> the input's
    native thickness. A thickness below the native one raises :class:`BadInputError`
    (``on_thin="error"``) or is raised to it (``on_thin="clamp"``).
    """
    p = protocol if protocol is not None else Protocol()
    kernel = kernel_class(p.kernel) if p.kernel else "standard"
    dose = float(p.dose) if p.dose is not None else 1.0
    if not (dose > 0 and math.isfinite(dose)):
        raise BadInputError(f"Dose must be a positive fraction of full dose, got {p.dose!r}.")
    native = native_thickness(truth)
    thickness = float(p.thickness) if p.thickness is not None else native
    if thickness < native * (1 - 1e-3):
        if on_thin == "clamp":
            thickness = native
        else:
            raise BadInputError(
                f"Cannot simulate {thickness:.4g} mm slices from an input whose slices are {native:.4g} mm thick: "
                f"a simulated slice can only be as thin as the input's. Use a thinner input (phantoms are 0.5 mm) "
                f"or thickness >= {native:g}."
            )
    spacing = float(p.spacing) if p.spacing is not None else thickness
    if spacing <= 0:
        raise BadInputError(f"Slice spacing must be positive, got {spacing}.")
    return replace(p, kernel=kernel, dose=dose, thickness=thickness, spacing=spacing)


def simulate_scan(truth: Volume, protocol: Protocol, seed: int, progress: Optional[ProgressFn] = None,
                  detector: ScannerConfig | None = None, *, projections: Projections | None = None,
                  on_thin: str = "error", transfer=None, noise: bool = True) -> Volume:
    """Simulate acquiring ``truth`` with ``protocol``.

    Parameters
    ----------
    truth : Volume
        High-quality volume (phantom truth or real thin-slice CT) in HU.
    protocol : Protocol
        Kernel class, dose fraction, slice thickness (FWHM, mm) and optional z spacing
        (defaults to the thickness). Missing fields: see :func:`complete_protocol`.
    seed : int
        Noise seed. Same truth + protocol + seed gives identical output; another seed
        gives a replicate that differs only by noise.
    progress : callable, optional
        ``progress(stage, fraction)`` with stages ``project``, ``noise``, ``reconstruct``
        and the overall fraction, called once per chunk of slices.
    detector : ScannerConfig, optional
    projections : Projections, optional
        Output of :func:`project_truth` for this truth, to skip the forward projection.
    on_thin : {"error", "clamp"}
        What to do when the protocol's thickness is below the input's native thickness.
    transfer : callable, optional
        ``transfer(f) -> W`` (f in cycles/mm) replacing the kernel class's apodization:
        any reconstruction filter (domain randomization, :mod:`.randomized`).
    noise : bool
        False reconstructs the noise-free line integrals (the limit of a mean estimate).

    Returns
    -------
    Volume
        The scan on the truth's in-plane grid; along z the first slice is centred on the
        truth's first slice and slices follow at the protocol's z spacing. ``meta`` has
        Modality, ConvolutionKernel, SliceThickness, SpacingBetweenSlices and a
        ``simulation`` dict of the settings.
    """
    _check_truth(truth)
    det = detector or DEFAULT_SCANNER
    prot = complete_protocol(protocol, truth, on_thin=on_thin)
    if projections is None:
        projections = project_truth(truth, det, progress=_stage_fn(progress, "project", 0.0, 0.4))
        lo = 0.4
    else:
        same_geometry = (projections.detector.views, projections.detector.mu_water) == (det.views, det.mu_water)
        if projections.shape != truth.hu.shape or not same_geometry:
            raise BadInputError("The given projections were computed for another volume or scanner geometry.")
        lo = 0.0
    hu = _reconstruct(truth, prot, int(seed), projections, det,
                      _stage_fn(progress, "noise", lo, lo + 0.2 * (1 - lo)),
                      _stage_fn(progress, "reconstruct", lo + 0.2 * (1 - lo), 1.0), transfer=transfer, noise=noise)
    meta = {k: v for k, v in truth.meta.items()
            if k not in ("Exposure", "XRayTubeCurrent", "CTDIvol", "source_path", "simulation")}
    meta.update(
        Modality="CT",
        ConvolutionKernel=prot.kernel_name or prot.kernel,
        SliceThickness=f"{prot.thickness:g}",
        SpacingBetweenSlices=f"{prot.z_spacing:g}",
        simulation=simulation_settings(truth, prot, int(seed), projections),
    )
    spacing = (float(prot.z_spacing), float(truth.spacing[1]), float(truth.spacing[2]))
    return Volume(hu, spacing=spacing, origin=truth.origin, direction=truth.direction, meta=meta)


def _stage_fn(progress, stage, lo, hi):
    if progress is None:
        return None
    return lambda _s, f: progress(stage, lo + (hi - lo) * f)


def simulation_settings(truth: Volume, prot: Protocol, seed: int, projections: Projections) -> dict:
    """The settings recorded in a simulated scan's ``meta["simulation"]``."""
    g = projections.geometry
    return {
        "simulator_version": SIMULATOR_VERSION,
        "protocol": prot.spec(),
        "kernel": prot.kernel,
        "dose": prot.dose,
        "thickness_mm": prot.thickness,
        "z_spacing_mm": prot.z_spacing,
        "seed": seed,
        "geometry": "parallel",
        "views": g.n_views,
        "detector_bins": g.n_det,
        "detector_bin_mm": g.dt,
        "native_thickness_mm": native_thickness(truth),
        "truth_spacing": list(truth.spacing),
        "truth_shape": list(truth.hu.shape),
        "truth_source": truth.meta.get("source_path"),
        "scanner": asdict(projections.detector),
    }


def row_counts(projections: Projections, dose: float, det: ScannerConfig | None = None) -> np.ndarray:
    """Unattenuated counts per bin for each fine row (dose, bin size, views, AEC)."""
    det = det or projections.detector
    return counts_per_bin(projections.wed, dose, projections.geometry, float(projections.spacing[0]), det)


def counts_per_bin(wed: np.ndarray, dose: float, geometry: projector.ParallelGeometry, row_mm: float,
                   det: ScannerConfig) -> np.ndarray:
    """Unattenuated counts per detector bin of rows ``row_mm`` thick whose water-equivalent diameters are ``wed``."""
    aec = np.clip(np.exp(det.aec_strength * det.mu_water * (np.asarray(wed) - det.aec_reference_wed)), *AEC_LIMITS)
    return det.i0_ref * dose * aec * (geometry.dt * row_mm) * (1000.0 / geometry.n_views)


def _noisy_rows(projections: Projections, rows: np.ndarray, dose: float, seed: int,
                det: ScannerConfig | None = None) -> np.ndarray:
    """Noisy log projections of the fine rows ``rows`` (each row's noise depends only on seed and row)."""
    det = det or projections.detector
    n0 = row_counts(projections, dose, det)
    out = np.empty((len(rows),) + projections.sino.shape[1:], np.float32)
    for i, k in enumerate(rows):
        rng = np.random.default_rng([seed & 0xFFFFFFFF, int(k), 0x5C4])
        lam = n0[k] * np.exp(-projections.sino[k].astype(np.float64))
        # Poisson + electronic noise. Above 100 expected photons the Poisson law is Gaussian
        # to within its 0.1 skewness, so one normal draw serves both (twice as fast); the
        # photon-starved rays, which make the streaks, get exact Poisson counts.
        z = rng.standard_normal(lam.shape)
        counts = lam + np.sqrt(lam + det.electronic_std**2) * z
        low = lam < POISSON_BELOW
        if low.any():
            lam_low = lam[low]
            counts[low] = rng.poisson(lam_low) + det.electronic_std * z[low]
        np.maximum(counts, det.count_floor, out=counts)
        out[i] = -np.log(counts / n0[k])
    return out


def slab_weights(truth: Volume, prot: Protocol) -> tuple[np.ndarray, np.ndarray]:
    """The scan's slice centres (mm) and each slice's weights on the truth's fine rows ``[n_out, nz]``."""
    nz = truth.hu.shape[0]
    sz = float(truth.spacing[0])
    positions = slice_profile.output_positions(nz, sz, float(prot.z_spacing))
    return positions, slice_profile.ssp_weights(nz, sz, native_thickness(truth), float(prot.thickness), positions)


def _reconstruct(truth: Volume, prot: Protocol, seed: int, projections: Projections, det: ScannerConfig,
                 noise_progress, recon_progress, transfer=None, noise: bool = True) -> np.ndarray:
    nz, ny, nx = truth.hu.shape
    positions, weights = slab_weights(truth, prot)
    used = np.flatnonzero(weights.sum(axis=0) > 0)
    noisy = np.zeros(projections.sino.shape, np.float32)
    step = max(1, _chunk(ny, nx))
    for i in range(0, len(used), step):
        rows = used[i:i + step]
        noisy[rows] = _noisy_rows(projections, rows, prot.dose, seed, det) if noise else projections.sino[rows]
        if noise_progress:
            noise_progress("noise", (i + len(rows)) / len(used))
    g = projections.geometry
    freqs = projector.fbp_frequencies(g)
    window = (kernel_mtf(prot.kernel, freqs) if transfer is None else transfer(freqs)).astype(np.float32)
    out = np.empty((len(positions), ny, nx), np.float32)
    w32 = weights.astype(np.float32)
    for j0 in range(0, len(positions), step):
        wj = w32[j0:j0 + step]
        cols = np.flatnonzero(wj.sum(axis=0) > 0)
        sino = np.tensordot(wj[:, cols], noisy[cols], axes=(1, 0))
        mu = projector.fbp(sino, g, window)
        out[j0:j0 + len(wj)] = (mu / det.mu_water - 1.0) * 1000.0
        if recon_progress:
            recon_progress("reconstruct", (j0 + len(wj)) / len(positions))
    return out


def simulate_pair(truth: Volume, source: Protocol, target: Protocol, seed: int,
                  progress: Optional[ProgressFn] = None, detector: ScannerConfig | None = None,
                  on_thin: str = "error") -> tuple[Volume, Volume, Volume]:
    """A source scan, a target scan and a replicate of the target (independent noise).

    The forward projection is computed once and shared. Seeds are derived from ``seed``
    so that the three scans have independent noise.

    Returns
    -------
    (source_scan, target_scan, replicate_scan)
    """
    det = detector or DEFAULT_SCANNER
    proj = project_truth(truth, det, progress=_stage_fn(progress, "project", 0.0, 0.25))
    seeds = derive_seeds(seed, 3)
    out = []
    for i, (prot, s) in enumerate(zip((source, target, target), seeds)):
        lo = 0.25 + 0.25 * i
        out.append(simulate_scan(truth, prot, s, progress=_stage_fn(progress, "simulate", lo, lo + 0.25),
                                 detector=det, projections=proj, on_thin=on_thin))
    return tuple(out)


def derive_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent noise seeds derived from one seed."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(n)]
