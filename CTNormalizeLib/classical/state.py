"""The state a chain of classical steps passes along, and how a run turns it into a result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..imaging.progress import Progress
from ..method_rows import MethodResult
from ..volume import Volume


@dataclass
class ChainState:
    """Voxels, their grid and their noise level as the steps change them, plus what was done.

    ``transfer`` is the in-plane transfer the voxels have now (the source's measured one
    until the kernel step); ``noise_hu`` their soft-tissue noise std (HU) as predicted
    from the measurements through each step. Each recorded step carries ``seconds``: the wall
    time since the previous record (for the first, since the state was made, which includes
    any setup between that and the step, e.g. loading a learned denoiser).
    """

    hu: np.ndarray
    spacing: tuple
    transfer: object
    noise_hu: Optional[float]
    thickness: float
    steps: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    mark: float = field(default_factory=time.perf_counter, repr=False)

    def record(self, method: str, done: bool, parameters: dict, note: str):
        now = time.perf_counter()
        self.steps.append({"method": method, "done": bool(done), "parameters": parameters, "note": note,
                           "seconds": round(now - self.mark, 3)})
        self.mark = now


def start(volume: Volume, plan) -> ChainState:
    """The chain's initial state: the input voxels with the source's measured signature."""
    sig = plan.source_signature
    return ChainState(hu=volume.hu, spacing=tuple(float(s) for s in volume.spacing), transfer=sig.transfer,
                      noise_hu=sig.noise_hu, thickness=plan.source_ssp_mm)


def sub_progress(progress: Progress, lo: float, hi: float) -> Progress:
    """``progress`` with a step's own 0..1 fraction mapped into [lo, hi] of the whole run."""
    if progress is None:
        return None
    return lambda stage, fraction: progress(stage, lo + (hi - lo) * min(1.0, max(0.0, fraction)))


def finish(volume: Volume, state: ChainState, plan, label: str) -> MethodResult:
    """The output volume (a new object; geometry kept, z spacing from the state) and its record."""
    hu = state.hu
    if hu is volume.hu:
        hu = hu.copy()
    # the output's tags and provenance are set once for every method (normalization.execute)
    out = Volume(hu=np.asarray(hu, dtype=np.float32), spacing=state.spacing, origin=volume.origin,
                 direction=volume.direction, meta=dict(volume.meta))
    return MethodResult(volume=out, steps=state.steps, warnings=state.warnings)


THICKNESS_TOLERANCE = 0.01  # mm
NOISE_TOLERANCE = 0.05  # relative


def same_transfer(a, b, nyquist: float, tol: float = 0.02) -> bool:
    """Whether two transfers agree within ``tol`` everywhere up to Nyquist (the same kernel for the image)."""
    if a is b or a == b:
        return True
    f = np.linspace(0.0, nyquist, 64)
    return float(np.max(np.abs(a(f) - b(f)))) <= tol


def predicted_noise(plan, noise_hu: Optional[float] = None, z_restore_lambda: Optional[float] = None) -> Optional[float]:
    """The source's noise after the kernel and thickness change alone (no denoising), HU.

    Thin -> thick averages noise down by ``sqrt(t_s/t_t)``; thick -> thin's partial z
    deconvolution lifts it and its interpolation lowers it
    (:func:`~.thickness.thick_to_thin_noise_gain`); the kernel
    changes it by the ratio of noise bands.
    """
    from ..signature.reference import noise_between
    from .thickness import Z_RESTORE_LAMBDA, thick_to_thin_noise_gain

    s, t = plan.source_signature, plan.target_signature
    n = s.noise_hu if noise_hu is None else noise_hu
    if n is None:
        return None
    t_s = plan.source_ssp_mm
    t_eff = max(t.thickness_mm, t_s)
    gain = thick_to_thin_noise_gain(s.spacing_mm, t_s, t.thickness_mm, t.spacing_mm,  # as the z step will run
                                    restore_lambda=Z_RESTORE_LAMBDA if z_restore_lambda is None else z_restore_lambda)
    return gain * noise_between(n, s.transfer, t.transfer, s.pixel_mm, t_s, t_eff)


def noise_level_differs(plan) -> Optional[bool]:
    """Whether the source's noise, carried through the kernel and thickness change, misses the target's
    level by more than :data:`NOISE_TOLERANCE`; None when either is unknown."""
    pred, t_noise = predicted_noise(plan), plan.target_signature.noise_hu
    if pred is None or t_noise is None:
        return None
    return abs(t_noise - pred) > NOISE_TOLERANCE * pred


def differences(plan) -> dict:
    """Which aspects of the source differ from the target: ``{"kernel", "noise", "thickness"} -> bool``."""
    s, t = plan.source_signature, plan.target_signature
    t_s = plan.source_ssp_mm
    noise = bool(noise_level_differs(plan))
    if plan.texture == "clean":
        noise = noise or (s.noise_hu is not None)
    return {"kernel": not same_transfer(s.transfer, t.transfer, s.nyquist),
            "noise": bool(noise),
            "thickness": abs(t.thickness_mm - t_s) > THICKNESS_TOLERANCE
            or abs(t.spacing_mm - s.spacing_mm) > THICKNESS_TOLERANCE}


def partial_warning(state: ChainState, plan, method: str, changes: tuple):
    """A ``PARTIAL_NORMALIZATION`` warning naming what ``method`` left different from the target."""
    left = [k for k, v in differences(plan).items() if v and k not in changes]
    if left:
        names = {"kernel": "kernel", "noise": "noise level", "thickness": "slice thickness"}
        if noise_level_differs(plan) is False:
            # the level is the target's: the noise differs only from the denoised image the clean texture asks for
            names["noise"] = "noise (the clean texture asks for it removed)"
        state.warnings.append({"code": "PARTIAL_NORMALIZATION",
                               "message": f"Method {method!r} only changes the {', '.join(changes)}; the "
                                          f"{', '.join(names[k] for k in left)} "
                                          f"{'still differs' if len(left) == 1 else 'still differ'} from the target. "
                                          "Use method 'classical' or 'auto' to chain the steps."})
