"""The quality benchmark: held-out cases x source protocols x targets x methods, with the floor.

For every case (see :mod:`.cases`), target protocol and source protocol it simulates a
source scan, a target scan and a replicate (target protocol, independent noise), runs
every method on the source, and measures every paired metric of source, outputs and
replicate against the target (:func:`.paired.evaluate_methods`, on the target's grid).
It then aggregates per method and per source protocol (medians over runs), computes
radiomic CCC across cases on the nodules, and paired Wilcoxon tests between methods.

Methods come from *providers*: :class:`MethodProvider` = a name and a callable
``fn(volume, source, target, reference=None) -> Volume``. The caller passes the list;
:mod:`CTNormalizeLib.benchmark_methods` makes one per row of the method table (they run
``normalize``, which sits above this layer).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import BadInputError
from ..imaging.zgrid import fractional_index, slice_positions
from ..io.jsonfile import write_json
from ..protocols import Protocol
from ..volume import Volume
from . import agreement, cases as cases_mod
from .method_runs import run_methods
from .paired import METRICS, evaluate_methods, floor_table


MethodFn = Callable[..., Volume]
WILCOXON_METRICS = ("l1_body_hu", "ssim_axial", "nps_similarity", "edge_width_error_mm", "ei_error_pt")
REFERENCE_SEED = 2000  # held-out phantom whose target-protocol scan is histogram_match's reference
GRID_NOTE = ("all comparisons on the target's grid over the common z extent; thick sources and outputs are "
             "linearly interpolated along z onto the target's slice positions")


@dataclass
class MethodProvider:
    """A normalization method under test.

    ``fn(volume, source, target, reference=None) -> Volume``; ``reference`` is a scan of
    another held-out phantom at the target protocol (for methods that need one).
    """

    name: str
    fn: MethodFn
    sha256: Optional[str] = None
    kind: str = "classical"


def _labels_on(scan: Volume, truth: Volume, labels: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Nearest-slice resampling of truth-grid labels onto a scan's z grid."""
    if labels is None:
        return None
    zt, zs = slice_positions(truth), slice_positions(scan)
    idx = np.clip(np.rint(fractional_index(zt, zs)).astype(int), 0, len(zt) - 1)
    return np.asarray(labels)[idx]


def _seed(*parts) -> int:
    h = hashlib.sha256(("benchmark-v" + cases_mod.BENCHMARK_VERSION + ":" + ":".join(map(str, parts))).encode())
    return int.from_bytes(h.digest()[:4], "little")


def _median(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(xs)) if xs else None


def _reference_scan(tprot: Protocol, shape, spacing):
    from .. import simulate

    c = cases_mod.Case(f"phantom-{REFERENCE_SEED}", "phantom", REFERENCE_SEED, shape, spacing)
    data = cases_mod.load_case(c)
    return simulate.simulate_scan(data.truth, tprot, _seed("reference", tprot.spec()), on_thin="clamp")


