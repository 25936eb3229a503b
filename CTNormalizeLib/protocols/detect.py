"""Detect a volume's protocol from its DICOM tags and its image noise.

Every field gets a :class:`FieldSource`: ``tag`` (DICOM), ``image`` (geometry or voxels),
``user`` (overrides) or ``unknown`` (value None, with the reason in ``detail``).
"""

from __future__ import annotations

import difflib
import math
from typing import Mapping, Optional

import numpy as np

from ..errors import BadInputError
from ..volume import Volume
from .kernels import kernel_class, known_kernel_names
from .noise import NoiseEstimate, estimate_dose, estimate_noise
from .protocol import FieldSource, Protocol

_FIELDS = ("kernel", "kernel_name", "dose", "mas", "ctdivol", "thickness", "spacing")


def _number(meta: Mapping, key: str) -> Optional[float]:
    v = meta.get(key)
    if v is None:
        return None
    try:
        x = float(str(v).split("\\")[0])
    except ValueError:
        return None
    return x if math.isfinite(x) and x > 0 else None


def _kernel_from_tag(tag: str) -> tuple[Optional[str], FieldSource]:
    try:
        cls = kernel_class(tag)
    except BadInputError:
        close = difflib.get_close_matches(tag.strip().upper(), [k.upper() for k in known_kernel_names()],
                                          n=3, cutoff=0.5)
        hint = f"; closest known: {', '.join(close)}" if close else ""
        return None, FieldSource("tag", 0.1, f"ConvolutionKernel={tag!r} is not in the vendor table, "
                                             f"class unknown{hint}")
    # The vendor -> class table is approximate (vendors' kernels differ within a class).
    return cls, FieldSource("tag", 0.9, f"ConvolutionKernel={tag}")


def detect_protocol(volume: Volume, overrides: Optional[Protocol] = None,
                    noise: Optional[NoiseEstimate] = None,
                    reference_table: Optional[Mapping] = None, measure_noise: bool = True) -> Protocol:
    """Fill a :class:`Protocol` from ``volume.meta`` tags, geometry and image noise.

    Parameters
    ----------
    volume : Volume
    overrides : Protocol, optional
        Fields the user sets; they win (source ``user``). A user kernel or thickness is
        also used to turn the noise into a dose.
    noise : NoiseEstimate, optional
        A precomputed :func:`~CTNormalizeLib.protocols.noise.estimate_noise` result.
    reference_table : mapping, optional
        Full-dose noise table for the dose estimate (default ``NOISE_REFERENCE``).
    measure_noise : bool
        When False and no ``noise`` is given, the dose is left unknown (e.g. not a CT).

    Returns
    -------
    Protocol
        With ``sources`` for every field: kernel (``ConvolutionKernel``; an unknown vendor
        name keeps ``kernel_name`` with ``kernel`` None and low confidence), thickness
        (``SliceThickness``, else the z spacing), spacing (z voxel spacing), mas
        (``Exposure``, else ``XRayTubeCurrent`` x ``ExposureTime``), ctdivol (``CTDIvol``),
        dose (relative, from image noise).
    """
    meta = volume.meta
    user = overrides or Protocol()
    values: dict = {}
    sources: dict = {}

    def user_set(name):
        if getattr(user, name) is None:
            return False
        values[name] = getattr(user, name)
        given = user.sources.get(name)
        sources[name] = FieldSource("user", 1.0, given.detail if given else "")
        return True

    # kernel and kernel_name
    if user_set("kernel"):
        if user_set("kernel_name"):
            sources["kernel_name"] = sources["kernel"]
        else:
            values["kernel_name"] = None
    else:
        tag = str(meta.get("ConvolutionKernel", "")).strip()
        if tag:
            values["kernel"], src = _kernel_from_tag(tag)
            values["kernel_name"] = tag
            sources["kernel"] = sources["kernel_name"] = src
        else:
            sources["kernel"] = FieldSource("unknown", 0.0, "no ConvolutionKernel tag")
        user_set("kernel_name")

    # spacing: the volume's own z grid (after any resampling on read)
    if not user_set("spacing"):
        dz = float(volume.spacing[0])
        tag = _number(meta, "SpacingBetweenSlices")
        note = f"z voxel spacing {dz:.4g} mm"
        if tag is not None and abs(tag - dz) > 0.01 * dz:
            note += f" (SpacingBetweenSlices tag says {tag:g} mm)"
        values["spacing"] = dz
        sources["spacing"] = FieldSource("image", 1.0, note)

    # thickness
    if not user_set("thickness"):
        t = _number(meta, "SliceThickness")
        if t is not None:
            values["thickness"] = t
            sources["thickness"] = FieldSource("tag", 1.0, f"SliceThickness={meta['SliceThickness']}")
        else:
            values["thickness"] = values["spacing"]
            sources["thickness"] = FieldSource("image", 0.5, "no SliceThickness tag; assumed equal to the z spacing")

    # mAs
    if not user_set("mas"):
        exposure = _number(meta, "Exposure")
        current, time_ms = _number(meta, "XRayTubeCurrent"), _number(meta, "ExposureTime")
        if exposure is not None:
            values["mas"] = exposure
            sources["mas"] = FieldSource("tag", 0.9, f"Exposure={meta['Exposure']} mAs")
        elif current is not None and time_ms is not None:
            values["mas"] = current * time_ms / 1000.0
            sources["mas"] = FieldSource("tag", 0.6, f"XRayTubeCurrent={current:g} mA x ExposureTime={time_ms:g} ms "
                                                     "(helical pitch not accounted)")
        else:
            sources["mas"] = FieldSource("unknown", 0.0, "no Exposure or XRayTubeCurrent/ExposureTime tags")

    # CTDIvol
    if not user_set("ctdivol"):
        c = _number(meta, "CTDIvol")
        if c is not None:
            values["ctdivol"] = c
            sources["ctdivol"] = FieldSource("tag", 1.0, f"CTDIvol={meta['CTDIvol']} mGy")
        else:
            sources["ctdivol"] = FieldSource("unknown", 0.0, "no CTDIvol tag")

    # dose, relative to full dose, from image noise
    if not user_set("dose"):
        if noise is None and not measure_noise:
            sources["dose"] = FieldSource("unknown", 0.0, "image noise not measured")
        elif noise is None and not np.all(np.isfinite(volume.hu)):
            sources["dose"] = FieldSource("unknown", 0.0, "non-finite voxels; noise not measured")
        else:
            if noise is None:
                noise = estimate_noise(volume)
            kernel = values.get("kernel")
            est = estimate_dose(noise, kernel, float(values["thickness"]), reference_table,
                                kernel_known=kernel is not None)
            if est.dose is None:
                sources["dose"] = FieldSource("unknown", 0.0, est.detail)
            else:
                values["dose"] = est.dose
                sources["dose"] = FieldSource("image", est.confidence, est.detail)

    values = {k: v for k, v in values.items() if k in _FIELDS}
    return Protocol(sources=sources, **values)
