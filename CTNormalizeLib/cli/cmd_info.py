"""``ctnormalize info CT``: geometry, DICOM tags, detected protocol (with sources) and noise."""

from __future__ import annotations

import sys

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


def collect(path, series_uid=None) -> tuple[dict, CTNormalizeError | None]:
    """Everything ``info`` shows, as a JSON-ready dict, and the validation error (or None)."""
    from ..io import hu_summary, read_volume, validate_ct
    from ..io.dicom import META_TAGS
    from ..protocols.detect import detect_protocol
    from ..protocols.noise import NOISE_REFERENCE_PROVISIONAL, estimate_noise

    vol = read_volume(path, series_uid=series_uid, validate=False)
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
    noise = None
    if finite and not isinstance(error, NotCTError):
        noise = estimate_noise(vol)
    protocol = detect_protocol(vol, noise=noise, measure_noise=False)
    info = {
        "input": vol.meta.get("source_path", str(path)),
        "format": vol.meta.get("source_format"),
        "geometry": geometry,
        "hu": hu_summary(vol.hu) if finite else {},
        "tags": {k: vol.meta[k] for k in META_TAGS if k in vol.meta},
        "series": vol.meta.get("dicom_series"),
        "warnings": vol.meta.get("warnings", []),
        "validation": ({"ok": True} if error is None else
                       {"ok": False, "code": error.code, "message": error.message}),
        "protocol": {"spec": protocol.spec(), **protocol.to_dict()},
        "noise": None if noise is None else {**noise.to_dict(), "provisional_reference": NOISE_REFERENCE_PROVISIONAL},
    }
    return info, error


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
    v = info["validation"]
    lines.append("Validation: " + ("ok, a 3D CT in HU" if v["ok"] else f"{v['code']}: {v['message']}"))
    p = info["protocol"]
    lines.append(f"Protocol:   {p['spec'] or '(nothing detected)'}")
    for name in ("kernel", "kernel_name", "dose", "mas", "ctdivol", "thickness", "spacing"):
        src = p["sources"].get(name)
        if src is None and p.get(name) is None:
            continue
        src = src or {"source": "-", "confidence": 0.0, "detail": ""}
        lines.append(f"  {name:<12}{_fmt(p.get(name)):<12}{src['source']:<8}"
                     f"{src['confidence']:<6.2f}{src['detail']}")
    n = info["noise"]
    if n:
        lines.append("Noise (robust std of the high-pass residual, HU):")
        for region in ("air", "fat", "muscle"):
            lines.append(f"  {region:<8}{_fmt(n[f'{region}_std']):<10}{n[f'{region}_voxels']} voxels")
        if n["air_clipped_fraction"] > 0.02:
            lines.append(f"  air values clipped at the minimum: {100 * n['air_clipped_fraction']:.0f}%")
        if n.get("provisional_reference"):
            lines.append("  (dose uses a provisional full-dose noise reference)")
    for w in info["warnings"]:
        lines.append(f"Warning [{w.get('code')}]: {w.get('message')}")
    return "\n".join(lines)


def run(args) -> int:
    info, error = collect(args.input, args.series_uid)
    if args.json:
        sys.stdout.write(dumps(info) + "\n")
    else:
        print(format_text(info))
    sys.stdout.flush()
    if error is not None:
        raise error
    return 0
