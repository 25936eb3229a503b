"""The JSON results of ``ctnormalize emphysema --json`` and ``ctnormalize radiomics --json``.

The commands build their output through these dataclasses and callers read it back with
``from_dict``, so both sides agree on the keys instead of guessing them. ``from_dict`` raises
:class:`ContractError` (a ``ValueError``) naming the missing or mistyped field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional


class ContractError(ValueError):
    """A document does not follow the contract (missing key, wrong type)."""


def _require(d: Any, key: str, where: str, kinds=None):
    if not isinstance(d, dict):
        raise ContractError(f"{where}: expected an object, got {type(d).__name__}.")
    if key not in d:
        raise ContractError(f"{where}: missing '{key}'.")
    value = d[key]
    if kinds is not None and value is not None and not isinstance(value, kinds):
        raise ContractError(f"{where}.{key}: expected {kinds}, got {type(value).__name__}.")
    return value


def _number(value, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContractError(f"{where}: expected a number, got {value!r}.")
    return float(value)


# -- emphysema -------------------------------------------------------------------------------
STAT_KEYS = ("laa_percent", "perc15_hu", "lung_volume_ml", "emphysema_volume_ml", "mean_hu")


@dataclass
class RegionStats:
    """Emphysema measures of one region (whole lungs, one lung or one zone)."""

    laa_percent: Optional[float]
    perc15_hu: Optional[float]
    lung_volume_ml: Optional[float]
    emphysema_volume_ml: Optional[float]
    mean_hu: Optional[float]
    voxels: Optional[int] = None
    z_range: Optional[list] = None

    @classmethod
    def from_dict(cls, d: dict, where: str = "region") -> "RegionStats":
        values = {k: _number(_require(d, k, where), f"{where}.{k}") for k in STAT_KEYS}
        voxels = d.get("voxels")
        z_range = d.get("z_range")
        return cls(**values, voxels=None if voxels is None else int(voxels),
                   z_range=None if z_range is None else list(z_range))

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in STAT_KEYS}
        if self.voxels is not None:
            out["voxels"] = self.voxels
        if self.z_range is not None:
            out["z_range"] = list(self.z_range)
        return out


@dataclass
class EmphysemaProvenance:
    """How a measurement was made: threshold, its rule, the lung mask and the engine version."""

    threshold_hu: float
    threshold_rule: str
    mask_source: str
    lung_method: str
    engine_version: str

    @classmethod
    def from_dict(cls, d: dict, where: str = "provenance") -> "EmphysemaProvenance":
        return cls(threshold_hu=_number(_require(d, "threshold_hu", where), f"{where}.threshold_hu"),
                   threshold_rule=str(_require(d, "threshold_rule", where)),
                   mask_source=str(_require(d, "mask_source", where)),
                   lung_method=str(_require(d, "lung_method", where)),
                   engine_version=str(_require(d, "engine_version", where)))

    def to_dict(self) -> dict:
        return {"threshold_hu": self.threshold_hu, "threshold_rule": self.threshold_rule,
                "mask_source": self.mask_source, "lung_method": self.lung_method,
                "engine_version": self.engine_version}


@dataclass
class EmphysemaMeasurement:
    """The emphysema result of one input CT (one element of ``results``).

    ``masks`` (with ``--mask-out``) maps ``"lung"`` (1 = right, 2 = left) and ``"emphysema"``
    to absolute paths on the input's grid; ``dicom_seg`` (with ``--dicom-seg``) is the DICOM SEG written.
    """

    input: str
    whole: RegionStats
    per_lung: dict
    per_zone: dict
    provenance: EmphysemaProvenance
    warnings: list = field(default_factory=list)
    masks: Optional[dict] = None
    dice_vs_first: Optional[float] = None
    dicom_seg: Optional[str] = None

    @classmethod
    def from_dict(cls, d: dict, where: str = "result") -> "EmphysemaMeasurement":
        per_lung = _require(d, "per_lung", where, dict)
        per_zone = _require(d, "per_zone", where, dict)
        masks = d.get("masks")
        if masks is not None:
            for key in ("lung", "emphysema"):
                _require(masks, key, f"{where}.masks", str)
        return cls(
            input=str(_require(d, "input", where)),
            whole=RegionStats.from_dict(d, where),
            per_lung={k: RegionStats.from_dict(v, f"{where}.per_lung.{k}") for k, v in per_lung.items()},
            per_zone={k: RegionStats.from_dict(v, f"{where}.per_zone.{k}") for k, v in per_zone.items()},
            provenance=EmphysemaProvenance.from_dict(_require(d, "provenance", where, dict), f"{where}.provenance"),
            warnings=list(_require(d, "warnings", where, list)),
            masks=None if masks is None else dict(masks),
            dice_vs_first=_number(d.get("dice_vs_first"), f"{where}.dice_vs_first"),
            dicom_seg=None if d.get("dicom_seg") is None else str(d["dicom_seg"]),
        )

    def to_dict(self) -> dict:
        out = {"input": self.input, **self.whole.to_dict(),
               "per_lung": {k: v.to_dict() for k, v in self.per_lung.items()},
               "per_zone": {k: v.to_dict() for k, v in self.per_zone.items()},
               "provenance": self.provenance.to_dict(), "warnings": list(self.warnings)}
        if self.masks is not None:
            out["masks"] = dict(self.masks)
        if self.dice_vs_first is not None:
            out["dice_vs_first"] = self.dice_vs_first
        if self.dicom_seg is not None:
            out["dicom_seg"] = self.dicom_seg
        return out

    def regions(self) -> dict:
        """``{"whole"|"left"|"right"|"upper"|...: RegionStats}``."""
        return {"whole": self.whole, **self.per_lung, **self.per_zone}


@dataclass
class EmphysemaReport:
    """What ``ctnormalize emphysema --json`` prints: one measurement per input, in order."""

    results: list

    @classmethod
    def from_dict(cls, d: dict) -> "EmphysemaReport":
        rows = _require(d, "results", "emphysema", list)
        return cls([EmphysemaMeasurement.from_dict(r, f"results[{i}]") for i, r in enumerate(rows)])

    def to_dict(self) -> dict:
        return {"results": [r.to_dict() for r in self.results]}

    def for_input(self, path: str) -> EmphysemaMeasurement:
        """The measurement of ``path`` (same real path, else same file name)."""
        want = os.path.realpath(str(path))
        for r in self.results:
            if os.path.realpath(r.input) == want:
                return r
        named = [r for r in self.results if os.path.basename(r.input) == os.path.basename(str(path))]
        if len(named) == 1:
            return named[0]
        raise ContractError(f"The emphysema result has no measurement for {path}.")


# -- radiomics -------------------------------------------------------------------------------
@dataclass
class RadiomicsFeature:
    """One value of the tidy table: a feature of a segment on an image."""

    segment: str
    label: int
    image: str
    feature: str
    value: Any

    @classmethod
    def from_dict(cls, d: dict, where: str = "feature") -> "RadiomicsFeature":
        return cls(segment=str(_require(d, "segment", where)), label=int(_require(d, "label", where)),
                   image=str(_require(d, "image", where)), feature=str(_require(d, "feature", where)),
                   value=_require(d, "value", where))

    def to_dict(self) -> dict:
        return {"segment": self.segment, "label": self.label, "image": self.image,
                "feature": self.feature, "value": self.value}

    @property
    def numeric(self) -> Optional[float]:
        """The value as a float, or None for diagnostics and other non-numeric entries."""
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            return None
        return float(self.value)


@dataclass
class RadiomicsReport:
    """What ``ctnormalize radiomics --json`` prints.

    ``images`` are the image names in order (the first is the comparison's reference);
    ``comparison`` the wide rows (one per segment and feature); ``provenance`` holds
    ``params_path``, ``settings``, ``pyradiomics_version`` and ``engine_version``.
    """

    images: list
    features: list
    comparison: list
    provenance: dict
    warnings: list = field(default_factory=list)
    outputs: Optional[list] = None

    @classmethod
    def from_dict(cls, d: dict) -> "RadiomicsReport":
        images = [str(n) for n in _require(d, "images", "radiomics", list)]
        if not images:
            raise ContractError("radiomics.images: no image.")
        prov = _require(d, "provenance", "radiomics", dict)
        for key in ("params_path", "pyradiomics_version", "engine_version"):
            _require(prov, key, "radiomics.provenance")
        feats = _require(d, "features", "radiomics", list)
        return cls(images=images,
                   features=[RadiomicsFeature.from_dict(f, f"features[{i}]") for i, f in enumerate(feats)],
                   comparison=list(_require(d, "comparison", "radiomics", list)), provenance=dict(prov),
                   warnings=list(_require(d, "warnings", "radiomics", list)), outputs=d.get("outputs"))

    def to_dict(self) -> dict:
        out = {"provenance": self.provenance, "images": list(self.images),
               "features": [f.to_dict() for f in self.features], "comparison": list(self.comparison),
               "warnings": list(self.warnings), "outputs": self.outputs}
        return out

    def values(self) -> dict:
        """``{(segment, feature): {image: float}}`` of the numeric features, in table order."""
        table: dict = {}
        for f in self.features:
            v = f.numeric
            if v is None:
                continue
            table.setdefault((f.segment, f.feature), {})[f.image] = v
        return table
