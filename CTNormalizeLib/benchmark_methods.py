"""Benchmark providers for the rows of the method table: each runs :func:`~CTNormalizeLib.normalization.normalize`.

They sit at the composition level, next to the method table and ``normalize``, because
the benchmark (``evaluate.benchmark``, a lower layer) only runs the providers it is given.
"""

from __future__ import annotations

from .errors import BadInputError
from .evaluate.benchmark import MethodProvider


def target_kwargs(target) -> dict:
    """``normalize``/``make_plan`` keywords for a provider's ``target``: a protocol (``target=``) or a
    reference scan of the target protocol (a :class:`~CTNormalizeLib.volume.Volume`: ``target_like=``)."""
    from .volume import Volume

    return {"target": None, "target_like": target} if isinstance(target, Volume) else {"target": target}


def method_providers(names=None, kinds=("classical", "model"), textures=("clean",)) -> list[MethodProvider]:
    """One provider per method-table row (classical rows, then installed models) and texture.

    Each runs :func:`~CTNormalizeLib.normalization.normalize` with the explicit source and
    target protocols, as a user who knows the protocol would, or with a reference scan of the
    target protocol when the benchmark passes a volume as the target (:func:`target_kwargs`).
    ``textures`` beyond ``clean`` add a provider ``<label>[<texture>]`` for every complete
    method (the chain and models).
    """
    from .methods import method_table
    from .normalization import normalize

    table = method_table()
    unknown = sorted(set(names or ()) - set(table))
    if unknown:
        raise BadInputError(f"Unknown method(s) {', '.join(unknown)}; the method table has {', '.join(table)}.")
    out = []
    for m in table.values():
        if m.kind not in kinds or (names is not None and m.name not in names):
            continue

        label = f"{m.kind}:{m.name}" if m.kind == "model" else f"classical:{m.name}"
        for tex in (textures if m.complete else ("clean",)):
            def fn(volume, source, target, reference=None, _n=m.name, _ref=m.needs_reference, _t=tex):
                return normalize(volume, source, method=_n, device="auto", texture=_t,
                                 reference=reference if _ref else None, **target_kwargs(target)).volume
            name = label if tex == "clean" else f"{label}[{tex}]"
            out.append(MethodProvider(name, fn, m.card.get("sha256"), m.kind))
    return out


def classical_methods(names=None) -> list[MethodProvider]:
    """One provider per classical row of the method table."""
    return method_providers(names, ("classical",))


def model_methods() -> list[MethodProvider]:
    """One provider per installed learned model."""
    return method_providers(None, ("model",))


def default_methods(textures=("clean",)) -> list[MethodProvider]:
    """Every classical method plus every installed model (in each of ``textures`` where it applies)."""
    return method_providers(None, ("classical", "model"), textures)


def signature_nps(hu, spacing):
    """BM4D's noise PSD from the engine's measured signature: the NPS shape of flat ROIs
    (air outside the body when there is enough, else soft tissue), scaled to the measured
    soft-tissue noise std."""
    import numpy as np

    from .signature import measure_signature
    from .signature.nps import measure_nps
    from .signature.regions import slice_regions
    from .volume import Volume

    sig = measure_signature(Volume(hu, tuple(spacing)), with_edge=False)
    if not sig.noise_hu:
        raise BadInputError("The noise level cannot be measured, so BM4D has no noise PSD.")
    regions = slice_regions(hu, spacing)
    nps = measure_nps(hu, spacing, regions, region="air") or measure_nps(hu, spacing, regions, region="tissue")
    if nps is not None:
        shape, pixel = nps.nps2d, nps.pixel_mm
    else:
        # No flat ROIs (a body filling the field of view): the FBP noise model |f| W(f)^2 of
        # the measured (or stated) transfer gives the shape instead.
        from .signature.transfer import fbp_nps

        pixel = float(spacing[1])
        shape = np.fft.fftshift(fbp_nps(sig.transfer, pixel, 64))
    n = shape.shape[0]
    total = float(shape.sum()) / (n * pixel) ** 2
    return shape * (sig.noise_hu ** 2 / max(total, 1e-12)), (float(spacing[1]), float(spacing[2]))


def bm4d_methods(nps_fn=None) -> list[MethodProvider]:
    """``bm4d`` (denoise only) and ``bm4d+mtf_ratio`` (BM4D, then the ``mtf_ratio`` method planned on the
    scan as acquired); empty when the optional ``bm4d`` package is not installed.

    ``nps_fn(hu, spacing) -> (nps2d_fftshifted, (dy, dx))`` measures the noise power spectrum
    BM4D's PSD is made from (default: :func:`signature_nps`, the engine's measured NPS).
    """
    from .evaluate import bm4d_baseline

    if not bm4d_baseline.available():
        return []
    from .normalization import normalize
    from .plan import make_plan

    nps_fn = nps_fn or signature_nps

    def denoise(volume, source, target, reference=None):
        return bm4d_baseline.bm4d_denoise(volume, nps_fn)

    def chain(volume, source, target, reference=None):
        # the kernel step is planned on the scan as acquired (its transfer and noise), then applied to BM4D's output
        plan = make_plan(volume, source, method="mtf_ratio", device="cpu", **target_kwargs(target))
        return normalize(bm4d_baseline.bm4d_denoise(volume, nps_fn), plan=plan).volume

    return [MethodProvider("bm4d", denoise, kind="baseline"), MethodProvider("bm4d+mtf_ratio", chain, kind="baseline")]


def heldout_methods(textures=("clean",)) -> list[MethodProvider]:
    """The held-out-physics benchmark's methods: every classical row and installed model, plus BM4D when installed."""
    return default_methods(textures) + bm4d_methods()


def select_methods(methods: list, names: str) -> list:
    """The benchmark rows ``names`` (comma-separated) asks for, in its order.

    A method's name (``model:x`` or ``x``) selects it in every texture built (``x`` and ``x[target]``:
    ``--textures clean,target --methods x`` runs both); ``x[target]`` selects that texture only.
    Unknown names are a :class:`BadInputError` that lists the known ones.
    """
    def short(name):
        return name.split(":", 1)[-1]

    want = [w.strip() for w in names.split(",") if w.strip()]
    out, missing = [], []
    for w in want:
        hits = [m for m in methods if w in (m.name, short(m.name))
                or ("[" not in w and w in (m.name.split("[")[0], short(m.name.split("[")[0])))]
        if not hits:
            missing.append(w)
        out += [m for m in hits if m not in out]
    if missing:
        raise BadInputError(f"Unknown method(s) {', '.join(missing)}; known: {', '.join(m.name for m in methods)}.")
    return out
