"""CTNormalize engine: normalize CT scans across acquisition protocols.

Pure Python; never imports ``slicer``. Heavy dependencies (torch, radiomics)
are imported inside the functions that need them.
"""

from .version import __version__  # noqa: F401

from .errors import (  # noqa: F401
    CTNormalizeError,
    BadInputError,
    NotCTError,
    NoLungsError,
    NoModelError,
    ResourceExhaustedError,
    DiskFullError,
    CancelledError,
    InternalError,
)
# The Python API, imported on first use so that ``import CTNormalizeLib`` stays light (no numpy: the
# command line handles a cancel from its first step):
#   from CTNormalizeLib import read_volume, normalize, make_plan, measure_signature, emphysema_index
_API = {
    "Volume": ("volume", "Volume"),
    "read_volume": ("io", "read_volume"),
    "write_volume": ("io", "write_volume"),
    "normalize": ("normalization", "normalize"),
    "make_plan": ("plan", "make_plan"),
    "measure_signature": ("signature", "measure_signature"),
    "method_table": ("methods", "method_table"),
    "parse_spec": ("protocols", "parse_spec"),
    "resolve_protocol": ("protocols", "resolve_protocol"),
    "simulate_scan": ("simulate", "simulate_scan"),
    "make_phantom": ("simulate", "make_phantom"),
    "lung_mask": ("imaging", "lung_mask"),
    "emphysema_index": ("quantify", "emphysema_index"),
}


def __getattr__(name):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
