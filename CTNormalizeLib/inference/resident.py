"""The device-resident pipeline of 2.5D models: the volume goes to the device once, the result comes back.

On the device (torch): z resampling, the fixed front-end (FFT), the body mask's smoothing
and threshold, scaling, the network in whole-slice batches (its receptive field is far
smaller than the 16 px margin of the body crop, so there are no tiles and no blending;
bf16/fp16 autocast on CUDA), the HU bookkeeping and blend, the QC figures.

On the host: the body mask's connected components (largest 3D component, holes filled per
slice, scipy) on the half-resolution thresholded mask, a download of 1/16 of the volume's
bytes; the device runs the front-end meanwhile. Copies go through pinned buffers on a side
stream (:mod:`.hostcopy`); each chunk of the result is downloaded while the next is computed.

Every stage has the CPU pipeline's definition (:mod:`.cpu_path`); on ``torch.device("cpu")``
this module runs as is (that is how it is tested here) and agrees with the CPU pipeline to
float32 rounding in fp32, and to the stated tolerance in bf16/fp16.
"""

from __future__ import annotations

import time

import numpy as np

from . import tiling, torch_ops
from .cpu_path import PathResult, crop_box
from .oom import MIN_TILE, after_oom
from .qc_device import measure_qc_device
from .runspec import RunSpec


class DeviceOOM(Exception):
    """The device ran out of memory at the smallest chunk and tile: run on the CPU instead."""


