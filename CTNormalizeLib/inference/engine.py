"""``run_model``: normalize a volume with a model package (tiling, fallbacks, blending, QC)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from scipy import ndimage as ndi

from ..errors import BadInputError, CancelledError, NoModelError, ResourceExhaustedError
from ..volume import Volume
from . import masks, qc as qcmod, tiling, zgrid
from .device import resolve_device  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]

MIN_TILE = 64


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
        Seconds per stage.
    """

    volume: Volume
    qc: dict
    warnings: list = field(default_factory=list)
    device: str = "cpu"
    model_sha256: str = ""
    model_name: str = ""
    timings: dict = field(default_factory=dict)


def prepare_module(module, device: str, three_d: bool = False):
    """The module on ``device`` in channels-last layout (a copy for CUDA, so the cached CPU module stays usable).

    Channels-last is a layout change only (same weights, same results up to float rounding)
    and makes oneDNN / cuDNN convolutions faster.
    """
    import torch

    fmt = torch.channels_last_3d if three_d else torch.channels_last
    if device == "cpu":
        return module.to(memory_format=fmt)
    m = copy.deepcopy(module).to(device)
    return m.to(memory_format=fmt)


def _on_grid(source, target, volume: Volume):
    """Thickness and z spacing left open filled from the volume's grid (plans set them; direct calls may not)."""
    from dataclasses import replace

    s_sp = float(volume.spacing[0])
    src = replace(source, thickness=source.thickness or s_sp, spacing=source.spacing or s_sp)
    tgt = replace(target, thickness=target.thickness or src.thickness,
                  spacing=target.spacing or target.thickness or src.spacing)
    return src, tgt


