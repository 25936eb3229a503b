"""``ctnormalize info CT``: geometry, DICOM tags, detected protocol (with sources) and noise."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ..errors import CTNormalizeError, NotCTError
from .events import dumps

NAME = "info"
HELP = "show a CT's geometry, DICOM tags, detected protocol and noise estimate"
ORDER = 30
DESCRIPTION = (
    "Read a CT (NRRD, NIfTI, MHA, a DICOM file or a DICOM series folder) and print its geometry, "
    "the DICOM tags that matter, the protocol detected from tags and image noise (with where each "
    "field came from and how sure it is) and the noise estimate. Exits 2 when the input is not a "
    "usable 3D CT, after printing what could be read."
)


def add_arguments(p):
    p.add_argument("input", help="CT file or DICOM series folder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--series-uid", default=None, help="SeriesInstanceUID when the folder holds several series")
    p.add_argument("--target", default=None,
                   help="target preset or spec the noise is compared with (default: emphysema-reference; for a "
                        "CTNormalize output, the target of the run that made it, whose slices its noise is "
                        "read at)")
    p.add_argument("--allow-missing-slices", action="store_true",
                   help="DICOM: interpolate over unreadable or missing slices (named in a warning) instead of refusing")


DEFAULT_TARGET = "emphysema-reference"


def collect(path, series_uid=None, target: str | None = None,
            allow_missing_slices: bool = False) -> tuple[dict, CTNormalizeError | None]:
    """Everything ``info`` shows, as a JSON-ready dict, and the validation error (or None).

    The noise is compared with ``target``; by default with :data:`DEFAULT_TARGET`, and for a
    CTNormalize output with the target and target noise of the run that made it (its
    ``ctnormalize_target`` and ``ctnormalize_target_noise_hu``), see :func:`_comparison`.
    """
    from ..io import hu_summary, read_volume, validate_ct
    from ..io.dicom import META_TAGS
    from ..protocols.detect import protocol_from_tags

    vol = read_volume(path, series_uid=series_uid, validate=False, allow_missing_slices=allow_missing_slices)
    error = None
    try:
        validate_ct(vol)
    except CTNormalizeError as exc:
        error = exc
    d = np.asarray(vol.direction).reshape(3, 3)
    nz, ny, nx = vol.shape
    geometry = {
        "size_xyz": [nx, ny, nz],
        "spacing_xyz_mm": list(reversed(vol.spacing)),
        "origin_mm": list(vol.origin),
        "direction": list(vol.direction),
        "oblique": bool(not np.allclose(np.abs(d), np.eye(3), atol=1e-6)),
        "extent_xyz_mm": [n * s for n, s in zip((nx, ny, nz), reversed(vol.spacing))],
    }
    finite = bool(np.all(np.isfinite(vol.hu)))
    protocol, signature, noise = protocol_from_tags(vol.meta, float(vol.spacing[0])), None, None
    if finite and error is None:
        protocol, signature, noise = _measure(vol, _comparison(vol.meta, target))
    info = {
        "input": vol.meta.get("source_path", str(path)),
        "format": vol.meta.get("source_format"),
        "geometry": geometry,
        "hu": hu_summary(vol.hu) if finite else {},
        "tags": {k: vol.meta[k] for k in META_TAGS if k in vol.meta},
        "normalized_by": vol.meta.get("ctnormalize"),
        "normalized_texture": vol.meta.get("ctnormalize_texture"),
        "normalized_target": vol.meta.get("ctnormalize_target"),
        "series": vol.meta.get("dicom_series"),
        "warnings": list(vol.meta.get("warnings", [])) + list(signature["warnings"] if signature else []),
        "validation": ({"ok": True} if error is None else
                       {"ok": False, "code": error.code, "message": error.message}),
        "protocol": {"spec": protocol.spec(), **protocol.to_dict()},
        "signature": signature,
        "noise": noise,
    }
    return info, error


@dataclass(frozen=True)
class Comparison:
    """What ``info`` compares a scan's noise with.

    Attributes
    ----------
    target : str or Protocol
        The target protocol.
    label : str
        How the text names it.
    noise_hu : float, optional
        The target's noise when known from the run that made the scan (else the target's nominal noise).
    read_at_mm : float, optional
        The slice thickness (SSP FWHM) the scan's noise is read at, when not its own: the run set a
        CTNormalize output's noise for its target's slices, which an output interpolated onto
        thinner slices does not have (its SliceThickness tag keeps the source's).
    """

    target: object
    label: str
    noise_hu: float | None = None
    read_at_mm: float | None = None


def _comparison(meta: dict, target: str | None) -> Comparison:
    """By default the emphysema reference; for a CTNormalize output its run's target and noise."""
    from ..contracts.report import SOURCE_TEXTURE
    from ..protocols import resolve_protocol

    spec = str(meta.get("ctnormalize_target") or "").strip()
    try:
        run_target = resolve_protocol(spec) if spec else None
        run_noise = float(meta["ctnormalize_target_noise_hu"]) if meta.get("ctnormalize_target_noise_hu") else None
    except (CTNormalizeError, ValueError):  # a header edited by hand: compare as with any scan
        run_target, run_noise = None, None
    if meta.get("ctnormalize_texture") == SOURCE_TEXTURE:  # the run left the noise: the scan's own slices
        run_noise, read_at = None, None
    else:
        read_at = run_target.ssp_fwhm if run_target is not None else None
    if target is not None:
        return Comparison(target, target, read_at_mm=read_at)
    if run_target is None:
        return Comparison(DEFAULT_TARGET, DEFAULT_TARGET)
    return Comparison(run_target, "the target of the run that made it", run_noise, read_at)


def _measure(vol, comparison: Comparison):
    """The source protocol, the measured signature and the noise relative to the comparison's target."""
    from dataclasses import replace

    from ..plan import complete_target, resolve_source
    from ..signature.target import noise_equivalent_dose, nominal_target

    protocol, sig = resolve_source(vol, None)
    read_at = sig.thickness_mm
    at = comparison.read_at_mm
    if at and sig.thickness_mm and abs(at - sig.thickness_mm) > 1e-3:
        read_at = float(at)
    noise_sig = replace(sig, thickness_mm=read_at)
    tgt, k_given, d_given = complete_target(protocol, comparison.target)
    tsig = nominal_target(noise_sig, protocol, tgt, k_given, d_given)
    if comparison.noise_hu is not None:
        tsig = replace(tsig, noise_hu=comparison.noise_hu)
    ned = noise_equivalent_dose(noise_sig, tsig)
    noise = {"noise_hu": sig.noise_hu, "by_region": sig.noise_by_region, "target": comparison.label,
             "target_spec": tgt.spec(), "target_noise_hu": tsig.noise_hu,
             "target_noise_from": "run" if comparison.noise_hu is not None else "nominal",
             "noise_equivalent_dose": ned, "noise_thickness_mm": read_at,
             "mas": protocol.mas, "ctdivol": protocol.ctdivol}
    return protocol, sig.to_dict(), noise


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_text(info: dict) -> str:
    """The human-readable report of ``info``."""
    g = info["geometry"]
    lines = [f"Input:      {info['input']} ({info['format']})",
             f"Size:       {' x '.join(str(s) for s in g['size_xyz'])} voxels (x, y, z)",
             f"Spacing:    {' x '.join(f'{s:.4g}' for s in g['spacing_xyz_mm'])} mm (x, y, z)",
             f"Origin:     {', '.join(f'{o:.4g}' for o in g['origin_mm'])} mm (LPS)",
             "Direction:  " + ("oblique " if g["oblique"] else "axis-aligned ")
             + "[" + ", ".join(f"{v:.4g}" for v in g["direction"]) + "]"]
    if info["hu"]:
        h = info["hu"]
        lines.append(f"HU:         min {h['min']:.0f}, 1% {h['p1']:.0f}, median {h['p50']:.0f}, "
                     f"99% {h['p99']:.0f}, max {h['max']:.0f}")
    if info["tags"]:
        lines.append("DICOM tags:")
        lines += [f"  {k:<22}{v}" for k, v in info["tags"].items()]
    else:
        lines.append("DICOM tags: none")
    if info["series"]:
        lines.append("Series in folder:")
        lines += [f"  {s['uid']}  {s['slices']} slices  {s.get('description', '')}" for s in info["series"]]
    if info.get("normalized_by"):
        tex = info.get("normalized_texture")
        lines.append(f"Normalized: by CTNormalize: {info['normalized_by']}" + (f" ({tex} texture)" if tex else ""))
        if info.get("normalized_target"):
            lines.append(f"            the run's target: {info['normalized_target']}")
        lines.append("            (what follows is measured from this output's pixels, not copied from the target "
                     "after '->': e.g. an output interpolated to thinner slices reads thicker than its target)")
    v = info["validation"]
    lines.append("Validation: " + ("ok, a 3D CT in HU" if v["ok"] else f"{v['code']}: {v['message']}"))
    p = info["protocol"]
    lines.append(f"Protocol:   {p['spec'] or '(nothing detected)'}")
    lines.append(f"  {'(field)':<12}{'(value)':<12}{'(from)':<8}{'(conf)':<8}(why)")
    for name in ("kernel", "kernel_name", "dose", "mas", "ctdivol", "thickness", "profile", "spacing"):
        src = p["sources"].get(name)
        if src is None and p.get(name) is None:
            continue
        src = src or {"source": "-", "confidence": 0.0, "detail": ""}
        value = p.get(name) if name != "profile" else p.get(name) or "gaussian"  # None: helical, Gaussian
        lines.append(f"  {name:<12}{_fmt(value):<12}{src['source']:<8}"
                     f"{src['confidence']:<8.2f}{src['detail']}")
    lines += _signature_lines(info.get("signature"), info.get("noise"))
    for w in info["warnings"]:
        lines.append(f"Warning [{w.get('code')}]: {w.get('message')}")
    return "\n".join(lines)


def _signature_lines(sig, noise) -> list:
    from ..signature.target import noise_equivalent_dose_words

    if not sig:
        return []
    src = sig["sources"]
    tr = sig["transfer"]
    m50 = "above Nyquist" if tr["mtf50"] is None else f"{tr['mtf50']:.3g} c/mm"
    lines = ["Measured signature (from the pixels; tags are priors):",
             f"  kernel      {sig['kernel']:<12}{src['kernel']['source']:<8}{src['kernel']['confidence']:<8.2f}"
             + (src["transfer"]["detail"] if "MTF50" in src["transfer"]["detail"]
                else f"MTF50 {m50} ({src['transfer']['detail']})")]
    edge = sig["details"].get("edge")
    if edge and edge.get("mtf50"):
        lines.append(f"  edge MTF    MTF50 {edge['mtf50']:.3g}, MTF10 {_fmt(edge['mtf10'])} c/mm at the body outline "
                     f"({edge['edge_mm']:.0f} mm of edge)")
    nps = sig["details"].get("nps")
    if nps:
        lines.append(f"  NPS         {nps['region']} ROIs ({nps['n_rois']}): peak {nps['peak_frequency']:.3g}, "
                     f"mean {nps['mean_frequency']:.3g} c/mm")
    n_src = src.get("noise_hu", {})
    if sig["noise_hu"] is not None:
        lines.append(f"  noise       {sig['noise_hu']:.1f} HU in soft tissue ({n_src.get('detail', '')}; fat and muscle where found)")
    regions = ", ".join(f"{k} {v:.1f}" for k, v in sig["noise_by_region"].items() if v is not None)
    if regions:
        lines.append(f"              by region (HU): {regions}")
        if sig["noise_by_region"].get("soft") is not None:
            lines.append("              (soft: every voxel within -200..200 HU, organ edges included)")
    if noise and noise.get("noise_equivalent_dose") is not None:
        ned = noise["noise_equivalent_dose"]
        target = noise["target"] if noise["target"] == noise["target_spec"] else \
            f"{noise['target']} ({noise['target_spec']})"
        from_run = " (as the run set it)" if noise.get("target_noise_from") == "run" else ""
        lines.append(f"  vs target   {target}: target noise "
                     f"{noise['target_noise_hu']:.1f} HU{from_run}; {noise_equivalent_dose_words(ned, 'this scan')}")
        at = noise.get("noise_thickness_mm")
        if at and sig.get("thickness_mm") and abs(at - sig["thickness_mm"]) > 1e-3:
            lines.append(f"              (its noise read as that of the {at:.3g} mm slices its run made it for; "
                         f"the slices themselves stay {sig['thickness_mm']:.3g} mm thick)")
    lines.append(f"  thickness   {sig['thickness_mm']:.3g} mm ({src['thickness_mm']['source']}: "
                 f"{src['thickness_mm']['detail']}); z noise: {sig['details'].get('z', {}).get('detail', '-')}")
    if sig.get("wed_mm"):
        cut = " (a lower bound: the field of view cuts the body)" \
            if sig["details"].get("size", {}).get("truncated") else ""
        lines.append(f"  patient     water-equivalent diameter {sig['wed_mm']:.0f} mm{cut}; "
                     f"field of view {sig['fov_mm']:.0f} mm")
    return lines


def run(args) -> int:
    info, error = collect(args.input, args.series_uid, args.target, args.allow_missing_slices)
    if args.json:
        sys.stdout.write(dumps(info) + "\n")
    else:
        print(format_text(info))
    sys.stdout.flush()
    if error is not None:
        args.json_result_printed = True  # the info object (with its validation) is this run's one JSON object
        raise error
    return 0