def run_benchmark(size: str = "default", methods: Optional[list] = None, progress=None,
                  cases: Optional[list] = None, keep_example: bool = True, lpips_weights=None,
                  heldout: Optional[bool] = None) -> dict:
    """Run the benchmark and return its JSON-ready result (plus ``_examples`` arrays for pictures).

    Parameters
    ----------
    size : {"default", "full", "tiny"}
        ``default`` is a sampled subset that finishes within about 10 min on 2 cores;
        ``full`` is every case x every grid protocol x every target; ``tiny`` is for tests.
    methods : list of MethodProvider
        What to run (e.g. :func:`CTNormalizeLib.benchmark_methods.default_methods`).
    progress : callable(stage, fraction), optional
    cases : list of cases.Case, optional
        Override the size's case list.
    keep_example : bool
        Keep the arrays of the first run of each case kind (phantom, lung2) in ``_examples``
        for the pictures.
    lpips_weights : path, optional
        AlexNet backbone weights for LPIPS; without them LPIPS is reported absent.
    heldout : bool, optional
        Also run every method on the held-out-physics cases of the same size
        (:mod:`.heldout_benchmark`) and add them as ``heldout_physics``; default: when
        ``cases`` is not overridden.
    """
    from .. import simulate

    t_start = time.perf_counter()
    if not methods:
        raise BadInputError("The benchmark needs at least one method provider (see CTNormalizeLib.benchmark_methods).")
    methods = list(methods)
    case_list = cases if cases is not None else cases_mod.benchmark_cases(size)
    runs: list = []
    lpips_note = None
    feats: dict = {}  # series -> list of (feature dict, target feature dict)
    examples: dict = {}
    refs: dict = {}
    case_records = []
    n_done, n_total_est = 0, None
    for ci, case in enumerate(case_list):
        data = cases_mod.load_case(case)
        truth = data.truth
        native = simulate.scanner.native_thickness(truth)
        targets = cases_mod.target_protocols(size, native)
        sources = cases_mod.source_protocols(size, native)
        case_records.append({"name": case.name, "kind": case.kind, "seed": case.seed,
                             "shape": list(truth.shape), "spacing": list(truth.spacing), **data.info})
        if n_total_est is None:
            n_total_est = len(case_list) * len(targets) * len(sources)
        proj = simulate.project_truth(truth)
        for tname, tprot in targets:
            target = simulate.simulate_scan(truth, tprot, _seed(case.name, tname, "target"), projections=proj)
            replicate = simulate.simulate_scan(truth, tprot, _seed(case.name, tname, "replicate"), projections=proj)
            seg = _labels_on(target, truth, data.nodules)
            lung = _labels_on(target, truth, data.lung)
            key = (tprot.kernel, tprot.dose, tprot.thickness)
            if key not in refs and any(m.name.endswith("histogram_match") for m in methods):
                refs[key] = _reference_scan(tprot, cases_mod.Case("x", "phantom").shape, cases_mod.Case("x", "phantom").spacing)
            for sprot in sources:
                if (sprot.kernel, sprot.dose, sprot.thickness) == key:
                    continue
                src = simulate.simulate_scan(truth, sprot, _seed(case.name, tname, sprot.spec()), projections=proj)
                outputs, run = _run_methods(methods, src, sprot, tprot, refs.get(key), case.name)
                want_arrays = keep_example and case.kind not in examples
                ev = evaluate_methods(target, src, outputs, replicate, segments=seg, lung=lung,
                                      keep_arrays=want_arrays, lpips_weights=lpips_weights)
                lpips_note = ev["lpips_note"]
                if want_arrays:
                    examples[case.kind] = {"case": case.name, "target_name": tname, "source": sprot.spec(),
                                           "arrays": ev.pop("arrays"), "curves": ev["curves"]}
                ev.pop("arrays", None)
                _collect_features(ev["features"], feats)
                runs.append({"case": case.name, "kind": case.kind, "target": tname, "target_spec": tprot.spec(),
                             "source": sprot.spec(), "values": ev["values"], "tables": ev["tables"],
                             "zone_laa": ev["emphysema"]["zone_laa"], **run,
                             "masks": ev["masks"], "grid": {k: ev["grid"][k] for k in ("n_slices", "z_range_mm")}})
                n_done += 1
                if progress:
                    progress("benchmark", n_done / max(n_total_est, n_done))
    names = [m.name for m in methods]
    summary = summarize(runs, names, feats)
    result = {
        "benchmark_version": cases_mod.BENCHMARK_VERSION,
        "size": size,
        "methods": names,
        "method_sha256": {m.name: m.sha256 for m in methods},
        "cases": case_records,
        "n_cases": len(case_records),
        "source_protocols": sorted({r["source"] for r in runs}),
        "targets": sorted({r["target"] + " (" + r["target_spec"] + ")" for r in runs}),
        "grid_note": GRID_NOTE,
        "metrics": {k: {"better": v[0], "unit": v[1], "description": v[2]} for k, v in METRICS.items()},
        "runs": runs,
        "summary": summary,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "lpips_note": lpips_note if runs else None,
        "provenance": _provenance(methods),
    }
    if heldout or (heldout is None and cases is None):
        result["heldout_physics"] = heldout_section(size, methods, progress)
    if examples:
        result["_examples"] = list(examples.values())
    return result


def _run_methods(methods, src, sprot, tprot, reference, case_name):
    """Every method on one source scan (:func:`.method_runs.run_methods`): ``(outputs, {"timings_s", "errors",
    "skipped"})``."""
    runs = run_methods(methods, src, sprot, tprot, reference, case_name)
    return runs.outputs, {"timings_s": {k: round(v, 3) for k, v in runs.seconds.items()}, "errors": runs.errors,
                          "skipped": runs.skipped}


def _collect_features(features: dict, feats: dict) -> None:
    """Append each series' (features, target features) pairs per segment to ``feats`` (for the CCC)."""
    for label, fdict in features.items():
        if label == "target":
            continue
        for lab, fv in fdict.items():
            if lab in features["target"]:
                feats.setdefault(label, []).append((fv, features["target"][lab]))


def heldout_section(size: str, methods: list, progress=None) -> dict:
    """The held-out-physics column: per method, medians over the independent simulator's cases."""
    from .heldout_benchmark import NOISE_FREE, run_heldout

    h = run_heldout(size, methods, progress=(lambda st, f: progress("heldout-physics", f)) if progress else None,
                    keep_examples=False)
    return {"size": size, "cases": [f"{c['case']} ({c['source_spec']} -> {c['target_spec']})" for c in h["cases"]],
            "per_method": {k: v for k, v in h["summary"].items()},
            "floors": ["replicate", NOISE_FREE], "notes": h["notes"], "elapsed_s": h["elapsed_s"]}


