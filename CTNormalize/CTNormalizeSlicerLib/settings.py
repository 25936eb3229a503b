"""The module's application settings (remembered across sessions): device and user models folder.

Stored with ``qt.QSettings`` under ``CTNormalize/`` inside Slicer; headless (tests, scripts)
in a dictionary for the process.
"""

from __future__ import annotations

import os

PREFIX = "CTNormalize/"
DEFAULTS = {"device": "auto", "modelsDirectory": ""}
_memory: dict = {}


def _qsettings():
    try:
        import qt

        return qt.QSettings()
    except Exception:  # no Qt here
        return None


def get(key: str) -> str:
    s = _qsettings()
    if s is None:
        return _memory.get(key, DEFAULTS.get(key, ""))
    value = s.value(PREFIX + key)
    return str(value) if value not in (None, "") else DEFAULTS.get(key, "")


def set(key: str, value) -> None:  # noqa: A001 - mirrors QSettings.setValue
    s = _qsettings()
    if s is None:
        _memory[key] = str(value)
    else:
        s.setValue(PREFIX + key, str(value))


def apply_models_directory(path: str) -> None:
    """Make this process's model registry see ``path`` too (the engine child gets it in its environment)."""
    if path:
        os.environ["CTNORMALIZE_MODELS"] = path
    else:
        os.environ.pop("CTNORMALIZE_MODELS", None)
