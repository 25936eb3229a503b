"""Model packages on disk: discovery, coverage of protocol pairs, safe loading.

A package is a folder ``<name>/`` holding ``model.safetensors`` and ``card.json``
(DESIGN.md section 5). Folders are searched in ``Resources/Models`` and in every entry
of ``$CTNORMALIZE_MODELS`` (``os.pathsep``-separated). Weights are read with
``safetensors`` only (never pickle) and their sha256 must match the card.

Card fields used here::

    {"name": str, "architecture": {"name": str, "params": {...}},
     "io": {"hu_window": [lo, hi], "scale": {"offset": float, "divisor": float},
            "context": int, "z_up_factor": int | null},
     "covers": {"source": {"kernel": [...], "dose": [lo, hi], "thickness": [lo, hi]},
                "targets": [{"kernel": str, "dose": float | [lo, hi], "thickness": float | [lo, hi]}],
                "same_thickness": bool (optional: target thickness must equal the source's)},
     "priority": int, "sha256": str, "license": str, "intended_use": str, ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import BadInputError

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CARD = "card.json"
REQUIRED = ("name", "architecture", "io", "covers", "sha256")


def model_dirs() -> list[Path]:
    """Folders searched for packages: ``Resources/Models`` then ``$CTNORMALIZE_MODELS`` entries."""
    dirs = []
    try:
        from ..resources import resources_dir

        dirs.append(resources_dir() / "Models")
    except FileNotFoundError:
        pass
    for entry in os.environ.get("CTNORMALIZE_MODELS", "").split(os.pathsep):
        if entry.strip():
            dirs.append(Path(entry.strip()).expanduser())
    return dirs


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _in_range(value: Optional[float], rng, rel_tol: float = 0.05) -> bool:
    if value is None:
        return False
    if isinstance(rng, (int, float)):
        return abs(float(value) - float(rng)) <= rel_tol * abs(float(rng)) + 1e-9
    lo, hi = float(rng[0]), float(rng[1])
    return lo * (1 - rel_tol) - 1e-9 <= float(value) <= hi * (1 + rel_tol) + 1e-9


def _fmt_range(rng) -> str:
    return f"{rng:g}" if isinstance(rng, (int, float)) else f"{rng[0]:g}-{rng[1]:g}"


@dataclass
class ModelPackage:
    """A model package found on disk; weights load on demand (:meth:`load`)."""

    path: Path
    card: dict
    _module: object = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def sha256(self) -> str:
        return self.card["sha256"]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def priority(self) -> float:
        return float(self.card.get("priority", 0))

    # -- coverage -----------------------------------------------------------------------
    def why_not(self, source, target) -> Optional[str]:
        """None when this model covers ``source -> target``, else a short human reason.

        A source dose left unknown counts as full dose (1.0); kernel and thickness must
        be known. Ranges are inclusive with a 5 % tolerance.
        """
        cov = self.card["covers"]
        if cov.get("conditioning") == "signature":
            return None  # measured-signature coverage is checked on the plan (inference.methods)
        src = cov.get("source", {})
        if "kernel" in src and source.kernel not in src["kernel"]:
            return f"source kernel {source.kernel!r} not in {src['kernel']}"
        s_dose = source.dose if source.dose is not None else 1.0
        if "dose" in src and not _in_range(s_dose, src["dose"]):
            return f"source dose {s_dose:.3g} outside {_fmt_range(src['dose'])}"
        # trained on Gaussian slice profiles: a protocol's thickness counts as the Gaussian it is modelled with
        if "thickness" in src and not _in_range(source.ssp_fwhm, src["thickness"]):
            shown = "unknown" if source.ssp_fwhm is None else f"{source.ssp_fwhm:.3g}"
            return f"source thickness {shown} mm outside {_fmt_range(src['thickness'])} mm"
        if cov.get("same_thickness") and not _in_range(target.ssp_fwhm or source.ssp_fwhm, source.ssp_fwhm or 0):
            return "this model keeps the slice thickness (target thickness must equal the source's)"
        t_dose = target.dose if target.dose is not None else 1.0
        for tgt in cov.get("targets", []):
            if "kernel" in tgt and target.kernel != tgt["kernel"]:
                continue
            if "dose" in tgt and not _in_range(t_dose, tgt["dose"]):
                continue
            if "thickness" in tgt and not _in_range(target.ssp_fwhm, tgt["thickness"]):
                continue
            return None
        return "target " + (target.spec() or "(empty)") + " is not one of its targets"

    def covers(self, source, target) -> bool:
        """True when this model was trained for ``source -> target``."""
        return self.why_not(source, target) is None

    def coverage_text(self) -> str:
        """One line describing the protocol pairs covered."""
        cov = self.card["covers"]
        if self.card.get("role") == "denoiser":
            lo, hi = cov.get("noise_hu", (None, None))
            rng = f", trained on noise {lo:g}-{hi:g} HU" if lo is not None else ""
            return f"any protocol pair through the classical chain (the learned denoiser is its noise step{rng})"
        if cov.get("conditioning") == "signature":
            fmt = lambda d: ", ".join(f"{k} {_fmt_range(v)}" for k, v in d.items())  # noqa: E731
            return f"measured source [{fmt(cov.get('source', {}))}] -> target [{fmt(cov.get('targets', {}))}]"
        src = cov.get("source", {})
        s = ", ".join(f"{k}={v if k == 'kernel' else _fmt_range(v)}" for k, v in src.items())
        t = "; ".join(",".join(f"{k}={v if k == 'kernel' else _fmt_range(v)}" for k, v in tg.items())
                      for tg in cov.get("targets", []))
        same = " (same thickness)" if cov.get("same_thickness") else ""
        return f"source [{s}] -> targets [{t}]{same}"

    # -- loading ------------------------------------------------------------------------
    def verify(self) -> None:
        """Raise :class:`BadInputError` when the weights are missing or their sha256 differs from the card."""
        if not self.weights_path.is_file():
            raise BadInputError(f"Model {self.name!r}: {self.weights_path} is missing.")
        digest = sha256_file(self.weights_path)
        if digest != self.sha256:
            raise BadInputError(
                f"Model {self.name!r}: weights sha256 {digest[:12]}... does not match the card's "
                f"{self.sha256[:12]}...; the file is damaged or was replaced."
            )

    def load(self):
        """The torch module in eval mode on CPU (cached). Loads with safetensors only."""
        if self._module is None:
            from safetensors.torch import load_file

            from .factory import build_model

            self.verify()
            module = build_model(self.card["architecture"])
            state = load_file(str(self.weights_path), device="cpu")
            missing, unexpected = module.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise BadInputError(
                    f"Model {self.name!r}: weights do not fit the architecture "
                    f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})."
                )
            module.eval()
            self._module = module
        return self._module

    def summary(self) -> dict:
        """JSON-ready description for ``ctnormalize models --json``."""
        c = self.card
        return {
            "name": self.name, "path": str(self.path), "architecture": c["architecture"]["name"],
            "priority": self.priority, "sha256": self.sha256, "covers": c["covers"],
            "coverage": self.coverage_text(), "z_up_factor": c["io"].get("z_up_factor"),
            "metrics": c.get("metrics", {}), "license": c.get("license"),
            "intended_use": c.get("intended_use"), "description": c.get("description"), "role": c.get("role"),
            "context": c["io"].get("context"), "selection": c.get("selection", {}),
            "nlm_blend": (c.get("chain") or {}).get("nlm_blend"),
            "nlm_residual": (c.get("chain") or {}).get("nlm_residual"),
            "flips": (c.get("chain") or {}).get("flips"),
            "nlm_residual_choice": (c.get("chain") or {}).get("nlm_residual_choice"),
        }


def write_card(path: Path, card: dict) -> Path:
    """Publish ``card`` as the model card at ``path`` (a package's ``card.json``) atomically, as strict JSON
    (:func:`~CTNormalizeLib.io.jsonfile.dumps`: NaN as null, numpy scalars as numbers).

    Raises :class:`BadInputError` without touching ``path`` when the card breaks the contract
    (:func:`~CTNormalizeLib.contracts.card.card_problems`): the registry would refuse the package.
    """
    from ..contracts.card import card_problems
    from ..io.atomic import atomic_write_text
    from ..io.jsonfile import dumps

    problems = card_problems(card)
    if problems:
        raise BadInputError(f"Not writing {path}: not a valid model card: {'; '.join(problems)}.")
    return atomic_write_text(path, dumps(card, indent=2) + "\n")


def read_package(path: Path) -> ModelPackage:
    """Read one package folder; raises :class:`BadInputError` when its card is unusable."""
    path = Path(path)
    card_path = path / CARD
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"Model package {path}: cannot read {CARD} ({exc}).") from None
    from ..contracts.card import card_problems

    problems = card_problems(card)
    if problems:
        raise BadInputError(f"Model package {path}: {CARD} is not a valid model card: {'; '.join(problems)}.")
    return ModelPackage(path, card)


def list_models(dirs: Optional[list] = None) -> list[ModelPackage]:
    """All readable packages in ``dirs`` (default :func:`model_dirs`); unreadable ones are logged and skipped.

    Sorted best first: higher ``priority``, then name. A name found twice keeps the first
    (the user folders come after Resources, so shipped models win ties by name).
    """
    found, seen = [], set()
    for d in (model_dirs() if dirs is None else [Path(x) for x in dirs]):
        if not d.is_dir():
            continue
        for sub in sorted(p for p in d.iterdir() if (p / CARD).is_file()):
            try:
                pkg = read_package(sub)
            except BadInputError as exc:
                log.warning("%s", exc.message)
                continue
            if pkg.name in seen:
                first = next(f.path for f in found if f.name == pkg.name)
                log.warning("Model package %s at %s is hidden by the one at %s (same name); rename it in its "
                            "card.json to use both.", pkg.name, sub, first)
                continue
            seen.add(pkg.name)
            found.append(pkg)
    return sorted(found, key=lambda p: (-p.priority, p.name))


def find_model(source, target, dirs: Optional[list] = None, name: Optional[str] = None) -> Optional[ModelPackage]:
    """The best package covering ``source -> target`` (or the one called ``name``), or None."""
    for pkg in list_models(dirs):
        if name is not None and pkg.name != name:
            continue
        if pkg.covers(source, target):
            return pkg
    return None


def explain_no_model(source, target, dirs: Optional[list] = None) -> str:
    """A sentence saying why no model covers the pair (for NO_MODEL errors and fallback warnings)."""
    pkgs = list_models(dirs)
    if not pkgs:
        return "No model packages are installed (looked in " + ", ".join(str(d) for d in model_dirs()) + ")."
    reasons = "; ".join(f"{p.name}: {p.why_not(source, target)}" for p in pkgs)
    return f"No model covers {source.spec()} -> {target.spec()} ({reasons})."