def _provenance(methods) -> dict:
    from ..simulate import SIMULATOR_VERSION
    from .report import versions

    return {"simulator_version": SIMULATOR_VERSION, "benchmark_version": cases_mod.BENCHMARK_VERSION,
            "methods": ", ".join(f"{m.name}" + (f" (sha256 {m.sha256})" if m.sha256 else "") for m in methods),
            "held_out": "phantom seeds >= 1000 and lung2 (never used for training)",
            "versions": versions()}


def summarize(runs: list, method_names: list, feats: dict) -> dict:
    """Aggregate runs: per-method floor tables (medians), per-protocol medians, radiomics CCC, Wilcoxon."""
    per_method = {}
    for m in method_names:
        vals = {role: {} for role in ("source", "output", "replicate")}
        gaps = {}
        for name in METRICS:
            for role, key in (("source", "source"), ("output", m), ("replicate", "replicate")):
                vals[role][name] = _median([r["values"].get(key, {}).get(name) for r in runs if m in r["values"]])
            gaps[name] = _median([r["tables"].get(m, {}).get(name, {}).get("gap_closed") for r in runs])
        table = floor_table(vals)
        for name, row in table.items():
            row["gap_closed_median_of_runs"] = gaps.get(name)
        per_method[m] = table
    per_protocol = {}
    for (src, tgt), grp in itertools.groupby(sorted(runs, key=lambda r: (r["source"], r["target"])),
                                             key=lambda r: (r["source"], r["target"])):
        grp = list(grp)
        d = {}
        for label in ["source", *method_names, "replicate"]:
            d[label] = {name: _median([r["values"].get(label, {}).get(name) for r in grp]) for name in METRICS}
        per_protocol[f"{src} -> {tgt}"] = d
    radiomics = {}
    for label in ["source", *method_names, "replicate"]:
        pairs = feats.get(label, [])
        if len(pairs) < 3:
            continue
        names = sorted(set.intersection(*[set(a) & set(b) for a, b in pairs]))
        test = {f: [a[f] for a, _ in pairs] for f in names}
        ref = {f: [b[f] for _, b in pairs] for f in names}
        fc = agreement.feature_ccc(test, ref)
        finite = [v for v in fc["ccc"].values() if math.isfinite(v)]
        radiomics[label] = {"percent_reproducible": fc["percent_reproducible"], "threshold": fc["threshold"],
                            "median_ccc": float(np.median(finite)) if finite else None,
                            "n_samples": len(pairs), "ccc": fc["ccc"]}
    wil = []
    series = ["source", *method_names]
    for metric in WILCOXON_METRICS:
        for a, b in itertools.combinations(series, 2):
            xa = [r["values"].get(a, {}).get(metric) for r in runs]
            xb = [r["values"].get(b, {}).get(metric) for r in runs]
            xa = [np.nan if x is None else x for x in xa]
            xb = [np.nan if x is None else x for x in xb]
            w = agreement.paired_wilcoxon(xa, xb)
            wil.append({"metric": metric, "a": a, "b": b, **w})
    ei = {label: {"test": [r["values"].get(label, {}).get("laa_percent") for r in runs],
                  "target": [r["values"]["target"]["laa_percent"] for r in runs]}
          for label in ["source", *method_names, "replicate"]}
    return {"per_method": per_method, "per_protocol": per_protocol, "radiomics": radiomics,
            "wilcoxon": wil, "ei_pairs": ei,
            "aggregation": "medians over runs; gap_closed from the medians (gap_closed_median_of_runs also given)"}


