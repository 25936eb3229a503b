"""``normalize``: one call from a CT (path or volume) and a target to a normalized volume.

It makes the :class:`~CTNormalizeLib.plan.Plan` once (tags, measured signatures, user
overrides, target, method, device), runs the plan's method from the method table, and
returns the volume with its run report. The CLI and the Slicer module do the same
through :func:`~CTNormalizeLib.plan.make_plan` and :func:`execute`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .version import __version__
from .contracts.report import RunReport
from .method_rows import MethodResult
from .plan import DEFAULT_TEXTURE, Plan, make_plan
from .volume import Volume

log = logging.getLogger(__name__)

ProgressFn = Optional[Callable[[str, float], None]]


@dataclass
class NormalizeOutcome:
    """The normalized volume, the plan it followed and what the method reported."""

    volume: Volume
    plan: Plan
    result: MethodResult
    timings: dict = field(default_factory=dict)

    @property
    def warnings(self) -> list:
        return list(self.plan.warnings) + list(self.result.warnings)

    @property
    def texture(self) -> str:
        """The output's noise texture: the method's own (:attr:`Method.texture`), else the plan's, or
        ``source`` where the method neither removes nor replaces the noise (e.g. ``mtf_ratio``: its
        output has the source's noise, as its kernel step changed it)."""
        from .methods import get_method

        return output_texture(get_method(self.plan.method), self.plan.texture)

    def report(self, input_path: Optional[str] = None, output_path: Optional[str] = None,
               output_type: Optional[str] = None) -> RunReport:
        """The run report (``done`` event, ``--report``, DICOM and Slicer provenance); ``output_type`` is
        the voxel type the written file stores (None before or without a write)."""
        from .methods import get_method

        row = get_method(self.plan.method)
        kind = row.kind
        return RunReport(
            engine_version=__version__, method=self.plan.method, method_kind=kind,
            method_reason=self.plan.method_reason, model_sha256=self.result.model_sha256,
            device=self.result.device, texture=self.texture, plan=self.plan.to_dict(),
            steps=list(self.result.steps), warnings=self.warnings, qc=dict(self.result.qc),
            timings={**self.timings, **self.result.timings},
            output_shape=list(self.volume.shape), output_spacing=[float(s) for s in self.volume.spacing],
            input=input_path, output=output_path, output_type=output_type, changes=list(row.changes))


def output_texture(row, asked: str) -> str:
    """The texture a method row's output has when ``asked`` (the plan's texture) was asked for."""
    from .contracts.report import SOURCE_TEXTURE

    return row.texture or (asked if "noise" in row.changes else SOURCE_TEXTURE)


def _as_volume(x) -> Volume:
    if isinstance(x, Volume):
        return x
    from .io import read_volume

    return read_volume(str(x))


def method_reference(method: str, reference: Optional[Volume], target_like: Optional[Volume]) -> Optional[Volume]:
    """The reference a method gets: ``reference``; for a method that needs one (``histogram_match``)
    and has none, the ``--target-like`` scan, which is the target the user gave as a scan.

    Other methods get no stand-in: ``frequency_decomposition`` without a reference predicts the
    target's band energies from the plan's target signature (the reference's, at the requested
    thickness and the input's pixel size) instead of copying another patient's lungs.
    """
    from .methods import get_method

    if reference is not None or not get_method(method).needs_reference:
        return reference
    return target_like


def _warn_thick_to_thin(plan: Plan, volume: Volume, result) -> None:
    """THICK_TO_THIN_INTERPOLATION on every output put on a finer z grid than thicker source slices,
    also from a method whose own steps do not say so (the learned models' z grid)."""
    from .classical.thickness import THICK_TO_THIN, thick_to_thin_warning

    t_s = plan.source_ssp_mm
    t_t = float(plan.target_signature.thickness_mm)
    finer = result.volume.spacing[0] < volume.spacing[0] - 1e-6
    if finer and t_t < t_s - 1e-6 and not any(w.get("code") == THICK_TO_THIN for w in result.warnings):
        result.warnings.append(thick_to_thin_warning(t_s, t_t))


#: CT stores nothing below this (air is -1000 HU; scanners store -1024 as their floor)
HU_FLOOR = -1024.0
#: an input minimum below HU_FLOOR held by at least this share of the voxels is pixel padding (a constant fill
#: outside the field of view), not a measured value
PADDING_SHARE = 0.005
#: output voxels within this many HU of the padding value are padding (kept at it), the others are the scan's
PADDING_MARGIN_HU = 50.0


def _floor_output(volume: Volume, output: Volume) -> float:
    """Raise the output's voxels below what a scanner stores, in place; returns the fraction raised.

    Sharpening overshoot at air edges and noise added for the target texture can go below anything a
    scanner stores (-1127 HU on a lung2 crop): values no target scan holds, which a radiomics minimum or a
    low percentile would read. The floor is :data:`HU_FLOOR`, or the input's minimum where that is lower
    (a scan stored without a floor: its noise already goes below). Pixel padding (a constant fill far below,
    e.g. -3024 HU outside the field of view) stays padding: voxels near it are kept at it, and the scan's
    own voxels are floored at :data:`HU_FLOOR`.
    """
    hu = output.hu
    if not np.issubdtype(hu.dtype, np.floating):
        return 0.0
    lo = float(np.min(volume.hu))
    padded = lo < HU_FLOOR - PADDING_MARGIN_HU and \
        np.count_nonzero(volume.hu == lo) >= PADDING_SHARE * volume.hu.size
    if padded:
        low = (hu < HU_FLOOR) & (hu > lo + PADDING_MARGIN_HU)
        n = int(np.count_nonzero(low) + np.count_nonzero(hu < lo))
    else:
        floor = min(lo, HU_FLOOR)
        n = int(np.count_nonzero(hu < floor))
    if not n:
        return 0.0
    if not hu.flags.writeable or np.may_share_memory(hu, volume.hu):
        hu = output.hu = np.array(hu)  # never change the caller's input through a view of it
    if padded:
        hu[low] = HU_FLOOR
        np.maximum(hu, np.float32(lo), out=hu)
    else:
        np.maximum(hu, np.float32(floor), out=hu)
    return round(n / max(1, hu.size), 6)


def execute(plan: Plan, volume: Volume, progress: ProgressFn = None, reference: Optional[Volume] = None,
            with_qc: bool = True) -> NormalizeOutcome:
    """Run ``plan``'s method on ``volume`` (the plan made for this volume)."""
    from .methods import get_method

    t0 = time.perf_counter()
    row = get_method(plan.method)
    result = row.run(volume, plan, progress, reference)
    timings = {"normalize_s": round(time.perf_counter() - t0, 3)}
    _warn_thick_to_thin(plan, volume, result)
    if row.texture and row.texture != plan.texture:
        result.warnings.append({"code": "TEXTURE_OF_THE_METHOD",
                                "message": f"Method {plan.method!r} gives its output the {row.texture} texture "
                                           f"whatever --texture asks (here {plan.texture}): {row.summary}."})
    if with_qc and not result.qc:  # classical rows and the chain with a learned denoiser measure none themselves
        t1 = time.perf_counter()
        result.qc = _qc(volume, result, plan)
        timings["qc_s"] = round(time.perf_counter() - t1, 3)
    if with_qc and (row.texture or plan.texture) == "target" and "kernel" in row.changes:
        from .signature.readback import kernel_not_reached_warning

        t1 = time.perf_counter()
        warning = kernel_not_reached_warning(result.volume, plan.target_signature, plan.method)
        if warning is not None:
            result.warnings.append(warning)
        timings["kernel_check_s"] = round(time.perf_counter() - t1, 3)
    # after QC and the kernel read-back, which judge what the method made; the file holds what a scanner stores
    below_floor = _floor_output(volume, result.volume)
    if with_qc:
        result.qc["below_floor_fraction"] = below_floor
    outcome = NormalizeOutcome(result.volume, plan, result, timings)
    from .contracts.derivation import derivation_from_report

    # the one place an output's tags and provenance are set, for the library and every writer
    result.volume.meta = derivation_from_report(outcome.report()).output_meta(volume.meta, result.volume.spacing[0])
    return outcome


def normalize(volume: Union[Volume, str, Path], source=None, target=None, method: str = "auto", device: str = "auto",
              progress: ProgressFn = None, reference: Union[Volume, str, Path, None] = None,
              target_like: Union[Volume, str, Path, None] = None, texture: str = DEFAULT_TEXTURE,
              plan: Optional[Plan] = None, kernel_from: str = "pixels") -> NormalizeOutcome:
    """Translate a CT from its protocol to a target protocol.

    Parameters
    ----------
    volume : Volume or path
        Input CT (not modified): a volume, a file or a DICOM series folder.
    source : None, "auto", spec string or Protocol
        Overrides of what the tags and the pixels say (e.g. ``"kernel=B70f,dose=0.25"``).
    target : preset name, spec string or Protocol
        Fields left open stay as in the source.
    method : str
        ``"auto"`` (the best measured method covering the pair) or a row of the method table.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``gpu`` or ``mps`` (learned methods).
    progress : callable(stage, fraction), optional
    reference : Volume or path, optional
        Reference volume for ``histogram_match`` / ``frequency_decomposition`` (``histogram_match``
        without one matches ``target_like``).
    target_like : Volume or path, optional
        A scan whose measured signature is the target.
    texture : {"clean", "target"}
    kernel_from : {"pixels", "labels"}
        The source kernel's MTF measured from the pixels (default) or the nominal one of
        the kernel class given or tagged.
    plan : Plan, optional
        A plan already made for this volume (then source/target/method/device are ignored).

    Returns
    -------
    NormalizeOutcome
    """
    vol = _as_volume(volume)
    like = None if target_like is None else _as_volume(target_like)
    t0 = time.perf_counter()
    if plan is None:
        plan = make_plan(vol, source, target, target_like=like, method=method, device=device, texture=texture,
                         kernel_from=kernel_from)
    t_plan = round(time.perf_counter() - t0, 3)
    ref = method_reference(plan.method, None if reference is None else _as_volume(reference), like)
    outcome = execute(plan, vol, progress, ref)
    outcome.timings = {"plan_s": t_plan, **outcome.timings}
    return outcome


def _qc(inp: Volume, result: MethodResult, plan: Plan) -> dict:
    """QC figures for outputs whose method measured none (the classical chain, also with a learned
    denoiser), measured as for learned models (no tiles, so no seams).

    The input is put on the output's z grid (slice profile + linear interpolation) first. On a
    finer grid (thick -> thin) only the output slices at the source's slice positions are compared:
    the ones between are made by the z step's interpolation, and a linearly interpolated input
    is no reference for them (lung1 5 -> 1 mm: 6.0 % of the body "changed" with them, 1.2 % without).
    """
    from .inference.masks import body_mask
    from .inference.qc import measure_qc
    from .inference.zgrid import resample_z

    out = result.volume
    s_in, s_out = float(inp.spacing[0]), float(out.spacing[0])
    t_s, t_t = plan.source_ssp_mm, plan.target_signature.thickness_mm
    # thick -> thin only: a thicker target on a finer grid (gapped slices, overlapping targets) is compared
    # against the input widened to the target's profile, as before
    thinner = t_t < t_s - 1e-6 and s_out < s_in
    shared = _shared_slices(inp.shape[0], s_in, out.shape[0], s_out) if thinner else None
    if shared is not None:
        inp_hu, out_hu = inp.hu[shared[0]], out.hu[shared[1]]
        where = "the output slices at the source's slice positions (those between are interpolated)"
    else:
        inp_hu = resample_z(inp.hu, s_in, s_out, t_s, t_t)
        n = min(inp_hu.shape[0], out.shape[0])
        inp_hu, out_hu = inp_hu[:n], out.hu[:n]
        where = "every output slice, against the input on the output's grid"
    step = max(1, inp_hu.shape[0] // 32)
    qc, warnings = measure_qc(inp_hu, out_hu, body_mask(inp_hu), slice_step=step)
    qc["compared_slices"] = where
    result.warnings.extend(warnings)
    return qc


def _shared_slices(n_in: int, s_in: float, n_out: int, s_out: float):
    """``(input indices, output indices)`` of the slices both z grids (same first slice) hold, or None
    when fewer than two coincide."""
    k = np.arange(n_out)
    j = k * s_out / s_in
    hit = (np.abs(j - np.round(j)) < 1e-3) & (np.round(j) < n_in)
    if hit.sum() < 2:
        return None
    return np.round(j[hit]).astype(int), k[hit]
