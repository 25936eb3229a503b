"""Numeric encoding of a (source, target) protocol pair for FiLM conditioning."""

from __future__ import annotations

import math

from ..protocols.kernels import KERNEL_CLASSES

#: Length of :func:`protocol_features` for one protocol.
PROTOCOL_FEATURES = len(KERNEL_CLASSES) + 3
#: Length of :func:`pair_features`.
PAIR_FEATURES = 2 * PROTOCOL_FEATURES + 2


def protocol_features(p) -> list[float]:
    """One protocol as numbers: one-hot kernel class, log2 dose, thickness/2, z spacing/2.

    ``Protocol.vector()`` gives dose and thickness linearly; the network sees log dose
    (noise scales as 1/sqrt(dose), so equal ratios should look alike) and thickness in
    units near 1. Missing fields take the reference values (full dose, 1 mm).
    """
    onehot = [1.0 if p.kernel == k else 0.0 for k in KERNEL_CLASSES]
    dose = float(p.dose) if p.dose else 1.0
    thick = float(p.thickness) if p.thickness else 1.0
    zsp = float(p.z_spacing) if p.z_spacing else thick
    return onehot + [math.log2(dose), thick / 2.0, zsp / 2.0]


def pair_features(source, target) -> list[float]:
    """Source features, target features, then log2 of the dose and thickness ratios."""
    s, t = protocol_features(source), protocol_features(target)
    sd = float(source.dose or 1.0)
    td = float(target.dose or 1.0)
    st = float(source.thickness or 1.0)
    tt = float(target.thickness or 1.0)
    return s + t + [math.log2(td / sd), math.log2(tt / st)]
