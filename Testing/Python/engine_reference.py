"""A frozen copy of the 2.5D inference path as it was before the fast pipeline (main @ eacac40).

Test-only oracle: ``test_fast_path.py`` checks that the CPU pipeline gives exactly these
outputs and QC figures. It deliberately imports nothing from ``CTNormalizeLib.inference``
that the fast pipeline may change (tiling, blending, masks, QC are copied here); the
ground-floor helpers it uses (body mask, z resampler, front-end, features) are shared.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy import ndimage as ndi

from CTNormalizeLib.imaging import body_mask as _body_mask


def run_reference(package, volume, source, target, plan=None, tile=None, overlap=0.25, chunk=None,
                  memory_mb=1024, qc_slice_step=None):
    """``(output HU, qc)`` of the old ``run_model`` for a 2.5D package on the CPU."""
    import torch

    from CTNormalizeLib.inference import zgrid
    from CTNormalizeLib.inference.frontend import apply_frontend
    from CTNormalizeLib.models.conditioning import pair_features, plan_features

    io = package.card["io"]
    lo, hi = (float(v) for v in io["hu_window"])
    offset, divisor = float(io["scale"]["offset"]), float(io["scale"]["divisor"])
    module = package.load()
    s_sp = float(volume.spacing[0])
    src = replace(source, thickness=source.thickness or s_sp, spacing=source.spacing or s_sp)
    tgt = replace(target, thickness=target.thickness or src.thickness,
                  spacing=target.spacing or target.thickness or src.spacing)
    x_in = zgrid.resample_z(volume.hu, src.spacing, tgt.spacing, src.thickness, tgt.thickness)
    x_model = x_in
    signature_model = io.get("conditioning") == "signature"
    if io.get("frontend"):
        k_s, k_t = src.kernel, tgt.kernel
        if signature_model:
            k_s, k_t = plan.source_signature.transfer, plan.target_signature.transfer
        conv = apply_frontend(io["frontend"], volume.hu, volume.spacing, k_s, k_t, lam=io.get("frontend_lambda"))
        if conv is not volume.hu:
            x_model = zgrid.resample_z(conv, src.spacing, tgt.spacing, src.thickness, tgt.thickness)
    body = _body_mask(x_in, threshold=-500.0, sigma=1.0, step=2)
    feats = plan_features(plan, float(io["frontend_lambda"])) if signature_model else pair_features(src, tgt)
    cond = np.asarray(feats, np.float32)
    old = torch.get_num_threads()
    try:
        y_hu, borders, tile_used = _run_25d(module, x_model, body, cond, lo, hi, offset, divisor, tile, overlap,
                                            chunk, memory_mb, int(io.get("context", 5)))
    finally:
        torch.set_num_threads(old)
    out = _blend(x_model, y_hu, body, lo, hi, weight_from=x_in)
    step = qc_slice_step or max(1, out.shape[0] // 64)
    qc = measure_qc(x_in, out, body, borders[0], borders[1], step,
                    change_reference=x_model if x_model is not x_in else None)
    qc["tile"] = tile_used
    qc["overlap"] = overlap
    return out, qc


def _soft_mask(mask, sigma=2.0):
    soft = np.clip(ndi.gaussian_filter(mask.astype(np.float32), (0, sigma, sigma)), 0.0, 1.0)
    soft[soft < 0.01] = 0.0
    return soft


def _window_weight(hu_smooth, lo, hi, ramp=150.0):
    w = np.ones_like(hu_smooth, dtype=np.float32)
    w = np.minimum(w, np.clip((hu_smooth - (lo - ramp)) / ramp, 0, 1))
    w = np.minimum(w, np.clip(((hi + ramp) - hu_smooth) / ramp, 0, 1))
    return w


def _blend(x_pass, y_hu, body, lo, hi, weight_from=None):
    ref = x_pass if weight_from is None else weight_from
    sm = ndi.gaussian_filter(ref, (0, 1.0, 1.0))
    w = _soft_mask(body, 2.0) * _window_weight(sm, lo, hi)
    return (x_pass + w * (y_hu - x_pass)).astype(np.float32)


def _crop_box(body, margin):
    Y, X = body.shape[1:]
    proj = body.any(axis=0)
    if not proj.any():
        return 0, Y, 0, X
    ys, xs = np.where(proj.any(axis=1))[0], np.where(proj.any(axis=0))[0]
    y0, y1 = max(0, ys[0] - margin), min(Y, ys[-1] + 1 + margin)
    x0, x1 = max(0, xs[0] - margin), min(X, xs[-1] + 1 + margin)
    return int(y0), int(y1), int(x0), int(x1)


def _run_25d(module, x_in, body, cond, lo, hi, offset, divisor, tile, overlap, chunk, memory_mb, context):
    multiple = int(getattr(module, "multiple", 4))
    y0, y1, x0, x1 = _crop_box(body, 16)
    crop = x_in[:, y0:y1, x0:x1]
    scaled = ((np.clip(crop, lo, hi) - offset) / divisor).astype(np.float32)
    h, w = scaled.shape[1:]
    if tile is None:
        tile = max(h, w)
    tile = max(64, int(np.ceil(tile / multiple) * multiple))
    per_slice = 64 * 4 * min(tile, h) * min(tile, w)
    if chunk is None:
        chunk = int(max(1, min(32, memory_mb * 2 ** 20 // per_slice)))
    n = scaled.shape[0]
    out = np.empty_like(scaled)
    half = context // 2
    run_mod = module.to(memory_format=__import__("torch").channels_last)
    for z in range(0, n, chunk):
        z1 = min(n, z + chunk)
        idx = np.clip(np.arange(z - half, z1 + half), 0, n - 1)
        stack = scaled[idx]
        x = np.stack([stack[k: k + context] for k in range(z1 - z)])
        out[z:z1] = _infer_chunk_2d(run_mod, x, cond, tile, overlap, multiple)
    full = x_in.copy()
    full[:, y0:y1, x0:x1] = out * divisor + offset
    by = [y0 + b for b in _tile_borders(h, min(tile, h), overlap)]
    bx = [x0 + b for b in _tile_borders(w, min(tile, w), overlap)]
    return full, (by, bx), int(tile)


def _ceil_to(n, m):
    return int(math.ceil(n / m) * m)


def _window_starts(size, roi, overlap):
    if roi >= size:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    n = int(math.ceil((size - roi) / interval)) + 1
    return sorted({min(i * interval, size - roi) for i in range(n)})


def _tile_borders(size, roi, overlap):
    b = set()
    for s in _window_starts(size, roi, overlap):
        b.update(p for p in (s, s + roi) if 0 < p < size)
    return sorted(b)


def _infer_chunk_2d(module, x, cond, roi, overlap, multiple=4, sw_batch=16):
    import torch
    from monai.inferers import sliding_window_inference

    h, w = x.shape[2], x.shape[3]
    roi_hw = (min(roi, _ceil_to(h, multiple)), min(roi, _ceil_to(w, multiple)))
    roi_hw = tuple(_ceil_to(r, multiple) for r in roi_hw)
    # enable_grad: the network's original (autograd) forward, not its in-place inference variant
    with torch.enable_grad():
        t = torch.from_numpy(np.ascontiguousarray(x))
        c = torch.from_numpy(np.asarray(cond, np.float32))[None]
        t = t.contiguous(memory_format=torch.channels_last)

        def predictor(win):
            return module(win, c.expand(win.shape[0], -1).to(win.dtype))

        if roi_hw[0] >= h and roi_hw[1] >= w:
            ph, pw = roi_hw[0] - h, roi_hw[1] - w
            if ph or pw:
                t = torch.nn.functional.pad(t, (0, pw, 0, ph), mode="replicate")
            y = torch.cat([predictor(t[i:i + sw_batch]).detach() for i in range(0, t.shape[0], sw_batch)])
            return y[:, 0, :h, :w].float().numpy()
        y = sliding_window_inference(t, roi_hw, sw_batch, lambda win: predictor(win).detach(), overlap=overlap,
                                     mode="gaussian", padding_mode="replicate")
        return y[:, 0].float().numpy()


REGIONS = {"air": (None, -900.0), "fat": (-150.0, -50.0), "muscle": (20.0, 80.0)}
LIMITS = {"seam_ratio": 1.5, "hu_drift": 20.0, "changed_fraction": 0.05, "change_hu": 50.0}


def _seam_ratio(change, borders_y, borders_x, mask=None):
    borders_y = sorted(b for b in set(borders_y) if 0 < b < change.shape[1])
    borders_x = sorted(b for b in set(borders_x) if 0 < b < change.shape[2])
    if not borders_y and not borders_x:
        return None
    dy = np.abs(np.diff(change, axis=1))
    dx = np.abs(np.diff(change, axis=2))
    my = mask[:, 1:, :] & mask[:, :-1, :]
    mx = mask[:, :, 1:] & mask[:, :, :-1]

    def _mean(d, m, sel, axis):
        d = np.take(d, sel, axis=axis)
        m = np.take(m, sel, axis=axis)
        return float(d[m].mean()) if m.any() else np.nan

    def _split(n, borders):
        b = np.array([i - 1 for i in borders], int)
        near = set()
        for i in b:
            near.update(range(max(0, i - 2), min(n, i + 3)))
        return b, np.array([i for i in range(n) if i not in near], int)

    num, den = [], []
    if borders_y:
        b, inner = _split(dy.shape[1], borders_y)
        num.append(_mean(dy, my, b, 1))
        den.append(_mean(dy, my, inner, 1))
    if borders_x:
        b, inner = _split(dx.shape[2], borders_x)
        num.append(_mean(dx, mx, b, 2))
        den.append(_mean(dx, mx, inner, 2))
    num, den = np.nanmean(num), np.nanmean(den)
    if not np.isfinite(num) or not np.isfinite(den):
        return None
    return float(num / max(den, 1e-6))


def measure_qc(inp, out, body, borders_y, borders_x, slice_step, change_reference=None):
    sl = slice(None, None, max(1, int(slice_step)))
    inp, out, body = inp[sl], out[sl], body[sl]
    ref = inp if change_reference is None else change_reference[sl]
    qc = {"slices_used": int(inp.shape[0])}
    qc["seam_ratio"] = _seam_ratio(out - inp, borders_y, borders_x, body)
    sm_in = ndi.gaussian_filter(inp, (0, 1.5, 1.5))
    sm_out = ndi.gaussian_filter(out, (0, 1.5, 1.5))
    sm_cls = ndi.gaussian_filter(inp, (0, 3.0, 3.0))
    drift = {}
    for name, (lo, hi) in REGIONS.items():
        region = ~body if name == "air" else body
        region = region & (sm_cls < hi) & (sm_cls > lo if lo is not None else True)
        drift[name] = float(np.median(out[region]) - np.median(inp[region])) if region.sum() >= 200 else None
    qc["hu_drift"] = drift
    nonlung = body & (sm_in > -400)
    sm_ref = sm_in if change_reference is None else ndi.gaussian_filter(ref, (0, 1.5, 1.5))
    qc["changed_fraction"] = (float((np.abs(sm_out - sm_ref)[nonlung] > LIMITS["change_hu"]).mean())
                              if nonlung.any() else None)
    return qc
