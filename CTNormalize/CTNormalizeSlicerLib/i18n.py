"""The module's user strings through Slicer's translation function.

Widgets import ``slicer.i18n`` directly; the Logic also runs where it does not exist (the headless
``slicer-core`` wheel, scripts), so it takes ``_`` from here: Slicer's ``tr`` when present, else the
string itself. Strings stay literals inside ``_()`` so that Slicer's extractor finds them.
"""

from __future__ import annotations

try:
    from slicer.i18n import tr as _  # noqa: F401
except ImportError:  # slicer-core and plain Python: no translations
    def _(text: str) -> str:
        return text
