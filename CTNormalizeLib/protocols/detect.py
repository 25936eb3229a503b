"""What a volume's DICOM tags say about its protocol (kernel, thickness, mAs, CTDIvol).

Tags are priors, not truth: :mod:`CTNormalizeLib.signature` measures what the pixels
show, and :mod:`CTNormalizeLib.plan` combines both (and the user's overrides) into the
source protocol. Every field gets a :class:`FieldSource` (``tag``, ``image`` for the
volume's own z grid, or ``unknown`` with the reason).
"""

from __future__ import annotations

import difflib
import math
from typing import Mapping, Optional

from ..errors import BadInputError
from .kernels import kernel_class, known_kernel_names
from .protocol import FieldSource, Protocol


def tag_number(meta: Mapping, key: str) -> Optional[float]:
    """A positive finite number from a (possibly multi-valued) DICOM tag string, else None."""
    v = meta.get(key)
    if v is None:
        return None
    try:
        x = float(str(v).split("\\")[0])
    except ValueError:
        return None
    return x if math.isfinite(x) and x > 0 else None


def kernel_from_tag(tag: str) -> tuple[Optional[str], FieldSource]:
    """Kernel class of a ConvolutionKernel tag (None and a low-confidence source if unknown)."""
    try:
        cls = kernel_class(tag)
    except BadInputError:
        close = difflib.get_close_matches(tag.strip().upper(), [k.upper() for k in known_kernel_names()],
                                          n=3, cutoff=0.5)
        hint = f"; closest known: {', '.join(close)}" if close else ""
        return None, FieldSource("tag", 0.1, f"ConvolutionKernel={tag!r} is not in the vendor table, "
                                             f"class unknown{hint}")
    # the vendor -> class table is approximate (vendors' kernels differ within a class)
    return cls, FieldSource("tag", 0.9, f"ConvolutionKernel={tag}")


def protocol_from_tags(meta: Mapping, z_spacing: float) -> Protocol:
    """The protocol the DICOM tags in ``meta`` describe, on a volume with slice spacing ``z_spacing``.

    Parameters
    ----------
    meta : mapping
        ``Volume.meta`` (DICOM keywords -> strings).
    z_spacing : float
        The volume's z voxel spacing (mm), after any resampling on read.

    Returns
    -------
    Protocol
        kernel and kernel_name (ConvolutionKernel), thickness (SliceThickness), spacing
        (the z grid), mas (Exposure, else XRayTubeCurrent x ExposureTime), ctdivol
        (CTDIvol), profile (``rect`` for AcquisitionType SEQUENCED, an axial scan, with a
        SliceThickness; else None, the helical default); ``dose`` stays None: a dose fraction
        is not in any tag.
    """
    values: dict = {}
    sources: dict = {}
    tag = str(meta.get("ConvolutionKernel", "")).strip()
    if tag:
        values["kernel"], src = kernel_from_tag(tag)
        values["kernel_name"] = tag
        sources["kernel"] = sources["kernel_name"] = src
    else:
        sources["kernel"] = FieldSource("unknown", 0.0, "no ConvolutionKernel tag")

    dz = float(z_spacing)
    note = f"z voxel spacing {dz:.4g} mm"
    sbs = tag_number(meta, "SpacingBetweenSlices")
    if sbs is not None and abs(sbs - dz) > 0.01 * dz:
        note += f" (SpacingBetweenSlices tag says {sbs:.4g} mm)"
    values["spacing"] = dz
    sources["spacing"] = FieldSource("image", 1.0, note)

    t = tag_number(meta, "SliceThickness")
    if t is not None:
        values["thickness"] = t
        sources["thickness"] = FieldSource("tag", 1.0, f"SliceThickness={meta['SliceThickness']}")
    else:
        sources["thickness"] = FieldSource("unknown", 0.0, "no SliceThickness tag")
    acquisition = str(meta.get("AcquisitionType", "")).strip().upper()
    if t is not None and acquisition == "SEQUENCED" and tag_number(meta, "SpiralPitchFactor") is None:
        values["profile"] = "rect"
        sources["profile"] = FieldSource("tag", 0.8, "AcquisitionType=SEQUENCED (an axial scan): rectangular slices")
    elif t is not None:  # the profile stays None (Gaussian); say why, so that info shows it
        sources["profile"] = (
            FieldSource("tag", 0.8, f"AcquisitionType={acquisition} (a helical scan): Gaussian slice profile")
            if acquisition in ("SPIRAL", "HELICAL") else
            FieldSource("default", 0.5, "helical (Gaussian slice profile) assumed: "
                        + ("no AcquisitionType tag" if not acquisition else f"AcquisitionType={acquisition}")
                        + (" with a SpiralPitchFactor" if tag_number(meta, "SpiralPitchFactor") is not None else "")
                        + "; an axial scan's rectangular slices: --source profile=rect"))

    exposure = tag_number(meta, "Exposure")
    current, time_ms = tag_number(meta, "XRayTubeCurrent"), tag_number(meta, "ExposureTime")
    if exposure is not None:
        values["mas"] = exposure
        sources["mas"] = FieldSource("tag", 0.9, f"Exposure={meta['Exposure']} mAs")
    elif current is not None and time_ms is not None:
        values["mas"] = current * time_ms / 1000.0
        sources["mas"] = FieldSource("tag", 0.6, f"XRayTubeCurrent={current:g} mA x ExposureTime={time_ms:g} ms "
                                                 "(helical pitch not accounted)")
    else:
        sources["mas"] = FieldSource("unknown", 0.0, "no Exposure or XRayTubeCurrent/ExposureTime tags")

    c = tag_number(meta, "CTDIvol")
    if c is not None:
        values["ctdivol"] = c
        sources["ctdivol"] = FieldSource("tag", 1.0, f"CTDIvol={meta['CTDIvol']} mGy")
    else:
        sources["ctdivol"] = FieldSource("unknown", 0.0, "no CTDIvol tag")
    sources["dose"] = FieldSource("unknown", 0.0, "no tag gives a dose fraction; the noise is measured instead")
    return Protocol(sources=sources, **values)
