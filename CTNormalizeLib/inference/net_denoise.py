"""The learned blind denoiser (a ``role: denoiser`` model package) as the classical chain's noise step.

The package's network removes noise it is told about: its std (the strength knob) and
the in-plane transfer that shaped it (:func:`~CTNormalizeLib.models.conditioning.denoise_features`).
Here it becomes a :class:`~CTNormalizeLib.classical.denoise.StackDenoiser`, conditioned on
the plan's measured source signature, and :func:`run_chain` runs the classical chain
(denoise -> MTF ratio -> slice profile -> texture) with it in place of non-local means.
"""

from __future__ import annotations

import numpy as np

#: Slices per network call (bounds the activations' memory: ~70 MB per 512 x 512 slice in fp32).
BATCH = 4


def stack_denoiser(package, transfer, pixel_mm: float, device: str = "cpu"):
    """A :class:`~CTNormalizeLib.classical.denoise.StackDenoiser` running ``package`` on ``device``.

    Parameters
    ----------
    package : ModelPackage
        A package whose card has ``role: denoiser``.
    transfer : callable
        The source's in-plane transfer (cycles/mm -> gain), as the signature measured it.
    pixel_mm : float
        In-plane pixel size.
    device : str
        torch device name (``cpu``, ``cuda``, ...).
    """
    import torch
    import torch.nn.functional as F

    from ..classical.denoise import StackDenoiser
    from ..models.conditioning import denoise_features

    module = package.load().to(device)
    div = float(package.card["io"]["scale"]["divisor"])
    off = float(package.card["io"]["scale"]["offset"])
    lo, hi = package.card["io"]["hu_window"]
    mult = int(getattr(module, "multiple", 4))

    def fn(stack: np.ndarray, strength: float) -> np.ndarray:
        stack = np.asarray(stack, np.float32)
        n, h, w = stack.shape
        ph, pw = (-h) % mult, (-w) % mult
        cond = torch.tensor([denoise_features(strength, transfer, pixel_mm)], dtype=torch.float32, device=device)
        out = np.empty_like(stack)
        with torch.inference_mode():
            for i in range(0, n, BATCH):
                x = torch.from_numpy((np.clip(stack[i:i + BATCH], lo, hi) - off) / div)[:, None].to(device)
                if ph or pw:
                    x = F.pad(x, (0, pw, 0, ph), mode="reflect")
                y = module(x, cond.expand(x.shape[0], -1))[:, 0, :h, :w]
                # the network only sees the clipped window; outside it, keep the input's excess
                out[i:i + BATCH] = y.float().cpu().numpy() * div + off + (stack[i:i + BATCH]
                                                                          - np.clip(stack[i:i + BATCH], lo, hi))
        return out

    return StackDenoiser(package.name, fn)


def run_chain(package, volume, plan, progress=None):
    """The classical chain on ``volume`` with ``package`` as its denoiser; a :class:`MethodResult`."""
    from ..classical import chain
    from .device import resolve_device

    dev = resolve_device(plan.device)
    sig = plan.source_signature
    den = stack_denoiser(package, sig.transfer, float(volume.spacing[1]), dev)
    res = chain.run(volume, plan, progress, options={"denoise_method": den, "label": package.name})
    res.model_sha256 = package.sha256
    res.device = dev
    return res
