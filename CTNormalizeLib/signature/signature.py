"""The ``Signature`` dataclass: a scan's image quality as numbers, each with where it came from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

from ..protocols.protocol import FieldSource
from .transfer import Transfer


@dataclass(frozen=True)
class Signature:
    """Image-quality signature of a scan (measured) or of a protocol (nominal).

    Attributes
    ----------
    origin : str
        ``"measured"`` (from this scan's pixels and tags), ``"nominal"`` (from a protocol
        spec or preset) or ``"reference"`` (measured on a reference scan).
    pixel_mm : float
        In-plane pixel size, mm.
    spacing_mm, thickness_mm : float
        Slice spacing and slice-profile FWHM along z, mm.
    transfer : Transfer
        In-plane transfer function (kernel apodization as the pixels show it).
    noise_hu : float or None
        Noise std in soft tissue, HU, over the full band (what a uniform ROI shows).
    kernel : str or None
        The kernel class closest to ``transfer``.
    wed_mm, fov_mm : float or None
        Water-equivalent diameter of the patient and field of view, mm.
    sources : dict
        Field name -> :class:`~CTNormalizeLib.protocols.protocol.FieldSource`.
    noise_by_region : dict
        ``{"air"|"fat"|"muscle"|"lung"|"soft": std HU or None}`` ("soft": any -200..200 HU).
    noise_region : str or None
        Where ``noise_hu`` was measured (:data:`NOISE_REGIONS`); None when it was not measured here.
    air_to_tissue : float or None
        Noise in air outside the body relative to soft tissue (patient attenuation).
    details : dict
        JSON-ready measurement details: ``nps``, ``edge``, ``z``, ``kernel_distances``.
    warnings : tuple
        ``{"code", "message"}`` dicts (tags vs pixels disagreements and the like).
    """

    origin: str
    pixel_mm: float
    spacing_mm: float
    thickness_mm: float
    transfer: Transfer
    noise_hu: Optional[float] = None
    kernel: Optional[str] = None
    wed_mm: Optional[float] = None
    fov_mm: Optional[float] = None
    sources: dict = field(default_factory=dict, compare=False, hash=False)
    noise_by_region: dict = field(default_factory=dict, compare=False, hash=False)
    noise_region: Optional[str] = field(default=None, compare=False, hash=False)
    air_to_tissue: Optional[float] = None
    details: dict = field(default_factory=dict, compare=False, hash=False)
    warnings: tuple = ()

    @property
    def nyquist(self) -> float:
        return 0.5 / self.pixel_mm

    @property
    def mtf50(self) -> float:
        return self.transfer.mtf50

    @property
    def transfer_measured(self) -> bool:
        """Whether the transfer was read from the image's noise texture (not a kernel class's nominal curve)."""
        return getattr(self.sources.get("transfer"), "source", None) == "image"

    @property
    def noise_from_tissue(self) -> bool:
        """Whether ``noise_hu`` was measured in fat or muscle (uniform tissue), not in a stand-in (mixed soft
        tissue, whose texture raises it; air or lung, scaled)."""
        return self.noise_region == "tissue"

    def with_noise(self, noise_hu: float, source: FieldSource) -> "Signature":
        return replace(self, noise_hu=float(noise_hu), sources={**self.sources, "noise_hu": source})

    def to_dict(self) -> dict:
        """JSON-ready form (floats rounded; the transfer with its MTF50/MTF10)."""
        r = lambda v, n=4: (None if v is None or not math.isfinite(v) else round(float(v), n))  # noqa: E731
        return {
            "origin": self.origin, "pixel_mm": r(self.pixel_mm), "spacing_mm": r(self.spacing_mm),
            "thickness_mm": r(self.thickness_mm), "transfer": self.transfer.to_dict(),
            "noise_hu": r(self.noise_hu, 3), "kernel": self.kernel, "wed_mm": r(self.wed_mm, 1),
            "fov_mm": r(self.fov_mm, 1),
            "sources": {k: {"source": v.source, "confidence": v.confidence, "detail": v.detail}
                        for k, v in self.sources.items()},
            "noise_by_region": {k: r(v, 3) for k, v in self.noise_by_region.items()},
            "noise_region": self.noise_region,
            "air_to_tissue": r(self.air_to_tissue, 3), "details": self.details,
            "warnings": [dict(w) for w in self.warnings],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Signature":
        return cls(
            origin=d["origin"], pixel_mm=float(d["pixel_mm"]), spacing_mm=float(d["spacing_mm"]),
            thickness_mm=float(d["thickness_mm"]), transfer=Transfer.from_dict(d["transfer"]),
            noise_hu=d.get("noise_hu"), kernel=d.get("kernel"), wed_mm=d.get("wed_mm"), fov_mm=d.get("fov_mm"),
            sources={k: FieldSource(**v) for k, v in d.get("sources", {}).items()},
            noise_by_region=dict(d.get("noise_by_region", {})), noise_region=d.get("noise_region", _region_of_old(d)),
            air_to_tissue=d.get("air_to_tissue"),
            details=dict(d.get("details", {})), warnings=tuple(d.get("warnings", ())))


def _region_of_old(d: dict) -> Optional[str]:
    """``noise_region`` of a signature dict written before the field: fat or muscle measured -> tissue."""
    by = d.get("noise_by_region") or {}
    return "tissue" if any(by.get(r) is not None for r in ("fat", "muscle")) else None


#: where a measured noise level comes from, in the order of trust: fat and muscle (uniform tissue), any soft
#: tissue (-200..200 HU, its texture raises the figure), air outside the body (scaled), a uniform ROI's NPS,
#: the lungs (an upper bound)
NOISE_REGIONS = ("tissue", "soft", "air", "roi", "lung")

#: the kinds of pair (:func:`pair_kind`) as users read them (README, ``ctnormalize models``, ``auto``'s reason):
#: a pair whose kernel stays is a change of dose, or of thickness only
KIND_NAMES = {"kernel_change": "kernel change", "noise_only": "dose only"}

#: A pair "changes the kernel" when the target's MTF50 differs from the source's by more than this ratio.
KERNEL_CHANGE_RATIO = 1.1


def kernel_direction(source_mtf50: float, target_mtf50: float) -> str:
    """``sharpening`` when the target's MTF50 is above the source's, else ``smoothing`` (the one definition
    ``auto``, the cards' held-out record and the decision scripts use)."""
    return "sharpening" if target_mtf50 > source_mtf50 else "smoothing"


def pair_kind(source: Optional["Signature"], target: Optional["Signature"]) -> str:
    """``kernel_change`` when the target's in-plane transfer differs from the source's, else ``noise_only``.

    Methods rank differently on the two: a kernel conversion is mostly deblurring or
    blurring, a dose-only one mostly denoising (see the held-out benchmark's cases). An
    unknown transfer counts as a kernel change.
    """
    try:
        s, t = source.transfer.mtf50, target.transfer.mtf50
    except AttributeError:
        return "kernel_change"
    if not (math.isfinite(s) and math.isfinite(t) and s > 0 and t > 0):
        return "kernel_change"
    return "kernel_change" if abs(math.log(t / s)) > math.log(KERNEL_CHANGE_RATIO) else "noise_only"
