"""The progress-callback type of every long-running engine function."""

from __future__ import annotations

from typing import Callable, Optional

#: ``progress(stage, fraction)``: ``stage`` names the current step, ``fraction`` is 0..1.
ProgressFn = Callable[[str, float], None]

#: What long functions accept: a callback or None.
Progress = Optional[ProgressFn]


def no_progress(stage: str, fraction: float) -> None:
    """A callback that ignores every report (for ``progress or no_progress``)."""
