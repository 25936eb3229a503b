"""The learned blind denoiser (a ``role: denoiser`` model package) as the classical chain's noise step.

The package's network removes noise it is told about: its std (the strength knob) and
the in-plane transfer that shaped it (:func:`~CTNormalizeLib.models.conditioning.denoise_features`).
A package whose card says ``io.context = 3`` sees each slice with its two neighbours
(mirrored at the volume's ends); the chain hands it chunks with that many extra slices.
Here it becomes a :class:`~CTNormalizeLib.classical.denoise.StackDenoiser`, conditioned on
the plan's measured source signature, and :func:`run_chain` runs the classical chain
(denoise -> MTF ratio -> slice profile -> texture) with it in place of non-local means. A card
with ``chain.nlm_blend`` (weights per kind of pair, chosen on validation scans) has the clean
texture average the network's output with calibrated NLM's (leaving ``chain.nlm_residual`` of
the noise, also per kind, or picked for each scan where ``chain.nlm_residual_choice`` says
``risk``: :mod:`~CTNormalizeLib.classical.blend_risk`); one with ``chain.flips`` (per kind: 1, 2 or 4) has the clean texture
average the network over that many in-plane flips of its input (:data:`FLIP_VIEWS`).
"""

from __future__ import annotations

import numpy as np

#: Slices per network call (bounds the activations' memory: ~70 MB per 512 x 512 slice in fp32).
BATCH = 4
#: Pixels around the body's bounding box that the network also sees (context for the body's edge).
MARGIN = 32
#: Test-time flip averaging: for ``flips`` = n, the network runs on these n views of its input (the
#: tensor dimensions flipped: 3 = left-right, 2 = up-down), each output flipped back, and averages
#: them. The network was trained on flipped patches but is not exactly flip-equivariant: the
#: average errs less, at n times the network's time.
FLIP_VIEWS = {1: ((),), 2: ((), (3,)), 4: ((), (3,), (2,), (2, 3))}


def body_region(stack: np.ndarray, margin: int = MARGIN, multiple: int = 1):
    """Where the network runs: the body's bounding box plus ``margin`` pixels, and the blend weight there.

    The box starts on a multiple of ``multiple`` pixels (the network's down-sampling factor):
    the network is shift-equivariant only by whole multiples, so boxes of different chunks
    of one volume (whose bodies differ) give the same values where they overlap.

    Air outside the body keeps its input values (as with the learned normalizers), through a
    feathered mask of everything denser than -500 HU (holes filled, dilated 4 pixels), so no
    edge shows; the network's time goes to the body. A stack without a body (e.g. a
    calibration patch of pure noise) is taken whole. ``stack`` must be finite.
    """
    from scipy import ndimage as ndi

    from .masks import body_mask, soft_mask

    n, h, w = stack.shape
    body = body_mask(stack, largest=False)  # arms apart from the torso too
    if not body.any():
        return (0, h, 0, w), np.float32(1.0)
    rows, cols = np.nonzero(body.any(axis=(0, 2)))[0], np.nonzero(body.any(axis=(0, 1)))[0]
    y0, y1 = max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)
    x0, x1 = max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)
    y0, x0 = y0 - y0 % multiple, x0 - x0 % multiple
    grown = ndi.binary_dilation(body[:, y0:y1, x0:x1], structure=np.ones((1, 3, 3), bool), iterations=4)
    return (y0, y1, x0, x1), soft_mask(grown, 2.0)


