"""What the panel offers: target presets, kernel names, methods (with their torch needs), models.

:func:`method_table` is the one place that knows which methods exist and which need torch.
It reads the engine's method table (``CTNormalizeLib.methods``) when the engine has one and
otherwise builds the same rows from the classical method list and the model registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from .i18n import _

log = logging.getLogger(__name__)

#: Tooltips of the classical methods (the engine's CLASSICAL_METHODS names).
CLASSICAL_TOOLTIPS = {
    "auto": _("The best learned model covering the protocol pair, else the classical pipeline."),
    "mtf_ratio": _("Kernel change by the ratio of target to source MTF in the frequency domain "
                   "(regularised where the source MTF is small)."),
    "frequency_decomposition": _("Splits the image into frequency bands and rescales each band "
                                 "toward the target kernel's response."),
    "histogram_match": _("Matches the HU histogram inside the body to a reference scan."),
    "denoise": _("Noise reduction toward a higher dose (edge-preserving), no kernel change."),
    "z_profile": _("Slice-thickness change by resampling with the target slice profile."),
}
PROTOCOL_FIELDS = ("kernel", "dose", "thickness")


@dataclass
class MethodRow:
    """One method the engine accepts: ``kind`` is "classical" or "model"."""

    name: str
    kind: str
    summary: str
    needs_reference: bool = False
    needs_torch: bool = False


def _field(row, name, default=None):
    return row.get(name, default) if isinstance(row, dict) else getattr(row, name, default)


def method_table() -> list[MethodRow]:
    """Every method besides "auto", classical first, from the engine's table when it has one."""
    try:
        from CTNormalizeLib import methods as engine_methods  # the engine's own table, when present
    except ImportError:
        engine_methods = None
    table = getattr(engine_methods, "method_table", None) if engine_methods is not None else None
    if callable(table):
        try:
            rows = table()
            rows = list(rows.values()) if isinstance(rows, dict) else list(rows)
            return [MethodRow(str(_field(r, "name")), str(_field(r, "kind", "classical")),
                              str(_field(r, "summary", "") or ""), bool(_field(r, "needs_reference", False)),
                              bool(_field(r, "needs_torch", False)))
                    for r in rows if _field(r, "name") != "auto"]  # model rows' summary: their card line
        except Exception:  # an engine mid-upgrade must not break the panel
            log.warning("CTNormalize: the engine's method table could not be read", exc_info=True)
    return _fallback_method_table()


def _fallback_method_table() -> list[MethodRow]:
    try:
        from CTNormalizeLib.classical.pipeline import CLASSICAL_METHODS
    except ImportError:
        CLASSICAL_METHODS = [k for k in CLASSICAL_TOOLTIPS if k != "auto"]
    rows = [MethodRow(n, "classical", CLASSICAL_TOOLTIPS.get(n, _("Classical method")), n == "histogram_match")
            for n in CLASSICAL_METHODS if n != "auto"]
    for package in installed_models():
        rows.append(MethodRow(package.name, "model", model_tooltip(package), False, True))
    return rows


def methods() -> list[tuple[str, str]]:
    """``[(name, tooltip)]`` for the method combo box: auto, the classical methods, the models."""
    out = [("auto", CLASSICAL_TOOLTIPS["auto"])]
    rows = [r for r in method_table() if not r.needs_reference]  # the panel has no reference selector
    out += [(r.name, r.summary) for r in rows if r.kind != "model"]
    out += [(r.name, r.summary) for r in rows if r.kind == "model"]
    return out


def method_needs_torch(method: str) -> Optional[bool]:
    """Whether a named method needs torch; None for "auto" (it depends on the protocol pair)."""
    if method == "auto":
        return None
    for row in method_table():
        if row.name == method:
            return row.needs_torch
    return False


def installed_models(extra_dirs=None) -> list:
    """The learned model packages the engine finds (shipped + ``CTNORMALIZE_MODELS``)."""
    try:
        from CTNormalizeLib.models import registry
    except ImportError:  # the engine's packages are not installed yet
        return []
    try:
        return list(registry.list_models())
    except Exception:  # a broken package must not break the panel
        log.warning("CTNormalize: could not list the learned models", exc_info=True)
        return []


def model_tooltip(package) -> str:
    """A learned model's card, in a few lines: coverage, architecture, metrics, sha256, use."""
    card = getattr(package, "card", {}) or {}
    lines = [_("Learned model {name}").format(name=getattr(package, "name", "?"))]
    try:
        lines.append(_("Covers: {coverage}").format(coverage=package.coverage_text()))
    except Exception:
        pass
    arch = (card.get("architecture") or {}).get("name")
    if arch:
        lines.append(_("Architecture: {name}").format(name=arch))
    metrics = card.get("metrics") or {}
    if isinstance(metrics, dict) and metrics:
        shown = [f"{k}={v:.3g}" if isinstance(v, (int, float)) else f"{k}={v}"
                 for k, v in list(metrics.items())[:4] if not isinstance(v, (dict, list))]
        if shown:
            lines.append(_("Benchmark: {figures}").format(figures=", ".join(shown)))
    sha = card.get("sha256")
    if sha:
        lines.append(_("Weights sha256: {digest}...").format(digest=sha[:16]))
    lines.append(str(card.get("intended_use") or _("Research use, not for diagnosis.")))
    return "\n".join(lines)


