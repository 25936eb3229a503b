"""How a normalized output was made, read once from its run report: the provenance that every
output writer (NRRD/MHA headers, a derived DICOM series, a batch case) records, and the tags
that describe the output's slices and kernel rather than the input's acquisition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..version import __version__
from .report import RESEARCH_NOTE, SOURCE_TEXTURE

#: Input tags of the acquisition's dose that no longer describe an output whose noise was changed.
DOSE_TAGS = ("Exposure", "XRayTubeCurrent", "ExposureTime", "CTDIvol")
#: Input tags that name the input's series: a derived volume is another series.
SERIES_TAGS = ("SeriesInstanceUID", "SeriesDescription")


@dataclass
class Derivation:
    """What a derived series says about how it was made (read from a run report)."""

    method: str
    model_sha256: Optional[str]
    source_spec: str
    target_spec: str
    engine_version: str
    source_kernel: Optional[str] = None
    target_kernel: Optional[str] = None
    target_kernel_name: Optional[str] = None
    source_dose: Optional[float] = None
    target_dose: Optional[float] = None
    source_thickness: Optional[float] = None
    target_thickness: Optional[float] = None
    texture: Optional[str] = None
    noise_equivalent_dose: Optional[float] = None
    target_profile: Optional[str] = None
    changes: tuple = ()
    target_noise_hu: Optional[float] = None
    #: the source's thickness was read from the pixels (no SliceThickness tag, not given by the user)
    source_thickness_measured: bool = False
    summary: Optional[str] = None

    def changed(self, aspect: str) -> bool:
        """Whether the method changed ``aspect`` (``kernel``, ``noise``, ``thickness``) towards the
        target; True when the report does not say (written before it did)."""
        return not self.changes or aspect in self.changes

    @property
    def achieved_spec(self) -> str:
        """The target spec without the aspects the method left as they were (``z_profile`` to
        ``kernel=smooth,thickness=2`` achieved ``thickness=2``)."""
        aspect = {"kernel": "kernel", "dose": "noise", "mas": "noise", "ctdivol": "noise",
                  "thickness": "thickness", "profile": "thickness", "spacing": "thickness"}
        parts = [p for p in self.target_spec.split(",")
                 if self.changed(aspect.get(p.split("=", 1)[0].strip().lower(), ""))]
        return ",".join(parts)

    def kernel_tag(self) -> str:
        """The ``ConvolutionKernel`` of an output whose kernel the method changed: the target's kernel
        (name, else class). One it left keeps the input's tag (:meth:`output_meta`)."""
        return str(self.target_kernel_name or self.target_kernel or "")

    def slice_thickness(self, z_spacing: float) -> Optional[float]:
        """The ``SliceThickness`` of the output, in mm, or None where it would only repeat an estimate.

        The source's when the method left the slices as they were; the target's when it made them
        thicker; and the source's again when it interpolated thick slices onto a finer grid, since
        that leaves them as thick as they were (``info`` would otherwise read their noise as that of
        thin slices). The grid's spacing when the protocols do not say. Where the value would be the
        source's and that was read from the pixels, None: an estimate is no tag (a reader of the
        output would take it as the scanner's), as with the kernel class.
        """
        if not self.changed("thickness"):
            value, the_sources = float(self.source_thickness or z_spacing), True
        elif self.target_thickness and self.source_thickness:
            value = max(float(self.target_thickness), float(self.source_thickness))
            the_sources = float(self.source_thickness) > float(self.target_thickness)
        else:
            value, the_sources = float(self.target_thickness or z_spacing), False
        return None if the_sources and self.source_thickness_measured else value

    def acquisition_tags(self, input_meta: dict) -> dict:
        """The dose and acquisition-type tags of the output (both writers use these).

        The input's dose tags (:data:`DOSE_TAGS`) while the method leaves the noise as it was; its
        ``AcquisitionType`` while it leaves the slices, else ``SEQUENCED`` for a rectangular target
        profile (read back as the axial scan it now resembles).
        """
        out = {}
        if not self.changed("noise"):
            out.update({k: input_meta[k] for k in DOSE_TAGS if input_meta.get(k) not in (None, "")})
        if not self.changed("thickness"):
            if input_meta.get("AcquisitionType"):
                out["AcquisitionType"] = input_meta["AcquisitionType"]
        elif self.target_profile == "rect":
            out["AcquisitionType"] = "SEQUENCED"
        return out

    def output_meta(self, input_meta: dict, z_spacing: float) -> dict:
        """The tags of the output volume (:attr:`~CTNormalizeLib.volume.Volume.meta`).

        The input's tags without its series' identity (:data:`SERIES_TAGS`), with the output's
        kernel (:meth:`kernel_tag`, written only when the method changed it or the input had a
        kernel tag: a measured class is no tag), slice thickness (:meth:`slice_thickness`), dose and
        acquisition tags (:meth:`acquisition_tags`), and the provenance keys
        (:data:`~CTNormalizeLib.volume.PROVENANCE_KEYS`): :attr:`label`, the texture and the run's
        target (:meth:`target_provenance`).
        """
        drop = {"source_path", "warnings", "AcquisitionType", *SERIES_TAGS, *DOSE_TAGS}
        if self.changed("thickness"):
            drop.update(("SpacingBetweenSlices", "SpiralPitchFactor"))
        meta = {k: v for k, v in input_meta.items() if k not in drop}
        meta.update(self.acquisition_tags(input_meta))
        if self.changed("kernel"):
            meta["ConvolutionKernel"] = self.kernel_tag()
        thickness = self.slice_thickness(z_spacing)
        meta.pop("SliceThickness", None)
        if thickness is not None:
            meta["SliceThickness"] = f"{thickness:g}"
        meta["ctnormalize"] = self.label
        meta["ctnormalize_texture"] = self.texture or ""
        meta.update(self.target_provenance())
        return meta

    def target_provenance(self) -> dict:
        """``ctnormalize_target`` (the run's target protocol, completed from the source) and, when the
        method sets the noise, ``ctnormalize_target_noise_hu`` (the noise it set for it): what ``info``
        compares the output with."""
        out = {"ctnormalize_target": self.target_spec}
        if self.target_noise_hu is not None and self.changed("noise"):
            out["ctnormalize_target_noise_hu"] = f"{float(self.target_noise_hu):.4g}"
        return out

    @property
    def label(self) -> str:
        """The ``ctnormalize`` provenance value: method, source and target protocols (the plan's
        summary, with a kernel conversion's MTF50s, when the report has it)."""
        return f"{self.method} {self.summary or f'{self.source_spec} -> {self.target_spec}'}"

    def description(self, source_label: str = "") -> str:
        """The ``DerivationDescription`` text (at most 1024 characters, the ST limit)."""
        model = f" (model sha256 {self.model_sha256})" if self.model_sha256 else ""
        src = f" from {source_label}" if source_label else ""
        texture = ("" if not self.texture else ", noise not removed or replaced" if self.texture == SOURCE_TEXTURE
                   else f", {self.texture} texture")
        text = (f"CTNormalize {self.engine_version}: {self.method}{model}{texture}; source protocol "
                f"{self.source_spec}{src}; target protocol {self.target_spec}. {RESEARCH_NOTE}")
        return text[:1024]


