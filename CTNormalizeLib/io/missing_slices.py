"""Missing slices of a DICOM series: files that cannot be read, and gaps in the slice positions.

GDCM leaves a file it cannot read (e.g. truncated) out of every series, so such a series
looks complete but for a gap. Both the unreadable files and the gaps (a gap of
:data:`MISSING_GAP` median spacings or more: one missing slice makes 2) are named; by
default the series is refused, and with ``allow_missing_slices`` the reader interpolates
over them with a ``MISSING_SLICES`` warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError

#: A gap of this many median spacings or more is a missing slice (one missing slice makes 2).
MISSING_GAP = 1.75


def _names(files, limit: int = 5) -> str:
    names = [Path(f).name for f in files]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _gaps_text(pos: np.ndarray, files: list, step: float) -> tuple[int, str]:
    """(missing slice count, description) of the gaps of ``MISSING_GAP`` spacings or more."""
    gaps = np.diff(pos)
    idx = np.nonzero(gaps >= MISSING_GAP * step)[0]
    n = 0
    parts = []
    for i in idx:
        k = max(1, int(round(gaps[i] / step)) - 1)
        n += k
        parts.append(f"{k} between {Path(files[i]).name} and {Path(files[i + 1]).name} "
                     f"(z {pos[i]:.4g} to {pos[i + 1]:.4g} mm)")
    return n, "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more gaps" if len(parts) > 5 else "")


def missing_slices(d: Path, uid: str, pos: np.ndarray, files: list, unreadable: list, allow: bool) -> list:
    """Refuse missing slices, or (``allow``) return the ``MISSING_SLICES`` warning naming them."""
    step = float(np.median(np.diff(pos)))
    n_gap, gap_text = _gaps_text(pos, files, step)
    if not unreadable and not n_gap:
        return []
    parts = []
    if unreadable:
        parts.append(f"{len(unreadable)} file(s) of the series cannot be read ({_names(unreadable)})")
    if n_gap:
        parts.append(f"about {n_gap} slice(s) are missing at a spacing of {step:.4g} mm: {gap_text}")
    text = f"Series {uid} in {d}: " + "; ".join(parts)
    if not allow:
        raise BadInputError(text + ". Fix or re-export the series, or pass --allow-missing-slices to "
                                   "interpolate over the missing slices.")
    return [{"code": "MISSING_SLICES", "message": text + "; the series was read without them (gaps filled by linear interpolation along z)."}]
