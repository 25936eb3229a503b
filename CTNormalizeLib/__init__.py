"""CTNormalize engine: normalize CT scans across acquisition protocols.

Pure Python; never imports ``slicer``. Heavy dependencies (torch, radiomics)
are imported inside the functions that need them.
"""

from .version import __version__  # noqa: F401

from .errors import (  # noqa: F401
    CTNormalizeError,
    BadInputError,
    NotCTError,
    NoModelError,
    ResourceExhaustedError,
    CancelledError,
    InternalError,
)
from .volume import Volume  # noqa: F401
