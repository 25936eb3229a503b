"""Tiled model inference with blending, device fallbacks and QC.

Entry point: :func:`run_model` (package, volume, source, target) -> :class:`InferenceResult`.
"""

from .engine import InferenceResult, resolve_device, run_model  # noqa: F401


def preload() -> None:
    """Import torch and MONAI now (a few seconds), before a run announces itself.

    MONAI's import machinery swallows exceptions raised while it loads, a cancelling
    signal's included; importing before the ``started`` event keeps the run itself promptly
    cancellable (the CLI also re-checks for a cancel at every progress report).
    """
    import monai.inferers  # noqa: F401
    import torch  # noqa: F401
