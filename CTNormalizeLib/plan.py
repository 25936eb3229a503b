"""A normalization request resolved once into a frozen :class:`Plan`.

:func:`make_plan` reads the DICOM tags (priors), measures the source's image-quality
signature, applies the user's overrides, completes the target (a preset, a spec, or a
reference scan's measured signature), and picks the method. Everything downstream (the
methods, the run report, the process events, DICOM provenance, the Slicer attributes)
reads the plan and never resolves anything again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Union

from .errors import BadInputError
from .protocols import FieldSource, Protocol, parse_spec, resolve_protocol
from .protocols.detect import protocol_from_tags
from .signature import Signature, measure_signature
from .signature.reference import noise_between
from .signature.target import (noise_equivalent_dose, noise_equivalent_dose_words, nominal_target,
                               reference_target)
from .volume import Volume

TEXTURES = ("clean", "target")
DEFAULT_TEXTURE = "clean"
_PROTOCOL_FIELDS = ("kernel", "kernel_name", "dose", "mas", "ctdivol", "thickness", "spacing", "profile")


@dataclass(frozen=True)
class Plan:
    """Everything a normalization run needs, resolved once.

    Attributes
    ----------
    source, target : Protocol
        Resolved protocols; every field has a ``FieldSource`` (tag, image, user, preset,
        default, reference, unknown) with a confidence.
    source_signature, target_signature : Signature
        What the methods are conditioned on: the measured source, and the nominal target
        (or a reference scan's measured signature).
    method : str
        The method table row that runs.
    method_reason : str
        Why (``auto``'s comparison of measured figures, or "requested").
    requested_method : str
    texture : str
        ``clean`` (best mean estimate) or ``target`` (with the target's noise texture).
    device : str
        Where a learned method runs (``cpu`` for classical ones).
    noise_equivalent_dose : float or None
        The source's noise as a dose fraction of the target protocol.
    target_label : str
        The preset name, spec or ``like <path>`` the user gave.
    warnings : tuple
        ``{"code", "message"}`` dicts for the caller to show.
    """

    source: Protocol
    target: Protocol
    source_signature: Signature
    target_signature: Signature
    method: str
    method_reason: str
    requested_method: str = "auto"
    texture: str = DEFAULT_TEXTURE
    device: str = "cpu"
    noise_equivalent_dose: Optional[float] = None
    target_label: str = ""
    warnings: tuple = ()

    @property
    def source_ssp_mm(self) -> float:
        """The source's slice sensitivity profile FWHM in mm: the stated profile's, else the measured thickness."""
        return float(self.source.ssp_fwhm or self.source_signature.thickness_mm)

    def to_dict(self) -> dict:
        """JSON-ready plan (the ``plan`` of the run report and of the ``started`` event)."""
        ned = self.noise_equivalent_dose
        return {
            "method": self.method, "method_reason": self.method_reason, "requested_method": self.requested_method,
            "texture": self.texture, "device": self.device, "target_label": self.target_label,
            "source": self.source.to_dict(), "target": self.target.to_dict(),
            "source_spec": self.source.spec(), "target_spec": self.target.spec(),
            "source_signature": self.source_signature.to_dict(),
            "target_signature": self.target_signature.to_dict(),
            "noise_equivalent_dose": None if ned is None else round(ned, 4),
            "summary": self.summary(),
            "noise_summary": self.noise_summary(),
            "warnings": [dict(w) for w in self.warnings],
        }

    def summary(self) -> str:
        """One line: source spec -> target spec, the reference scan's file name and a kernel
        conversion's MTF50s (the source's measured one, the target's measured on a reference scan
        or the class's nominal one), which the specs hide when both kernels fall in one class."""
        from pathlib import PurePath

        from .signature.signature import pair_kind

        text = f"{self.source.spec() or '?'} -> {self.target.spec() or '?'}"
        extra = []
        if self.target_signature.origin == "reference":  # make_plan labels it "like <the reference's path>"
            extra.append(f"like {PurePath(self.target_label.removeprefix('like ')).name}")
        if pair_kind(self.source_signature, self.target_signature) == "kernel_change":
            s, t = self.source_signature.transfer.mtf50, self.target_signature.transfer.mtf50
            if math.isfinite(s) and math.isfinite(t):
                extra.append(f"kernel MTF50 {s:.2f} -> {t:.2f} c/mm")
            else:
                extra.append("kernel converted")
        return text + (f" [{'; '.join(extra)}]" if extra else "")

    def noise_summary(self) -> str:
        """One sentence on the noise, in HU and relative to the target (never an absolute dose)."""
        s, t = self.source_signature.noise_hu, self.target_signature.noise_hu
        if s is None:
            return "source noise not measurable"
        ts, tt = self.source_signature.thickness_mm, self.target_signature.thickness_mm
        differ = bool(ts and tt and abs(ts - tt) > 0.01)

        def at(mm):
            return f" in its {mm:.4g} mm slices" if differ else ""

        text = f"source noise {s:.1f} HU{at(ts)}"
        if t is not None:
            text += f", target noise {t:.1f} HU{at(tt)}"
        ned = self.noise_equivalent_dose
        if ned is not None:
            text += "; " + noise_equivalent_dose_words(ned)
        return text


def source_given(source) -> bool:
    """Whether ``source`` (as :func:`make_plan` takes it) gives any protocol field, i.e. is not None, ``""`` or
    ``"auto"``: without one the plan's source signature is measured with the tags as the only priors."""
    return _user_protocol(source) is not None


def _user_protocol(source) -> Optional[Protocol]:
    if source is None or (isinstance(source, str) and source.strip().lower() in ("", "auto")):
        return None
    if isinstance(source, Protocol):
        return source
    return parse_spec(str(source))


KERNEL_FROM = ("pixels", "labels")


def resolve_source(volume: Volume, source=None, kernel_from: str = "pixels") -> tuple[Protocol, Signature]:
    """The source protocol and its measured signature: user fields > pixels > tags.

    The kernel class comes from the pixels when the noise texture is measurable (the tags'
    and the user's classes are priors; a disagreement gives a warning), the thickness
    from the user, then the SliceThickness tag, then the image; the dose only from the user.
    ``kernel_from="labels"`` uses the nominal MTF of the user's or tags' kernel class
    instead of the measured one (for reconstructions whose noise texture misleads).
    """
    if kernel_from not in KERNEL_FROM:
        raise BadInputError(f"kernel_from must be one of {', '.join(KERNEL_FROM)}, got {kernel_from!r}.")
    tags = protocol_from_tags(volume.meta, float(volume.spacing[0]))
    user = _user_protocol(source)
    priors = tags if user is None else tags.merged(_as_user(user))
    sig = measure_signature(volume, tags=priors, kernel_from=kernel_from)
    values = {f: getattr(tags, f) for f in _PROTOCOL_FIELDS}
    sources = dict(tags.sources)
    k_src = sig.sources.get("kernel")
    if k_src is not None and (k_src.source == "image" or kernel_from == "labels"):
        values["kernel"] = sig.kernel
        sources["kernel"] = k_src
    elif values["kernel"] is None:
        values["kernel"] = sig.kernel
        sources["kernel"] = sig.sources.get("kernel", FieldSource("default", 0.2, "assumed standard"))
    if values["thickness"] is None:
        values["thickness"] = sig.thickness_mm
        sources["thickness"] = sig.sources["thickness_mm"]
    prot = Protocol(sources=sources, **values)
    if user is not None:
        prot = prot.merged(_as_user(user))
    return prot, sig


def _as_user(p: Protocol) -> Protocol:
    src = {k: FieldSource("user", 1.0, getattr(p.sources.get(k), "detail", "")) for k in _PROTOCOL_FIELDS
           if getattr(p, k) is not None}
    return replace(p, sources=src)


def complete_target(source: Protocol, target) -> tuple[Protocol, bool, bool]:
    """The target with open fields taken from the source; also whether kernel / dose were given."""
    tgt = resolve_protocol(target) if isinstance(target, str) else target
    if tgt is None:
        raise BadInputError("No target: give a preset, a spec such as kernel=smooth,dose=1,thickness=1, "
                            "or a reference scan (--target-like).")
    kernel_given, dose_given = tgt.kernel is not None, tgt.dose is not None
    keep = {}
    for name in ("kernel", "thickness"):
        if getattr(tgt, name) is None and getattr(source, name) is not None:
            keep[name] = getattr(source, name)
    if "thickness" in keep and source.profile is not None:
        keep["profile"] = source.profile  # the source's slices, shape and all
    if "thickness" in keep and tgt.spacing is None and source.spacing is not None \
            and abs(source.spacing - keep["thickness"]) > 1e-6:
        # and their spacing where it is not the thickness: overlapping slices (5 mm apart, 10 mm thick)
        # stay as many as they were (a target's spacing is its thickness unless it says otherwise)
        keep["spacing"] = source.spacing
    if not keep:
        return tgt, kernel_given, dose_given
    base = Protocol(sources={k: FieldSource("default", 1.0, "unchanged from source") for k in keep}, **keep)
    return base.merged(tgt), kernel_given, dose_given


def _target_from_reference(ref: Volume, source_sig: Signature) -> tuple[Protocol, Signature]:
    ref_prot, ref_sig = resolve_source(ref, None)
    sig = reference_target(ref_sig, source_sig)
    label = ref.meta.get("source_path", "the reference scan")
    src = {k: FieldSource("reference", v.confidence, f"{v.detail} (measured on {label})")
           for k, v in ref_prot.sources.items() if k in ("kernel", "thickness", "kernel_name", "profile")}
    prot = Protocol(kernel=ref_prot.kernel, kernel_name=ref_prot.kernel_name, thickness=ref_prot.thickness,
                    spacing=ref_sig.spacing_mm, profile=ref_prot.profile, sources=src)
    return prot, sig


def _at_thickness(sig: Signature, thickness_mm: float, spacing_mm: float) -> Signature:
    """A reference's signature at another slice thickness: the protocol's noise there (the same dose)."""
    out = replace(sig, thickness_mm=thickness_mm, spacing_mm=spacing_mm)
    if sig.noise_hu is None or not sig.thickness_mm or abs(thickness_mm - sig.thickness_mm) <= 1e-3:
        return out
    noise = noise_between(sig.noise_hu, sig.transfer, sig.transfer, sig.pixel_mm, sig.thickness_mm, thickness_mm)
    was = sig.sources.get("noise_hu")
    return out.with_noise(noise, FieldSource("reference", getattr(was, "confidence", 1.0),
                                             f"the reference scan's noise, carried from its {sig.thickness_mm:.4g} mm "
                                             f"slices to {thickness_mm:.4g} mm at the same dose"))


def _reference_kernel_warning(src_sig: Signature, tgt_sig: Signature) -> list:
    """A warning when a reference scan measures the source's kernel class but an MTF50 more than
    :data:`~.signature.signature.KERNEL_CHANGE_RATIO` apart (a kernel change for the plan).

    The chain then converts the kernel with the kernel-change settings. Scans made with one
    kernel at different doses can measure this far apart (held-out case c: the same filter read
    0.45 c/mm at 10 % dose and 0.50 at full dose, deterministic streaks weighing more against
    less noise), so the user is told how to keep the kernel when the two share it.
    """
    from .signature.signature import pair_kind

    if src_sig.kernel != tgt_sig.kernel or pair_kind(src_sig, tgt_sig) != "kernel_change":
        return []
    s, t = src_sig.transfer.mtf50, tgt_sig.transfer.mtf50
    return [{"code": "REFERENCE_KERNEL_SAME_CLASS",
             "message": f"The reference scan's kernel measures {tgt_sig.kernel} like the source's, but with MTF50 "
                        f"{t:.2f} c/mm against the source's {s:.2f}: the pair is treated as a kernel change and the "
                        "output converted to the reference's kernel. "
                        "Scans made with one kernel at different doses can measure this far apart; if the two share "
                        "the kernel, give the target as a protocol without a kernel instead (e.g. --target dose=1: "
                        "the source's measured kernel is kept)."}]


def make_plan(volume: Volume, source=None, target: Union[str, Protocol, None] = None, *,
              target_like: Optional[Volume] = None, method: str = "auto", device: str = "auto",
              texture: str = DEFAULT_TEXTURE, kernel_from: str = "pixels") -> Plan:
    """Resolve a normalization request into a :class:`Plan`.

    Parameters
    ----------
    volume : Volume
        The input CT.
    source : None, "auto", spec string or Protocol
        Overrides of what tags and pixels say.
    target : preset name, spec string or Protocol, optional
        The target protocol (fields left open stay as in the source).
    target_like : Volume, optional
        A reference scan whose measured signature is the target ("make this scan look
        like that one's protocol"); ``target`` may then only set the thickness/spacing.
    method : str
        ``auto`` or a row of the method table.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``gpu`` or ``mps`` (used by learned methods).
    texture : {"clean", "target"}
    kernel_from : {"pixels", "labels"}
        Where the source's in-plane transfer comes from (see :func:`resolve_source`).

    Returns
    -------
    Plan
    """
    if texture not in TEXTURES:
        raise BadInputError(f"Unknown texture {texture!r}; use one of {', '.join(TEXTURES)}.")
    src, src_sig = resolve_source(volume, source, kernel_from)
    warnings = list(src_sig.warnings)
    if target_like is not None:
        tgt, tgt_sig = _target_from_reference(target_like, src_sig)
        label = f"like {target_like.meta.get('source_path', 'reference')}"
        if target is not None:
            over = resolve_protocol(target) if isinstance(target, str) else target
            extra = [k for k in ("kernel", "kernel_name", "dose", "mas", "ctdivol") if getattr(over, k, None) is not None]
            if extra:
                raise BadInputError(f"With a reference scan (--target-like) the target's kernel and dose are the "
                                    f"reference's; --target may only set thickness and spacing, not "
                                    f"{', '.join(extra)}.")
            tgt = tgt.merged(over)
            # a thickness given alone sets the spacing too (as without a reference), not the reference's spacing
            s_t = float(over.spacing or over.thickness or tgt_sig.spacing_mm)
            tgt = replace(tgt, thickness=float(over.thickness or tgt.thickness or tgt_sig.thickness_mm), spacing=s_t)
            tgt_sig = _at_thickness(tgt_sig, float(over.ssp_fwhm or tgt_sig.thickness_mm), s_t)
        warnings.extend(_reference_kernel_warning(src_sig, tgt_sig))
    else:
        tgt, kernel_given, dose_given = complete_target(src, target)
        tgt_sig = nominal_target(src_sig, src, tgt, kernel_given, dose_given)
        warnings.extend(tgt_sig.warnings)
        label = target if isinstance(target, str) else tgt.spec()
    _check_output_slices(volume, float(tgt_sig.spacing_mm))
    ned = noise_equivalent_dose(src_sig, tgt_sig)
    draft = Plan(src, tgt, src_sig, tgt_sig, method="", method_reason="", requested_method=method,
                 texture=texture, noise_equivalent_dose=ned, target_label=str(label))
    name, reason, more = _choose(draft, method)
    warnings.extend(more)
    from .methods import get_method

    row = get_method(name)
    if "thickness" in row.changes:  # a method that keeps the input's slices keeps its z coverage
        from .quantify.coverage import output_extent_warning

        warnings.extend(output_extent_warning(volume.shape[0], float(volume.spacing[0]), float(tgt_sig.spacing_mm)))
    dev = _resolve_device(device) if row.needs_torch else "cpu"
    from .inference.device import device_name

    if not row.needs_torch and device_name(device) not in ("auto", "cpu"):
        warnings.append({"code": "DEVICE_NOT_USED",
                         "message": f"Device {device!r} is not used: the method {name!r} runs on the CPU."})
    return replace(draft, method=name, method_reason=reason, device=dev, warnings=tuple(warnings))


def _check_output_slices(volume: Volume, spacing_out: float) -> None:
    """Refuse a target slice spacing that leaves fewer than 2 slices (a file no CT reader takes as 3D)."""
    from .imaging.zgrid import target_slice_count

    n_in, s_in = int(volume.shape[0]), float(volume.spacing[0])
    n_out = target_slice_count(n_in, s_in, spacing_out)
    if n_in >= 2 and n_out < 2:
        extent = (n_in - 1) * s_in
        raise BadInputError(f"A target slice spacing of {spacing_out:.4g} mm leaves {n_out} slice of this scan "
                            f"({n_in} slices {s_in:.4g} mm apart: {extent:.4g} mm from first to last); the output "
                            f"needs at least 2. Choose a target spacing of at most {extent:.4g} mm (with a reference scan as "
                            f"target, add --target thickness={extent:.4g}), or a longer scan.")


def _choose(plan: Plan, method: str):
    from .errors import NoModelError
    from .methods import choose_auto, get_method

    if method == "auto":
        return choose_auto(plan)
    row = get_method(method)
    why = row.why_not(plan)
    if why is not None:
        err = NoModelError if row.kind == "model" else BadInputError
        raise err(f"Method {method!r} cannot normalize this scan to this target: {why}. "
                  f"Use --method auto, or another method.")
    return method, "requested", []


def _resolve_device(device: str) -> str:
    from .inference.device import resolve_device

    return resolve_device(device)


def is_finite_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
