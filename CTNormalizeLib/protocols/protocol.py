"""The ``Protocol`` dataclass, where each field came from, and spec strings."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from ..errors import BadInputError
from .kernels import kernel_class


@dataclass(frozen=True)
class FieldSource:
    """Where a protocol field came from and how sure we are.

    source : ``"tag"`` (DICOM), ``"image"`` (estimated from the voxels), ``"user"``,
    ``"preset"``, ``"default"`` or ``"unknown"`` (could not be determined; confidence 0); confidence in [0, 1]; detail is a short human note
    (e.g. ``"ConvolutionKernel=B70f"``).
    """

    source: str
    confidence: float = 1.0
    detail: str = ""


#: Slice-sensitivity profile shapes a protocol may name, and the FWHM (in units of the nominal thickness) of
#: the Gaussian the engine models each with. The z physics (slice-profile change, noise across thicknesses,
#: model conditioning) is Gaussian throughout; a rectangular profile of width T (an axial, step-and-shoot
#: scan) becomes the Gaussian of the same second moment (std T/sqrt(12), FWHM 0.68 T), which also passes
#: slice-independent noise like the rectangle (variance 0.98/T against 1/T per unit noise density). A
#: helical scan's profile (roughly a triangle of FWHM T, std T/sqrt(6): FWHM-equivalent 0.96 T) is what
#: the default Gaussian of FWHM T stands for.
PROFILE_FWHM = {"gaussian": 1.0, "rect": 2.0 * math.sqrt(2.0 * math.log(2.0)) / math.sqrt(12.0)}
_PROFILE_SYNONYMS = {"gaussian": "gaussian", "gauss": "gaussian", "helical": "gaussian", "spiral": "gaussian",
                     "rect": "rect", "rectangular": "rect", "axial": "rect", "sequential": "rect",
                     "sequenced": "rect", "step-and-shoot": "rect"}


def profile_name(text: str) -> str:
    """The profile (``gaussian`` or ``rect``) a name or synonym stands for.

    Raises
    ------
    BadInputError
        For a name that is not a profile or a synonym of one.
    """
    key = str(text).strip().lower()
    if key not in _PROFILE_SYNONYMS:
        raise BadInputError(f"Unknown slice profile {text!r}; use gaussian (helical scans, the default) or rect "
                            f"(axial/sequential scans); synonyms: {', '.join(sorted(_PROFILE_SYNONYMS))}.")
    return _PROFILE_SYNONYMS[key]


@dataclass(frozen=True)
class Protocol:
    """An acquisition/reconstruction protocol.

    Attributes
    ----------
    kernel : str or None
        Kernel class: ``smooth``, ``standard``, ``sharp`` or ``very-sharp``.
    kernel_name : str or None
        The vendor's name when known (``"B70f"``), else None.
    dose : float or None
        Dose as a fraction of the full reference dose (1.0 = full dose).
    mas : float or None
        Tube current-time product (mAs), when known.
    ctdivol : float or None
        CTDIvol (mGy), when known.
    thickness : float or None
        Nominal reconstructed slice thickness (the slice-sensitivity profile's width), mm.
    spacing : float or None
        Slice spacing along z, mm (defaults to ``thickness`` where needed).
    profile : str or None
        Shape of the slice-sensitivity profile, a key of :data:`PROFILE_FWHM`; None = ``gaussian``
        (helical). The physics uses :attr:`ssp_fwhm`, not ``thickness``.
    sources : dict
        Field name -> :class:`FieldSource`.
    """

    kernel: Optional[str] = None
    kernel_name: Optional[str] = None
    dose: Optional[float] = None
    mas: Optional[float] = None
    ctdivol: Optional[float] = None
    thickness: Optional[float] = None
    spacing: Optional[float] = None
    profile: Optional[str] = None
    sources: dict = field(default_factory=dict, compare=False, hash=False)

    def merged(self, other: "Protocol") -> "Protocol":
        """This protocol with every field that ``other`` sets taken from ``other``.

        A thickness comes with its profile: ``other``'s thickness replaces this one's profile too.
        """
        changes, sources = {}, dict(self.sources)
        for name in ("kernel", "kernel_name", "dose", "mas", "ctdivol", "thickness", "spacing", "profile"):
            v = getattr(other, name)
            if v is not None:
                changes[name] = v
                if name in other.sources:
                    sources[name] = other.sources[name]
        if other.thickness is not None and other.profile is None and self.profile is not None:
            changes["profile"] = None
            sources.pop("profile", None)
        return replace(self, sources=sources, **changes)

    @property
    def z_spacing(self) -> Optional[float]:
        return self.spacing if self.spacing is not None else self.thickness

    @property
    def ssp_fwhm(self) -> Optional[float]:
        """FWHM (mm) of the Gaussian slice profile the z physics models this protocol with.

        ``thickness`` for a Gaussian (default) profile; for a rectangular one the Gaussian of
        the same second moment (:data:`PROFILE_FWHM`). None when the thickness is unknown.
        """
        if self.thickness is None:
            return None
        return float(self.thickness) * PROFILE_FWHM[self.profile or "gaussian"]

    @property
    def kernel_label(self) -> Optional[str]:
        """The kernel as specs print it: the vendor name when it names this protocol's class, else the
        class (the pixels may read another class than the tag's name: the name then does not apply)."""
        if self.kernel_name:
            try:
                if kernel_class(self.kernel_name) == self.kernel:
                    return self.kernel_name
            except BadInputError:
                pass
        return self.kernel

    def spec(self) -> str:
        """The spec string, e.g. ``kernel=sharp,dose=0.25,thickness=2``."""
        parts = []
        if self.kernel:
            parts.append(f"kernel={self.kernel_label}")
        if self.dose is not None:
            parts.append(f"dose={self.dose:.3g}")
        if self.mas is not None:
            parts.append(f"mas={self.mas:.4g}")
        if self.ctdivol is not None:
            parts.append(f"ctdivol={self.ctdivol:.4g}")
        if self.thickness is not None:
            parts.append(f"thickness={self.thickness:.3g}")
        if self.profile is not None:
            parts.append(f"profile={self.profile}")
        if self.spacing is not None:
            parts.append(f"spacing={self.spacing:.3g}")
        return ",".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = {k: asdict(v) for k, v in self.sources.items()}
        return d

    def vector(self) -> list[float]:
        """Numeric encoding for conditioning models: one-hot kernel (4), dose, thickness."""
        from .kernels import KERNEL_CLASSES

        onehot = [1.0 if self.kernel == k else 0.0 for k in KERNEL_CLASSES]
        return onehot + [float(self.dose or 1.0), float(self.ssp_fwhm or 1.0)]


_KEYS = {"kernel", "dose", "mas", "ctdivol", "thickness", "spacing", "profile"}


#: Physical range of each numeric field (inclusive) and its unit, checked where specs are parsed.
RANGES = {
    "dose": (0.01, 4.0, "of full dose"),
    "thickness": (0.1, 20.0, "mm"),
    "spacing": (0.1, 20.0, "mm"),
    "mas": (1.0, 5000.0, "mAs"),
    "ctdivol": (0.01, 1000.0, "mGy"),
}


def _number(key: str, text: str) -> float:
    t = text.strip()
    try:
        if key == "dose" and t.endswith("%"):
            v = float(t[:-1]) / 100.0
        else:
            v = float(t.rstrip("mm").strip()) if key in ("thickness", "spacing") else float(t)
    except ValueError:
        raise BadInputError(f"{key}={text!r} is not a number.") from None
    lo, hi, unit = RANGES[key]
    if not lo <= v <= hi:  # also refuses nan and inf
        hint = " (a fraction, e.g. 0.25 or 25%)" if key == "dose" else ""
        raise BadInputError(f"{key}={text.strip()} is outside the physical range {lo:g} to {hi:g} {unit}{hint}.")
    return v


def parse_spec(spec: str, source: str = "user") -> Protocol:
    """Parse ``kernel=<class|vendor>,dose=<fraction|NN%>,thickness=<mm>[,profile=gaussian|rect][,spacing=<mm>]
    [,mas=..][,ctdivol=..]``.

    Fields left out stay None; ``profile`` needs a ``thickness`` in the same spec (it is that
    thickness's shape). Raises :class:`BadInputError` with the reason on a bad spec.
    """
    if spec is None or not str(spec).strip():
        raise BadInputError("Empty protocol spec; expected e.g. 'kernel=sharp,dose=0.25,thickness=2'.")
    values: dict = {}
    sources: dict = {}
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise BadInputError(
                f"Bad protocol spec part {part!r} in {spec!r}: expected key=value with keys "
                f"{', '.join(sorted(_KEYS))} (or a preset name)."
            )
        key, val = (s.strip() for s in part.split("=", 1))
        key = key.lower()
        if key not in _KEYS:
            raise BadInputError(f"Unknown protocol key {key!r} in {spec!r}; known keys: {', '.join(sorted(_KEYS))}.")
        if key in sources:
            raise BadInputError(f"{key} is given twice in {spec!r} ({sources[key].detail} and {key}={val}); "
                                "give each key once.")
        if key == "kernel":
            cls = kernel_class(val)
            values["kernel"] = cls
            if val.lower() != cls:
                values["kernel_name"] = val
        elif key == "profile":
            values["profile"] = profile_name(val)
        else:
            values[key] = _number(key, val)
        sources[key] = FieldSource(source, 1.0, f"{key}={val}")
    if "profile" in values and "thickness" not in values:
        raise BadInputError(f"profile={values['profile']} in {spec!r} needs the thickness it shapes: "
                            "give thickness=<mm> in the same spec.")
    return Protocol(sources=sources, **values)
