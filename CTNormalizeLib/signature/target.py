"""The target's signature: from a protocol (nominal), or from a reference scan (measured).

A nominal target takes the kernel class's transfer, the slice thickness, and a noise
level in HU derived in this order:

1. the target leaves the dose open: the source's noise carried through the kernel and
   thickness change at the same dose (:func:`~.reference.noise_between`);
2. the source dose is known (the user gave it): the same, scaled by ``sqrt(d_s/d_t)``;
3. otherwise: the reference full-dose noise (:mod:`.reference`) scaled by ``1/sqrt(d_t)``.

The source's *noise-equivalent dose relative to the target* is the dose fraction of
the target protocol that would give the source's measured noise through the source's
own kernel and thickness: 0.25 means "as noisy as the target protocol at a quarter of
its dose". It replaces an absolute "dose" that no image can tell.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

from ..protocols.protocol import FieldSource, Protocol
from .kernel_class import class_transfer
from .reference import REFERENCE_SOURCE, noise_between, reference_noise
from .signature import Signature


def nominal_target(source_sig: Signature, source: Protocol, target: Protocol,
                   kernel_given: bool, dose_given: bool) -> Signature:
    """The signature of ``target`` on the source's pixel grid.

    Parameters
    ----------
    source_sig : Signature
        The source's measured signature.
    source : Protocol
        The resolved source protocol (``dose`` set only when the user gave it).
    target : Protocol
        The completed target protocol (open fields already filled from the source).
    kernel_given, dose_given : bool
        Whether the target names its kernel / dose (else they stay as in the source).
    """
    px = source_sig.pixel_mm
    # A target naming the class the user (or the tags) gave for the source keeps the source's
    # transfer: "same kernel, other dose" must not turn into a conversion between two curves
    # of one class. A class that was only measured is not such a statement: the target's
    # nominal curve is then the harmonization target. Within-class harmonization of labelled
    # scans is what --target-like (a reference scan) is for.
    same_class = kernel_given and target.kernel is not None and target.kernel in _labelled_classes(source)
    if kernel_given and target.kernel and not same_class:
        transfer, t_note = class_transfer(target.kernel), f"{target.kernel} kernel class"
    else:
        transfer = source_sig.transfer
        t_note = "the source's given kernel class: its measured transfer is kept" if same_class \
            else "unchanged from source"
    t_t = float(target.ssp_fwhm or source_sig.thickness_mm)
    s_t = float(target.spacing or target.thickness or source_sig.spacing_mm)
    sources = {"transfer": FieldSource("preset" if kernel_given and not same_class else "default", 1.0, t_note),
               "thickness_mm": FieldSource("preset" if target.thickness else "default", 1.0, _profile_note(target))}
    warnings = []
    if same_class and source_sig.transfer_measured and source_sig.kernel != target.kernel:
        warnings.append({"code": "TARGET_KEEPS_SOURCE_KERNEL",
                         "message": f"The target names the source's stated kernel class ({target.kernel}), so "
                                    f"the source's kernel is kept as its pixels show it ({source_sig.kernel}, "
                                    f"MTF50 {source_sig.transfer.mtf50:.2f} c/mm): no kernel conversion. If the "
                                    f"stated kernel is wrong, give the source kernel (--source kernel="
                                    f"{source_sig.kernel}) to convert to the {target.kernel} class's curve."})
    sigma, detail = _target_noise(source_sig, source, target, transfer, t_t, dose_given)
    sources["noise_hu"] = FieldSource("image" if not dose_given or source.dose else "default",
                                      1.0 if not dose_given else 0.8, detail)
    return Signature(origin="nominal", pixel_mm=px, spacing_mm=s_t, thickness_mm=t_t, transfer=transfer,
                     noise_hu=sigma, kernel=target.kernel, wed_mm=source_sig.wed_mm, fov_mm=source_sig.fov_mm,
                     sources=sources, air_to_tissue=source_sig.air_to_tissue, warnings=tuple(warnings))


def _labelled_classes(source: Protocol) -> set:
    """Kernel classes the user or the DICOM tags state for the source (not the measured one)."""
    from ..errors import BadInputError
    from ..protocols.kernels import kernel_class

    out = set()
    k_src = source.sources.get("kernel")
    if getattr(k_src, "source", None) in ("user", "tag") and source.kernel:
        out.add(source.kernel)
    n_src = source.sources.get("kernel_name")
    if getattr(n_src, "source", None) in ("user", "tag") and source.kernel_name:
        try:
            out.add(kernel_class(source.kernel_name))
        except BadInputError:
            pass
    return out


def _target_noise(sig: Signature, source: Protocol, target: Protocol, transfer, t_t: float,
                  dose_given: bool) -> tuple[Optional[float], str]:
    s = sig.noise_hu
    if not dose_given:
        if s is None:
            return None, "source noise not measurable"
        return noise_between(s, sig.transfer, transfer, sig.pixel_mm, sig.thickness_mm, t_t), \
            "the source's noise at the same dose, through the target kernel and thickness"
    d_t = float(target.dose)
    if source.dose and s is not None:
        same = noise_between(s, sig.transfer, transfer, sig.pixel_mm, sig.thickness_mm, t_t)
        return same * math.sqrt(float(source.dose) / d_t), \
            f"the source's noise scaled by the dose ratio {float(source.dose):g} -> {d_t:g}"
    return reference_noise(transfer, t_t, sig.pixel_mm, d_t), \
        f"reference noise at dose {d_t:g} ({REFERENCE_SOURCE} full-dose reference)"


def noise_equivalent_dose(source_sig: Signature, target_sig: Signature) -> Optional[float]:
    """Dose fraction of the target protocol whose noise equals the source's (None if unmeasured)."""
    if not source_sig.noise_hu or not target_sig.noise_hu:
        return None
    at_source = noise_between(target_sig.noise_hu, target_sig.transfer, source_sig.transfer, source_sig.pixel_mm,
                              target_sig.thickness_mm, source_sig.thickness_mm)
    return float((at_source / source_sig.noise_hu) ** 2)


