"""The CPU pipeline of 2.5D models: numpy/scipy around the network, streamed along z.

It computes exactly what the original pipeline computed (``test_fast_path.py`` compares
bit for bit), with bounded memory and less time:

- the network input is scaled chunk by chunk from the body-cropped model input (no
  full-volume scaled copy);
- each chunk's output is blended into the result as soon as it comes back, on z slabs
  in threads (no full-volume network output, no full-volume weight arrays);
- blending works inside the body's crop box only: outside it the blend weight is exactly
  0 (the soft body mask reaches ~5 px past the body, the box 16 px), so the front-end's
  output passes through unchanged there.

Peak memory is the input, the front-end's output on the output grid, the result and one
chunk's working set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from . import masks, qc as qcmod, tiling, zgrid
from .oom import MIN_TILE, after_oom
from .runspec import RunSpec
from .slabs import for_slabs

CROP_MARGIN = 16


@dataclass
class PathResult:
    """What a pipeline returns to :func:`~.engine.run_model`."""

    hu: np.ndarray
    qc: dict
    device: str
    warnings: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def model_inputs(hu: np.ndarray, spacing, spec: RunSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(x_in, x_model)``: the input on the output z grid, and the same after the fixed front-end.

    ``x_model`` is ``x_in`` itself when the front-end is the identity. The front-end works
    on the input grid (as in training), then both go through the same z resampling.
    """
    from .frontend import apply_frontend

    x_in = zgrid.resample_z(hu, spec.src_spacing, spec.tgt_spacing, spec.src_thickness, spec.tgt_thickness)
    if not spec.frontend_active:
        return x_in, x_in
    conv = apply_frontend(spec.frontend, hu, spacing, spec.frontend_source, spec.frontend_target,
                          lam=spec.frontend_lambda)
    x_model = zgrid.resample_z(conv, spec.src_spacing, spec.tgt_spacing, spec.src_thickness, spec.tgt_thickness)
    return x_in, x_model


def crop_box(body: np.ndarray, margin: int = CROP_MARGIN) -> tuple[int, int, int, int]:
    """In-plane bounding box ``(y0, y1, x0, x1)`` of the body over all slices, padded by ``margin``."""
    Y, X = body.shape[1:]
    proj = body.any(axis=0)
    if not proj.any():
        return 0, Y, 0, X
    ys, xs = np.where(proj.any(axis=1))[0], np.where(proj.any(axis=0))[0]
    y0, y1 = max(0, ys[0] - margin), min(Y, ys[-1] + 1 + margin)
    x0, x1 = max(0, xs[0] - margin), min(X, xs[-1] + 1 + margin)
    return int(y0), int(y1), int(x0), int(x1)


def scale(hu: np.ndarray, spec: RunSpec) -> np.ndarray:
    """HU -> network units (float32): clip to the window, subtract the offset, divide."""
    return ((np.clip(hu, spec.lo, spec.hi) - spec.offset) / spec.divisor).astype(np.float32)


