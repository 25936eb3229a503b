"""Behaviour of the CTNormalize Reader Study module, importable without Qt (tested on slicer-core)."""

from .logic import ReaderStudyLogic, WINDOW_PRESETS  # noqa: F401
