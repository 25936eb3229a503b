"""The held-out-physics benchmark: every method on scans of the independent simulator.

Each case (:mod:`.independent_sim.cases`) gives a source scan and the protocol strings a
user would type for it and for the target (``kernel=sharp,dose=0.25,thickness=5`` ->
``kernel=smooth,dose=1,thickness=5``). Every method runs on the source with that
explicit protocol (or, by option, ``source=auto`` and/or a reference scan of the target
protocol instead of its string); the output is compared with the target scan inside the body and the
lungs, next to two floors:

- the **replicate** (target physics, independent noise): ``gap closed`` =
  ``(L1_src - L1_out) / (L1_src - L1_rep)``, 1 = as close as a repeat scan;
- the **noise-free target** (target filter, no noise; the limit of a mean estimate):
  ``gap closed (noise-free)`` = ``(L1_src - L1_out) / (L1_src - L1_nf)``.

Also the emphysema-index error (LAA-950 in the case's lung mask, vs the target's), the
NPS similarity and the noise std error. The noise-free target itself is reported as a
row, so its gap closed against the replicate (> 1) shows how far a mean estimate can go.

Nothing here trains or tunes anything: the methods run with their shipped defaults.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import BadInputError
from ..protocols import parse_spec
from .agreement import gap_closed
from .independent_sim import cases as hcases
from .method_runs import run_methods


NOISE_FREE = "noise-free target"
TARGET_MODES = ("explicit", "like")
_SOURCE_NOTE = {"explicit": "the case's nominal source protocol string",
                "auto": "source=auto (the scan's tags and pixels only)"}
_TARGET_NOTE = {"explicit": "the case's nominal target protocol string",
                "like": "a reference scan of the target protocol (phantom seed 2000 made with the target's "
                        "physics; --target-like), whose measured signature is the target"}
PROTOCOL_NOTES = {(s, t): f"every method gets {_SOURCE_NOTE[s]} and {_TARGET_NOTE[t]}"
                  for s in _SOURCE_NOTE for t in _TARGET_NOTE}
KEYS = ("l1_body_hu", "l1_lung_hu", "laa_percent", "ei_error_pt", "emphysema_dice", "nps_similarity",
        "noise_std_hu", "noise_std_error_hu", "edge_width_error_mm")


def _row(values: dict, label: str) -> dict:
    v = values.get(label, {})
    src, rep, nf = values.get("source", {}), values.get("replicate", {}), values.get(NOISE_FREE, {})
    row = {k: v.get(k) for k in KEYS}
    for region in ("body", "lung"):
        k = f"l1_{region}_hu"
        row[f"gap_closed_{region}"] = gap_closed(src.get(k), v.get(k), rep.get(k))
        row[f"gap_closed_{region}_noise_free"] = gap_closed(src.get(k), v.get(k), nf.get(k))
    return row


def _check_modes(source_mode: str, target_mode: str) -> None:
    if source_mode not in _SOURCE_NOTE:
        raise BadInputError(f"source_mode must be 'explicit' or 'auto', not {source_mode!r}.")
    if target_mode not in TARGET_MODES:
        raise BadInputError(f"target_mode must be one of {', '.join(TARGET_MODES)}, not {target_mode!r}.")


def run_case(case: "hcases.HeldOutCase", methods: list, keep_arrays: bool = False,
             source_mode: str = "explicit", target_mode: str = "explicit", name_profile: bool = False) -> dict:
    """Run every method on one case and evaluate source, outputs, replicate and noise-free target.

    ``source_mode="auto"``: the methods get ``source="auto"`` (the scan's tags and pixels
    only, as for a tagless scan of unknown protocol) instead of the nominal source protocol.
    ``target_mode="like"``: the methods get, instead of the nominal target protocol, a scan
    of another anatomy (phantom seed 2000) made with the target's physics, as a user who
    says "make it look like this scan" (``--target-like``) would give; its measured
    signature is the target. ``name_profile``: the nominal protocols also name a rectangular
    slice profile (``profile=rect``), as a user who knows the scanner's slices are would.
    """
    from .paired import evaluate_methods

    _check_modes(source_mode, target_mode)
    source_spec = case.spec.source.nominal_spec(name_profile)
    target_spec = case.spec.target.nominal_spec(name_profile)
    sprot, tprot = parse_spec(source_spec), parse_spec(target_spec)
    if source_mode == "auto":
        sprot = "auto"
    ref = None
    if target_mode == "like" or any(m.name.endswith("histogram_match") for m in methods):
        ref = hcases.reference_scan(case.spec.target, case.target.shape[1], case.target.spacing[1])
    if target_mode == "like":
        tprot = ref
    runs = run_methods(methods, case.source, sprot, tprot, ref, case.name)
    outputs, errors, skipped = runs.outputs, runs.errors, runs.skipped
    timings = {k: round(v, 2) for k, v in runs.seconds.items()}
    cpu = {k: round(v, 2) for k, v in runs.cpu_seconds.items()}  # all threads; wall time depends on the load
    ev = evaluate_methods(case.target, case.source, {**outputs, NOISE_FREE: case.target_noise_free},
                          case.replicate, lung=case.lung, with_features=False, keep_arrays=keep_arrays)
    values = ev["values"]
    rows = {label: _row(values, label) for label in ["source", *outputs, NOISE_FREE, "replicate"]}
    for label, t in timings.items():
        if label in rows:
            rows[label]["time_s"], rows[label]["cpu_s"] = t, cpu[label]
    res = {"case": case.name, "description": case.spec.description, "source_spec": source_spec,
           "target_spec": target_spec, "info": case.info, "target_laa_percent": values["target"]["laa_percent"],
           "rows": rows, "errors": errors, "skipped": skipped, "masks": ev["masks"]}
    if keep_arrays:
        res["_arrays"] = ev["arrays"]
    return res


def summarize(case_results: list, labels: list) -> dict:
    """Per label: median over cases of the gaps closed and errors (None where no case has a value)."""
    out = {}
    for label in labels:
        vals = {}
        for k in ("gap_closed_body", "gap_closed_body_noise_free", "gap_closed_lung", "gap_closed_lung_noise_free",
                  "ei_error_pt", "nps_similarity", "l1_body_hu", "l1_lung_hu"):
            xs = [r["rows"][label].get(k) for r in case_results if label in r["rows"]]
            xs = [x for x in xs if x is not None and math.isfinite(x)]
            vals[k] = float(np.median(xs)) if xs else None
        vals["n_cases"] = sum(label in r["rows"] for r in case_results)
        out[label] = vals
    return out


def run_heldout(size: str = "default", methods: Optional[list] = None, progress=None,
                keep_examples: bool = True, specs: Optional[list] = None, source_mode: str = "explicit",
                target_mode: str = "explicit", name_profile: bool = False) -> dict:
    """Run the held-out-physics benchmark and return its JSON-ready result.

    Parameters
    ----------
    size : {"default", "native", "full", "tiny"}
        ``default``: issue 11's three lung2 cases at 256 x 256 (1.25 mm); ``native``: the
        same at 512 x 512 (0.63 mm, clinical pixels); ``full``: native plus phantom cases;
        ``tiny``: one small phantom (tests). See :func:`.independent_sim.cases.benchmark_cases`.
    methods : list of MethodProvider
        E.g. ``CTNormalizeLib.benchmark_methods.heldout_methods()`` (every method, BM4D when installed).
    keep_examples : bool
        Keep the arrays of each case in ``_examples`` for pictures (not JSON).
    specs : list of CaseSpec, optional
        Override the size's cases.
    source_mode : {"explicit", "auto"}
        Give the methods the nominal source protocol, or ``auto`` (see :func:`run_case`).
    target_mode : {"explicit", "like"}
        Give the methods the nominal target protocol, or a reference scan of it (see :func:`run_case`).
    name_profile : bool
        The nominal protocols name rectangular slice profiles (``profile=rect``; see :func:`run_case`).
    """
    t_start, c_start = time.perf_counter(), time.process_time()
    _check_modes(source_mode, target_mode)
    if not methods:
        raise BadInputError("run_heldout needs the methods to run (benchmark_methods.heldout_methods()).")
    methods = list(methods)
    specs = hcases.benchmark_cases(size) if specs is None else list(specs)
    results, examples, gen_s = [], {}, 0.0
    for i, spec in enumerate(specs):
        t0 = time.perf_counter()
        case = hcases.generate_case(spec)
        gen_s += time.perf_counter() - t0
        r = run_case(case, methods, keep_arrays=keep_examples, source_mode=source_mode, target_mode=target_mode,
                     name_profile=name_profile)
        if keep_examples:
            examples[case.name] = r.pop("_arrays")
        results.append(r)
        if progress:
            progress("heldout", (i + 1) / len(specs))
    labels = ["source", *[m.name for m in methods], NOISE_FREE, "replicate"]
    result = {
        "benchmark": "held-out physics (independent simulator)",
        "heldout_version": hcases.HELDOUT_VERSION,
        "size": size,
        "source_mode": source_mode,
        "target_mode": target_mode,
        "name_profile": name_profile,
        "methods": [m.name for m in methods],
        "method_sha256": {m.name: m.sha256 for m in methods},
        "cases": results,
        "summary": summarize(results, labels),
        "notes": {
            "gap_closed": "(L1_source - L1_output) / (L1_source - L1_replicate), L1 vs the target in the body "
                          "(or lungs); *_noise_free uses the noise-free target instead of the replicate",
            "protocol": PROTOCOL_NOTES[(source_mode, target_mode)] + (
                "; the nominal protocols name rectangular slice profiles (profile=rect)" if name_profile else ""),
            "held_out": "independent simulator (skimage radon/iradon, compound-Poisson noise with bowtie, "
                        "no AEC, rect/triangle slice profiles) on lung2 and phantom seeds >= 1000; "
                        "never used for training or tuning",
        },
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "cpu_s": round(time.process_time() - c_start, 1),  # all threads of this process: comparable across loads
        "case_generation_s": round(gen_s, 1),
    }
    if examples:
        result["_examples"] = examples
    return result


def format_table(result: dict) -> str:
    """Plain text: per case, per label: L1 body, gap closed (replicate / noise-free), lung, EI error, NPS sim."""
    lines = [f"protocol: {result['notes']['protocol']}"] if "notes" in result else []
    for c in result["cases"]:
        lines.append(f"{c['case']}: {c['source_spec']} -> {c['target_spec']}  (target LAA-950 "
                     f"{_f(c['target_laa_percent'])} %)")
        cols = ("l1_body_hu", "gap_closed_body", "gap_closed_body_noise_free", "l1_lung_hu", "gap_closed_lung",
                "gap_closed_lung_noise_free", "ei_error_pt", "nps_similarity", "time_s", "cpu_s")
        lines.append(f"  {'method':<34}" + "".join(f"{h:>9}" for h in (
            "L1 body", "gap rep", "gap nf", "L1 lung", "gap rep", "gap nf", "EI err", "NPS sim", "wall s", "cpu s")))
        for label, r in c["rows"].items():
            lines.append(f"  {label[:34]:<34}" + "".join(f"{_f(r.get(k)):>9}" for k in cols))
        for k, v in {**c["errors"], **c["skipped"]}.items():
            lines.append(f"  ({k}: {v[:110]})")
    return "\n".join(lines)


def _f(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.3g}" if v == 0 or abs(v) >= 0.01 else f"{v:.1e}"


def heldout_figures(result: dict) -> dict:
    """Caption -> PNG: gap-closed heatmap (labels x cases) and lung-window views per case."""
    from . import figures

    out = {}
    for key, title in (("gap_closed_body", "L1 body"), ("gap_closed_lung", "L1 lung")):
        gaps = {}
        for c in result["cases"]:
            for label, r in c["rows"].items():
                if label != "source":
                    gaps.setdefault(label, {})[c["case"]] = r[key]
        if gaps:
            out[f"held-out physics: gap closed ({title}, replicate floor)"] = figures.gap_heatmap_figure(
                gaps, title=f"held-out physics: gap closed, {title} (1 = replicate)")
    for c in result["cases"]:
        arr = result.get("_examples", {}).get(c["case"])
        if arr is None:
            continue
        ranked = sorted((r["gap_closed_body"], k) for k, r in c["rows"].items()
                        if k not in ("source", "replicate", NOISE_FREE) and r["gap_closed_body"] is not None)
        panels = {"source": arr["source"]}
        for _, k in ranked[-2:][::-1]:
            panels[k] = arr[k]
        panels["target"] = arr["target"]
        if ranked:
            best = ranked[-1][1]
            panels[f"difference ({best} − target)"] = arr[best] - arr["target"]
        out[f"views: {c['case']} ({c['source_spec']} → {c['target_spec']})"] = figures.views_figure(
            panels, arr["spacing"], mask=arr["lung"])
    return out


SUMMARY_COLUMNS = (("gap_closed_body", "gap closed, L1 body"), ("gap_closed_body_noise_free", "(noise-free floor)"),
                   ("gap_closed_lung", "gap closed, L1 lung"), ("gap_closed_lung_noise_free", "(noise-free floor)"),
                   ("ei_error_pt", "EI error (pt)"), ("nps_similarity", "NPS similarity"))
CASE_COLUMNS = (("l1_body_hu", "L1 body (HU)"), ("gap_closed_body", "gap closed"),
                ("gap_closed_body_noise_free", "gap closed (noise-free)"), ("l1_lung_hu", "L1 lung (HU)"),
                ("gap_closed_lung", "gap closed"), ("gap_closed_lung_noise_free", "gap closed (noise-free)"),
                ("laa_percent", "LAA-950 %"), ("ei_error_pt", "EI error (pt)"), ("nps_similarity", "NPS similarity"),
                ("time_s", "wall (s)"), ("cpu_s", "CPU (s)"))


def summary_table(per_method: dict) -> dict:
    """``{"header", "rows"}`` of per-method medians over the held-out cases (for the HTML templates)."""
    return {"header": ["method", *[t for _, t in SUMMARY_COLUMNS]],
            "rows": [[m, *[_f(v.get(k)) for k, _ in SUMMARY_COLUMNS]] for m, v in per_method.items()]}


def heldout_report_html(result: dict, figs: dict) -> str:
    """A small self-contained HTML page (``Resources/Templates/evaluate_heldout.html.j2``)."""
    from ..htmlreport import render

    cases = []
    for c in result["cases"]:
        info = c["info"]
        note = (f"{c['description']}. Physics: {info['source_physics']} → {info['target_physics']}; pixel "
                f"{info['pixel_mm']:.3g} mm; true kernel classes by MTF50: {info['source_kernel_class']} "
                f"({info['source_mtf50']:.3f}/mm) → {info['target_kernel_class']} ({info['target_mtf50']:.3f}/mm).")
        cases.append({"title": f"{c['case']}: {c['source_spec']} → {c['target_spec']}", "note": note,
                      "header": ["method", *[t for _, t in CASE_COLUMNS]],
                      "rows": [[k, *[_f(r.get(x)) for x, _ in CASE_COLUMNS]] for k, r in c["rows"].items()],
                      "problems": [f"{k}: {v}" for k, v in {**c["errors"], **c["skipped"]}.items()]})
    subtitle = (f"{result['benchmark']}, size {result['size']}, {len(result['cases'])} cases, "
                f"{result['elapsed_s']} s. {result['notes']['gap_closed']}. Protocol: {result['notes']['protocol']}.")
    return render("evaluate_heldout.html.j2", title="CTNormalize held-out physics benchmark", subtitle=subtitle,
                  summary=summary_table(result["summary"]), cases=cases, figures=figs)


def write_heldout(result: dict, out_dir) -> dict:
    """Write ``heldout_physics.json``, the PNGs and ``heldout_physics.html`` into ``out_dir`` atomically."""
    from ..io.atomic import atomic_write_text
    from ..io.jsonfile import write_json
    from .figures import write_figure_pngs

    out_dir = Path(out_dir)
    figs = heldout_figures(result)
    pngs = write_figure_pngs(figs, out_dir, "heldout", "(")
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    clean["figures"] = [Path(p).name for p in pngs]
    js = write_json(out_dir / "heldout_physics.json", clean, indent=1)
    rep = atomic_write_text(out_dir / "heldout_physics.html", heldout_report_html(clean, figs))
    return {"json": str(js), "pngs": pngs, "report": str(rep)}
