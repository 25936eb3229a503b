"""Protocols: kernel classes and vendor names, dose, slice thickness; spec strings, presets, detection."""

from .kernels import KERNEL_CLASSES, kernel_class, kernel_mtf, known_kernel_names, mtf50  # noqa: F401
from .protocol import FieldSource, Protocol, parse_spec  # noqa: F401
from .presets import Preset, load_presets, resolve_protocol  # noqa: F401
