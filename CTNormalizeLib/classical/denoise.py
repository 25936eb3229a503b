"""Dose normalization by denoising, with strength calibrated to a target noise level.

Quantum noise std scales as ``1/sqrt(dose)``, so raising a scan from dose ``d_s`` to
``d_t`` means lowering its noise std by ``sqrt(d_s/d_t)``. The denoiser's strength (the
non-local-means ``h``, or a Gaussian's sigma) is not an analytic function of the noise
it removes, so it is calibrated (:func:`calibrate_strength`) on a synthetic patch of pure noise
with the source kernel's texture and the measured noise level, optionally measured after
the kernel conversion that follows. Then every slice is denoised (2D NLM from
scikit-image, in threads: it releases the GIL). BM3D-class denoisers would do better but
are not in a well-kept, installed library here; NLM is.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from scipy import ndimage as ndi

from ..errors import BadInputError
from ..imaging.noise import robust_sigma
from .noise_estimate import estimate_noise_std

DENOISE_METHODS = ("auto", "nlm", "gaussian")
# "auto" is NLM. A Gaussian "fast path" for small reductions was measured and dropped: on
# training phantom seed 5 (standard kernel, dose 0.75 -> 1, L1 vs target: source 10.64,
# Gaussian 11.17, NLM 9.16) it was worse than doing nothing; it stays selectable.
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6


def expected_noise_std(noise_std: float, source_dose: float, target_dose: float) -> float:
    """Noise std at ``target_dose`` given ``noise_std`` at ``source_dose`` (std ~ 1/sqrt(dose))."""
    if not (source_dose and target_dose and source_dose > 0 and target_dose > 0):
        raise BadInputError("Dose normalization needs positive source and target dose fractions.")
    return float(noise_std) * float(np.sqrt(source_dose / target_dose))


def _threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _nlm(sl: np.ndarray, strength: float, sigma: float = 0.0) -> np.ndarray:
    """2D NLM with ``h = strength`` (HU); sigma 0 (scikit-image's sigma term averages everything at small h)."""
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(sl, h=strength, sigma=0.0, patch_size=NLM_PATCH_SIZE,
                            patch_distance=NLM_PATCH_DISTANCE, fast_mode=True, preserve_range=True).astype(np.float32)


def _gaussian(sl: np.ndarray, strength: float, sigma: float = 0.0) -> np.ndarray:
    return ndi.gaussian_filter(sl, strength).astype(np.float32)


_FILTERS = {"nlm": _nlm, "gaussian": _gaussian}


@dataclass(frozen=True)
class StackDenoiser:
    """A denoiser supplied by a higher layer (the learned one): ``fn(stack [n, H, W] HU, strength_hu) -> stack``.

    ``strength`` is the noise std (HU) it is told to remove; its best estimate of the clean
    image is at ``strength`` = the measured noise (``clean`` texture), and the calibration
    below finds a smaller one for a partial reduction (``target`` texture) as for NLM's ``h``.
    """

    name: str
    fn: Callable
    chunk: int = 8
    halo: int = 0  # neighbouring slices ``fn`` looks at on each side (handed over with each chunk)
    #: ``region(stack) -> weight`` in [0, 1] (the stack's shape, or one that broadcasts to it): where ``fn``
    #: changes the image (e.g. the body); a blend with NLM stays inside it, so air the network keeps is kept
    region: Optional[Callable] = None
    #: inputs ``fn`` averages the network over (test-time flips; recorded in the step's parameters)
    views: int = 1


def stack_runner(method):
    """``run(stack, strength) -> stack`` for a method name or a :class:`StackDenoiser`."""
    if isinstance(method, StackDenoiser):
        return lambda stack, s: np.asarray(method.fn(stack, float(s)), np.float32)
    filt = _FILTERS[method]
    return lambda stack, s: np.stack([filt(sl, s, 0.0) for sl in stack])


def _residual_std(x: np.ndarray, region: np.ndarray, window: int) -> float:
    """Robust (MAD) std of the high-pass residual ``x - local_mean(x)`` inside ``region``."""
    r = x - ndi.uniform_filter(x, (1, window, window), mode="nearest")
    return robust_sigma(r[region]) / float(np.sqrt(1.0 - 1.0 / window**2))


def _noise_patch(spacing, kernel, noise_std: float, n: int = 4, size: int = 160, seed: int = 0) -> np.ndarray:
    """Pure FBP-like noise (power ~ |f| MTF^2 of ``kernel``) whose residual std equals ``noise_std``."""
    from ..signature.kernel_class import as_transfer
    from ._fft import filter_slices

    w = as_transfer(kernel)
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((n, size, size)).astype(np.float32)
    patch = filter_slices(white, spacing[-2:], lambda f: np.sqrt(f) * w(f), pad=0)
    region, window = _whole(patch, spacing)
    return patch * np.float32(noise_std / _residual_std(patch, region, window))


def _whole(x, spacing):
    pix = float(np.sqrt(spacing[1] * spacing[2]))
    window = max(3, int(round(5.0 / pix)) | 1)
    m = np.zeros(x.shape, bool)
    m[:, window:-window, window:-window] = True
    return m, window


def calibrate_strength(spacing, kernel, method, noise_std, target_std, iterations=9, post=None):
    """Strength and blend weight that bring FBP-like noise from ``noise_std`` to ``target_std``.

    Calibrated on a synthetic patch of pure noise with the source kernel's texture and
    the measured noise level (the signature's soft-tissue std), not on the
    image: anatomy, lung texture and edges would read as noise, and the quieter,
    streakier air outside the body would set the wrong strength. So this sets the
    denoising of flat tissue, which is what "noise level" means. ``post`` (the kernel
    conversion that follows) is applied before measuring, so the reduction is met where
    the noise ends up.

    The strength is found by bisection in log-strength: the smallest one whose output
    reaches the target. NLM's noise-versus-``h`` curve is nearly a step (patches either
    all match or none do), so its output usually overshoots; a blend
    ``x + alpha (denoised - x)`` then sets the noise left continuously, with ``alpha``
    found by bisection too.

    Returns
    -------
    strength, alpha, measured_before, measured_after, wanted
    """
    sample = _noise_patch(spacing, kernel, noise_std)
    region, window = _whole(sample, spacing)

    def _m(x):
        return float(np.std((post(x) if post is not None else x)[region]))

    base = _m(sample)
    want = base * target_std / noise_std
    lo, hi = (0.2, 6.0) if method == "gaussian" else (0.05 * noise_std, 3.0 * noise_std)
    if isinstance(method, StackDenoiser):
        # a learned denoiser told more noise than was measured smooths real structure (bone, vessels)
        hi = float(noise_std)
    stack_run = stack_runner(method)
    run = lambda s: stack_run(sample, s)  # noqa: E731
    den_hi = run(hi)
    got = _m(den_hi)
    if got > want:
        return float(hi), 1.0, base, got, want
    for _ in range(iterations):
        mid = float(np.sqrt(lo * hi))
        den = run(mid)
        m = _m(den)
        if m > want:
            lo = mid
        else:
            hi, got, den_hi = mid, m, den
    a_lo, a_hi = 0.0, 1.0
    for _ in range(iterations if got < 0.9 * want else 0):
        mid = 0.5 * (a_lo + a_hi)
        m = _m(sample + mid * (den_hi - sample))
        if m > want:
            a_lo = mid
        else:
            a_hi, got = mid, m
    return float(hi), float(a_hi), base, got, want


def denoise_volume(hu: np.ndarray, spacing, target_std: float | None = None, reduction: float | None = None,
                   noise_std: float | None = None, method: str = "auto", strength: float | None = None,
                   alpha: float | None = None, kernel: str | None = None, post=None, progress=None):
    """Denoise (slice by slice, or stacks of slices for a :class:`StackDenoiser`) so the noise std falls from
    ``noise_std`` to ``target_std``.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU (not modified).
    spacing : tuple of float
        ``(z, y, x)`` mm.
    target_std : float, optional
        Wanted noise std (HU). Give this or ``reduction``.
    reduction : float, optional
        Wanted ``target_std / noise_std`` (e.g. ``sqrt(d_s/d_t)``).
    noise_std : float, optional
        Input noise std (HU); estimated when None.
    method : {"auto", "nlm", "gaussian"} or StackDenoiser
        ``auto``: NLM. ``gaussian`` is fast but blurs edges as much as noise. A
        :class:`StackDenoiser` (the learned denoiser) runs on stacks of slices.
    strength : float, optional
        Skip calibration: the NLM ``h`` (HU) or the Gaussian sigma (pixels).
    alpha : float, optional
        With ``strength``: blend weight of the denoised image (default 1).
    kernel : str or Transfer, optional
        Source kernel (class or measured transfer): the texture of the calibration noise
        (default standard).
    post : callable, optional
        Linear step that will follow (e.g. the kernel conversion): the calibration
        measures noise after it, so the noise *reduction* is met where it matters.
    progress : callable, optional
        ``progress("denoise", fraction)``.

    Returns
    -------
    out : np.ndarray
        float32 ``[z, y, x]``.
    info : dict
        ``method``, ``strength``, ``blend``, ``noise_std``, ``target_std`` and calibration figures.
    """
    if not isinstance(method, StackDenoiser) and method not in DENOISE_METHODS:
        raise BadInputError(f"Unknown denoising method {method!r}; use one of {', '.join(DENOISE_METHODS)}.")
    hu = np.asarray(hu, dtype=np.float32)
    if noise_std is None:
        noise_std = estimate_noise_std(hu, spacing)
    if target_std is None:
        if reduction is None:
            raise BadInputError("Denoising needs a target noise std or a reduction factor.")
        target_std = float(noise_std) * float(reduction)
    ratio = float(target_std) / max(float(noise_std), 1e-6)
    info = {"noise_std": float(noise_std), "target_std": float(target_std), "ratio": ratio}
    if ratio >= 1.0:
        info.update(method="none", note="target noise is not below the input noise; nothing to remove")
        return hu.copy(), info
    if method == "auto":
        method = "nlm"
    info["method"] = method.name if isinstance(method, StackDenoiser) else method
    if isinstance(method, StackDenoiser):
        info["flips"] = int(method.views)
    if strength is None:
        strength, alpha, base, reached, want = calibrate_strength(spacing, kernel or "standard", method, float(noise_std),
                                                          float(target_std), post=post)
        info["calibration"] = {"measured_before": base, "measured_after": reached, "wanted": want}
    elif alpha is None:
        alpha = 1.0
    info["strength"] = float(strength)
    info["blend"] = float(alpha)
    out = np.empty_like(hu)
    nz = hu.shape[0]
    a = np.float32(alpha)

    def blend(d, x):
        return d if alpha >= 1.0 else x + a * (d - x)

    if isinstance(method, StackDenoiser):
        run = stack_runner(method)
        for z0 in range(0, nz, method.chunk):
            z1 = min(nz, z0 + method.chunk)
            za, zb = max(0, z0 - method.halo), min(nz, z1 + method.halo)
            out[z0:z1] = blend(run(hu[za:zb], strength)[z0 - za:z1 - za], hu[z0:z1])
            if progress is not None:
                progress("denoise", z1 / nz)
        return out, info
    filt = _FILTERS[method]

    def work(z):
        out[z] = blend(filt(hu[z], float(strength), 0.0), hu[z])

    chunk = 4 * _threads()
    with ThreadPoolExecutor(_threads()) as pool:
        for z0 in range(0, nz, chunk):
            list(pool.map(work, range(z0, min(nz, z0 + chunk))))
            if progress is not None:
                progress("denoise", min(nz, z0 + chunk) / nz)
    return out, info


#: ``clean`` texture: the calibrated denoiser leaves this fraction of the noise (at the
#: level it has after the kernel step). Chosen on training phantoms 21 and 22 (seeds < 1000),
#: mean gap closed in L1 for sharp/25 % -> smooth/full and standard/10 % -> standard/full:
#: 0.05: 0.78 / 0.35, 0.10: 0.78 / 0.80, **0.15: 0.98 / 0.80**, 0.25: 0.98 / 0.70,
#: 0.35: 0.97 / 0.61, 0.5: 0.96 / 0.49 (below 0.15 NLM's strength saturates and blurs).
CLEAN_RESIDUAL = 0.15
#: Below this relative reduction denoising is not worth its blur.
MIN_REDUCTION = 0.05


#: Pixels around the blend's region that NLM also sees: beyond its patch reach (distance + half a
#: patch), so inside the region the cropped NLM gives what NLM on whole slices gives.
NLM_CROP_MARGIN = NLM_PATCH_DISTANCE + NLM_PATCH_SIZE // 2 + 8


def _region_parts(method: StackDenoiser, hu: np.ndarray, chunk: int = 16) -> list:
    """``method.region`` chunk by chunk, each as ``(z0, y0, x0, weights)`` cut to its non-zero box."""
    parts = []
    for z0 in range(0, hu.shape[0], chunk):
        part = hu[z0:z0 + chunk]
        r = np.broadcast_to(np.asarray(method.region(part), np.float32), part.shape)
        ys, xs = np.nonzero(r.any(axis=0))
        if ys.size:
            y0, x0 = int(ys.min()), int(xs.min())
            parts.append((z0, y0, x0, np.ascontiguousarray(r[:, y0:int(ys.max()) + 1, x0:int(xs.max()) + 1])))
    return parts


def _blend_with_nlm(state, out, method, weight, sigma, residual, post, progress, calibration=None):
    """``out + weight * region * (NLM - out)``: the learned denoiser's output averaged with calibrated NLM's.

    ``calibration``: NLM's ``(strength, alpha)`` for this residual when already found (a per-scan choice
    calibrated every candidate), else it is calibrated here.

    Without a region, everywhere. With one (the body), NLM runs only on the box around it (plus
    :data:`NLM_CROP_MARGIN`): the air the network keeps stays as it was, and NLM's time goes to
    the body as the network's does.
    """
    w = np.float32(weight)
    _, h, wd = state.hu.shape
    parts = None if method.region is None else _region_parts(method, state.hu)
    if parts is None:
        y0, y1, x0, x1 = 0, h, 0, wd
    elif not parts:
        if progress is not None:
            progress("denoise", 1.0)
        return out, {"nlm_weight": 0.0, "note": "the denoiser's region is empty: nothing to blend"}
    else:
        y0 = max(0, min(p[1] for p in parts) - NLM_CROP_MARGIN)
        x0 = max(0, min(p[2] for p in parts) - NLM_CROP_MARGIN)
        y1 = min(h, max(p[1] + p[3].shape[1] for p in parts) + NLM_CROP_MARGIN)
        x1 = min(wd, max(p[2] + p[3].shape[2] for p in parts) + NLM_CROP_MARGIN)
    t0 = time.perf_counter()
    strength, alpha = calibration or (None, None)
    nlm, ninfo = denoise_volume(state.hu[:, y0:y1, x0:x1], state.spacing, target_std=sigma * residual,
                                noise_std=sigma, method="nlm", strength=strength, alpha=alpha, kernel=state.transfer,
                                post=post, progress=progress)
    info = {"nlm_weight": weight, "nlm_strength": ninfo["strength"], "nlm_output_weight": ninfo["blend"],
            "nlm_seconds": round(time.perf_counter() - t0, 3)}
    if parts is None:
        return (1.0 - weight) * out + w * nlm, info
    for z0, py, px, r in parts:
        z1, py1, px1 = z0 + r.shape[0], py + r.shape[1], px + r.shape[2]
        here = out[z0:z1, py:py1, px:px1]
        here += w * r * (nlm[z0:z1, py - y0:py1 - y0, px - x0:px1 - x0] - here)
    return out, {**info, "nlm_box": [y0, y1, x0, x1]}


class ResidualChoiceUnavailable(Exception):
    """Raised by a residual chooser that cannot judge this scan (no body, non-finite voxels): the card's residual stays."""


def _residual_for_this_scan(state, plan, method, weight, sigma, post, options, card_residual):
    """The blend's NLM residual chosen for this scan by ``options["nlm_residual_chooser"]`` (handed down where
    the card's ``chain.nlm_residual_choice`` says so: :func:`.blend_risk.choose_residual`), as the report
    records it: the choice with ``card_residual`` (the fallback), or, where no choice could be made, the card's
    residual with ``kept_card_because``; None without a chooser."""
    chooser = options.get("nlm_residual_chooser")
    if chooser is None or method.region is None:
        return None

    def kept(why: str) -> dict:
        return {"residual": card_residual, "card_residual": card_residual,
                "kept_card_because": f"the card's residual kept: {why}"}

    if not plan.source_signature.noise_from_tissue:  # the estimate scales with the noise level it is told
        return kept("the source's noise was not measured in fat or muscle (no such region; mixed soft tissue or "
                    "air stood in), and the per-scan estimate depends on the noise level")
    try:
        return {**chooser(state, method, weight, sigma, post).as_dict(), "card_residual": card_residual}
    except ResidualChoiceUnavailable as exc:
        return kept(str(exc))


def denoise_step(state, plan, progress=None, post=None, options: dict | None = None) -> None:
    """The chain's noise step on ``state``: calibrated NLM down to the target's noise or to ``clean``.

    ``target`` texture: the noise after the kernel and thickness steps should equal the
    target's, so the reduction is ``sigma_target / sigma_predicted`` (measured after
    ``post``, the kernel conversion that follows). ``clean``: a fixed fraction
    (:data:`CLEAN_RESIDUAL`) of the noise is left, whatever the target's level; a learned
    denoiser (``options["denoise_method"]``, a :class:`StackDenoiser`) is told the whole
    measured noise instead, and with ``options["nlm_blend"] = w`` (clean texture only) its
    output is averaged with calibrated NLM's, ``(1 - w) net + w NLM``, where NLM leaves
    ``options["nlm_blend_residual"]`` of the noise (default :data:`CLEAN_RESIDUAL`, the clean chain's),
    or, with ``options["nlm_residual_chooser"]``, the residual it picks for this scan (:mod:`.blend_risk`).
    """
    from .state import predicted_noise

    options = options or {}
    sigma = state.noise_hu
    if sigma is None:
        state.record("denoise", False, {}, "source noise not measurable")
        return
    if sigma <= 0.0:
        state.record("denoise", False, {}, "no noise measured in the source")
        return
    method = options.get("denoise_method", "auto")
    strength = options.get("denoise_strength")
    learned = isinstance(method, StackDenoiser)
    if plan.texture == "clean" and learned:
        # a learned denoiser's best estimate of the clean image: told the whole measured noise. What
        # it leaves is unknown; CLEAN_RESIDUAL is booked for the steps after it (the sharpening limit)
        ratio, strength = CLEAN_RESIDUAL, float(sigma) if strength is None else strength
        why = f"clean texture: {method.name} told the measured noise {sigma:.1f} HU"
    elif plan.texture == "clean":
        ratio = float(options.get("clean_residual", CLEAN_RESIDUAL))
        why = f"clean texture: leave {ratio:.0%} of the noise"
    else:
        pred, want = predicted_noise(plan, sigma, options.get("z_restore_lambda")), plan.target_signature.noise_hu
        if pred is None or want is None:
            state.record("denoise", False, {}, "target noise unknown")
            return
        ratio = want / pred
        why = f"target texture: noise {pred:.1f} -> {want:.1f} HU after the kernel and thickness steps"
    if ratio >= 1.0 - MIN_REDUCTION:
        state.record("denoise", False, {"wanted_noise_fraction": ratio}, "the noise is already at or below the target's")
        return
    weight = float(options.get("nlm_blend", 0.0)) if learned and plan.texture == "clean" else 0.0
    part = (lambda st, f: progress(st, (1.0 - 0.5 * (weight > 0)) * f)) if progress is not None else None  # noqa: E731
    out, info = denoise_volume(state.hu, state.spacing, target_std=sigma * ratio, noise_std=sigma,
                               method=method, strength=strength,
                               kernel=state.transfer, post=post, progress=part)
    if weight > 0:
        # Two denoisers that err differently: their average errs less than either (the weight is
        # the package's, chosen on validation scans; see scripts/choose_nlm_blend.py).
        rest = (lambda st, f: progress(st, 0.5 + 0.5 * f)) if progress is not None else None  # noqa: E731
        residual = float(options.get("nlm_blend_residual", CLEAN_RESIDUAL))
        choice = _residual_for_this_scan(state, plan, method, weight, sigma, post, options, residual)
        chosen, calibration = "", None
        if choice is not None and "kept_card_because" in choice:
            chosen = f"; {choice['kept_card_because']}"
        elif choice is not None:
            cal = choice["nlm_calibration"]  # None: the blend calibrates NLM itself
            residual, calibration = choice["residual"], (cal["strength"], cal["nlm_output_weight"]) if cal else None
            chosen = (f", chosen for this scan among {'/'.join(f'{r:.0%}' for r in choice['candidates'])} "
                      f"by Stein's unbiased risk estimate; the card's {choice['card_residual']:.0%} otherwise")
        out, binfo = _blend_with_nlm(state, out, method, weight, sigma, residual, post, rest, calibration)
        info["nlm_blend"] = {**binfo, "nlm_residual": residual,
                             **({"residual_choice": choice} if choice is not None else {})}
        if binfo["nlm_weight"] > 0:
            why += (f"; averaged with calibrated NLM (weight {weight:g}; NLM alone leaves {residual:.0%} of the "
                    f"noise{chosen})")
    cal = info.get("calibration") or {}
    if learned and cal and cal["measured_after"] > 1.1 * cal["wanted"]:
        why += (f"; at the measured noise the network leaves {cal['measured_after']:.1f} HU of calibration noise, "
                f"above the wanted {cal['wanted']:.1f} HU (it is never told more noise than measured)")
    state.hu = out.astype(np.float32, copy=False)
    state.noise_hu = sigma * ratio
    state.record("denoise", True, _step_parameters(ratio, info),
                 f"{why}; {info.get('method')} strength {info.get('strength', 0):.3g} HU")


def _step_parameters(ratio: float, info: dict) -> dict:
    """The noise step's parameters in the run report, named for a reader (``denoise_volume``'s ``ratio`` and
    ``blend`` read as contradictions beside the NLM blend's weight and residual).

    ``noise_left_fraction``: the fraction of the measured noise the step leaves (for a learned denoiser on the
    clean texture, the fraction booked for the steps after it: the network is told the whole noise);
    ``output_weight``: the denoiser's output against the input (1: the output alone); ``nlm_blend`` (learned,
    clean texture): ``nlm_weight`` of calibrated NLM in the average with the network, NLM leaving
    ``nlm_residual`` of the noise, ``nlm_output_weight`` NLM's own output against its input.
    """
    rest = {k: v for k, v in info.items() if k not in ("ratio", "blend")}
    return {"noise_left_fraction": ratio, **rest, "output_weight": info.get("blend")}


def run(volume, plan, progress=None, reference=None, options: dict | None = None):
    """The ``denoise`` method: the noise step alone (no kernel or thickness change)."""
    from .state import finish, partial_warning, start

    state = start(volume, plan)
    denoise_step(state, plan, progress, options=options)
    partial_warning(state, plan, "denoise", ("noise",))
    return finish(volume, state, plan, "denoise")