def presets() -> dict:
    """``{name: (description, spec)}`` of the target presets, in file order."""
    from CTNormalizeLib.protocols import load_presets

    return {name: (p.description, p.protocol.spec()) for name, p in load_presets().items()}


def kernel_choices() -> list[str]:
    """Kernel classes, then known vendor kernel names (for the source override)."""
    from CTNormalizeLib.protocols import KERNEL_CLASSES, known_kernel_names

    return list(KERNEL_CLASSES) + [n for n in known_kernel_names() if n not in KERNEL_CLASSES]


def protocol_rows(protocol) -> list[tuple[str, str, str, str]]:
    """``[(field, value, source, detail)]`` for showing a protocol in the panel."""
    rows = []
    for field in ("kernel", "dose", "thickness", "profile", "mas", "ctdivol", "spacing"):
        value = getattr(protocol, field, None)
        if value is None and field not in PROTOCOL_FIELDS:
            continue
        if field == "kernel" and getattr(protocol, "kernel_name", None):
            text = f"{protocol.kernel_name} ({value})"
        elif value is None:
            text = _("unknown")
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        src = (getattr(protocol, "sources", {}) or {}).get(field)
        source = f"{src.source} ({src.confidence:.0%})" if src is not None else ""
        rows.append((field, text, source, getattr(src, "detail", "") if src is not None else ""))
    return rows


def source_spec(kernel: str = "", dose: float = 0.0, thickness: float = 0.0, profile: str = "") -> str:
    """The engine's source argument: user overrides (empty/0/"detected" = detect), or ``auto``.

    ``profile`` (``gaussian`` or ``rect``) shapes the thickness, so it needs one.
    """
    profile = (profile or "").strip().lower()
    if profile in ("detected", "auto"):
        profile = ""
    if profile and not (thickness and thickness > 0):
        from CTNormalizeLib.errors import BadInputError

        raise BadInputError(_("A slice profile needs the thickness it shapes: give the source thickness too "
                              "(the DICOM SliceThickness, e.g. 3 mm)."))
    parts = []
    if kernel and kernel.strip().lower() not in ("", "auto"):
        parts.append(f"kernel={kernel.strip()}")
    if dose and dose > 0:
        parts.append(f"dose={dose:g}")
    if thickness and thickness > 0:
        parts.append(f"thickness={thickness:g}")
    if profile:
        parts.append(f"profile={profile}")
    if not parts:
        return "auto"
    from CTNormalizeLib.protocols import parse_spec

    spec = ",".join(parts)
    parse_spec(spec)  # raises BadInputError with the engine's sentence on a bad kernel name
    return spec


def output_name(input_node, target: str) -> str:
    """Default output name: ``<input> → <target preset>``."""
    return f"{input_node.GetName()} \u2192 {target}"


def target_label(target: str, like_name: str | None = None) -> str:
    """What the run normalizes to, for names and provenance: the preset/spec, or ``like <reference>``
    (plus the spec when one sets the thickness too)."""
    if not like_name:
        return target
    return f"like {like_name}" + (f" ({target})" if target else "")


def reference_file_name(node_name: str) -> str:
    """A safe ``.nrrd`` file name for a reference scan, from its node name (the report quotes it)."""
    import re

    stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", node_name or "").strip(" .") or "reference"
    return f"{stem[:80]}.nrrd"


#: target choices besides the presets: a typed spec, or a reference scan's measured protocol (--target-like)
CUSTOM = "custom"
LIKE = "like"


def target_choice(preset: str, spec: str = "", like_node=None):
    """``(target, reference)`` the engine gets for the panel's target choice.

    ``preset``: a preset name, :data:`CUSTOM` (then ``spec`` is the target) or :data:`LIKE` (then the
    target is ``like_node``'s measured protocol and the text is empty). ``ValueError`` when the choice
    is incomplete, in words for the panel.
    """
    if preset == LIKE:
        if like_node is None:
            raise ValueError(_("Select the reference scan to look like."))
        return "", like_node
    if preset == CUSTOM:
        if not str(spec or "").strip():
            raise ValueError(_("Type the target protocol (e.g. kernel=smooth,dose=1,thickness=1) or choose a preset."))
        return str(spec).strip(), None
    return str(preset or "").strip(), None
