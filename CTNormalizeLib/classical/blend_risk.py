"""Choosing, for one scan, how strong the NLM in a learned denoiser's blend is: Stein's unbiased risk estimate.

The clean texture of a learned denoiser averages the network with calibrated NLM,
``out = net + w * region * (NLM_r - net)``, where NLM leaves a fraction ``r`` of the noise
(:func:`.denoise.denoise_step`). The card fixes ``w`` and, by default, ``r`` per kind of pair,
chosen on validation scans of our own simulator; how much NLM should leave depends on the
scan's physics (a sharpening that follows amplifies what NLM leaves). With Gaussian noise
``n`` of covariance ``C`` in ``y = x + n``, the mean squared error of any denoiser ``f`` after
the linear steps that follow (``L``: the kernel conversion) is estimated without the clean
image (SURE, generalized to correlated noise):

    E||L f(y) - L x||^2 = E||L (f(y) - y)||^2 + 2 tr(L^T L J_f C) - tr(L C L^T)

and ``tr(L^T L J_f C) = E_b[(L b)^T L (f(y + eps b) - f(y)) / eps]`` for ``b ~ N(0, C)``
(Monte-Carlo SURE, Ramani et al. 2008): one extra run of each candidate on a perturbed copy.
``C`` is the engine's noise model: the measured transfer's FBP texture (``|f| W(f)^2``) with the
measured soft-tissue std inside the body (:func:`.noise_insertion.std_map`).

**Only the residual is chosen per scan; the weight stays the card's.** On the independent
simulator the estimate ranked the residuals the same under every noise model tried (the
engine's, the measured NPS, the true noise field), while the best *weight* moved by 0.2-0.3
with a 10 % error in the noise level: the continuous choice needs a noise model we cannot
promise on a scanner we have not seen, the discrete one does not. No library computes
SURE for a black-box denoiser with correlated noise, hence this module.

**It needs the noise level.** The estimate scales with the assumed noise (an overestimate
of it inflates the divergence and noise terms, and the estimate then favours the heavier
NLM); the chain asks for it only where the source's noise was measured in fat or muscle
(``Signature.noise_from_tissue``, checked in :func:`.denoise._residual_for_this_scan`).
Measured in mixed soft tissue, whose texture raises it (a small field of view, a phantom
without fat), it was twice the true noise on a benchmark phantom (56.7 vs 28.2 HU), and the
estimate picked the residual whose true error was 46 % higher.

Approximations: the body mask is taken from the noisy probe (Stein's lemma assumes a fixed
one); the network recomputes its body region from the perturbed input, so a voxel at the skin
that crosses its threshold becomes a jump divided by ``EPS`` (rare, at the body's edge only);
the slice-profile step after the kernel step is not part of ``L``. For a dose-only pair there
is no kernel step (``L`` is the identity).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

#: the NLM residuals a per-scan choice picks from (fractions of the noise NLM leaves). 0.45 was a third
#: candidate in the first validation runs and never picked there (48 scans); each candidate costs two NLM runs
RESIDUALS = (0.15, 0.3)
#: perturbation size, in units of the noise (small against it: the divergence is a derivative)
EPS = 0.05
#: slices of the probe block the risk is estimated on (the middle of the volume; 8 x a 512 x 512 body is
#: about a million voxels, far more than the estimate's noise needs, and its cost is fixed, whatever the scan's length)
PROBE_SLICES = 8
#: in-plane margin (pixels) around the network's region on the probe (beyond NLM's reach and the kernel step's spread)
PROBE_MARGIN = 24


@dataclass
class ResidualChoice:
    """The residual picked for one scan, with the estimated error of every candidate.

    ``risks`` maps each residual to the estimated mean squared error (HU^2, after the kernel
    step, inside the body of the probe) of the blend at the card's weight; ``slices`` is the
    probe's ``[z0, z1)``; ``nlm_calibration`` NLM's ``(strength, alpha)`` at the picked residual.
    """

    residual: float
    weight: float
    risks: dict
    slices: tuple
    seconds: float
    candidates: tuple = RESIDUALS
    #: NLM's calibrated ``(strength, alpha)`` at the picked residual (the blend runs NLM with it, not calibrating again)
    nlm_calibration: tuple = ()

    def as_dict(self) -> dict:
        cal = dict(zip(("strength", "nlm_output_weight"), self.nlm_calibration)) or None
        return {"residual": self.residual, "nlm_weight": self.weight, "candidates": list(self.candidates),
                "nlm_calibration": cal,
                "risk_hu2": {f"{r:g}": round(v, 2) for r, v in self.risks.items()},
                "probe_slices": {"first": self.slices[0], "last": self.slices[1] - 1,
                                 "count": self.slices[1] - self.slices[0]},
                "seconds": round(self.seconds, 3),
                "rule": "Stein's unbiased risk estimate (Monte-Carlo, the engine's noise model)"}


def probe_block(nz: int, n: int = PROBE_SLICES) -> tuple[int, int]:
    """``[z0, z1)``: at most ``n`` contiguous slices in the middle of ``nz``."""
    n = min(n, nz)
    z0 = (nz - n) // 2
    return z0, z0 + n


def blend_risk(a: dict, weight: float) -> float:
    """The estimated MSE per voxel of ``net + weight (NLM - net)`` from its terms (see :func:`risk_terms`)."""
    w = float(weight)
    return (a["AA"] + 2 * w * a["AB"] + w * w * a["BB"] + 2 * ((1 - w) * a["Da"] + w * a["Dn"]) - a["trC"])


def risk_terms(ly, la0, la1, lb, ln0, ln1, mask, eps: float = EPS) -> dict:
    """The terms of the blend's SURE, per voxel of ``mask``, from arrays already through ``L``.

    ``la0``/``ln0`` are the network and the blend with one NLM on ``y`` (``ly``), ``la1``/``ln1`` the same
    on ``y + eps b``, ``lb`` the perturbation ``b``. The network's, ``y``'s and ``b``'s terms are the same
    for every candidate, so the caller puts them through ``L`` once.
    """
    m = mask.astype(np.float32)
    n = float(m.sum())
    A = la0 - ly
    B = ln0 - la0
    return {"AA": float(np.sum(m * A * A)) / n, "AB": float(np.sum(m * A * B)) / n, "BB": float(np.sum(m * B * B)) / n,
            "Da": float(np.sum(lb * m * (la1 - la0))) / (eps * n), "Dn": float(np.sum(lb * m * (ln1 - ln0))) / (eps * n),
            "trC": float(np.sum(m * lb * lb)) / n}


def choose_residual(state, method, weight: float, sigma: float, post=None,
                    residuals=RESIDUALS, seed: int = 0) -> ResidualChoice:
    """Pick the NLM residual of the blend for this scan (see the module docstring).

    Parameters
    ----------
    state : ChainState
        The chain's state at the noise step (``hu``, ``spacing``, ``transfer``).
    method : StackDenoiser
        The learned denoiser (run again on the perturbed probe, told the same noise).
    weight : float
        The card's blend weight (kept).
    sigma : float
        The measured soft-tissue noise std (HU).
    post : callable, optional
        The linear kernel step that follows.
    residuals : sequence of float
        The candidates.
    seed : int
        The perturbation's seed (the choice is deterministic).
    """
    from ..imaging import body_mask
    from .denoise import ResidualChoiceUnavailable, calibrate_strength, stack_runner, denoise_volume
    from .noise_insertion import shaped_noise, std_map

    t0 = time.perf_counter()
    hu = state.hu
    nz, ny, nx = hu.shape
    z0, z1 = probe_block(nz)
    za, zb = max(0, z0 - method.halo), min(nz, z1 + method.halo)
    block = hu[za:zb]
    region = np.broadcast_to(np.asarray(method.region(block), np.float32), block.shape)
    ys, xs = np.nonzero(region.any(axis=0))
    if ys.size == 0:
        raise ResidualChoiceUnavailable("the denoiser's region is empty on the probe")
    y0, y1 = max(0, int(ys.min()) - PROBE_MARGIN), min(ny, int(ys.max()) + 1 + PROBE_MARGIN)
    x0, x1 = max(0, int(xs.min()) - PROBE_MARGIN), min(nx, int(xs.max()) + 1 + PROBE_MARGIN)
    y = np.ascontiguousarray(block[:, y0:y1, x0:x1])
    if not np.isfinite(y).all():
        raise ResidualChoiceUnavailable("the probe has non-finite voxels")
    sp = state.spacing
    b = shaped_noise(y.shape, sp, state.transfer, seed=seed) * std_map(y, sp, sigma, None)
    ye = y + np.float32(EPS) * b
    run = stack_runner(method)
    core = slice(z0 - za, z1 - za)
    # both network runs on the same crop: the divergence is a difference quotient (1 / EPS = 20 times any
    # inconsistency), so the whole-volume output cannot stand in for the unperturbed run
    net0, net1 = run(y, sigma)[core], run(ye, sigma)[core]  # the block carries the network's neighbouring slices
    yc, bc, yec = y[core], b[core], ye[core]
    reg = np.ascontiguousarray(region[core, y0:y1, x0:x1])
    mask = body_mask(yc)
    if not mask.any():
        raise ResidualChoiceUnavailable("no body on the probe")
    L = post if post is not None else (lambda x: x)
    ly, la0, la1, lb = L(yc), L(net0), L(net1), L(bc)
    risks, calibrations = {}, {}
    for r in residuals:
        strength, alpha, *_ = calibrate_strength(sp, state.transfer, "nlm", sigma, sigma * r, post=post)
        calibrations[float(r)] = (strength, alpha)
        nlm0, _ = denoise_volume(yc, sp, target_std=sigma * r, noise_std=sigma, method="nlm", strength=strength, alpha=alpha)
        nlm1, _ = denoise_volume(yec, sp, target_std=sigma * r, noise_std=sigma, method="nlm", strength=strength,
                                 alpha=alpha)
        ln0, ln1 = L(net0 + reg * (nlm0 - net0)), L(net1 + reg * (nlm1 - net1))
        risks[float(r)] = blend_risk(risk_terms(ly, la0, la1, lb, ln0, ln1, mask), weight)
    if not all(np.isfinite(v) for v in risks.values()):
        raise ResidualChoiceUnavailable("the estimate is not finite")
    best = min(risks, key=risks.get)
    return ResidualChoice(residual=best, weight=float(weight), risks=risks, slices=(z0, z1),
                          seconds=time.perf_counter() - t0, candidates=tuple(float(r) for r in residuals),
                          nlm_calibration=calibrations[best])
