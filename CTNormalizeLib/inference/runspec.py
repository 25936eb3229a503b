"""What a run of a 2.5D model needs, computed once: the model-family-specific part ends here.

Protocol-labelled cards (``pair_features``) and signature-conditioned cards
(``io.conditioning == "signature"``: ``plan_features`` and the front-end from the plan's
measured source transfer to the target's) differ only in the conditioning vector and in
the front-end's two transfers. :func:`make_runspec` computes both, with the z grid and
the HU window, so the pipelines below (:mod:`.cpu_path`, :mod:`.resident`) never ask
which family they serve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from ..errors import BadInputError


@dataclass(frozen=True)
class RunSpec:
    """The per-run inputs of a 2.5D pipeline.

    Attributes
    ----------
    lo, hi : float
        The model's HU window.
    offset, divisor : float
        Scaling into network units: ``(clip(hu, lo, hi) - offset) / divisor``.
    context : int
        Neighbouring slices per network input.
    cond : np.ndarray
        float32 conditioning vector.
    frontend : str or None
        The card's fixed front-end (None, or when its two transfers are equal: the identity).
    frontend_source, frontend_target : str or Transfer
        What the front-end converts between (kernel classes or measured transfers).
    frontend_lambda : float or None
        The card's fixed Wiener term (None: the front-end's default).
    src_spacing, tgt_spacing, src_thickness, tgt_thickness : float
        The z grids (mm): the input's and the output's.
    """

    lo: float
    hi: float
    offset: float
    divisor: float
    context: int
    cond: np.ndarray
    frontend: Optional[str]
    frontend_source: Any
    frontend_target: Any
    frontend_lambda: Optional[float]
    src_spacing: float
    tgt_spacing: float
    src_thickness: float
    tgt_thickness: float

    @property
    def frontend_active(self) -> bool:
        """False where the front-end is the identity (no front-end, or the same transfer twice)."""
        return (self.frontend is not None and self.frontend_source is not None
                and self.frontend_target is not None and self.frontend_source != self.frontend_target)

    @property
    def z_changes(self) -> bool:
        """True when the output z grid or slice profile differs from the input's."""
        return (abs(self.tgt_spacing - self.src_spacing) > 1e-3 * self.src_spacing
                or self.tgt_thickness > self.src_thickness * 1.02)


def on_grid(source, target, volume):
    """Thickness and z spacing left open filled from the volume's grid (plans set them; direct calls may not).

    The protocols returned are in the z physics' Gaussian form: ``thickness`` is the slice profile's
    modelled FWHM (:attr:`~CTNormalizeLib.protocols.protocol.Protocol.ssp_fwhm`) and ``profile`` None.
    """
    s_sp = float(volume.spacing[0])
    src = replace(source, thickness=source.ssp_fwhm or s_sp, spacing=source.spacing or s_sp, profile=None)
    tgt = replace(target, thickness=target.ssp_fwhm or src.thickness,
                  spacing=target.spacing or target.thickness or src.spacing, profile=None)
    return src, tgt


def make_runspec(card: dict, src, tgt, plan=None) -> RunSpec:
    """The :class:`RunSpec` of a 2.5D card for protocols ``src -> tgt`` (already on the volume's grid).

    Raises
    ------
    BadInputError
        A signature-conditioned card without a plan.
    """
    from ..models.conditioning import pair_features, plan_features

    io = card["io"]
    lo, hi = (float(v) for v in io["hu_window"])
    signature = io.get("conditioning") == "signature"
    if signature and plan is None:
        raise BadInputError(f"Model {card.get('name')!r} is conditioned on measured signatures: run it through a plan.")
    k_s, k_t = src.kernel, tgt.kernel
    if signature:
        k_s, k_t = plan.source_signature.transfer, plan.target_signature.transfer
    feats = plan_features(plan, float(io["frontend_lambda"])) if signature else pair_features(src, tgt)
    lam = io.get("frontend_lambda")
    return RunSpec(lo=lo, hi=hi, offset=float(io["scale"]["offset"]), divisor=float(io["scale"]["divisor"]),
                   context=int(io.get("context", 5)), cond=np.asarray(feats, np.float32),
                   frontend=io.get("frontend"), frontend_source=k_s, frontend_target=k_t,
                   frontend_lambda=None if lam is None else float(lam),
                   src_spacing=float(src.spacing), tgt_spacing=float(tgt.spacing),
                   src_thickness=float(src.thickness), tgt_thickness=float(tgt.thickness))
