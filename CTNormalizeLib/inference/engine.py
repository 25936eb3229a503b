"""``run_model``: normalize a volume with a model package (pipeline choice, fallbacks, result).

2.5D models run through one of two pipelines with the same stages and definitions:
:mod:`.cpu_path` (numpy/scipy around the network, streamed along z; the reference figures)
and :mod:`.resident` (torch, the volume kept on the GPU, reduced precision on CUDA). The
model family only changes what :func:`~.runspec.make_runspec` computes once per run.
3D models (the S0 reference) run through :mod:`.threed`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import BadInputError, NoModelError
from ..volume import Volume
from .device import resolve_device  # noqa: F401  (re-exported)
from .oom import MIN_TILE  # noqa: F401  (re-exported)
from .runspec import on_grid

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]
PIPELINES = ("auto", "cpu", "resident")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class InferenceResult:
    """What :func:`run_model` returns.

    Attributes
    ----------
    volume : Volume
        The normalized volume on the target z grid.
    qc : dict
        Seam ratio, HU drift, changed fraction, limits, tiles used (see :mod:`.qc`).
    warnings : list of dict
        ``{"code", "message"}`` (OOM fallbacks, QC over limits, ...).
    device : str
        Where the model ran in the end (``"cpu"``, ``"cuda:0"``).
    model_sha256 : str
    model_name : str
    timings : dict
        Seconds per stage (``total_s``: the wall time of the call).
    """

    volume: Volume
    qc: dict
    warnings: list = field(default_factory=list)
    device: str = "cpu"
    model_sha256: str = ""
    model_name: str = ""
    timings: dict = field(default_factory=dict)


def run_model(package, volume: Volume, source, target, device: str = "auto",
              progress: Optional[ProgressFn] = None, tile: Optional[int] = None, overlap: float = 0.25,
              chunk: Optional[int] = None, memory_mb: int = 1024, threads: Optional[int] = None,
              qc_limits: Optional[dict] = None, qc_slice_step: Optional[int] = None, plan=None,
              precision: str = "auto", pipeline: str = "auto") -> InferenceResult:
    """Normalize ``volume`` from ``source`` to ``target`` protocol with a model package.

    Parameters
    ----------
    package : ModelPackage
        From :func:`CTNormalizeLib.models.registry.find_model`.
    volume : Volume
        The input (never modified).
    source, target : Protocol
    device : {"auto", "cpu", "cuda", "cuda:N", "gpu", "mps"}
    progress : callable(stage, fraction), optional
    tile : int, optional
        In-plane window size (the card's ``io.frontend``, e.g. ``mtf_ratio``, is applied
        before the network); default: the whole body-cropped slice (no tiles, no blending).
    overlap : float
        Window overlap (Gaussian blending).
    chunk : int, optional
        Slices per forward pass; default from ``memory_mb``.
    memory_mb : int
        Rough activation-memory budget per chunk.
    threads : int, optional
        CPU threads (default: the process's torch setting, all cores unless set).
    qc_limits : dict, optional
        Overrides of :data:`CTNormalizeLib.inference.qc.DEFAULT_LIMITS`.
    qc_slice_step : int, optional
        QC on every n-th slice (default: about 64 slices in all).
    plan : Plan, optional
        The run's plan: signature-conditioned models read its signatures.
    precision : {"auto", "fp32", "bf16", "fp16"}
        The network's arithmetic: ``auto`` is bf16 on CUDA (fp16 overflows in ctn-conditioned-v3) and fp32 elsewhere.
    pipeline : {"auto", "cpu", "resident"}
        ``auto``: the device-resident pipeline on a GPU, the CPU pipeline on the CPU;
        ``resident`` also on the CPU (tests, comparisons).

    Returns
    -------
    InferenceResult

    Raises
    ------
    NoModelError
        The package does not cover ``source -> target``.
    ResourceExhaustedError
        Out of memory even on the CPU at the smallest tile.
    """
    import torch

    why = package.why_not(source, target)
    if why is not None:
        raise NoModelError(f"Model {package.name!r} does not cover {source.spec()} -> {target.spec()}: {why}.")
    if volume.hu.ndim != 3:
        raise BadInputError("The model needs a 3D volume [z, y, x].")
    if precision not in PRECISIONS or pipeline not in PIPELINES:
        raise BadInputError(f"precision must be one of {PRECISIONS} and pipeline one of {PIPELINES}.")
    card = package.card
    dev = resolve_device(device) if (plan is None or device != plan.device) else device
    prog = progress or (lambda stage, f: None)
    t_start = time.perf_counter()

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads or old_threads)  # default: the process setting (e.g. a Dask worker's share)
    try:
        t0 = time.perf_counter()
        module = package.load()
        src, tgt = on_grid(source, target, volume)
        load_s = time.perf_counter() - t0
        if _kind(card) == "3d":
            from .threed import run_3d

            res = run_3d(module, volume.hu, card, src, tgt, dev, tile, overlap, qc_limits, qc_slice_step, prog,
                         precision)
        else:
            res = _run_25d(module, volume, card, src, tgt, plan, dev, tile, overlap, chunk, memory_mb, qc_limits,
                           qc_slice_step, prog, precision, pipeline)
    finally:
        torch.set_num_threads(old_threads)

    spacing = (float(tgt.spacing),) + tuple(volume.spacing[1:])
    out_vol = volume.with_array(res.hu, spacing=spacing)
    out_vol.meta["SliceThickness"] = f"{target.thickness or tgt.thickness:g}"  # nominal, not the modelled FWHM
    out_vol.meta["SpacingBetweenSlices"] = f"{tgt.spacing:g}"
    if tgt.kernel:
        out_vol.meta["ConvolutionKernel"] = f"CTNormalize:{tgt.kernel}"
    timings = {"load_s": load_s, **res.timings, "total_s": time.perf_counter() - t_start}
    return InferenceResult(out_vol, res.qc, res.warnings, res.device, package.sha256, package.name, timings)


def _run_25d(module, volume, card, src, tgt, plan, dev, tile, overlap, chunk, memory_mb, qc_limits, qc_slice_step,
             prog, precision, pipeline):
    """The resident pipeline on a GPU (falling back to the CPU pipeline on out-of-memory), else the CPU one."""
    from .cpu_path import run_cpu
    from .runspec import make_runspec

    spec = make_runspec(card, src, tgt, plan)
    warnings: list = []
    if pipeline == "resident" or (pipeline == "auto" and dev != "cpu"):
        from .resident import DeviceOOM, run_resident

        try:
            return run_resident(module, volume.hu, volume.spacing, spec, dev, tile=tile, overlap=overlap, chunk=chunk,
                                qc_limits=qc_limits, qc_slice_step=qc_slice_step, progress=prog,
                                precision=precision, warnings=warnings)
        except DeviceOOM:
            log.warning("Out of memory on %s: running on the CPU.", dev)
    res = run_cpu(module, volume.hu, volume.spacing, spec, tile=tile, overlap=overlap, chunk=chunk,
                  memory_mb=memory_mb, qc_limits=qc_limits, qc_slice_step=qc_slice_step, progress=prog,
                  precision="fp32" if precision == "auto" else precision)
    res.warnings[:0] = warnings
    return res


def _kind(card) -> str:
    from ..models.factory import architecture_kind

    return architecture_kind(card["architecture"]["name"])