def run_resident(module, hu: np.ndarray, spacing, spec: RunSpec, device: str, *, tile=None, overlap: float = 0.25,
                 chunk=None, qc_limits=None, qc_slice_step=None, progress=None, precision: str = "auto",
                 warnings=None) -> PathResult:
    """The whole 2.5D pipeline on ``device`` (``cuda:N``, ``mps`` or ``cpu``); see the module docstring.

    Raises
    ------
    DeviceOOM
        Out of memory even at one slice and the smallest tile (the caller falls back to the CPU).
    """
    import torch

    prog = progress or (lambda stage, f: None)
    warnings = [] if warnings is None else warnings
    dev = torch_device(device)
    timings: dict = {}
    sync = _synchronizer(dev)
    with torch.inference_mode():
        t0 = time.perf_counter()
        prog("prepare", 0.0)
        from .hostcopy import HostCopies

        copies = HostCopies(dev, hu.shape[1:])
        x = copies.upload(hu)
        x_in, x_model, body = _prepare(x, spacing, spec)
        box = crop_box(body["proj"][None])
        body = body["mask"]
        sync()
        timings["prepare_s"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        out_host = np.empty(tuple(x_in.shape), np.float32)
        try:
            out, tile_used, borders = _infer_and_blend(module, x_in, x_model, body, box, spec, dev, tile, overlap,
                                                       chunk, precision, copies, out_host, warnings, prog)
        except DeviceOOM:
            copies.finish()
            raise
        sync()
        timings["inference_s"] = time.perf_counter() - t1

        t3 = time.perf_counter()
        prog("qc", 0.0)
        step = qc_slice_step or max(1, out.shape[0] // 64)
        qc, qc_warn = measure_qc_device(x_in, out, body, borders[0], borders[1], qc_limits, step,
                                        change_reference=x_model if x_model is not x_in else None)
        qc["tile"] = int(tile_used)
        qc["overlap"] = overlap
        warnings.extend(qc_warn)
        timings["qc_s"] = time.perf_counter() - t3
        t4 = time.perf_counter()
        copies.finish()
        timings["download_wait_s"] = time.perf_counter() - t4
        prog("qc", 1.0)
    return PathResult(out_host, qc, str(dev), warnings, timings)


def torch_device(name: str):
    """The torch device of a resolved device name (a seam for tests that stand the CPU in for a GPU)."""
    import torch

    return torch.device(name)


def oom_policy_name(dev) -> str:
    """The device name the out-of-memory policy sees (a GPU's moves to the CPU at the floor)."""
    return str(dev)


def network(run_mod, xb, cond, roi_hw, overlap):
    """The network on one chunk (whole slices, or MONAI windows when ``roi_hw`` is smaller)."""
    return tiling.forward_2d(run_mod, xb, cond, roi_hw, overlap)


def _synchronizer(dev):
    import torch

    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    if dev.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def _prepare(x, spacing, spec: RunSpec):
    """``x_in``, ``x_model`` (on the output z grid) and the body mask, overlapping host and device work."""
    import torch

    from .masks import body_components

    x_in = torch_ops.resample_z(x, spec.src_spacing, spec.tgt_spacing, spec.src_thickness, spec.tgt_thickness)
    small = torch_ops.gaussian_inplane(x_in[:, ::2, ::2], 1.0) > -500.0
    small_host = _to_host_async(small)
    x_model = x_in
    if spec.frontend_active:  # queued on the device while the host labels the mask
        lam = spec.frontend_lambda
        if lam is None:
            from .frontend import MTF_LAMBDA

            lam = MTF_LAMBDA
        conv = torch_ops.frontend_filter(x, spacing[-2:], spec.frontend_source, spec.frontend_target, lam)
        x_model = torch_ops.resample_z(conv, spec.src_spacing, spec.tgt_spacing, spec.src_thickness,
                                       spec.tgt_thickness)
        del conv
    m = body_components(small_host())
    Y, X = x_in.shape[1:]
    proj = np.repeat(np.repeat(m.any(axis=0), 2, axis=0), 2, axis=1)[:Y, :X]
    mt = torch.from_numpy(m).to(x.device, non_blocking=False)
    mask = mt.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[:, :Y, :X]
    return x_in, x_model, {"mask": mask, "proj": proj}


def _to_host_async(t):
    """Start copying a (small) tensor to the host; the returned function waits and gives the numpy array."""
    import torch

    if t.device.type != "cuda":
        return lambda: t.cpu().numpy()
    buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    buf.copy_(t, non_blocking=True)
    ev = torch.cuda.Event()
    ev.record()

    def wait():
        ev.synchronize()
        return buf.numpy()
    return wait


ACTIVATION_BYTES_PER_PIXEL = 512  # generous for the 2.5D networks shipped (bf16 activations)


def _default_chunk(dev, h: int, w: int) -> int:
    """Slices per forward pass: up to 64, within a quarter of the free device memory."""
    import torch

    if dev.type != "cuda":
        return 16
    free, _ = torch.cuda.mem_get_info(dev)
    return int(max(1, min(64, free // 4 // (ACTIVATION_BYTES_PER_PIXEL * h * w))))


def _infer_and_blend(module, x_in, x_model, body, box, spec, dev, tile, overlap, chunk, precision, copies,
                     out_host, warnings, prog):
    """Network in chunks of whole (cropped) slices, HU bookkeeping and blend; each chunk downloaded as it is done."""
    import torch

    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    multiple = int(getattr(module, "multiple", 4))
    tile = max(h, w) if tile is None else tile
    tile = max(MIN_TILE, int(np.ceil(tile / multiple) * multiple))
    chunk = _default_chunk(dev, h, w) if chunk is None else int(chunk)
    run_mod = _device_module(module, dev)
    cond = torch.as_tensor(spec.cond, device=dev)[None]
    n, half, ctx = x_model.shape[0], spec.context // 2, spec.context
    out = torch.empty_like(x_model)
    z = 0
    while z < n:
        z1 = min(n, z + chunk)
        idx = torch.as_tensor(np.clip(np.arange(z - half, z1 + half), 0, n - 1), device=dev)
        crop = x_model[:, y0:y1, x0:x1].index_select(0, idx)
        scaled = ((crop.clamp(spec.lo, spec.hi) - spec.offset) / spec.divisor)
        xb = scaled.unfold(0, ctx, 1).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        try:
            roi_hw = tiling.roi_for(h, w, tile, multiple)
            with tiling.autocast_context(str(dev), precision):
                y = network(run_mod, xb, cond, roi_hw, overlap).float()
            if _reduced(dev, precision) and not bool(torch.isfinite(y).all()):
                _warn_nonfinite(warnings, z, z1)
                y = network(run_mod, xb, cond, roi_hw, overlap).float()
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            if not tiling.is_oom(exc):
                raise
            del xb, scaled, crop
            name = oom_policy_name(dev)
            new_dev, tile, chunk = after_oom(exc, name, tile, chunk, warnings)
            if new_dev != name:  # after_oom has said so in a warning
                raise DeviceOOM(str(exc)) from exc
            continue
        blended = _blend(y, x_model[z:z1, y0:y1, x0:x1], x_in[z:z1, y0:y1, x0:x1], body[z:z1, y0:y1, x0:x1], spec)
        out[z:z1] = x_model[z:z1]
        out[z:z1, y0:y1, x0:x1] = blended
        copies.download_async(out[z:z1], out_host[z:z1])
        z = z1
        prog("inference", z / n)
    by = [y0 + b for b in tiling.tile_borders(h, min(tile, h), overlap)]
    bx = [x0 + b for b in tiling.tile_borders(w, min(tile, w), overlap)]
    return out, tile, (by, bx)


def _reduced(dev, precision: str) -> bool:
    return precision in ("bf16", "fp16") or (precision == "auto" and dev.type == "cuda")


def _warn_nonfinite(warnings: list, z0: int, z1: int) -> None:
    warnings.append({"code": "REDUCED_PRECISION_OVERFLOW", "message":
                     f"The network overflowed in reduced precision on slices {z0}-{z1 - 1}; they were re-run in fp32."})


def _blend(y_scaled, x_pass, x_in, body, spec: RunSpec):
    """:func:`.cpu_path.blend_chunk` on tensors: the network inside the body and the HU window, else ``x_pass``."""
    y_hu = y_scaled * spec.divisor + spec.offset
    sm = torch_ops.gaussian_inplane(x_in, 1.0)
    wgt = torch_ops.soft_mask(body, 2.0)
    wgt *= torch_ops.window_weight(sm, spec.lo, spec.hi)
    y_hu -= x_pass
    y_hu *= wgt
    y_hu += x_pass
    return y_hu


def _device_module(module, dev):
    """The module on ``dev`` in channels-last layout (a copy off the CPU, so the cached CPU module stays usable)."""
    import copy

    import torch

    if dev.type == "cpu":
        return module.to(memory_format=torch.channels_last)
    return copy.deepcopy(module).to(dev).to(memory_format=torch.channels_last)
