"""Reconstruction-kernel classes, their MTF / FBP apodization, and the vendor name table.

Each class has one parametric in-plane modulation transfer function ``W(f)`` (f in
cycles/mm). The simulator multiplies the FBP ramp filter by ``W`` and the MTF-ratio
method divides one ``W`` by another, so both agree by construction.

The curves are generic, not any vendor's measured MTF: a Gaussian roll-off with 50 %
at ``f50`` plus a mid-frequency lift. For ``sharp`` the lift only flattens the roll-off
(the MTF stays at or below 1); ``very-sharp`` overshoots above 1, the edge enhancement
that bone kernels show.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError

KERNEL_CLASSES = ("smooth", "standard", "sharp", "very-sharp")


@dataclass(frozen=True)
class KernelMTF:
    """Parameters of a kernel class's MTF: 50 % frequency and edge-enhancement boost."""

    name: str
    f50: float  # cycles/mm
    boost: float  # relative overshoot at f50 (0 = none)


KERNEL_MTF = {
    "smooth": KernelMTF("smooth", 0.30, 0.0),
    "standard": KernelMTF("standard", 0.42, 0.0),
    "sharp": KernelMTF("sharp", 0.62, 0.25),
    "very-sharp": KernelMTF("very-sharp", 0.85, 0.5),
}

# Plain synonyms people type for the classes.
_SYNONYMS = {
    "soft": "smooth",
    "smooth": "smooth",
    "standard": "standard",
    "std": "standard",
    "medium": "standard",
    "sharp": "sharp",
    "lung": "sharp",
    "very-sharp": "very-sharp",
    "very_sharp": "very-sharp",
    "verysharp": "very-sharp",
    "bone": "very-sharp",
}

# Exact vendor names (upper case). Approximate classes, after the vendors' own
# soft/standard/lung/bone grouping; Siemens numbered kernels are handled by a rule.
VENDOR_KERNELS = {
    # GE
    "SOFT": "smooth",
    "STANDARD": "standard",
    "CHEST": "standard",
    "DETAIL": "sharp",
    "LUNG": "sharp",
    "BONE": "very-sharp",
    "BONEPLUS": "very-sharp",
    "EDGE": "very-sharp",
    # Philips
    "A": "smooth",
    "B": "standard",
    "C": "standard",
    "D": "sharp",
    "L": "sharp",
    "YA": "standard",
    "YB": "sharp",
    "YC": "sharp",
    "YD": "very-sharp",
    "E": "very-sharp",
    # Canon / Toshiba
    "FC01": "smooth",
    "FC02": "smooth",
    "FC03": "smooth",
    "FC04": "smooth",
    "FC07": "standard",
    "FC08": "standard",
    "FC10": "standard",
    "FC13": "standard",
    "FC17": "standard",
    "FC18": "standard",
    "FC30": "sharp",
    "FC50": "sharp",
    "FC51": "sharp",
    "FC52": "sharp",
    "FC53": "sharp",
    "FC55": "very-sharp",
    "FC56": "very-sharp",
    "FC81": "very-sharp",
    "FC86": "very-sharp",
}

# Siemens: B (classic body), Br/Bl/Bf/Bv (ADMIRE-era body, lung, ...), I (iterative), Hr/Qr; numbers 10-99
# (photon-counting scanners name kernels up to the high 90s), resolution suffixes f (fast), s (standard),
# h (high), u (ultra-high), d (ADMIRE-era).
_SIEMENS = re.compile(r"^(B|BR|BL|BF|BV|I|HR|QR)(\d{2})([FSHUD])?$")
SIEMENS_NUMBERS = (10, 99)
SIEMENS_EXAMPLES = ("B10f", "B20f", "B30f", "B31f", "B45f", "B50f", "B60f", "B70f", "B80f",
                    "Br36", "Br40", "Br44", "Br54", "Br59", "Br64", "Bl57", "Bl64",
                    "I26f", "I30f", "I31f", "I50f", "I70f")


def _siemens_class(number: int) -> str:
    if number < 30:
        return "smooth"
    if number < 45:
        return "standard"
    if number < 65:
        return "sharp"
    return "very-sharp"


def known_kernel_names() -> list[str]:
    """All names accepted by :func:`kernel_class`: classes, synonyms, vendor names and Siemens examples."""
    return sorted(set(KERNEL_CLASSES) | set(_SYNONYMS) | set(VENDOR_KERNELS) | set(SIEMENS_EXAMPLES))


def kernel_class(name: str) -> str:
    """Map a kernel class, synonym or vendor kernel name to its class.

    Parameters
    ----------
    name : str
        e.g. ``"sharp"``, ``"B70f"``, ``"Br40 d 3"`` (Siemens strength suffixes are
        ignored), ``"STANDARD"``, ``"FC52"``, or a multi-valued DICOM string ``"B30f\\\\..."``.

    Returns
    -------
    str
        One of :data:`KERNEL_CLASSES`.

    Raises
    ------
    BadInputError
        For an unknown name; the message lists the known names and the closest ones.
    """
    raw = str(name).strip()
    if not raw:
        raise BadInputError("Empty kernel name.")
    key = raw.lower()
    if key in _SYNONYMS:
        return _SYNONYMS[key]
    first = re.split(r"[\\\s,;]+", raw)[0].upper()
    if first in VENDOR_KERNELS:
        return VENDOR_KERNELS[first]
    m = _SIEMENS.match(first)
    if m and SIEMENS_NUMBERS[0] <= int(m.group(2)) <= SIEMENS_NUMBERS[1]:
        return _siemens_class(int(m.group(2)))
    known = known_kernel_names()
    close = difflib.get_close_matches(raw, known, n=3, cutoff=0.4)
    close += [k for k in difflib.get_close_matches(raw.upper(), known, n=3, cutoff=0.4) if k not in close]
    hint = f" Did you mean {' or '.join(repr(c) for c in close[:3])}?" if close else ""
    raise BadInputError(
        f"Unknown kernel {raw!r}.{hint} Known classes: {', '.join(KERNEL_CLASSES)}; "
        f"vendor names: {', '.join(sorted(VENDOR_KERNELS))}; Siemens B/Br/Bl/Bf/Bv/I/Hr/Qr + 10-99 + f/s/h/u/d "
        f"(e.g. {', '.join(SIEMENS_EXAMPLES[:6])})."
    )


def kernel_mtf(kernel: str, f: np.ndarray) -> np.ndarray:
    """The kernel class's MTF / FBP apodization at spatial frequencies ``f`` (cycles/mm).

    ``W(f) = exp(-ln2 (f/f50)^2) * (1 + boost * (f/f50)^2 * exp(1 - (f/f50)^2))``,
    which is 1 at f = 0, has its overshoot peak near f50 and decays to 0.

    Parameters
    ----------
    kernel : str
        Class name or anything :func:`kernel_class` accepts.
    f : array_like
        Non-negative frequencies in cycles/mm.
    """
    p = KERNEL_MTF[kernel_class(kernel)]
    r = np.abs(np.asarray(f, dtype=np.float64)) / p.f50
    w = np.exp(-np.log(2.0) * r**2) * (1.0 + p.boost * r**2 * np.exp(1.0 - r**2))
    return w


def mtf50(kernel: str) -> float:
    """Frequency (cycles/mm) where the kernel's MTF first falls below 0.5."""
    f = np.linspace(0, 3, 30001)
    w = kernel_mtf(kernel, f)
    return float(f[np.argmax(w < 0.5)])
