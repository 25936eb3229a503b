"""The HTML reports' one page: jinja2 templates in ``Resources/Templates`` and their number formats.

Every report (paired evaluation, benchmark, reader study) extends ``base.html.j2`` (one
style sheet, ``style.css``) and builds its sections from ``macros.html.j2``. Pages are
self-contained: figures are embedded as base64 PNG. Values are escaped by the templates
(autoescape), so the Python side passes plain data and text.
"""

from __future__ import annotations

import base64
import math
from functools import lru_cache

from .resources import resource_path

NONE = "—"


def fmt_sig(v, digits: int = 3) -> str:
    """A value with ``digits`` significant digits (floats), ``—`` for None, text for anything else."""
    if v is None:
        return NONE
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞" if v > 0 else ("−∞" if v < 0 else NONE)
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def fmt_fixed(v, digits: int = 3) -> str:
    """A value with ``digits`` decimals (floats), yes/no for booleans, ``—`` for None."""
    if v is None:
        return NONE
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding a PNG."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _display(v) -> str:
    return str(v) if isinstance(v, (dict, list)) else fmt_sig(v)


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_path("Templates"))),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(sig=fmt_sig, fixed=fmt_fixed, data_uri=data_uri, display=_display)
    return env


def render(template: str, **context) -> str:
    """Render ``Resources/Templates/<template>`` with ``context``."""
    return _environment().get_template(template).render(**context)