def chunk_slices(h: int, w: int, tile: int, memory_mb: int) -> int:
    """Slices per network call within ``memory_mb`` (~64 float32 activations per pixel)."""
    per_slice = 64 * 4 * min(tile, h) * min(tile, w)
    return int(max(1, min(32, memory_mb * 2 ** 20 // per_slice)))


def blend_chunk(out, y_scaled, x_model, x_in, body, z0: int, z1: int, box, spec: RunSpec) -> None:
    """Write slices ``z0:z1`` of the result: the network inside the body and the HU window, else ``x_model``.

    The weight is the feathered body mask times the HU-window weight of the smoothed input
    (``x_in``); the arithmetic is the original blend's, in place.
    """
    y0, y1, x0, x1 = box
    y_hu = y_scaled * spec.divisor + spec.offset
    x_pass = x_model[z0:z1, y0:y1, x0:x1]
    sm = ndi.gaussian_filter(x_in[z0:z1, y0:y1, x0:x1], (0, 1.0, 1.0))
    w = masks.soft_mask(body[z0:z1, y0:y1, x0:x1], 2.0)
    w *= masks.window_weight(sm, spec.lo, spec.hi)
    y_hu -= x_pass
    y_hu *= w
    y_hu += x_pass
    out[z0:z1] = x_model[z0:z1]
    out[z0:z1, y0:y1, x0:x1] = y_hu


def run_cpu(module, hu: np.ndarray, spacing, spec: RunSpec, *, tile=None, overlap: float = 0.25, chunk=None,
            memory_mb: int = 1024, qc_limits=None, qc_slice_step=None, progress=None,
            precision: str = "fp32") -> PathResult:
    """The whole 2.5D pipeline on the CPU (see the module docstring).

    Parameters
    ----------
    module : torch.nn.Module
        The 2.5D network (eval mode, on the CPU).
    hu : np.ndarray
        The input ``[z, y, x]`` on its own z grid (not modified).
    spacing : tuple
        The input's ``(z, y, x)`` spacing.
    spec : RunSpec
    tile, overlap, chunk, memory_mb, qc_limits, qc_slice_step
        As in :func:`~.engine.run_model`.
    progress : callable(stage, fraction), optional
    precision : {"fp32", "bf16", "fp16"}
        The network's arithmetic (fp32: the reference figures).

    Raises
    ------
    ResourceExhaustedError
        Out of memory at one slice and the smallest tile.
    """
    prog = progress or (lambda stage, f: None)
    timings: dict = {}
    warnings: list = []
    t0 = time.perf_counter()
    prog("prepare", 0.0)
    x_in, x_model = model_inputs(hu, spacing, spec)
    body = masks.body_mask(x_in)
    timings["prepare_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    multiple = int(getattr(module, "multiple", 4))
    box = crop_box(body)
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    tile = max(h, w) if tile is None else tile
    tile = max(MIN_TILE, int(np.ceil(tile / multiple) * multiple))
    chunk = chunk_slices(h, w, tile, memory_mb) if chunk is None else int(chunk)
    n, half = x_model.shape[0], spec.context // 2
    out = np.empty_like(x_model)
    run_mod = prepare_cpu_module(module)
    dev = "cpu"
    blend_s = 0.0
    z = 0
    while z < n:
        z1 = min(n, z + chunk)
        idx = np.clip(np.arange(z - half, z1 + half), 0, n - 1)
        stack = scale(x_model[idx, y0:y1, x0:x1], spec)
        x = np.stack([stack[k: k + spec.context] for k in range(z1 - z)])
        try:
            y = tiling.infer_chunk_2d(run_mod, x, spec.cond, dev, tile, overlap, multiple, precision=precision)
        except tiling.TileOOM as exc:
            dev, tile, chunk = after_oom(exc, dev, tile, chunk, warnings)
            continue
        tb = time.perf_counter()
        for_slabs(lambda a, b, y=y, z=z: blend_chunk(out, y[a - z:b - z], x_model, x_in, body, a, b, box, spec),
                  z, z1)
        blend_s += time.perf_counter() - tb
        z = z1
        prog("inference", z / n)
    timings["inference_s"] = time.perf_counter() - t1 - blend_s
    timings["blend_s"] = blend_s

    t3 = time.perf_counter()
    prog("qc", 0.0)
    by = [y0 + b for b in tiling.tile_borders(h, min(tile, h), overlap)]
    bx = [x0 + b for b in tiling.tile_borders(w, min(tile, w), overlap)]
    step = qc_slice_step or max(1, out.shape[0] // 64)
    qc, qc_warn = qcmod.measure_qc(x_in, out, body, by, bx, qc_limits, step,
                                   change_reference=x_model if x_model is not x_in else None)
    qc["tile"] = int(tile)
    qc["overlap"] = overlap
    warnings.extend(qc_warn)
    timings["qc_s"] = time.perf_counter() - t3
    prog("qc", 1.0)
    return PathResult(out, qc, "cpu", warnings, timings)


def prepare_cpu_module(module):
    """The module in channels-last layout (a layout change only: same weights, faster oneDNN convolutions)."""
    import torch

    return module.to(memory_format=torch.channels_last)