def stack_denoiser(package, transfer, pixel_mm: float, device: str = "cpu", flips: int = 1):
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
    flips : int
        Views of each input averaged (a key of :data:`FLIP_VIEWS`).
    """
    import torch
    import torch.nn.functional as F

    from ..classical.denoise import StackDenoiser
    from ..models.conditioning import denoise_features

    import copy

    on_cpu = str(device) == "cpu"
    # the package caches its module: convert or move a copy. On the CPU the network runs ~1.3x faster on
    # channels-last tensors (oneDNN; measured on 16 lung1 slices; outputs within 0.0005 HU)
    module = copy.deepcopy(package.load())
    module = module.to(memory_format=torch.channels_last) if on_cpu else module.to(device)
    div = float(package.card["io"]["scale"]["divisor"])
    off = float(package.card["io"]["scale"]["offset"])
    lo, hi = package.card["io"]["hu_window"]
    mult = int(getattr(module, "multiple", 4))

    context = int(package.card["io"].get("context", 1))
    k = context // 2
    if not _is_flip_count(flips):
        from ..errors import BadInputError

        raise BadInputError(f"flips must be one of {', '.join(map(str, FLIP_VIEWS))}, not {flips!r}.")
    views = FLIP_VIEWS[flips]

    def averaged(x, cond):
        total = None
        for dims in views:
            y = module(torch.flip(x, dims) if dims else x, cond)
            y = torch.flip(y, dims) if dims else y
            total = y if total is None else total.add_(y)
        return total if len(views) == 1 else total.div_(len(views))

    def net(x_hu: np.ndarray, cond) -> np.ndarray:
        from ..imaging.zgrid import reflect_index

        n, h, w = x_hu.shape
        ph, pw = (-h) % mult, (-w) % mult
        clipped = np.clip(x_hu, lo, hi)
        out = np.empty_like(x_hu)
        with torch.inference_mode():
            for i in range(0, n, BATCH):
                idx = [[reflect_index(z + j, n) for j in range(-k, k + 1)] for z in range(i, min(n, i + BATCH))]
                x = torch.from_numpy((clipped[np.asarray(idx)] - off) / div).to(device)  # [b, context, h, w]
                if ph or pw:
                    x = F.pad(x, (0, pw, 0, ph), mode="replicate")
                if on_cpu:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = averaged(x, cond.expand(x.shape[0], -1))[:, 0, :h, :w]
                # the network only sees the clipped window; outside it, keep the input's excess
                part = x_hu[i:i + BATCH]
                out[i:i + BATCH] = y.float().cpu().numpy() * div + off + (part - clipped[i:i + BATCH])
        return out

    def fn(stack: np.ndarray, strength: float) -> np.ndarray:
        stack = np.asarray(stack, np.float32)
        bad = ~np.isfinite(stack)
        if bad.any():  # a non-finite voxel must not spread through the network: fill, then put it back
            out = fn(np.where(bad, np.float32(-1000.0), stack), strength)
            out[bad] = stack[bad]
            return out
        cond = torch.tensor([denoise_features(strength, transfer, pixel_mm)], dtype=torch.float32, device=device)
        (y0, y1, x0, x1), weight = body_region(stack, multiple=mult)
        crop = stack[:, y0:y1, x0:x1]
        out = stack.copy()
        out[:, y0:y1, x0:x1] = crop + weight * (net(np.ascontiguousarray(crop), cond) - crop)
        return out

    def region(stack: np.ndarray) -> np.ndarray:
        stack = np.where(np.isfinite(stack), stack, np.float32(-1000.0))
        (y0, y1, x0, x1), weight = body_region(stack, multiple=mult)
        full = np.zeros(stack.shape, np.float32)
        full[:, y0:y1, x0:x1] = weight
        return full

    # with a halo, each chunk's network run also covers 2k slices it throws away: larger chunks waste less
    name = package.name if flips == 1 else f"{package.name} ({flips} flips averaged)"
    return StackDenoiser(name, fn, chunk=16 if k else 8, halo=k, region=region, views=flips)


def chain_value(card: dict, field: str, kind: str, default):
    """``card["chain"][field][kind]``, or its one value for every kind, or ``default``.

    The value itself is the caller's to check; a per-kind mapping whose keys are not kinds of pair
    (a misspelt ``"noise-only"``) is refused here, so a setting is never silently replaced by the default.
    """
    from ..errors import BadInputError
    from ..signature.signature import KIND_NAMES

    v = (card.get("chain") or {}).get(field)
    if v is None:
        return default
    if not isinstance(v, dict):
        return v
    unknown = sorted(str(k) for k in v if k not in KIND_NAMES)
    if unknown:
        raise BadInputError(f"Model card {card.get('name')!r}: chain.{field} has {', '.join(map(repr, unknown))}, "
                            f"which is not a kind of pair (one of {', '.join(KIND_NAMES)}).")
    return v.get(kind, default)


def _card_fraction(card: dict, field: str, kind: str, default: float, open_interval: bool = False) -> float:
    """:func:`chain_value` range-checked to [0, 1] (or (0, 1))."""
    from ..errors import BadInputError

    raw = chain_value(card, field, kind, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    inside = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not inside:
        bounds = "above 0 and below 1" if open_interval else "in [0, 1]"
        raise BadInputError(f"Model card {card.get('name')!r}: chain.{field} for {kind} must be a number "
                            f"{bounds}, not {raw!r}.")
    return value


def nlm_blend(card: dict, kind: str) -> float:
    """The weight of NLM in the clean texture's denoising for a ``kind`` of pair (card ``chain.nlm_blend``; 0 if none)."""
    return _card_fraction(card, "nlm_blend", kind, 0.0)