def run_model(package, volume: Volume, source, target, device: str = "auto",
              progress: Optional[ProgressFn] = None, tile: Optional[int] = None, overlap: float = 0.25,
              chunk: Optional[int] = None, memory_mb: int = 1024, threads: Optional[int] = None,
              qc_limits: Optional[dict] = None, qc_slice_step: Optional[int] = None, plan=None) -> InferenceResult:
    """Normalize ``volume`` from ``source`` to ``target`` protocol with a model package.

    Parameters
    ----------
    package : ModelPackage
        From :func:`CTNormalizeLib.models.registry.find_model`.
    volume : Volume
        The input (never modified).
    source, target : Protocol
    device : {"auto", "cpu", "cuda", "cuda:N"}
    progress : callable(stage, fraction), optional
    tile : int, optional
        In-plane window size (the card's ``io.frontend``, e.g. ``mtf_ratio``, is applied
        before the network); default: the whole (body-cropped) slice on CPU, 256 on CUDA.
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
    card = package.card
    io = card["io"]
    lo, hi = (float(v) for v in io["hu_window"])
    offset, divisor = float(io["scale"]["offset"]), float(io["scale"]["divisor"])
    kind = _kind(card)
    dev = resolve_device(device) if (plan is None or device != plan.device) else device
    warnings: list = []
    timings: dict = {}
    prog = progress or (lambda stage, f: None)

    n_threads = threads or torch.get_num_threads()  # the process setting (e.g. a Dask worker's share)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        t0 = time.perf_counter()
        module = package.load()
        src, tgt = _on_grid(source, target, volume)
        prog("prepare", 0.0)
        if kind == "3d":
            z_up = int(io.get("z_up_factor") or 1)
            base_sp = src.spacing / z_up
            x_in = zgrid.resample_z(volume.hu, src.spacing, base_sp, src.thickness, src.thickness)
        else:
            x_in = zgrid.resample_z(volume.hu, src.spacing, tgt.spacing, src.thickness, tgt.thickness)
        x_model = x_in
        signature_model = io.get("conditioning") == "signature"
        if signature_model and plan is None:
            raise BadInputError(f"Model {package.name!r} is conditioned on measured signatures: run it through a plan.")
        if io.get("frontend"):
            from .frontend import apply_frontend

            k_s, k_t = src.kernel, tgt.kernel
            if signature_model:
                k_s, k_t = plan.source_signature.transfer, plan.target_signature.transfer
            conv = apply_frontend(io["frontend"], volume.hu, volume.spacing, k_s, k_t,
                                  lam=io.get("frontend_lambda"))
            if conv is not volume.hu:
                x_model = zgrid.resample_z(conv, src.spacing, tgt.spacing, src.thickness, tgt.thickness)
            del conv
        body = masks.body_mask(x_in)
        timings["prepare_s"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        if kind == "3d":
            y_hu, dev, borders, tile_used = _run_3d(module, volume.hu, lo, hi, offset, divisor, dev, tile, overlap,
                                                    warnings, prog, x_in.shape[0])
        else:
            from ..models.conditioning import pair_features, plan_features

            feats = plan_features(plan, float(io["frontend_lambda"])) if signature_model else pair_features(src, tgt)
            cond = np.asarray(feats, np.float32)
            y_hu, dev, borders, tile_used = _run_25d(module, x_model, body, cond, lo, hi, offset, divisor, dev, tile,
                                                     overlap, chunk, memory_mb, int(io.get("context", 5)),
                                                     warnings, prog)
        timings["inference_s"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        prog("blend", 0.0)
        # outside the body / window the front-end's output (a fixed linear kernel conversion,
        # or the input itself without a front-end) passes through: the network never acts there
        out = _blend(x_model if kind != "3d" else x_in, y_hu, body, lo, hi, weight_from=x_in)
        del y_hu
        base_sp = src.spacing / int(io.get("z_up_factor") or 1)
        if kind == "3d" and abs(base_sp - tgt.spacing) > 1e-3 * tgt.spacing:
            out = zgrid.resample_z(out, base_sp, tgt.spacing, base_sp, tgt.thickness)
            x_in = zgrid.resample_z(x_in, base_sp, tgt.spacing, base_sp, tgt.thickness)
            body = masks.body_mask(x_in)
        timings["blend_s"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        prog("qc", 0.0)
        step = qc_slice_step or max(1, out.shape[0] // 64)
        qc, qc_warn = qcmod.measure_qc(x_in, out, body, borders[0], borders[1], qc_limits, step,
                                       change_reference=x_model if x_model is not x_in and kind != "3d" else None)
        qc["tile"] = tile_used
        qc["overlap"] = overlap
        warnings.extend(qc_warn)
        timings["qc_s"] = time.perf_counter() - t3
        prog("qc", 1.0)
    finally:
        torch.set_num_threads(old_threads)

    spacing = (float(tgt.spacing),) + tuple(volume.spacing[1:])
    out_vol = volume.with_array(out, spacing=spacing)
    out_vol.meta["SliceThickness"] = f"{tgt.thickness:g}"
    out_vol.meta["SpacingBetweenSlices"] = f"{tgt.spacing:g}"
    if tgt.kernel:
        out_vol.meta["ConvolutionKernel"] = f"CTNormalize:{tgt.kernel}"
    timings["total_s"] = sum(timings.values())
    return InferenceResult(out_vol, qc, warnings, dev, package.sha256, package.name, timings)


def _kind(card) -> str:
    from ..models.factory import architecture_kind

    return architecture_kind(card["architecture"]["name"])


def _scale(hu, lo, hi, offset, divisor):
    return ((np.clip(hu, lo, hi) - offset) / divisor).astype(np.float32)


def _blend(x_pass, y_hu, body, lo, hi, weight_from=None):
    """Model output inside the body and inside the HU window; ``x_pass`` elsewhere.

    The HU-window weights come from the smoothed ``weight_from`` (the input on the output grid).
    """
    ref = x_pass if weight_from is None else weight_from
    sm = ndi.gaussian_filter(ref, (0, 1.0, 1.0))
    w = masks.soft_mask(body, 2.0) * masks.window_weight(sm, lo, hi)
    return (x_pass + w * (y_hu - x_pass)).astype(np.float32)


def _crop_box(body: np.ndarray, margin: int, multiple: int):
    """In-plane bounding box of the body (all slices), padded by ``margin`` and grown to ``multiple``."""
    Y, X = body.shape[1:]
    proj = body.any(axis=0)
    if not proj.any():
        return 0, Y, 0, X
    ys, xs = np.where(proj.any(axis=1))[0], np.where(proj.any(axis=0))[0]
    y0, y1 = max(0, ys[0] - margin), min(Y, ys[-1] + 1 + margin)
    x0, x1 = max(0, xs[0] - margin), min(X, xs[-1] + 1 + margin)
    return int(y0), int(y1), int(x0), int(x1)

def _run_25d(module, x_in, body, cond, lo, hi, offset, divisor, dev, tile, overlap, chunk, memory_mb, context,
             warnings, prog):
    multiple = int(getattr(module, "multiple", 4))
    y0, y1, x0, x1 = _crop_box(body, 16, multiple)
    crop = x_in[:, y0:y1, x0:x1]
    scaled = _scale(crop, lo, hi, offset, divisor)
    h, w = scaled.shape[1:]
    if tile is None:
        tile = 256 if dev.startswith("cuda") else max(h, w)
    tile = max(MIN_TILE, int(np.ceil(tile / multiple) * multiple))
    per_slice = 64 * 4 * min(tile, h) * min(tile, w)  # ~64 float32 activations per pixel
    if chunk is None:
        chunk = int(max(1, min(32, memory_mb * 2 ** 20 // per_slice)))
    n = scaled.shape[0]
    out = np.empty_like(scaled)
    half = context // 2
    run_mod = prepare_module(module, dev)
    z = 0
    while z < n:
        z1 = min(n, z + chunk)
        idx = np.clip(np.arange(z - half, z1 + half), 0, n - 1)
        stack = scaled[idx]
        x = np.stack([stack[k: k + context] for k in range(z1 - z)])
        try:
            out[z:z1] = tiling.infer_chunk_2d(run_mod, x, cond, dev, tile, overlap, multiple)
        except tiling.TileOOM as exc:
            new_dev, tile, chunk = _after_oom(exc, dev, tile, chunk, warnings)
            if new_dev != dev:
                dev, run_mod = new_dev, prepare_module(module, new_dev)
            continue
        z = z1
        prog("inference", z / n)
    full = x_in.copy()
    full[:, y0:y1, x0:x1] = out * divisor + offset
    by = [y0 + b for b in tiling.tile_borders(h, min(tile, h), overlap)]
    bx = [x0 + b for b in tiling.tile_borders(w, min(tile, w), overlap)]
    return full, dev, (by, bx), int(tile)


def _after_oom(exc, dev, tile, chunk, warnings):
    """Next (device, tile, chunk) after an out-of-memory, or raise ResourceExhaustedError.

    Order: halve the slices per chunk, then halve the tile down to ``MIN_TILE``, then (on
    CUDA) move to the CPU with a warning; on the CPU at the floor, give up.
    """
    if dev.startswith("cuda"):
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort
            pass
    if chunk > 1 or tile > MIN_TILE:
        new_chunk = max(1, chunk // 2)
        new_tile = tile if chunk > 1 else max(MIN_TILE, tile // 2)
        warnings.append({"code": "OOM_RETRY", "message":
                         f"Out of memory on {dev} with {chunk} slices x {tile}px tiles; retrying with "
                         f"{new_chunk} x {new_tile}px."})
        log.warning(warnings[-1]["message"])
        return dev, new_tile, new_chunk
    if dev.startswith("cuda"):
        warnings.append({"code": "CUDA_OOM_CPU_FALLBACK", "message":
                         f"The GPU ran out of memory even at {tile}px tiles; continuing on the CPU (slower)."})
        log.warning(warnings[-1]["message"])
        return "cpu", 512, 4
    raise ResourceExhaustedError(
        f"Out of memory on the CPU even with 1 slice and {tile}px tiles; free memory or use a smaller volume."
    ) from exc



def _run_3d(module, hu, lo, hi, offset, divisor, dev, tile, overlap, warnings, prog, n_out):
    """3D models (S0 reference): z slabs with a halo, each through 3D sliding windows."""
    z_up = int(getattr(module, "z_up", 1))
    scaled = _scale(hu, lo, hi, offset, divisor)
    n = scaled.shape[0]
    tile = int(tile or 64)
    roi = (16, tile, tile)
    slab, halo = 16, 4
    out = np.empty((n * z_up,) + scaled.shape[1:], np.float32)
    run_mod = prepare_module(module, dev, three_d=True)
    z = 0
    while z < n:
        z1 = min(n, z + slab)
        a, b = max(0, z - halo), min(n, z1 + halo)
        try:
            y = tiling.infer_slab_3d(run_mod, scaled[a:b], dev, roi, overlap)
        except tiling.TileOOM as exc:
            new_dev, tile, _ = _after_oom(exc, dev, tile, 1, warnings)
            if new_dev != dev:
                dev, run_mod = new_dev, prepare_module(module, new_dev, three_d=True)
            roi = (16, tile, tile)
            continue
        out[z * z_up: z1 * z_up] = y[(z - a) * z_up: (z - a + z1 - z) * z_up]
        z = z1
        prog("inference", z / n)
    out = out[:n_out] * divisor + offset
    borders_y = tiling.tile_borders(hu.shape[1], min(tile, hu.shape[1]), overlap)
    borders_x = tiling.tile_borders(hu.shape[2], min(tile, hu.shape[2]), overlap)
    return out, dev, (borders_y, borders_x), tile
