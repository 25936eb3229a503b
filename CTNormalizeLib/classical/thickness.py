"""Slice-thickness change through the slice-sensitivity profile (SSP), along z only.

The SSP is modelled as a Gaussian whose FWHM is the slice thickness. Thin -> thick is
exact for that model: Gaussians compose, so convolving with a Gaussian of
``sigma^2 = sigma_t^2 - sigma_s^2`` turns the source profile into the target one, then
the result is sampled on the target grid. Thick -> thin cannot restore the detail the
thick profile removed: it is interpolation (cubic spline) onto the finer grid, and the
result carries a warning saying so.

Implementation: scipy. The z operation (Gaussian with ``mode="nearest"``, then a
cubic-spline evaluation at the target positions) is linear, so it is built once as an
``n_out x n_in`` matrix (``scipy.ndimage.gaussian_filter1d`` applied to the identity, then
the spline weights of :func:`CTNormalizeLib.imaging.zgrid.interpolation_weights`) and
applied by matrix products over chunks of rows, which keeps memory flat and lets
progress/cancellation run per chunk.

z grid (docs/DEVELOPING.md): the first output slice is centred on the first input slice,
slices follow at the target spacing, ``n_out = floor((n_in - 1) * s_in / s_out) + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInputError
from ..imaging.zgrid import interpolation_weights, target_slice_count

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
THICK_TO_THIN = "THICK_TO_THIN_INTERPOLATION"


def thick_to_thin_warning(source_mm: float, target_mm: float) -> dict:
    """The warning every thick -> thin output carries, whichever method made it."""
    return {"code": THICK_TO_THIN,
            "message": (f"Thick->thin ({source_mm:.4g} mm -> {target_mm:.4g} mm) is interpolation: fine detail "
                        "along z that the thicker slices averaged away is not recovered.")}


@dataclass
class ZProfileResult:
    """Result of :func:`change_thickness`: voxels, new z spacing, what was done, warnings."""

    hu: np.ndarray
    z_spacing: float
    info: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def z_restore_operator(n_in: int, s_in: float, src_thickness: float, tgt_thickness: float,
                       lam: float, pad: int = 8) -> np.ndarray:
    """``n_in x n_in`` Wiener filter along z toward a thinner Gaussian profile (float64).

    ``H(f) = clip(M_t M_s / (M_s^2 + lam), 1, M_t / M_s)`` with ``M`` the Gaussian SSP
    MTFs, on the source grid (so only frequencies below the source's Nyquist are
    touched), with reflect padding against wrap-around.
    """
    eye = np.pad(np.eye(n_in), ((pad, pad), (0, 0)), mode="reflect") if n_in > pad else np.eye(n_in)
    p = pad if n_in > pad else 0
    f = np.fft.rfftfreq(eye.shape[0], d=s_in)
    ms = np.exp(-2.0 * np.pi**2 * (src_thickness * FWHM_TO_SIGMA) ** 2 * f**2)
    mt = np.exp(-2.0 * np.pi**2 * (tgt_thickness * FWHM_TO_SIGMA) ** 2 * f**2)
    h = np.clip(mt * ms / (ms**2 + lam), 1.0, mt / ms)
    out = np.fft.irfft(np.fft.rfft(eye, axis=0) * h[:, None], n=eye.shape[0], axis=0)
    return out[p:p + n_in]


def z_operator(n_in: int, s_in: float, src_thickness: float, tgt_thickness: float, s_out: float,
               restore_lambda: float | None = None) -> np.ndarray:
    """The ``n_out x n_in`` matrix mapping source slices to target slices (float64)."""
    from scipy.ndimage import gaussian_filter1d

    eye = np.eye(n_in)
    var = (tgt_thickness * FWHM_TO_SIGMA) ** 2 - (src_thickness * FWHM_TO_SIGMA) ** 2
    if var > 1e-12:
        g = gaussian_filter1d(eye, np.sqrt(var) / s_in, axis=0, mode="nearest")
    elif var < -1e-12 and restore_lambda:
        g = z_restore_operator(n_in, s_in, src_thickness, tgt_thickness, restore_lambda)
    else:
        g = eye
    if n_in == 1:
        return g[:1]
    z_out = np.arange(target_slice_count(n_in, s_in, s_out)) * s_out
    return interpolation_weights(np.arange(n_in) * s_in, z_out, order=3) @ g


def _neighbour_slices(n_in: int, s_in: float, n_out: int, s_out: float) -> np.ndarray:
    """``[4, n_out]``: for each output slice (on :func:`z_operator`'s grid) the source slices around it,
    one more on each side: ``floor - 1, floor, ceil, ceil + 1`` of its position (clipped to the volume).

    The extra slice on each side leaves room for the partial deconvolution's restored contrast
    next to a thin structure (on a source slice, floor = ceil: the two neighbours bound it)."""
    z = np.arange(n_out) * s_out / s_in
    below, above = np.floor(z + 1e-6).astype(int), np.ceil(z - 1e-6).astype(int)
    return np.clip(np.stack([below - 1, below, above, above + 1]), 0, n_in - 1)


def change_thickness(hu: np.ndarray, spacing, source_thickness: float | None, target_thickness: float,
                     target_spacing: float | None = None, restore_lambda: float | None = None,
                     rows_per_chunk: int = 32, progress=None, limit_margin: float | None = None) -> ZProfileResult:
    """Change slice thickness (SSP FWHM) and z spacing.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU (not modified).
    spacing : tuple of float
        ``(z, y, x)`` mm.
    source_thickness : float or None
        Source SSP FWHM (mm); None -> the z spacing.
    target_thickness : float
        Target SSP FWHM (mm).
    target_spacing : float, optional
        Target z spacing (mm); default ``target_thickness``.
    restore_lambda : float, optional
        Thick -> thin only: Wiener regularization of a partial z deconvolution toward the
        thinner profile (:func:`z_restore_operator`) before the interpolation. It lifts
        frequencies the thick profile attenuated but kept (below the source's Nyquist);
        what the thick slices removed or aliased stays lost. None: interpolation only.
        See ``limit_margin`` for the ringing it can cause at sharp z edges.
    rows_per_chunk : int
        y rows per matrix product.
    limit_margin : float, optional
        When the z grid gets finer (thick -> thin, or a finer spacing): each output voxel is
        kept within the values of the source slices around it (:func:`_neighbour_slices`),
        widened by this many HU on each side, so the deconvolution and the spline cannot ring
        beyond them (values below air that read as emphysema). None: no limit (the chain's
        z step passes 3 sigma of its noise).
    progress : callable, optional
        ``progress("z_profile", fraction)``.

    Returns
    -------
    ZProfileResult
    """
    hu = np.asarray(hu, dtype=np.float32)
    s_in = float(spacing[0])
    t_s = float(source_thickness) if source_thickness else s_in
    if not target_thickness or target_thickness <= 0:
        raise BadInputError("Slice-thickness change needs a positive target thickness.")
    t_t = float(target_thickness)
    s_out = float(target_spacing) if target_spacing else t_t
    if s_in <= 0 or s_out <= 0:
        raise BadInputError("z spacings must be positive.")
    a = z_operator(hu.shape[0], s_in, t_s, t_t, s_out, restore_lambda).astype(np.float32)
    nz, ny, nx = hu.shape
    kind = "thin_to_thick" if t_t > t_s + 1e-6 else ("thick_to_thin" if t_t < t_s - 1e-6 else "same_thickness")
    limited = limit_margin is not None and (kind == "thick_to_thin" or s_out < s_in - 1e-6)
    near = _neighbour_slices(nz, s_in, a.shape[0], s_out) if limited else None
    clamped = 0
    out = np.empty((a.shape[0], ny, nx), dtype=np.float32)
    for y0 in range(0, ny, rows_per_chunk):
        y1 = min(ny, y0 + rows_per_chunk)
        part = (a @ hu[:, y0:y1, :].reshape(nz, -1)).reshape(a.shape[0], y1 - y0, nx)
        if limited:
            # The partial deconvolution and the cubic spline ring at sharp z edges (a 5 mm scan's
            # diaphragm, skin, clips): values far below air that read as emphysema. No output voxel
            # leaves the range of the source slices around it (plus the margin).
            lo = hu[near[0], y0:y1].copy()
            hi = lo.copy()
            for k in near[1:]:
                nb = hu[k, y0:y1]
                np.minimum(lo, nb, out=lo)
                np.maximum(hi, nb, out=hi)
            lo -= np.float32(limit_margin)
            hi += np.float32(limit_margin)
            clamped += int(np.count_nonzero((part < lo) | (part > hi)))
            np.clip(part, lo, hi, out=part)
        out[:, y0:y1, :] = part
        if progress is not None:
            progress("z_profile", y1 / ny)
    warnings = [thick_to_thin_warning(t_s, t_t)] if kind == "thick_to_thin" else []
    info = {
        "kind": kind,
        "source_thickness": t_s,
        "target_thickness": t_t,
        "source_spacing": s_in,
        "target_spacing": s_out,
        "extra_gaussian_sigma_mm": float(np.sqrt(max(0.0, (t_t * FWHM_TO_SIGMA) ** 2 - (t_s * FWHM_TO_SIGMA) ** 2))),
        "interpolation": "cubic spline" if nz >= 4 else "linear",
        "restore_lambda": restore_lambda if kind == "thick_to_thin" else None,
        "limited_to_neighbours_fraction": clamped / max(1, out.size) if limited else None,
        "limit_margin_hu": limit_margin if limited else None,
        "slices": [int(nz), int(out.shape[0])],
    }
    return ZProfileResult(out, s_out, info, warnings)


#: Wiener term of the partial z deconvolution in thick -> thin (tuned on training phantoms).
Z_RESTORE_LAMBDA = 0.03
#: Thick -> thin: how far (in noise sigmas) an output voxel may leave the range of the source slices around it.
LIMIT_SIGMAS = 3.0

def thick_to_thin_noise_gain(source_spacing: float, source_thickness: float, target_thickness: float,
                             target_spacing: float | None = None, restore_lambda: float = Z_RESTORE_LAMBDA,
                             n_slices: int = 48) -> float:
    """How thick -> thin (:func:`z_operator`) changes the noise std: the partial z deconvolution lifts it,
    the spline between source slices lowers it.

    The source's noise is modelled as white along z before its slice profile (a Gaussian of FWHM
    ``source_thickness``), so neighbouring slices are correlated as that profile's autocorrelation
    (``exp(-dz^2 / (4 sigma^2))``); the gain is the RMS over the output slices (away from the ends) of
    ``sqrt(diag(W C W^T))``. The same model gives thin -> thick's ``sqrt(t_s / t_t)`` (to 0.2 %).
    Measured on lung2 (5 mm -> 1 mm, classical chain): 1.16; this model 1.13.

    Parameters
    ----------
    source_spacing, source_thickness : float
        Source z spacing and slice thickness (SSP FWHM), mm.
    target_thickness : float
        Target thickness (mm), below the source's.
    target_spacing : float, optional
        Target z spacing (mm); default ``target_thickness``.
    restore_lambda : float
        The z step's deconvolution term (:data:`Z_RESTORE_LAMBDA`).
    n_slices : int
        Source slices of the operator the gain is read on.

    Returns
    -------
    float
        Output noise std / source noise std (1.0 when the target is not thinner).
    """
    if not target_thickness < source_thickness:
        return 1.0
    s_out = float(target_spacing or target_thickness)
    w = z_operator(n_slices, source_spacing, source_thickness, target_thickness, s_out, restore_lambda=restore_lambda)
    z = np.arange(n_slices) * float(source_spacing)
    sigma = float(source_thickness) * FWHM_TO_SIGMA
    cov = np.exp(-(z[:, None] - z[None, :]) ** 2 / (4.0 * sigma**2))
    m = w.shape[0]
    var = np.einsum("ij,jk,ik->i", w, cov, w)[m // 8: m - m // 8]
    return float(np.sqrt(np.mean(var)))


_NOTES = {"thin_to_thick": "slice profile modelled as a Gaussian whose FWHM is the thickness (as a helical scan's), "
                           "widened (exact for that model) and sampled on the target grid; for a target whose slices "
                           "are rectangular (axial scans) give profile=rect with its thickness, else the output averages "
                           "over more z than its scans and small low-attenuation areas (the emphysema index) read low",
          "thick_to_thin": "cubic-spline interpolation onto the finer grid after a Wiener-regularized partial z "
                           "deconvolution, kept within the neighbouring source slices' values (plus 3 sigma of the "
                           "noise); detail the thick slices removed is not recovered",
          "same_thickness": "resampled onto the target z spacing"}


#: output slices closer than this fraction of the source's spacing are interpolated between the source's
INTERPOLATED_SPACING = 0.8
NOISE_SHARED_ALONG_Z = "NOISE_SHARED_ALONG_Z"


def shared_noise_warning(plan) -> dict | None:
    """The ``target`` texture's warning where the z step interpolates slices between the source's, else None.

    The noise the chain keeps is the source's, carried through the interpolation: neighbouring output
    slices share it (correlation ~0.9 for 5 -> 1 mm, where a 1 mm scan's slices are nearly
    independent). Its level is the target's, so the emphysema index and in-plane features follow
    the target; 3D texture features read as a thicker scan. Removing that noise and inserting the
    target's instead was measured worse for the emphysema index (docs/ARCHITECTURE.md): denoising
    also removes the small low-attenuation areas the thick slices kept.
    """
    s, t = plan.source_signature.spacing_mm, plan.target_signature.spacing_mm
    if plan.texture != "target" or not (s and t and t < INTERPOLATED_SPACING * s):
        return None
    return {"code": NOISE_SHARED_ALONG_Z,
            "message": (f"Target texture, slices {s:.3g} mm apart -> {t:.3g} mm apart: the output's noise is the "
                        "source's, interpolated, "
                        "so neighbouring slices share it as in the thicker scan. The noise level is the target's "
                        "(emphysema index, in-plane texture); 3D texture features read as a thicker scan.")}


def z_step(state, plan, progress=None, options: dict | None = None) -> None:
    """The chain's slice-profile step on ``state``: source thickness/spacing -> the target's."""
    t_s, sp = state.thickness, state.spacing
    t_t, s_t = plan.target_signature.thickness_mm, plan.target_signature.spacing_mm
    if abs(t_t - t_s) <= 0.01 and abs(s_t - sp[0]) <= 0.01:
        state.record("z_profile", False, {"thickness": t_s, "spacing": sp[0]}, "same thickness and z spacing")
        return
    lam = (options or {}).get("z_restore_lambda", Z_RESTORE_LAMBDA)
    # ringing is limited to what the noise explains: 3 sigma of the noise the chain has at this point
    def usable(x):
        return x is not None and np.isfinite(x) and x > 0

    sigma = state.noise_hu if usable(state.noise_hu) else None
    if sigma is None and (t_t < t_s or s_t < sp[0]):
        from .noise_estimate import local_noise_std

        sigma = local_noise_std(state.hu)
    margin = LIMIT_SIGMAS * float(sigma) if usable(sigma) else 0.0
    r = change_thickness(state.hu, sp, t_s, t_t, s_t, progress=progress, restore_lambda=lam, limit_margin=margin)
    state.warnings.extend(r.warnings)
    if state.noise_hu is not None and t_t > t_s:
        state.noise_hu *= float(np.sqrt(t_s / t_t))
    elif state.noise_hu is not None and t_t < t_s:
        state.noise_hu *= thick_to_thin_noise_gain(sp[0], t_s, t_t, s_t, restore_lambda=lam)
    state.hu, state.spacing, state.thickness = r.hu, (r.z_spacing, sp[1], sp[2]), t_t
    state.record("z_profile", True, r.info, _NOTES[r.info["kind"]])