def noise_equivalent_dose_words(ned: float, subject: str = "the source") -> str:
    """:func:`noise_equivalent_dose` in words. The comparison is made through the source's kernel and slices,
    so a smooth or thick source can read as a low dose of a sharp or thin target protocol while its own noise
    in HU is lower than the target's; the sentence says so."""
    share = f"{100 * ned:.0f} %" if ned < 10 else f"{ned:.0f}x"
    return (f"{subject} is as noisy as the target protocol at {share} of its dose "
            f"(compared through {subject}'s kernel and slice thickness)")


def reference_target(ref_sig: Signature, source_sig: Signature) -> Signature:
    """A reference scan's measured signature as the target, on the source's pixel grid.

    The noise std is carried to the source's pixel size through the transfer's noise band.
    """
    sigma = ref_sig.noise_hu
    if sigma is not None and abs(ref_sig.pixel_mm - source_sig.pixel_mm) > 1e-3:
        from .transfer import band_noise_factor

        sigma = sigma * band_noise_factor(ref_sig.transfer, source_sig.pixel_mm) / \
            band_noise_factor(ref_sig.transfer, ref_sig.pixel_mm)
    return replace(ref_sig, origin="reference", pixel_mm=source_sig.pixel_mm, noise_hu=sigma,
                   fov_mm=source_sig.fov_mm, wed_mm=source_sig.wed_mm)


def _profile_note(target: Protocol) -> str:
    """How a target's slice-profile shape turned into the modelled FWHM ('' for the default Gaussian)."""
    if target.thickness is None or target.profile in (None, "gaussian"):
        return ""
    return (f"{target.thickness:.4g} mm {target.profile} slice profile, modelled as the Gaussian of its second moment "
            f"(FWHM {target.ssp_fwhm:.3g} mm)")
