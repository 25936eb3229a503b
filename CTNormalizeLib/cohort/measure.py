"""Per-scan figures for the cohort report: tags, kernel class from tags and from pixels, noise, NPS.

:func:`scan_signature` is the one function the cohort code asks. It flattens the measured
image-quality signature (:func:`~CTNormalizeLib.signature.measure_signature`, with the
DICOM tags of :func:`~CTNormalizeLib.protocols.detect.protocol_from_tags` as priors) into
the JSON-ready numbers the tables and plots use, so a change of the signature touches
this module only.
"""

from __future__ import annotations

from typing import Optional

from ..volume import Volume


def _text(meta: dict, key: str) -> Optional[str]:
    v = meta.get(key)
    v = None if v is None else str(v).strip()
    return v or None


def scan_signature(volume: Volume, edge: bool = True, measured=None) -> dict:
    """What one scan looks like: scanner and kernel tags, the measured kernel, noise, NPS.

    Parameters
    ----------
    volume : Volume
    edge : bool
        Also measure the edge MTF at the body outline (a cross-check; off is faster).
    measured : Signature, optional
        This volume's signature already measured with its tags as the only priors (a plan's
        source signature when the user gave no source protocol): used instead of measuring again.

    Returns
    -------
    dict
        ``vendor``, ``model``, ``kernel_tag``, ``kernel_class_tag``, ``kernel_class_pixels``
        (None when the noise texture could not be fitted), ``mtf50`` (of the measured
        transfer, cycles/mm), ``thickness_mm`` (nominal: the SliceThickness tag, else measured;
        + ``thickness_source``), ``spacing_z_mm``,
        ``pixel_mm``, ``noise_tissue_hu``, ``noise_air_hu``, ``wed_mm``, ``nps_f``, ``nps``,
        ``nps_mean_frequency``, ``nps_noise_hu``, ``nps_region``, ``shape``, ``warnings``.
        Unknown values are None.
    """
    from ..protocols.detect import protocol_from_tags
    from ..signature import measure_signature

    meta = volume.meta
    tags = protocol_from_tags(meta, float(volume.spacing[0]))
    sig = measured if measured is not None else measure_signature(volume, tags=tags, with_edge=edge)
    k_src = sig.sources.get("kernel")
    t_src = sig.sources.get("thickness_mm")
    nps = sig.details.get("nps") or {}
    mtf50 = sig.mtf50
    return {
        "vendor": _text(meta, "Manufacturer"),
        "model": _text(meta, "ManufacturerModelName"),
        "kernel_tag": _text(meta, "ConvolutionKernel"),
        "kernel_class_tag": tags.kernel,
        "kernel_class_pixels": sig.kernel if k_src is not None and k_src.source == "image" else None,
        "mtf50": mtf50 if k_src is not None and k_src.source == "image" and mtf50 == mtf50 else None,
        # nominal (SliceThickness) where tagged: the signature holds the modelled FWHM (0.68x for axial scans)
        "thickness_mm": tags.thickness if tags.thickness else sig.thickness_mm,
        "thickness_source": t_src.source if t_src is not None else None,
        "spacing_z_mm": float(volume.spacing[0]),
        "pixel_mm": sig.pixel_mm,
        "noise_tissue_hu": sig.noise_hu,
        "noise_air_hu": sig.noise_by_region.get("air"),
        "wed_mm": sig.wed_mm,
        "nps_f": nps.get("freq"),
        "nps": nps.get("radial"),
        "nps_mean_frequency": nps.get("mean_frequency"),
        "nps_noise_hu": nps.get("std_hu"),
        "nps_region": nps.get("region"),
        "shape": list(volume.shape),
        "warnings": [dict(w) for w in sig.warnings],
    }
