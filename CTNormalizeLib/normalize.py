"""``normalize(volume, source, target, method)``: the one entry point that composes the layers.

It resolves the source protocol (detected from the volume, overridden by the user), fills
the target from the source where the target leaves a field open, then picks the method:
a covering learned model from the registry for ``"auto"`` (falling back to the classical
pipeline with a warning when none covers the pair), a named model, or a classical method.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import __version__
from .errors import BadInputError, NoModelError
from .protocols import FieldSource, Protocol
from .volume import Volume

log = logging.getLogger(__name__)

ProgressFn = Optional[Callable[[str, float], None]]


@dataclass
class NormalizeOutcome:
    """What :func:`normalize` returns.

    Attributes
    ----------
    volume : Volume
        The normalized volume (a new object; the input is untouched).
    method : str
        ``"classical:<name>"`` or ``"model:<name>"``.
    source, target : Protocol
        The protocols actually used (source after detection + overrides; target completed).
    steps : list of dict
        What was done, in order, with parameters.
    warnings : list of dict
        ``{"code", "message"}`` items for the caller to show.
    qc : dict
        Quality-control figures (see :mod:`CTNormalizeLib.qc`).
    device : str
    model_sha256 : str or None
    timings : dict
        Seconds per stage.
    """

    volume: Volume
    method: str
    source: Protocol
    target: Protocol
    steps: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    qc: dict = field(default_factory=dict)
    device: str = "cpu"
    model_sha256: Optional[str] = None
    timings: dict = field(default_factory=dict)

    def report(self) -> dict:
        """JSON-ready provenance + QC + timings (the ``report`` of the ``done`` event)."""
        return {
            "engine_version": __version__,
            "method": self.method,
            "model_sha256": self.model_sha256,
            "device": self.device,
            "source": self.source.to_dict(),
            "target": self.target.to_dict(),
            "source_spec": self.source.spec(),
            "target_spec": self.target.spec(),
            "steps": self.steps,
            "warnings": self.warnings,
            "qc": self.qc,
            "timings": self.timings,
            "output_shape": list(self.volume.shape),
            "output_spacing": list(self.volume.spacing),
            "note": "Research use, not for diagnosis.",
        }


def resolve_source(volume: Volume, source: Optional[Protocol | str]) -> Protocol:
    """The source protocol: detection from tags and noise, with user fields winning.

    ``source`` may be None or ``"auto"`` (detect everything), a spec string or a
    :class:`Protocol` (its set fields override the detected ones).
    """
    from .protocols import parse_spec
    from .protocols.detect import detect_protocol

    user = None
    if isinstance(source, str) and source.strip().lower() != "auto":
        user = parse_spec(source)
    elif isinstance(source, Protocol):
        user = source
    detected = detect_protocol(volume, overrides=user)
    missing = [f for f in ("kernel", "dose", "thickness") if getattr(detected, f) is None]
    if missing:
        raise BadInputError(
            f"Could not determine the source {', '.join(missing)} from the image or its tags; "
            f"give it explicitly, e.g. --source kernel=sharp,dose=0.25,thickness=2."
        )
    return detected


def complete_target(source: Protocol, target: Protocol | str) -> Protocol:
    """The target with every field it leaves open taken from the source (i.e. unchanged)."""
    from .protocols import resolve_protocol

    tgt = resolve_protocol(target) if isinstance(target, str) else target
    keep = {}
    for name in ("kernel", "dose", "thickness"):
        if getattr(tgt, name) is None:
            keep[name] = getattr(source, name)
    if not keep:
        return tgt
    base = Protocol(
        sources={k: FieldSource("default", 1.0, "unchanged from source") for k in keep}, **keep
    )
    return base.merged(tgt)


def _models_available() -> bool:
    return importlib.util.find_spec("CTNormalizeLib.models.registry") is not None


def available_methods() -> dict:
    """``{"classical": [...], "models": [...]}``: what ``method=`` accepts besides ``"auto"``."""
    from .classical.pipeline import CLASSICAL_METHODS

    models = []
    if _models_available():
        from .models import registry

        models = [m.name for m in registry.list_models()]
    return {"classical": [m for m in CLASSICAL_METHODS if m != "auto"], "models": models}


@dataclass
class MethodPlan:
    """Which method will run: ``kind`` is ``"model"`` or ``"classical"``."""

    kind: str
    name: str
    package: object = None
    warnings: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def model_sha256(self) -> Optional[str]:
        return getattr(self.package, "sha256", None) if self.package is not None else None


def plan_method(source: Protocol, target: Protocol, method: str = "auto") -> MethodPlan:
    """Choose the method for a protocol pair.

    ``"auto"`` takes the best covering learned model, else the classical pipeline (with a
    ``NO_COVERING_MODEL`` warning). A classical method name is used as is. A model name must
    cover the pair (:class:`NoModelError` otherwise). Anything else is a :class:`BadInputError`.
    """
    from .classical.pipeline import CLASSICAL_METHODS

    if method != "auto" and method in CLASSICAL_METHODS:
        return MethodPlan("classical", method)
    if _models_available():
        from .models import registry

        if method == "auto":
            package = registry.find_model(source, target)
            if package is not None:
                return MethodPlan("model", package.name, package)
            return MethodPlan("classical", "auto", warnings=[{
                "code": "NO_COVERING_MODEL",
                "message": registry.explain_no_model(source, target) + " Using the classical pipeline instead.",
            }])
        packages = {p.name: p for p in registry.list_models()}
        if method not in packages:
            raise BadInputError(
                f"Unknown method {method!r}. Methods: auto, {', '.join(CLASSICAL_METHODS)}"
                + (f"; models: {', '.join(packages)}." if packages else "; no models installed.")
            )
        package = packages[method]
        why = package.why_not(source, target)
        if why is not None:
            raise NoModelError(
                f"Model {method!r} does not cover {source.spec()} -> {target.spec()}: {why}. "
                f"Use --method auto or a classical method."
            )
        return MethodPlan("model", package.name, package)
    if method == "auto":
        return MethodPlan("classical", "auto", warnings=[{
            "code": "NO_COVERING_MODEL",
            "message": "No learned models are installed; using the classical pipeline.",
        }])
    raise BadInputError(f"Unknown method {method!r}. Methods: auto, {', '.join(CLASSICAL_METHODS)}.")


def normalize(
    volume: Volume,
    source: Optional[Protocol | str],
    target: Protocol | str,
    method: str = "auto",
    device: str = "auto",
    progress: ProgressFn = None,
    reference: Optional[Volume] = None,
    plan: Optional[MethodPlan] = None,
) -> NormalizeOutcome:
    """Translate ``volume`` from the ``source`` protocol to the ``target`` protocol.

    Parameters
    ----------
    volume : Volume
        Input CT (not modified).
    source : Protocol, spec string, ``"auto"`` or None
        ``"auto"``/None detects it; set fields override detection.
    target : Protocol, spec string or preset name
        Fields left open stay as in the source.
    method : str
        ``"auto"``, a classical method name or a model name (see :func:`plan_method`).
    device : {"auto", "cpu", "cuda"}
        For learned models.
    progress : callable(stage, fraction), optional
    reference : Volume, optional
        Reference volume for ``histogram_match``.
    plan : MethodPlan, optional
        A plan already made with :func:`plan_method` for the same pair.

    Returns
    -------
    NormalizeOutcome

    Raises
    ------
    BadInputError
        Unknown method, or a source field that cannot be determined.
    NoModelError
        A named model does not cover the protocol pair.
    """
    from .classical.pipeline import normalize_classical

    t0 = time.perf_counter()
    src = resolve_source(volume, source)
    tgt = complete_target(src, target)
    if plan is None:
        plan = plan_method(src, tgt, method)
    timings = {"resolve_s": round(time.perf_counter() - t0, 3)}

    t1 = time.perf_counter()
    if plan.kind == "model":
        from .inference import run_model

        res = run_model(plan.package, volume, src, tgt, device=device, progress=progress)
        outcome = NormalizeOutcome(
            volume=res.volume, method=plan.label, source=src, target=tgt,
            steps=[{"method": plan.label}], warnings=list(plan.warnings) + list(res.warnings),
            qc=dict(res.qc), device=res.device, model_sha256=res.model_sha256,
        )
    else:
        res = normalize_classical(volume, src, tgt, method=plan.name, reference=reference,
                                  progress=progress)
        outcome = NormalizeOutcome(
            volume=res.volume, method=f"classical:{res.method}", source=src, target=tgt,
            steps=list(res.steps), warnings=list(plan.warnings) + list(res.warnings), device="cpu",
        )
        outcome.qc = _qc(volume, res.volume, outcome)
    timings["normalize_s"] = round(time.perf_counter() - t1, 3)
    outcome.timings = timings
    return outcome


def _qc(inp: Volume, out: Volume, outcome: NormalizeOutcome) -> dict:
    """QC figures for classical outputs, measured as for learned models (no tiles, so no seams).

    The input is put on the output's z grid (slice profile + linear interpolation) first.
    """
    from .inference.masks import body_mask
    from .inference.qc import measure_qc
    from .inference.zgrid import resample_z

    inp_hu = resample_z(inp.hu, inp.spacing[0], out.spacing[0],
                        outcome.source.thickness, outcome.target.thickness)
    n = min(inp_hu.shape[0], out.shape[0])
    step = max(1, n // 32)
    qc, warnings = measure_qc(inp_hu[:n], out.hu[:n], body_mask(inp_hu[:n]), slice_step=step)
    outcome.warnings.extend(warnings)
    return qc
