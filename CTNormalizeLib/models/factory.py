"""Build an architecture from a card's ``architecture`` entry ``{"name": ..., "params": {...}}``."""

from __future__ import annotations

from ..errors import BadInputError

#: name -> (module, builder, kind). kind "2.5d" models take [B, context, H, W] on the
#: target z grid; "3d" models take [B, 1, D, H, W] and up-sample z by ``z_up``.
ARCHITECTURES = {
    "conditioned2.5d": ("conditioned", "build_conditioned", "2.5d"),
    "unet2d": ("unet2d", "build_unet2d", "2.5d"),
    "s0_edsr3d": ("s0_reference", "build_s0_generator", "3d"),
}


def build_model(arch: dict):
    """A fresh (untrained) torch module for ``arch`` = ``{"name": str, "params": dict}``."""
    import importlib

    name = arch.get("name")
    if name not in ARCHITECTURES:
        raise BadInputError(f"Unknown model architecture {name!r}; known: {', '.join(ARCHITECTURES)}.")
    mod, fn, _ = ARCHITECTURES[name]
    builder = getattr(importlib.import_module(f"{__package__}.{mod}"), fn)
    return builder(**dict(arch.get("params", {})))


def architecture_kind(name: str) -> str:
    """``"2.5d"`` or ``"3d"``."""
    return ARCHITECTURES[name][2]
