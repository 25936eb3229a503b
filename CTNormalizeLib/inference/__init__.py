"""Tiled model inference with blending, device fallbacks and QC.

Entry point: :func:`run_model` (package, volume, source, target) -> :class:`InferenceResult`.
"""

from .engine import InferenceResult, resolve_device, run_model  # noqa: F401