def derivation_from_report(report) -> Derivation:
    """The :class:`Derivation` of a normalize run, from its run report.

    ``report`` is a :class:`~CTNormalizeLib.contracts.report.RunReport` or its ``to_dict()``.
    The one place that reads the report's layout for DICOM provenance.
    """
    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    plan = d.get("plan") or {}
    src, tgt = plan.get("source") or {}, plan.get("target") or {}
    return Derivation(
        method=str(d.get("method", "unknown")), model_sha256=d.get("model_sha256"),
        source_spec=str(plan.get("source_spec", "")), target_spec=str(plan.get("target_spec", "")),
        engine_version=str(d.get("engine_version", __version__)),
        source_kernel=src.get("kernel"), target_kernel=tgt.get("kernel"), target_kernel_name=tgt.get("kernel_name"),
        source_dose=src.get("dose"), target_dose=tgt.get("dose"),
        source_thickness=src.get("thickness"), target_thickness=tgt.get("thickness"),
        texture=d.get("texture") or plan.get("texture"), noise_equivalent_dose=plan.get("noise_equivalent_dose"),
        target_profile=tgt.get("profile"), changes=tuple(d.get("changes") or ()),
        target_noise_hu=(plan.get("target_signature") or {}).get("noise_hu"), summary=plan.get("summary"),
        source_thickness_measured=((src.get("sources") or {}).get("thickness") or {}).get("source") == "image",
    )


