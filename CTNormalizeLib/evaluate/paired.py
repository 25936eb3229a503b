"""One paired evaluation: source, output and replicate against the target, with the floor.

DESIGN.md section 6: every metric of the output is reported next to the same metric of
the **source** (the problem) and of the **replicate** (same anatomy, target protocol,
independent noise: the physical floor), plus ``gap closed = (m_src - m_out) / (m_src - m_rep)``.

Everything is compared on the target's grid over the common z extent (see :mod:`.grid`);
masks (body, lung), NPS ROIs and edge points are computed once on the target and shared,
so the differences between roles reflect the images only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..imaging import body_mask, lung_mask
from ..volume import Volume
from . import agreement, grid, lpips, metrics, nps, sharpness
from .features import segment_features

ROLES = ("source", "output", "replicate")

# name -> (better, unit, description)
METRICS = {
    "l1_body_hu": ("lower", "HU", "mean |HU - target| in the body"),
    "l1_lung_hu": ("lower", "HU", "mean |HU - target| in the lungs"),
    "psnr_axial": ("higher", "dB", "PSNR over the HU window, axial slices"),
    "psnr_coronal": ("higher", "dB", "PSNR over the HU window, coronal slices"),
    "psnr_sagittal": ("higher", "dB", "PSNR over the HU window, sagittal slices"),
    "ssim_axial": ("higher", "", "SSIM over the HU window, axial slices"),
    "ssim_coronal": ("higher", "", "SSIM over the HU window, coronal slices"),
    "ssim_sagittal": ("higher", "", "SSIM over the HU window, sagittal slices"),
    "nps_similarity": ("higher", "", "1 - 0.5 sum|a-b| of unit-sum radial NPS vs the target's"),
    "noise_std_error_hu": ("lower", "HU", "|noise std - target noise std| in uniform ROIs"),
    "nps_mean_freq_error": ("lower", "1/mm", "|NPS mean frequency - target's|"),
    "edge_width_error_mm": ("lower", "mm", "|10-90 % edge width - target's| at the body outline"),
    "mtf50_error": ("lower", "1/mm", "|MTF50 - target's| at the body outline"),
    "ei_error_pt": ("lower", "pt", "|LAA-950 % - target's| in the target's lung mask"),
    "emphysema_dice": ("higher", "", "Dice of the emphysema masks (HU < threshold in the lungs)"),
    "radiomics_rel_error": ("lower", "", "mean relative error of nodule features vs the target's"),
    "lpips": ("lower", "", "LPIPS (only with a user-given backbone)"),
}


def floor_table(values: dict) -> dict:
    """Rows ``{metric: {"source", "output", "replicate", "gap_closed", "better", "unit"}}``.

    ``values`` maps role -> {metric: value}; missing roles or metrics give None, and
    ``gap_closed`` needs all three roles (:func:`agreement.gap_closed`).
    """
    rows = {}
    for name, (better, unit, _desc) in METRICS.items():
        row = {r: values.get(r, {}).get(name) for r in ROLES}
        if all(v is None for v in row.values()):
            continue
        row["gap_closed"] = agreement.gap_closed(row["source"], row["output"], row["replicate"]) \
            if all(row[r] is not None for r in ROLES) else None
        row["better"], row["unit"] = better, unit
        rows[name] = row
    return rows


def _zone_laa(hu, lung, threshold, n_zones=3):
    zs = np.nonzero(lung.any(axis=(1, 2)))[0]
    if len(zs) == 0:
        return []
    edges = np.linspace(zs.min(), zs.max() + 1, n_zones + 1).round().astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = np.zeros_like(lung)
        m[a:b] = lung[a:b]
        out.append(metrics.laa_percent(hu, m, threshold))
    return out


def evaluate_pair(target: Volume, source: Optional[Volume] = None, output: Optional[Volume] = None,
                  replicate: Optional[Volume] = None, **kwargs) -> dict:
    """Every paired metric of source, output and replicate against the target.

    Parameters
    ----------
    target : Volume
        The reference; defines the comparison grid.
    source, output, replicate : Volume, optional
        Same in-plane grid as the target; any z spacing (interpolated onto the target's
        slices, see :func:`grid.to_target_grid`).
    **kwargs
        See :func:`evaluate_methods` (window, threshold, lung, segments, lpips_weights, ...).

    Returns
    -------
    dict
        ``table`` (see :func:`floor_table`), ``values`` (role -> metric -> value, with
        absolute noise/edge/LAA values for the target too), ``curves`` (radial NPS and ESF
        per role), ``emphysema`` (LAA per lung z-third per role, for Bland-Altman),
        ``features`` (role -> label -> feature -> value), ``grid``, ``masks``, ``settings``,
        ``lpips`` and ``lpips_note``.
    """
    outputs = {} if output is None else {"output": output}
    res = evaluate_methods(target, source, outputs, replicate, **kwargs)
    res["table"] = res.pop("tables").get("output") or floor_table(res["values"])
    res["lpips"] = res["values"].get("output", {}).get("lpips")
    return res


def evaluate_methods(target: Volume, source: Optional[Volume] = None, outputs: Optional[dict] = None,
                     replicate: Optional[Volume] = None, *, window=metrics.LUNG_WINDOW,
                     threshold: float = -950.0, lung: Optional[np.ndarray] = None,
                     segments: Optional[np.ndarray] = None, lpips_weights=None,
                     nps_roi: int = 32, max_slices: int = 48, with_features: bool = True,
                     keep_arrays: bool = False) -> dict:
    """Paired metrics of a source, several outputs (one per method) and a replicate vs the target.

    Target-derived quantities (grid, masks, NPS ROIs, edge points, target features) are
    computed once and shared by all images.

    Parameters
    ----------
    target : Volume
    source, replicate : Volume, optional
    outputs : dict, optional
        Method label -> output Volume.
    window : (lo, hi)
        HU window of PSNR/SSIM (default lung window -1350..150).
    threshold : float
        Emphysema threshold (HU).
    lung : np.ndarray, optional
        Lung mask on the target's grid; computed from the target when None.
    segments : np.ndarray, optional
        Integer labelmap (e.g. nodules) on the target's grid, for radiomic agreement.
    lpips_weights : path, optional
        AlexNet backbone weights; LPIPS is marked absent without them.
    nps_roi : int
        Largest NPS ROI size in pixels (24, 16 and 12 are tried when fewer than 4 ROIs fit).
    max_slices : int
        Slices sampled per plane for PSNR/SSIM.
    with_features : bool
        Compute radiomic features when ``segments`` is given.
    keep_arrays : bool
        Also return ``arrays`` (label -> array on the target grid, plus ``target`` and
        ``lung``) for pictures; not JSON-serializable.

    Returns
    -------
    dict
        ``values`` (label -> metric -> value; labels ``source``, ``replicate``, ``target``
        and the method labels), ``tables`` (method label -> :func:`floor_table`),
        ``curves``, ``emphysema``, ``features``, ``grid``, ``masks``, ``settings``, ``lpips_note``.
    """
    outputs = dict(outputs or {})
    imgs = {"source": source, **outputs, "replicate": replicate}
    labels = [k for k, v in imgs.items() if v is not None]
    tgt, aligned, ginfo = grid.to_target_grid(target, *[imgs[k] for k in labels])
    al = dict(zip(labels, (a.hu for a in aligned)))
    ref = _Reference.measure(tgt, ginfo, lung, segments, threshold, nps_roi, with_features)

    values: dict = {"target": ref.values}
    curves: dict = {"nps": {"target": ref.nps and {"f": ref.nps["f"], "nps": ref.nps["nps"]}},
                    "esf": {"target": {"t": ref.sharp["t_mm"], "esf": ref.sharp["esf"]}}}
    zones: dict = {"target": _zone_laa(tgt.hu, ref.lung, threshold)}
    feats: dict = {"target": ref.features} if ref.features is not None else {}
    lp_note = lpips.ABSENT_NOTE
    em_source = None
    for r in labels:
        v, em_source, lp_note = _role_values(al[r], ref, r, window, threshold, max_slices, lpips_weights,
                                             curves, zones, feats)
        values[r] = {k: (None if isinstance(x, float) and not math.isfinite(x) else x) for k, x in v.items()}
    tables = {m: floor_table({"source": values.get("source", {}), "output": values[m],
                              "replicate": values.get("replicate", {})}) for m in outputs if m in values}
    res = {
        "values": values,
        "tables": tables,
        "curves": curves,
        "emphysema": {"threshold_hu": threshold, "zone_laa": zones, "zones": "lung z-thirds",
                      "source": em_source},
        "features": feats,
        "grid": ginfo,
        "masks": {"lung": ref.lung_source, "lung_voxels": int(ref.lung.sum()), "body_voxels": int(ref.body.sum()),
                  "nps_rois": len(ref.corners), "nps_roi_px": ref.roi_px, "edge_points": int(len(ref.edge_points[0])),
                  "computed_on": "target"},
        "settings": {"window_hu": list(map(float, window)), "data_range": float(window[1] - window[0]),
                     "threshold_hu": threshold, "max_slices_per_plane": max_slices},
        "lpips_note": lp_note,
    }
    if keep_arrays:
        res["arrays"] = {**al, "target": tgt.hu, "lung": ref.lung, "spacing": tgt.spacing}
    return res


@dataclass
class _Reference:
    """What every image is compared against, measured once on the target grid."""

    hu: np.ndarray
    spacing: tuple
    body: np.ndarray
    lung: np.ndarray
    lung_source: str
    segments: Optional[np.ndarray]
    corners: list
    roi_px: int
    edge_points: tuple
    nps: Optional[dict]
    sharp: dict
    values: dict
    features: Optional[dict]

    @classmethod
    def measure(cls, tgt: Volume, ginfo: dict, lung, segments, threshold, nps_roi, with_features) -> "_Reference":
        first = ginfo["target_slices_dropped_before"]
        keep = slice(first, first + tgt.shape[0])
        sp = tgt.spacing
        body = body_mask(tgt.hu)
        if lung is not None:
            lung_m, lung_src = np.asarray(lung, bool)[keep], "given"
        else:
            lung_m, lung_src = lung_mask(tgt.hu, sp, tgt.direction).lungs, "imaging.lung_mask"
        seg = None if segments is None else np.asarray(segments)[keep]
        # the largest ROI size that finds a few uniform soft-tissue ROIs (thin body walls need smaller ones)
        for roi_px in [r for r in (nps_roi, 24, 16, 12) if r <= nps_roi]:
            corners = nps.find_uniform_rois(tgt.hu, roi=roi_px, mask=body)
            if len(corners) >= 4:
                break
        pts = sharpness.edge_points(tgt.hu, body, sp[1:])
        ref_nps = nps.nps_of(tgt.hu, corners, sp[1:], roi_px)
        ref_sh = sharpness.sharpness(tgt.hu, pts, sp[1:])
        values = {"noise_std_hu": ref_nps["noise_std"] if ref_nps else None,
                  "edge_width_mm": ref_sh["width_10_90_mm"], "mtf50": ref_sh["mtf50"],
                  "laa_percent": metrics.laa_percent(tgt.hu, lung_m, threshold)}
        do_feats = seg is not None and with_features and np.any(seg)
        if not do_feats:
            seg = None
        features = segment_features(tgt.hu, sp, seg) if do_feats else None
        return cls(tgt.hu, sp, body, lung_m, lung_src, seg, corners, roi_px, pts, ref_nps, ref_sh, values, features)


def _role_values(a, ref: _Reference, r, window, threshold, max_slices, lpips_weights, curves, zones, feats):
    """Every metric of one image ``a`` against the target; fills its curves, zones and features.

    Returns ``(values, emphysema source, LPIPS note)``.
    """
    sp = ref.spacing
    v = {"l1_body_hu": metrics.l1_hu(a, ref.hu, ref.body), "l1_lung_hu": metrics.l1_hu(a, ref.hu, ref.lung)}
    pm = metrics.plane_metrics(a, ref.hu, window, max_slices=max_slices, mask=ref.body)
    for p in metrics.PLANES:
        v[f"psnr_{p}"], v[f"ssim_{p}"] = pm["psnr"][p], pm["ssim"][p]
    n = nps.nps_of(a, ref.corners, sp[1:], ref.roi_px)
    if n and ref.nps:
        v["nps_similarity"] = nps.nps_similarity(n["nps"], ref.nps["nps"])
        v["noise_std_hu"] = n["noise_std"]
        v["noise_std_error_hu"] = abs(n["noise_std"] - ref.nps["noise_std"])
        v["nps_mean_freq_error"] = abs(n["mean_frequency"] - ref.nps["mean_frequency"])
        curves["nps"][r] = {"f": n["f"], "nps": n["nps"]}
    sh = sharpness.sharpness(a, ref.edge_points, sp[1:])
    v["edge_width_mm"], v["mtf50"] = sh["width_10_90_mm"], sh["mtf50"]
    v["edge_width_error_mm"] = abs(sh["width_10_90_mm"] - ref.sharp["width_10_90_mm"])
    v["mtf50_error"] = abs(sh["mtf50"] - ref.sharp["mtf50"])
    curves["esf"][r] = {"t": sh["t_mm"], "esf": sh["esf"]}
    em = metrics.emphysema_metrics(a, ref.hu, sp, ref.lung, threshold)
    v["laa_percent"], v["ei_error_pt"], v["emphysema_dice"] = em["laa_test"], em["ei_error"], em["emphysema_dice"]
    zones[r] = _zone_laa(a, ref.lung, threshold)
    if ref.features is not None:
        feats[r] = segment_features(a, sp, ref.segments)
        errs = [agreement.relative_feature_error(feats[r][k], ref.features[k])
                for k in ref.features if k in feats[r]]
        v["radiomics_rel_error"] = float(np.mean(errs)) if errs else None
    lp = lpips.lpips_metric(a, ref.hu, lpips_weights, window)
    v["lpips"] = lp["lpips"]
    return v, em["source"], lp["lpips_note"]
