"""``measure_signature``: a scan's signature from its pixels, with its DICOM tags as priors.

Order of evidence, per field:

- kernel (transfer): the noise texture (NPS fit, :mod:`.kernel_fit`) in air outside the
  body when it is measurable; else the ConvolutionKernel tag's class; else ``standard``
  (default, low confidence). Tags and pixels that disagree give a plain-words warning.
  Soft tissue alone (a crop without air) gives only a lower bound of the sharpness
  (anatomy looks like smooth noise), so there a stated kernel wins.
- noise: the full-band soft-tissue noise std (:mod:`.noise_levels`); air outside the
  body when there is no soft tissue to measure.
- thickness: the SliceThickness tag; else the noise correlation of neighbouring slices
  (:mod:`.zres`) when slices overlap; else the slice spacing.
- in-plane MTF at the body edge (:mod:`.edge`) is recorded as a cross-check of the
  kernel fit; a large disagreement (non-linear reconstruction, detector blur) is noted.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..protocols.protocol import FieldSource, Protocol
from ..volume import Volume
from .edge import edge_mtf
from .kernel_class import class_transfer, classify_transfer, describe_sharpness
from .kernel_fit import fit_kernel
from .noise_levels import corrected, residual_noise
from .nps import measure_nps
from .regions import slice_regions
from .signature import Signature
from .size import body_truncated, field_of_view, median_wed
from .zres import z_resolution

MIN_FIT_CONFIDENCE = 0.1  # below: the tags' or the default kernel; a rough fit still beats a guess
GOOD_FIT_CONFIDENCE = 0.3
#: ROI side (mm) tried in air when the standard 24 mm ROIs do not fit.
SMALL_ROI_MM = 12.0
TYPICAL_AIR_TO_TISSUE = 0.5
#: The body's noise is at most 1 / MIN_AIR_TO_TISSUE times the air's outside it: every pixel, in air or
#: in the body, is crossed by rays through the whole body, and the body's centre by them alone. For a
#: water cylinder of 30-40 cm without a bowtie, the variance at the centre over that at the edge,
#: exp(mu D) over the angular mean of exp(mu D cos t), is ~3-3.5 (noise 1.7-1.9 x); a bowtie lowers it.
#: Texture can only raise a soft-tissue stand-in's reading (9x on a benchmark phantom without fat or
#: muscle: 32.8 HU read, 3.5 true, air 2.7), so the stand-in is capped there.
MIN_AIR_TO_TISSUE = 0.5
#: The noise correlation of neighbouring slices sets the thickness only above this many spacings.
OVERLAP_TRUSTED = 1.25


def _choose_nps(hu, spacing, regions):
    # Air whenever it holds enough ROIs to fit (8): soft tissue only bounds the kernel from
    # below (see _tissue_transfer), so a few air ROIs beat many tissue ROIs. Measured: lung2
    # padded outside a 240-pixel circle keeps 17 air ROIs reading MTF50 0.34 c/mm (whole
    # scan 0.32) against 199 tissue ROIs reading 0.14.
    air = measure_nps(hu, spacing, regions, region="air")
    if air is None:  # a narrow rim of air (a tight field of view): half-size ROIs may fit
        air = measure_nps(hu, spacing, regions, region="air", roi_mm=SMALL_ROI_MM)
    if air is not None:
        return air
    return measure_nps(hu, spacing, regions, region="tissue")


CROP_REASON = "there is no air outside the body in the field of view (a crop?)"
CLIPPED_REASON = ("the air outside the body is clipped at the lowest stored value (about -1024 HU), which "
                  "cuts off its noise")


def no_air_reason(regions) -> str:
    """Why no air ROI could be measured, in words: clipping at the display floor, or no air at all."""
    return CLIPPED_REASON if sum(r.clipped_air for r in regions) > 0 else CROP_REASON


def _crop_advice(no_air: str) -> str:
    return ", or normalize the whole scan before cropping" if no_air == CROP_REASON else ""


def _transfer(nps, tags: Optional[Protocol], warnings: list, kernel_from: str = "pixels",
              no_air: str = CROP_REASON):
    """(transfer, FieldSource, details) from the NPS fit, else the tag, else the default.

    ``kernel_from="labels"``: the kernel class of the tags/user wins over the noise texture
    (the fit is still reported), for reconstructions whose noise does not show the kernel.
    ``no_air``: why no air could be measured (:func:`no_air_reason`), for the warnings.
    """
    details = {}
    tag_kernel = tags.kernel if tags is not None else None
    if kernel_from == "labels" and tag_kernel:
        if nps is not None:
            details["nps"] = nps.summary()
        return class_transfer(tag_kernel), _tag_source(tags, ": its class's nominal MTF (kernel from labels)",
                                                       tag_confidence=0.9), details
    if nps is not None:
        fit = fit_kernel(nps)
        details["nps"] = nps.summary()
        details["kernel_fit"] = {"rms_error": round(fit.rms_error, 4), "band": [round(b, 4) for b in fit.band],
                                 "confidence": fit.confidence, "notes": fit.notes}
        if nps.region == "tissue":
            return _tissue_transfer(fit, nps, tags, warnings, details, no_air)
        if fit.confidence >= MIN_FIT_CONFIDENCE:
            _coarse_pixel_warning(nps, tags, warnings)
            if fit.confidence < GOOD_FIT_CONFIDENCE:
                warnings.append({"code": "KERNEL_FIT_POOR",
                                 "message": f"The noise texture fits a filtered-back-projection kernel only roughly "
                                            f"(misfit {fit.rms_error:.2f}): streaks or few views. The kernel estimate "
                                            f"({describe_sharpness(fit.transfer, nps.nyquist)}) is uncertain."})
            src = FieldSource("image", fit.confidence,
                              f"noise texture in {nps.n_rois} {nps.region} ROIs: "
                              f"{describe_sharpness(fit.transfer, nps.nyquist)}")
            return fit.transfer, src, details
        warnings.append({"code": "KERNEL_FIT_POOR",
                         "message": f"The noise texture does not fit a filtered-back-projection kernel "
                                    f"(misfit {fit.rms_error:.2f}); the kernel is taken from "
                                    f"{'the tags' if tag_kernel else 'the default (standard)'} instead."})
    if tag_kernel:
        why = "; no uniform region to read the noise texture in" if nps is None else \
            "; the noise texture fits no kernel"
        return class_transfer(tag_kernel), _tag_source(tags, why), details
    if nps is None:  # a poor fit has said so already (KERNEL_FIT_POOR)
        warnings.append({"code": "KERNEL_NOT_MEASURED",
                         "message": f"No uniform region to read the noise texture in ({no_air}, and no flat soft "
                                    f"tissue either), and no kernel tag: the kernel is assumed standard. Give it "
                                    f"(--source kernel=NAME){_crop_advice(no_air)}."})
    return class_transfer("standard"), FieldSource("default", 0.2, "no measurable noise texture and no kernel tag; "
                                                                   "assumed standard"), details


def _coarse_pixel_warning(nps, tags: Optional[Protocol], warnings: list) -> None:
    """KERNEL_PIXELS_COARSE when the pixels are too coarse for the kernel classes to differ in the sampled band.

    Below the smooth class's MTF50 every class keeps more than half its contrast, so the classes
    differ little there, and the pixels' own blur (down-sampled or binned data average 2x2 or
    more pixels into one) reads as a smoother kernel than the reconstruction's.
    """
    smooth = class_transfer("smooth").mtf50
    if nps.nyquist >= smooth:
        return
    stated = f" The tags say {tags.kernel_name or tags.kernel}." if tags is not None and tags.kernel else ""
    warnings.append({"code": "KERNEL_PIXELS_COARSE",
                     "message": f"The pixels are {nps.pixel_mm:.2f} mm (Nyquist {nps.nyquist:.2f} c/mm, below even a "
                                f"smooth kernel's MTF50 of {smooth:.2f} c/mm): the kernel classes barely differ at "
                                "frequencies these pixels hold, and the pixels' own blur (down-sampled or binned "
                                f"data) reads as a smoother kernel.{stated} A kernel conversion from this reading "
                                "sharpens more (or smooths less) than the kernels call for, which raises the noise and "
                                "the emphysema index. If you know the reconstruction kernel, use it instead of this "
                                "reading: --kernel-from labels, with --source kernel=NAME where the tags do not name "
                                "it (a kernel given without --kernel-from labels is only compared with the pixels)."})


def _tag_source(tags: Protocol, why: str, tag_confidence: float = 0.6) -> FieldSource:
    """Where a stated kernel (the user's, or the ConvolutionKernel tag's) comes from, and why it is used."""
    given = tags.sources.get("kernel")
    who = getattr(given, "source", "tag")
    name = tags.kernel_name or tags.kernel
    if who == "user":
        return FieldSource("user", 1.0, f"{name} (class {tags.kernel}){why}")
    return FieldSource("tag", tag_confidence, f"ConvolutionKernel={name} (class {tags.kernel}){why}")


def _tissue_transfer(fit, nps, tags: Optional[Protocol], warnings: list, details: dict, no_air: str = CROP_REASON):
    """The kernel when the noise texture could only be read in soft tissue (no air outside the body).

    Anatomy adds low-frequency power to soft-tissue ROIs, so their texture reads smoother
    than the kernel: a lower bound of its sharpness, not a measurement. Measured on real
    anatomy (lung1, lung2 and the independent simulator's lung2 scans, whose air reads
    MTF50 0.21-0.72 c/mm): 0.12-0.20 c/mm in soft tissue whatever the kernel. Hence the
    stated kernel wins; without one, the fit is used only when even this lower bound is
    sharper than ``standard``, and ``standard`` is assumed otherwise, with a warning.
    """
    details["kernel_fit"]["lower_bound"] = True
    bound = describe_sharpness(fit.transfer, nps.nyquist)
    if tags is not None and tags.kernel:
        details["kernel_fit"]["notes"].append(f"soft tissue only: {bound} is a lower bound; the stated kernel is used")
        return class_transfer(tags.kernel), _tag_source(tags, f"; not read from the pixels: {no_air}"), details
    lower, _, _ = classify_transfer(fit.transfer, nps.nyquist)
    from ..protocols.kernels import KERNEL_CLASSES

    if KERNEL_CLASSES.index(lower) > KERNEL_CLASSES.index("standard") and fit.confidence >= MIN_FIT_CONFIDENCE:
        warnings.append({"code": "KERNEL_FROM_TISSUE",
                         "message": f"The kernel was read in soft tissue ({no_air}), whose anatomy makes any "
                                    f"kernel look smoother ({bound}, a lower "
                                    f"bound). It reads {lower} even so; give the kernel (--source kernel=NAME) "
                                    "to be sure."})
        return fit.transfer, FieldSource("image", round(min(fit.confidence, GOOD_FIT_CONFIDENCE), 3),
                                         f"noise texture in {nps.n_rois} soft-tissue ROIs: {bound} (a lower "
                                         f"bound: {no_air})"), details
    warnings.append({"code": "KERNEL_NOT_MEASURED",
                     "message": f"The noise texture could only be read in soft tissue: {no_air}. Soft tissue "
                                f"includes anatomy, which makes any kernel look smooth (here {bound}). The kernel "
                                f"is assumed standard: give it (--source kernel=NAME, or a ConvolutionKernel "
                                f"tag){_crop_advice(no_air)}."})
    return class_transfer("standard"), FieldSource("default", 0.2, f"{no_air}, and no kernel tag; assumed "
                                                                   "standard"), details


def _compare_kernel(tags: Optional[Protocol], kernel: str, k_src: FieldSource, warnings: list):
    if tags is None or not tags.kernel or k_src.source != "image" or tags.kernel == kernel:
        return
    from ..protocols.kernels import KERNEL_CLASSES

    gap = abs(KERNEL_CLASSES.index(tags.kernel) - KERNEL_CLASSES.index(kernel))
    name = tags.kernel_name or tags.kernel
    article = "an" if kernel[0] in "aeiou" else "a"
    given = tags.sources.get("kernel")
    who = "You gave" if getattr(given, "source", "tag") == "user" else "The tags say"
    warnings.append({"code": "KERNEL_TAG_DISAGREES",
                     "message": f"{who} {name} (a {tags.kernel} kernel), but the noise texture looks like "
                                f"{article} {kernel} kernel" + (" (two or more classes apart)" if gap >= 2 else "")
                                + ". The pixels are used; to use the stated kernel instead, run `ctnormalize normalize` with "
                                  "--kernel-from labels (kernel_from='labels' in Python)."})


def _thickness(tags: Optional[Protocol], zres, spacing_z: float):
    if tags is not None and tags.thickness:
        fs = tags.sources.get("thickness")
        detail = getattr(fs, "detail", "SliceThickness")
        if tags.profile not in (None, "gaussian"):
            detail += f" ({tags.profile} profile: modelled FWHM {tags.ssp_fwhm:.3g} mm)"
        return float(tags.ssp_fwhm), FieldSource(getattr(fs, "source", "tag"), getattr(fs, "confidence", 1.0), detail)
    # only a clear overlap is trusted: structured noise (streaks) also correlates neighbouring slices
    if zres.thickness_mm is not None and zres.thickness_mm > OVERLAP_TRUSTED * spacing_z:
        return float(zres.thickness_mm), FieldSource("image", zres.confidence, zres.detail)
    return float(spacing_z), FieldSource("image", 0.5, "no SliceThickness tag; taken equal to the slice spacing"
                                         + (f" ({zres.detail})" if zres.rho is not None else ""))


def _noise(noise, nps, transfer, pixel, warnings):
    """``(noise_hu, source, air_to_tissue, region)``: the first region that has noise to measure, in the order of
    trust (:data:`.signature.NOISE_REGIONS`), with its warning when it is a stand-in for fat or muscle."""
    tissue = noise.tissue()
    air = noise.std.get("air")
    ratio = (air / tissue) if (air and tissue) else None
    if tissue is not None:
        n = noise.tissue_voxels
        conf = 0.9 * min(1.0, math.sqrt(n / 20000.0))
        return tissue, FieldSource("image", round(conf, 3), f"soft-tissue noise in {n} voxels"), ratio, "tissue"
    soft = noise.std.get("soft")
    if soft is not None:
        n = noise.voxels["soft"]
        if air and soft > air / MIN_AIR_TO_TISSUE:
            cap = air / MIN_AIR_TO_TISSUE
            warnings.append({"code": "NOISE_FROM_SOFT_TISSUE",
                             "message": f"No fat or muscle region large enough; any soft tissue (-200..200 HU) read "
                                        f"{soft:.1f} HU, more than the body's noise can be next to the air's "
                                        f"({air:.1f} HU): its texture raised it. The noise is taken as "
                                        f"{cap:.1f} HU ({1 / MIN_AIR_TO_TISSUE:g} x the air's), an upper bound: denoising "
                                        "and the target texture's noise follow it."})
            return cap, FieldSource("image", 0.4, f"soft-tissue noise in {n} voxels ({soft:.1f} HU, texture) capped "
                                                  f"at {1 / MIN_AIR_TO_TISSUE:g} x the air's"), MIN_AIR_TO_TISSUE, "soft"
        warnings.append({"code": "NOISE_FROM_SOFT_TISSUE",
                         "message": "No fat or muscle region large enough; the noise is measured in any soft "
                                    "tissue (-200..200 HU), whose texture may raise it."})
        return soft, FieldSource("image", 0.5, f"soft-tissue (-200..200 HU) noise in {n} voxels"), \
            ((air / soft) if air else None), "soft"
    if air is not None:
        warnings.append({"code": "NOISE_FROM_AIR",
                         "message": "No soft tissue large enough to measure noise in; the body's noise is "
                                    f"estimated from air outside the body (x{1 / TYPICAL_AIR_TO_TISSUE:g})."})
        return air / TYPICAL_AIR_TO_TISSUE, FieldSource("image", 0.4, "air noise outside the body, scaled"), None, "air"
    if nps is not None:
        return nps.std, FieldSource("image", 0.3, f"{nps.region} ROI noise"), None, "roi"
    lung = noise.std.get("lung")
    if lung is not None:
        warnings.append({"code": "NOISE_FROM_LUNG",
                         "message": "The noise could only be measured in the lungs, whose texture raises it; "
                                    "treat the noise level as an upper bound."})
        return lung, FieldSource("image", 0.2, f"lung noise in {noise.voxels['lung']} voxels (texture included)"), None, \
            "lung"
    return None, FieldSource("unknown", 0.0, "no uniform region to measure noise in"), None, None


def measure_signature(volume: Volume, tags: Optional[Protocol] = None, max_slices: int = 16,
                      with_edge: bool = True, kernel_from: str = "pixels") -> Signature:
    """Measure the image-quality signature of a CT volume.

    Parameters
    ----------
    volume : Volume
        ``[z, y, x]`` HU with spacing.
    tags : Protocol, optional
        What the DICOM tags (or the user) say: kernel, thickness. Priors only.
    max_slices : int
        Slices sampled (the figures converge with a dozen).
    with_edge : bool
        Also measure the edge MTF at the body outline (a cross-check).
    kernel_from : {"pixels", "labels"}
        ``labels``: use the nominal MTF of the kernel class the tags or the user give.

    Returns
    -------
    Signature
        ``origin="measured"``.
    """
    hu, spacing = volume.hu, tuple(float(s) for s in volume.spacing)
    pixel = float(math.sqrt(spacing[1] * spacing[2]))
    warnings: list = []
    regions = slice_regions(hu, spacing, max_slices=max_slices)
    nps = _choose_nps(hu, spacing, regions)
    transfer, t_src, details = _transfer(nps, tags, warnings, kernel_from, no_air_reason(regions))
    kernel, k_conf, dist = classify_transfer(transfer, 0.5 / pixel)
    details["kernel_distances"] = dist
    k_src = FieldSource(t_src.source, round(t_src.confidence * (0.5 + 0.5 * k_conf), 3),
                        f"closest class to the {'measured' if t_src.source == 'image' else t_src.source} transfer")
    _compare_kernel(tags, kernel, t_src, warnings)
    noise = corrected(residual_noise(hu, regions), transfer, pixel)
    noise_hu, n_src, ratio, noise_region = _noise(noise, nps, transfer, pixel, warnings)
    masks = {r.z: r.air for r in regions if r.z + 1 < hu.shape[0]}
    zres = z_resolution(hu, spacing, masks)
    details["z"] = {"rho": None if zres.rho is None else round(zres.rho, 3), "thickness_mm": zres.thickness_mm,
                    "upper_bound_mm": zres.upper_bound_mm, "detail": zres.detail}
    thickness, th_src = _thickness(tags, zres, spacing[0])
    if with_edge:
        edge = edge_mtf(hu, spacing, regions)
        if edge is not None:
            details["edge"] = edge.summary()
            m_fit = transfer.mtf50
            if math.isfinite(edge.mtf50) and math.isfinite(m_fit) and t_src.source == "image" \
                    and abs(edge.mtf50 / m_fit - 1.0) > 0.35:
                details["edge"]["notes"].append(
                    f"edge MTF50 {edge.mtf50:.2f} vs noise-texture MTF50 {m_fit:.2f} c/mm: blur that acts on "
                    "anatomy but not on noise (detector, iterative reconstruction) or skin structure")
    wed = median_wed(hu, spacing, regions)
    details["size"] = {"truncated": body_truncated(regions)}
    sources = {"transfer": t_src, "kernel": k_src, "noise_hu": n_src, "thickness_mm": th_src,
               "wed_mm": FieldSource("image", 0.9 if wed else 0.0, "AAPM TG-220 water-equivalent diameter")}
    return Signature(
        origin="measured", pixel_mm=pixel, spacing_mm=spacing[0], thickness_mm=thickness, transfer=transfer,
        noise_hu=noise_hu, kernel=kernel, wed_mm=wed, fov_mm=field_of_view(hu.shape, spacing), sources=sources,
        noise_by_region={k: v for k, v in noise.std.items()}, noise_region=noise_region, air_to_tissue=ratio,
        details=details,
        warnings=tuple(warnings))


def measure_noise_hu(hu: np.ndarray, spacing, transfer, max_slices: int = 8) -> Optional[float]:
    """Noise std (HU, full band) of ``hu`` whose in-plane transfer is known (e.g. an output), or None.

    The same regions and fallbacks as :func:`measure_signature` (fat/muscle, any soft
    tissue, air, lung).
    """
    regions = slice_regions(hu, spacing, max_slices=max_slices)
    pixel = float(math.sqrt(spacing[1] * spacing[2]))
    noise = corrected(residual_noise(hu, regions), transfer, pixel)
    value = _noise(noise, None, transfer, pixel, [])[0]
    return value