def nlm_residual(card: dict, kind: str) -> float:
    """The noise fraction the blend's NLM leaves for a ``kind`` of pair (card ``chain.nlm_residual``; default
    the clean chain's :data:`~CTNormalizeLib.classical.denoise.CLEAN_RESIDUAL`)."""
    from ..classical.denoise import CLEAN_RESIDUAL

    # 0 would ask NLM for a noise-free image, 1 to remove nothing
    return _card_fraction(card, "nlm_residual", kind, CLEAN_RESIDUAL, open_interval=True)


#: ``chain.nlm_residual_choice`` values: the card's residual, or one picked per scan (:mod:`~CTNormalizeLib.classical.blend_risk`)
RESIDUAL_CHOICES = ("card", "risk")


def residual_by_risk(card: dict, kind: str) -> bool:
    """Whether the blend's NLM residual is picked per scan for a ``kind`` of pair (card ``chain.nlm_residual_choice``
    ``"risk"``) rather than read from ``chain.nlm_residual`` (``"card"``, the default)."""
    from ..errors import BadInputError

    value = chain_value(card, "nlm_residual_choice", kind, "card")
    if value not in RESIDUAL_CHOICES:
        raise BadInputError(f"Model card {card.get('name')!r}: chain.nlm_residual_choice for {kind} must be one of "
                            f"{', '.join(RESIDUAL_CHOICES)}, not {value!r}.")
    return value == "risk"


def _is_flip_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in FLIP_VIEWS


def network_flips(card: dict, kind: str) -> int:
    """How many flips of its input the network is averaged over for a ``kind`` of pair (card ``chain.flips``; 1 if none)."""
    from ..errors import BadInputError

    value = chain_value(card, "flips", kind, 1)
    if not _is_flip_count(value):
        raise BadInputError(f"Model card {card.get('name')!r}: chain.flips for {kind} must be one of "
                            f"{', '.join(map(str, FLIP_VIEWS))}, not {value!r}.")
    return int(value)


def run_chain(package, volume, plan, progress=None):
    """The classical chain on ``volume`` with ``package`` as its denoiser; a :class:`MethodResult`."""
    from ..classical import chain
    from ..classical.blend_risk import choose_residual
    from ..signature.signature import pair_kind
    from .device import resolve_device

    dev = resolve_device(plan.device)
    sig = plan.source_signature
    kind = pair_kind(sig, plan.target_signature)
    # the flips were chosen, with the blend, on the clean texture's validation: the target texture's
    # calibrated partial denoising runs the network alone, as it was trained
    flips = network_flips(package.card, kind)  # read (and checked) whatever the texture
    flips = flips if plan.texture == "clean" else 1
    den = stack_denoiser(package, sig.transfer, float(volume.spacing[1]), dev, flips=flips)
    options = {"denoise_method": den, "label": package.name, "nlm_blend": nlm_blend(package.card, kind),
               "nlm_blend_residual": nlm_residual(package.card, kind),
               "nlm_residual_chooser": choose_residual if residual_by_risk(package.card, kind) else None}
    res = chain.run(volume, plan, progress, options=options)
    res.model_sha256 = package.sha256
    res.device = dev
    return res
