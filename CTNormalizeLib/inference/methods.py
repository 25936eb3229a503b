"""The learned rows of the method table: one per installed model package.

A row's coverage and run function read the plan: protocol-labelled models (trained on
kernel classes and dose fractions) get the plan's protocols with the source's measured
kernel class and, where the user gave no dose, the source's noise-equivalent dose
relative to the target; signature-conditioned models read the signatures themselves.
"""

from __future__ import annotations

from dataclasses import replace

from ..method_rows import Method, MethodResult
from ..protocols import Protocol


def effective_protocols(plan) -> tuple[Protocol, Protocol]:
    """The plan's source and target as a protocol-labelled model sees them.

    The source dose is the user's if given, else the noise-equivalent dose times the
    target's dose (the source's noise expressed as a dose of the target protocol).
    """
    s, t = plan.source, plan.target
    ss, ts = plan.source_signature, plan.target_signature
    t_dose = t.dose
    s_dose = s.dose
    if s_dose is None and plan.noise_equivalent_dose is not None:
        s_dose = plan.noise_equivalent_dose * (t_dose if t_dose is not None else 1.0)
    if t_dose is None:
        t_dose = s_dose
    src = replace(s, kernel=s.kernel or ss.kernel, dose=s_dose, thickness=float(s.ssp_fwhm or ss.thickness_mm),
                  spacing=float(ss.spacing_mm), profile=None)
    tgt = replace(t, kernel=t.kernel or ts.kernel, dose=t_dose, thickness=float(ts.thickness_mm),
                  spacing=float(ts.spacing_mm), profile=None)
    return src, tgt


def _in(value, rng, tol: float = 0.05) -> bool:
    return value is not None and rng[0] * (1 - tol) <= float(value) <= rng[1] * (1 + tol)


def signature_why_not(covers: dict, plan) -> str | None:
    """None when a signature-conditioned model was trained on what this plan measures, else why not."""
    import math

    s, t = plan.source_signature, plan.target_signature
    src, tgt = covers.get("source", {}), covers.get("targets", {})
    m50_s = s.transfer.mtf50 if math.isfinite(s.transfer.mtf50) else 3.0
    m50_t = t.transfer.mtf50 if math.isfinite(t.transfer.mtf50) else 3.0
    checks = [("source noise", s.noise_hu, src.get("noise_hu"), "HU"),
              ("source MTF50", m50_s, src.get("mtf50"), "c/mm"),
              ("source thickness", plan.source_ssp_mm, src.get("thickness"), "mm"),
              ("pixel size", s.pixel_mm, src.get("pixel_mm"), "mm"),
              ("target MTF50", m50_t, tgt.get("mtf50"), "c/mm"),
              ("target thickness", t.thickness_mm, tgt.get("thickness"), "mm")]
    for name, value, rng, unit in checks:
        if rng is not None and not _in(value, rng):
            shown = "unknown" if value is None else f"{value:.3g}"
            return f"{name} {shown} {unit} outside the trained {rng[0]:g}-{rng[1]:g} {unit}"
    return None


def _covers(package):
    def covers(plan):
        if package.card["covers"].get("conditioning") == "signature":
            return signature_why_not(package.card["covers"], plan)
        src, tgt = effective_protocols(plan)
        return package.why_not(src, tgt)
    return covers


def _run(package):
    def run(volume, plan, progress=None, reference=None):
        from ..classical.noise_insertion import texture_step
        from ..classical.state import ChainState
        from .engine import run_model

        src, tgt = effective_protocols(plan)
        res = run_model(package, volume, src, tgt, device=plan.device, progress=progress, plan=plan)
        # src/tgt are in the Gaussian form (thickness = modelled FWHM): the tag gets the nominal thickness
        res.volume.meta["SliceThickness"] = f"{plan.target.thickness or tgt.thickness:g}"
        steps = [{"method": f"model:{package.name}", "done": True,
                  "parameters": {"source": src.spec(), "target": tgt.spec(), "device": res.device},
                  "note": "learned model"}]
        out = res.volume
        if plan.texture == "target":
            st = ChainState(out.hu, tuple(out.spacing), plan.target_signature.transfer, None,
                            plan.target_signature.thickness_mm, steps)
            texture_step(st, plan)
            out = out.with_array(st.hu, spacing=tuple(out.spacing))
        return MethodResult(volume=out, steps=steps, warnings=list(res.warnings), qc=dict(res.qc),
                            device=res.device, model_sha256=res.model_sha256, timings=dict(res.timings))
    return run


def _changes(card) -> tuple:
    cov = card.get("covers", {})
    out = ["kernel", "noise"]
    if not cov.get("same_thickness"):
        out.append("thickness")
    return tuple(out)


def model_rows() -> list[Method]:
    """One :class:`~CTNormalizeLib.method_rows.Method` per installed package, best first."""
    from ..models import registry

    rows = []
    for pkg in registry.list_models():
        card = pkg.card
        if card.get("role") == "denoiser":
            rows.append(_denoiser_row(pkg))
            continue
        rows.append(Method(
            name=pkg.name, kind="model", summary=card.get("description") or pkg.coverage_text(),
            changes=_changes(card), run=_run(pkg), needs_torch=True, covers=_covers(pkg),
            figures=dict(card.get("selection", {}).get("figures", {})), card=card))
    return rows


def _denoiser_row(package) -> Method:
    """A ``role: denoiser`` package's row: the classical chain with the learned denoiser (:mod:`.net_denoise`)."""
    card = package.card

    def run(volume, plan, progress=None, reference=None):
        from .net_denoise import run_chain

        return run_chain(package, volume, plan, progress)

    noise = card.get("covers", {}).get("noise_hu")

    def covers(plan):  # the network was trained on this range of measured noise
        return signature_why_not({"source": {"noise_hu": noise}}, plan) if noise else None

    return Method(name=package.name, kind="model", summary=card.get("description") or package.name,
                  changes=("kernel", "noise", "thickness"), run=run, needs_torch=True, covers=covers,
                  figures=dict(card.get("selection", {}).get("figures", {})), card=card)
