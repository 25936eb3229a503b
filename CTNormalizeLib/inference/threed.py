"""3D models (the S0 reference generator): z slabs with a halo, each through 3D sliding windows.

The S0 reference is kept as the speed and quality baseline; its pipeline is the original
full-volume one (z resampling, body mask, tiled 3D inference, blend, QC).
"""

from __future__ import annotations

import copy
import time

import numpy as np
from scipy import ndimage as ndi

from . import masks, qc as qcmod, tiling, zgrid
from .cpu_path import PathResult
from .oom import after_oom


def prepare_module(module, device: str, three_d: bool = False):
    """The module on ``device`` in channels-last layout (a copy off the CPU, so the cached CPU module stays usable)."""
    import torch

    fmt = torch.channels_last_3d if three_d else torch.channels_last
    if device == "cpu":
        return module.to(memory_format=fmt)
    return copy.deepcopy(module).to(device).to(memory_format=fmt)


def _scale(hu, lo, hi, offset, divisor):
    return ((np.clip(hu, lo, hi) - offset) / divisor).astype(np.float32)


def _blend(x_pass, y_hu, body, lo, hi):
    sm = ndi.gaussian_filter(x_pass, (0, 1.0, 1.0))
    w = masks.soft_mask(body, 2.0) * masks.window_weight(sm, lo, hi)
    return (x_pass + w * (y_hu - x_pass)).astype(np.float32)


def run_3d(module, hu: np.ndarray, card: dict, src, tgt, dev: str, tile, overlap: float, qc_limits,
           qc_slice_step, prog, precision: str = "auto") -> PathResult:
    """The S0-style pipeline: input z grid -> network (z up-sampling) -> target z grid, blend, QC."""
    io = card["io"]
    lo, hi = (float(v) for v in io["hu_window"])
    offset, divisor = float(io["scale"]["offset"]), float(io["scale"]["divisor"])
    warnings: list = []
    timings: dict = {}
    t0 = time.perf_counter()
    z_up = int(io.get("z_up_factor") or 1)
    base_sp = src.spacing / z_up
    x_in = zgrid.resample_z(hu, src.spacing, base_sp, src.thickness, src.thickness)
    body = masks.body_mask(x_in)
    timings["prepare_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    y_hu, dev, borders, tile_used = _infer(module, hu, lo, hi, offset, divisor, dev, tile, overlap, warnings, prog,
                                           x_in.shape[0], precision)
    timings["inference_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    out = _blend(x_in, y_hu, body, lo, hi)
    del y_hu
    if abs(base_sp - tgt.spacing) > 1e-3 * tgt.spacing:
        out = zgrid.resample_z(out, base_sp, tgt.spacing, base_sp, tgt.thickness)
        x_in = zgrid.resample_z(x_in, base_sp, tgt.spacing, base_sp, tgt.thickness)
        body = masks.body_mask(x_in)
    timings["blend_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    step = qc_slice_step or max(1, out.shape[0] // 64)
    qc, qc_warn = qcmod.measure_qc(x_in, out, body, borders[0], borders[1], qc_limits, step)
    qc["tile"] = tile_used
    qc["overlap"] = overlap
    warnings.extend(qc_warn)
    timings["qc_s"] = time.perf_counter() - t3
    return PathResult(out, qc, dev, warnings, timings)


def _infer(module, hu, lo, hi, offset, divisor, dev, tile, overlap, warnings, prog, n_out, precision):
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
            y = tiling.infer_slab_3d(run_mod, scaled[a:b], dev, roi, overlap, precision=precision)
        except tiling.TileOOM as exc:
            new_dev, tile, _ = after_oom(exc, dev, tile, 1, warnings)
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
