"""Tiled, memory-bounded model evaluation with Gaussian blending (MONAI sliding windows).

The 2.5D models run slice-chunk by slice-chunk (true neighbouring slices as channels,
so z has no tiles and no seams). In-plane, a window as large as the (body-cropped) slice
needs no blending and runs as plain batches; smaller windows go through MONAI's
``sliding_window_inference`` (imported only then), which blends overlapping windows with
a Gaussian importance map. Out-of-memory errors
surface as :class:`TileOOM` so the engine can retry smaller or move to the CPU.
"""

from __future__ import annotations

import math

import numpy as np


class TileOOM(Exception):
    """The device ran out of memory on a chunk (carries the original exception)."""


def is_oom(exc: BaseException) -> bool:
    """True for CUDA OOM, CPU allocator failures and MemoryError."""
    import torch

    if isinstance(exc, MemoryError):
        return True
    oom_cls = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_cls is not None and isinstance(exc, oom_cls):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window start positions along one axis, as MONAI's dense patch slicing lays them out."""
    if roi >= size:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    n = int(math.ceil((size - roi) / interval)) + 1
    return sorted({min(i * interval, size - roi) for i in range(n)})


def tile_borders(size: int, roi: int, overlap: float) -> list[int]:
    """Indices where a window edge falls inside an axis of length ``size`` (for the seam QC)."""
    b = set()
    for s in window_starts(size, roi, overlap):
        b.update(p for p in (s, s + roi) if 0 < p < size)
    return sorted(b)


def autocast_context(device: str, precision: str = "auto"):
    """Reduced-precision autocast for the network: ``auto`` is bf16 on CUDA, fp32 elsewhere.

    bf16 rather than fp16 on CUDA: fp16 overflowed in every chunk of ctn-conditioned-v3 on an
    H200 (the 300-slice chest: five chunks, each re-run in fp32, so fp16 cost two passes) and
    on the CPU's emulation of it; bf16 has fp32's range, never overflowed there, and differs
    from fp32 by 0.29 HU on average (max 5.6 HU) on 32 chest slices, well inside the model's
    own error (GPUs before Ampere, without bf16 arithmetic, get fp16). ``fp16`` stays
    available (smaller differences on networks that do not overflow: ctn-conditioned-v2
    0.04 HU vs 0.3 HU; ``test_fast_path.py``); the resident pipeline re-runs any chunk whose
    reduced-precision output is not finite in fp32.
    ``fp32`` turns autocast off; ``bf16``/``fp16`` ask for that type on any device (on the
    CPU: oneDNN's bf16/fp16, how a GPU's reduced precision is emulated in the tests).
    """
    import contextlib

    import torch

    dev_type = str(device).split(":")[0]
    if precision == "fp32" or (precision == "auto" and dev_type != "cuda"):
        return contextlib.nullcontext()
    if precision not in ("auto", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and _bf16_native(dev_type))
    return torch.autocast(dev_type, dtype=torch.bfloat16 if bf16 else torch.float16)


def _bf16_native(dev_type: str) -> bool:
    """Whether ``auto`` may use bf16: not on a GPU older than Ampere (no bf16 arithmetic; fp16 there)."""
    import torch

    if dev_type != "cuda" or not torch.cuda.is_available():
        return True
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before the including_emulation argument
        return bool(torch.cuda.is_bf16_supported())


def roi_for(h: int, w: int, roi: int, multiple: int) -> tuple[int, int]:
    """The in-plane window for an ``h x w`` input: ``roi`` or the whole (padded) slice, on the model's multiple."""
    roi_hw = (min(int(roi), _ceil_to(h, multiple)), min(int(roi), _ceil_to(w, multiple)))
    return tuple(_ceil_to(r, multiple) for r in roi_hw)


def forward_2d(module, t, c, roi_hw: tuple, overlap: float, sw_batch: int = 16):
    """A 2.5D module on a tensor ``t [B, C, h, w]`` (scaled units, on its device) -> ``[B, h, w]``.

    One window covering the slice needs no blending: the slices are padded to the model's
    multiple and run in batches of ``sw_batch`` (no importance map, no aggregation
    buffers, no MONAI). Smaller windows go through MONAI's sliding windows with Gaussian
    blending. Runs under whatever autocast / inference mode the caller set.
    """
    import torch

    h, w = t.shape[2], t.shape[3]

    def predictor(win):
        return module(win, c.expand(win.shape[0], -1).to(win.dtype))

    if roi_hw[0] >= h and roi_hw[1] >= w:
        ph, pw = roi_hw[0] - h, roi_hw[1] - w
        if ph or pw:
            t = torch.nn.functional.pad(t, (0, pw, 0, ph), mode="replicate")
        y = torch.cat([predictor(t[i:i + sw_batch]) for i in range(0, t.shape[0], sw_batch)])
        return y[:, 0, :h, :w]
    from monai.inferers import sliding_window_inference

    y = sliding_window_inference(t, roi_hw, sw_batch, predictor, overlap=overlap, mode="gaussian",
                                 padding_mode="replicate")
    return y[:, 0]


def infer_chunk_2d(module, x: np.ndarray, cond: np.ndarray, device: str, roi: int, overlap: float,
                   multiple: int = 4, sw_batch: int = 16, precision: str = "auto") -> np.ndarray:
    """Run a 2.5D module on ``x [B, C, H, W]`` (scaled units) with in-plane sliding windows.

    Returns ``[B, H, W]`` float32. Raises :class:`TileOOM` on out-of-memory.
    """
    import torch

    roi_hw = roi_for(x.shape[2], x.shape[3], roi, multiple)
    try:
        with torch.inference_mode(), autocast_context(device, precision):
            t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
            c = torch.from_numpy(np.asarray(cond, np.float32)).to(device)[None]
            t = t.contiguous(memory_format=torch.channels_last)  # faster convs on CPU (oneDNN) and GPU
            return forward_2d(module, t, c, roi_hw, overlap, sw_batch).float().cpu().numpy()
    except Exception as exc:  # noqa: BLE001 - OOM is re-raised as TileOOM, anything else unchanged
        if is_oom(exc):
            raise TileOOM(str(exc)) from exc
        raise


def infer_slab_3d(module, x: np.ndarray, device: str, roi: tuple, overlap: float, sw_batch: int = 1,
                  precision: str = "auto") -> np.ndarray:
    """Run a 3D module on ``x [D, H, W]`` (scaled units) with 3D sliding windows; returns its output ``[D', H, W]``."""
    import torch
    from monai.inferers import sliding_window_inference

    roi = tuple(min(int(r), s) for r, s in zip(roi, x.shape))
    try:
        with torch.inference_mode(), autocast_context(device, precision):
            t = torch.from_numpy(np.ascontiguousarray(x))[None, None].to(device)
            t = t.contiguous(memory_format=torch.channels_last_3d)
            y = sliding_window_inference(t, roi, sw_batch, lambda w: module(w), overlap=overlap, mode="gaussian",
                                         padding_mode="replicate")
            return y[0, 0].float().cpu().numpy()
    except Exception as exc:  # noqa: BLE001
        if is_oom(exc):
            raise TileOOM(str(exc)) from exc
        raise


def _ceil_to(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)