def benchmark_figures(result: dict) -> dict:
    """Caption -> PNG bytes for a benchmark result (example views only when ``_examples`` is present)."""
    from . import figures

    out = {}
    best = _best_method(result)
    for ex in result.get("_examples", []):
        arr = ex["arrays"]
        panels = {"source": arr["source"]}
        if best in arr:
            panels[f"normalized ({best})"] = arr[best]
        panels["target"] = arr["target"]
        if "replicate" in arr:
            panels["replicate"] = arr["replicate"]
        if best in arr:
            panels[f"difference ({best} − target)"] = arr[best] - arr["target"]
        else:
            panels["difference (source − target)"] = arr["source"] - arr["target"]
        src = ex["source"].split(",spacing=")[0]
        out[f"views: {ex['case']}, {src} → {ex['target_name']}"] = figures.views_figure(
            panels, arr["spacing"], mask=arr["lung"])
        curves = ex["curves"]
        keep = ["source", best, "replicate", "target"]
        out[f"NPS and edge profile: {ex['case']}, {src} → {ex['target_name']}"] = figures.nps_figure(
            {k: curves["nps"].get(k) for k in keep if curves["nps"].get(k)},
            {k: curves["esf"].get(k) for k in keep if curves["esf"].get(k)})
    s = result["summary"]
    gaps = {m: {k: row.get("gap_closed") for k, row in t.items()} for m, t in s["per_method"].items()}
    if gaps:
        out["gap closed per method and metric (from medians over runs)"] = figures.gap_heatmap_figure(gaps)
    ei = {k: (v["test"], v["target"]) for k, v in s["ei_pairs"].items()
          if k in ("source", "replicate", _best_method(result))}
    out["emphysema index: Bland-Altman against the target"] = figures.bland_altman_figure(
        {k: tuple(np.array([np.nan if x is None else x for x in xs], float) for xs in v) for k, v in ei.items()})
    if s["radiomics"]:
        out["radiomic feature CCC against the target (nodules, across cases)"] = figures.ccc_bars_figure(
            {k: v["ccc"] for k, v in s["radiomics"].items() if k in ("source", "replicate", _best_method(result))})
    rows = []
    for proto, d in s["per_protocol"].items():
        for label, vals in d.items():
            src = proto.split(" -> ")[0].replace("kernel=", "").split(",spacing=")[0]
            rows.append({"protocol": src, "series": label,
                         "value": vals.get("l1_body_hu")})
    out["L1 in the body by source protocol"] = figures.metric_by_protocol_figure(rows, "l1_body_hu", "HU")
    return out


def _best_method(result: dict) -> str:
    """The method with the highest median gap closed on L1 in the body (ties: first)."""
    best, score = None, -math.inf
    for m, t in result["summary"]["per_method"].items():
        g = t.get("l1_body_hu", {}).get("gap_closed")
        if g is not None and g > score:
            best, score = m, g
    return best or (result["methods"][0] if result["methods"] else "source")


def write_benchmark(result: dict, out_dir, report_path=None) -> dict:
    """Write ``quality.json`` and the PNGs into ``out_dir`` (atomically), and optionally the HTML report.

    Returns ``{"json": path, "pngs": [paths], "report": path or None}``.
    """
    from .figures import write_figure_pngs
    from .report import benchmark_report_html, write_html

    out_dir = Path(out_dir)
    figs = benchmark_figures(result)
    pngs = write_figure_pngs(figs, out_dir, "quality", ":")
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    clean["figures"] = [Path(p).name for p in pngs]
    clean["figure_captions"] = list(figs)
    js = write_json(out_dir / "quality.json", clean, indent=1)
    rep = None
    if report_path is not None:
        rep = write_html(report_path, benchmark_report_html(clean, figs))
    return {"json": str(js), "pngs": pngs, "report": None if rep is None else str(rep)}


def format_table(result: dict, metrics=("l1_body_hu", "l1_lung_hu", "ssim_axial", "psnr_axial", "nps_similarity",
                                        "noise_std_error_hu", "edge_width_error_mm", "ei_error_pt",
                                        "emphysema_dice", "radiomics_rel_error")) -> str:
    """Plain-text table: per metric, source | each method (gap closed) | replicate."""
    pm = result["summary"]["per_method"]
    methods = list(pm)
    lines = []
    head = f"{'metric':<22}{'source':>9}" + "".join(f"{m.split(':')[-1][:16]:>24}" for m in methods) + f"{'replicate':>11}"
    lines.append(head)
    for name in metrics:
        first = next((pm[m][name] for m in methods if name in pm[m]), None)
        if first is None:
            continue
        row = f"{name:<22}{_f(first['source']):>9}"
        for m in methods:
            r = pm[m].get(name, {})
            g = r.get("gap_closed")
            row += f"{_f(r.get('output')) + ' (' + ('  —' if g is None else f'{g:+.2f}') + ')':>24}"
        row += f"{_f(first['replicate']):>11}"
        lines.append(row)
    hp = result.get("heldout_physics")
    if hp:
        for key, label in (("gap_closed_body", "heldout gap L1 body"), ("gap_closed_body_noise_free", "heldout gap (nf)"),
                           ("ei_error_pt", "heldout EI error pt")):
            row = f"{label:<22}{_f(hp['per_method'].get('source', {}).get(key)):>9}"
            for m in methods:
                row += f"{_f(hp['per_method'].get(m, {}).get(key)):>24}"
            row += f"{_f(hp['per_method'].get('replicate', {}).get(key)):>11}"
            lines.append(row)
    return "\n".join(lines)


def _f(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
