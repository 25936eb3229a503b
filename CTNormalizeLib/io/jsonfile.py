"""JSON out: one conversion of engine results to strict JSON, and atomic JSON files.

Engine results hold numpy scalars, tuples and NaN; JSON has none of these. Every writer
(CLI events, ``--report``, benchmark and study files) goes through :func:`dumps`, so the
files and the process protocol agree: NaN and infinities become ``null``.
"""

from __future__ import annotations

import json
import math

from .atomic import PathLike, atomic_write_text


def to_jsonable(obj):
    """``obj`` with NaN/inf as None, numpy scalars as Python numbers, tuples as lists, keys as str."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj, indent=None) -> str:
    """Strict JSON of ``obj`` (no NaN; unknown objects as ``str``); one line unless ``indent``."""
    return json.dumps(to_jsonable(obj), allow_nan=False, default=str, indent=indent)


def write_json(path: PathLike, obj, indent=None):
    """Write :func:`dumps` of ``obj`` to ``path`` atomically; returns the path."""
    return atomic_write_text(path, dumps(obj, indent=indent))
