"""Which array direction is superior and which is patient left, from the ITK direction cosines."""

from __future__ import annotations

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def superior_is_last(direction=None) -> bool:
    """True when a larger z index is more superior (LPS +z), from the ITK direction."""
    d = IDENTITY if direction is None else tuple(direction)
    return d[8] >= 0.0


def left_is_larger_x(direction=None) -> bool:
    """True when a larger column index is more patient-left (LPS +x)."""
    d = IDENTITY if direction is None else tuple(direction)
    return d[0] >= 0.0
