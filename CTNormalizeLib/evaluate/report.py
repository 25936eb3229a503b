"""The evaluation's self-contained HTML reports (template ``Resources/Templates/evaluate_*.html.j2``).

Two entry points:
- :func:`pair_report_html` for one paired evaluation (``ctnormalize evaluate --report``),
- :func:`benchmark_report_html` for a benchmark JSON (``ctnormalize report``).
"""

from __future__ import annotations

import platform

from ..htmlreport import fmt_sig, render
from ..version import __version__

PER_PROTOCOL_METRICS = ("l1_body_hu", "ssim_axial", "nps_similarity", "noise_std_error_hu", "edge_width_error_mm",
                        "ei_error_pt")
ABSOLUTE_VALUES = ("noise_std_hu", "edge_width_mm", "mtf50", "laa_percent")


def versions() -> dict:
    """Versions of the engine and the libraries that compute the metrics."""
    import importlib.metadata as md

    out = {"ctnormalize": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "scikit-image", "SimpleITK", "pyradiomics-bhklab", "matplotlib", "torch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _descriptions() -> dict:
    from .paired import METRICS

    return {k: v[2] for k, v in METRICS.items()}


def pair_report_html(result: dict, figures: dict, provenance: dict) -> str:
    """HTML of one paired evaluation.

    Parameters
    ----------
    result : dict
        From :func:`CTNormalizeLib.evaluate.paired.evaluate_pair`.
    figures : dict
        Caption -> PNG bytes (views, NPS, Bland-Altman, CCC/feature bars), in display order.
    provenance : dict
        Inputs, protocols, method, sha256s; :func:`versions` is added.
    """
    s = result.get("settings", {})
    subtitle = (f"window {s.get('window_hu')} HU (data range {fmt_sig(s.get('data_range'))}), "
                f"emphysema threshold {fmt_sig(s.get('threshold_hu'))} HU; compared on the target grid "
                f"({result['grid']['n_slices']} slices, z {result['grid']['z_range_mm']} mm).")
    values = result["values"]
    roles = [r for r in ("source", "output", "replicate", "target") if r in values]
    absolute = [[k] + [fmt_sig(values[r].get(k)) for r in roles] for k in ABSOLUTE_VALUES]
    return render("evaluate_pair.html.j2", title="CTNormalize paired evaluation", subtitle=subtitle,
                  table=result["table"], descriptions=_descriptions(), lpips_note=str(result.get("lpips_note")),
                  figures=figures, roles=roles, absolute=absolute,
                  measured={**result.get("masks", {}), "grid": result["grid"]["note"]},
                  provenance={**provenance, **{f"version {k}": v for k, v in versions().items()}})


def benchmark_report_html(bench: dict, figures: dict) -> str:
    """HTML of a benchmark run (the JSON of :func:`CTNormalizeLib.evaluate.benchmark.run_benchmark`)."""
    summary = bench.get("summary", {})
    subtitle = (f"benchmark version {bench.get('benchmark_version')}, size {bench.get('size')}, "
                f"{len(bench.get('runs', []))} runs ({bench.get('n_cases')} cases × source protocols × targets), "
                f"methods: {', '.join(bench.get('methods', []))}; {fmt_sig(bench.get('elapsed_s'))} s.")
    radiomics = [[k, fmt_sig(v.get("percent_reproducible")), fmt_sig(v.get("median_ccc")), v.get("n_samples")]
                 for k, v in summary.get("radiomics", {}).items()]
    wilcoxon = [[w["metric"], w["a"], w["b"], w["n"], fmt_sig(w.get("median_difference")), fmt_sig(w.get("p_value"))]
                for w in summary.get("wilcoxon", [])]
    prov = dict(bench.get("provenance", {}))
    vers = prov.pop("versions", None) or versions()
    cases = {"cases": ", ".join(c["name"] for c in bench.get("cases", [])),
             "source protocols": ", ".join(bench.get("source_protocols", [])),
             "targets": ", ".join(bench.get("targets", [])),
             "grid": bench.get("grid_note", "")}
    return render("evaluate_benchmark.html.j2", title="CTNormalize quality benchmark", subtitle=subtitle,
                  per_method=summary.get("per_method", {}), descriptions=_descriptions(),
                  lpips_note=str(bench.get("lpips_note")), per_protocol=summary.get("per_protocol", {}),
                  protocol_metrics=PER_PROTOCOL_METRICS, radiomics=radiomics, wilcoxon=wilcoxon,
                  figures=figures, cases=cases, heldout=_heldout(bench),
                  provenance={**prov, **{f"version {k}": v for k, v in vers.items()}})


def _heldout(bench: dict):
    """The held-out-physics column (independent simulator) for the template, when the benchmark ran it."""
    hp = bench.get("heldout_physics")
    if not hp:
        return None
    from .heldout_benchmark import summary_table

    return {"table": summary_table(hp["per_method"]), "cases": hp["cases"], "notes": hp["notes"]}


def write_html(path, text: str):
    """Write the report atomically."""
    from ..io.atomic import atomic_write_text

    return atomic_write_text(path, text)

