"""Model inference: a CPU pipeline and a device-resident (GPU) pipeline, fallbacks, QC.

Entry point: :func:`run_model` (package, volume, source, target) -> :class:`InferenceResult`.
"""

from .engine import InferenceResult, resolve_device, run_model  # noqa: F401


def preload() -> None:
    """Import torch now (seconds), before a run announces itself.

    MONAI is not imported: whole-slice inference does not use it; only tiled inference
    (a tile size asked for, or an out-of-memory retry) imports its sliding windows, late.
    Its import machinery swallows exceptions raised while it loads, a cancelling signal's
    included, so the CLI re-checks for a cancel at every progress report.
    """
    import torch  # noqa: F401
