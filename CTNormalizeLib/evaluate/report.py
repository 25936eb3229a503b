"""One self-contained HTML report (images embedded as base64 PNG, no external files).

Two entry points:
- :func:`pair_report_html` for one paired evaluation (``ctnormalize evaluate --report``),
- :func:`benchmark_report_html` for a benchmark JSON (``ctnormalize report``).
"""

from __future__ import annotations

import base64
import html
import math
import platform

from ..version import __version__


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


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞" if v > 0 else ("−∞" if v < 0 else "—")
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3e}"
    return html.escape(str(v))


def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"/><figcaption>{html.escape(alt)}</figcaption></figure>'


def _gap_cell(g) -> str:
    if g is None:
        return '<td class="na" title="source already at the floor, or a role missing">—</td>'
    cls = "good" if g >= 0.5 else ("bad" if g < 0 else "mid")
    return f'<td class="{cls}">{g:.2f}</td>'


def floor_table_html(table: dict, descriptions: dict | None = None, output_label: str = "output") -> str:
    """The metric table with the floor: metric | source | output | replicate | gap closed."""
    rows = []
    for name, r in table.items():
        desc = (descriptions or {}).get(name, "")
        arrow = "↓" if r.get("better") == "lower" else "↑"
        unit = f" ({r['unit']})" if r.get("unit") else ""
        rows.append(
            f'<tr><td title="{html.escape(desc)}">{html.escape(name)}{unit} {arrow}</td>'
            f"<td>{_fmt(r.get('source'))}</td><td><b>{_fmt(r.get('output'))}</b></td>"
            f"<td>{_fmt(r.get('replicate'))}</td>{_gap_cell(r.get('gap_closed'))}</tr>")
    return ('<table class="metrics"><thead><tr><th>metric</th><th>source vs target<br><small>(the problem)</small></th>'
            f"<th>{html.escape(output_label)} vs target</th><th>replicate vs target<br><small>(the floor)</small></th>"
            '<th>gap closed</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _kv_table(d: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v) if not isinstance(v, (dict, list)) else html.escape(str(v))}</td></tr>"
                   for k, v in d.items())
    return f'<table class="kv">{rows}</table>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:0}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.sub{color:#666;margin-top:4px}table{border-collapse:collapse;margin:8px 0;font-size:0.88em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.kv th{text-align:left;font-weight:normal;color:#555}
.kv td{text-align:left}td.good{background:#d8f0d8}td.mid{background:#fff4cc}td.bad{background:#f8d7d7}td.na{color:#999}
figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top}figure img{max-width:100%}
figcaption{font-size:0.8em;color:#666}.note{font-size:0.85em;color:#555;max-width:900px}
.warn{color:#8a4b00}
"""


def _page(title: str, subtitle: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(h)}</h2>{c}" for h, c in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="sub">{subtitle}</p>{body}'
            '<p class="note">CTNormalize — research use, not for diagnosis.</p></body></html>')


FLOOR_NOTE = ('<p class="note">Every metric compares an image with the <b>target</b>. The <b>source</b> column is '
              "the problem (the scan as acquired); the <b>replicate</b> column is the physical floor (the same "
              "anatomy scanned with the target protocol, independent noise). <b>Gap closed</b> = "
              "(m<sub>source</sub> − m<sub>output</sub>) / (m<sub>source</sub> − m<sub>replicate</sub>): 0 = no better "
              "than the source, 1 = as close as a repeat scan; — where the source is already within 1 % of the "
              "floor. ↓ lower is better, ↑ higher is better.</p>")


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
    from .paired import METRICS

    s = result.get("settings", {})
    sub = (f"window {s.get('window_hu')} HU (data range {_fmt(s.get('data_range'))}), "
           f"emphysema threshold {_fmt(s.get('threshold_hu'))} HU; compared on the target grid "
           f"({result['grid']['n_slices']} slices, z {result['grid']['z_range_mm']} mm).")
    figs = "".join(_img(png, cap) for cap, png in figures.items())
    lp = f'<p class="note">LPIPS: {html.escape(str(result.get("lpips_note")))}</p>'
    sections = [
        ("Metrics with the floor", floor_table_html(result["table"], {k: v[2] for k, v in METRICS.items()}) + FLOOR_NOTE + lp),
        ("Pictures", figs),
        ("Absolute values", _abs_values_html(result["values"])),
        ("How it was measured", _kv_table({**result.get("masks", {}), "grid": result["grid"]["note"]})),
        ("Provenance", _kv_table({**provenance, **{f"version {k}": v for k, v in versions().items()}})),
    ]
    return _page("CTNormalize paired evaluation", sub, sections)


def _abs_values_html(values: dict) -> str:
    keys = ["noise_std_hu", "edge_width_mm", "mtf50", "laa_percent"]
    roles = [r for r in ("source", "output", "replicate", "target") if r in values]
    head = "".join(f"<th>{r}</th>" for r in roles)
    rows = "".join(f"<tr><td>{k}</td>" + "".join(f"<td>{_fmt(values[r].get(k))}</td>" for r in roles) + "</tr>"
                   for k in keys)
    return f'<table class="metrics"><thead><tr><th>value</th>{head}</tr></thead><tbody>{rows}</tbody></table>'


def benchmark_report_html(bench: dict, figures: dict) -> str:
    """HTML of a benchmark run (the JSON of :func:`CTNormalizeLib.evaluate.benchmark.run_benchmark`)."""
    from .paired import METRICS

    sub = (f"benchmark version {html.escape(str(bench.get('benchmark_version')))}, size "
           f"{html.escape(str(bench.get('size')))}, {len(bench.get('runs', []))} runs "
           f"({bench.get('n_cases')} cases × source protocols × targets), methods: "
           f"{html.escape(', '.join(bench.get('methods', [])))}; {_fmt(bench.get('elapsed_s'))} s.")
    tables = []
    for method, table in bench.get("summary", {}).get("per_method", {}).items():
        tables.append(f"<h3>{html.escape(method)}</h3>" + floor_table_html(table, {k: v[2] for k, v in METRICS.items()},
                                                                           output_label=method))
    rad = bench.get("summary", {}).get("radiomics", {})
    rad_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v.get('percent_reproducible'))}</td>"
                       f"<td>{_fmt(v.get('median_ccc'))}</td><td>{v.get('n_samples')}</td></tr>" for k, v in rad.items())
    rad_html = ('<table class="metrics"><thead><tr><th>series</th><th>% features CCC &gt; 0.85</th><th>median CCC</th>'
                f"<th>nodule samples</th></tr></thead><tbody>{rad_rows}</tbody></table>") if rad_rows else \
        '<p class="note">No radiomics computed.</p>'
    wil = bench.get("summary", {}).get("wilcoxon", [])
    wil_rows = "".join(f"<tr><td>{html.escape(w['metric'])}</td><td>{html.escape(w['a'])}</td><td>{html.escape(w['b'])}</td>"
                       f"<td>{w['n']}</td><td>{_fmt(w.get('median_difference'))}</td><td>{_fmt(w.get('p_value'))}</td></tr>"
                       for w in wil)
    wil_html = ('<table class="metrics"><thead><tr><th>metric</th><th>A</th><th>B</th><th>n pairs</th>'
                f"<th>median A−B</th><th>p (Wilcoxon)</th></tr></thead><tbody>{wil_rows}</tbody></table>") if wil_rows else ""
    figs = "".join(_img(png, cap) for cap, png in figures.items())
    pp_html = _per_protocol_html(bench.get("summary", {}).get("per_protocol", {}))
    prov = dict(bench.get("provenance", {}))
    vers = prov.pop("versions", None) or versions()
    sections = [
        ("Metric tables with the floor (median over runs)", "".join(tables) + FLOOR_NOTE +
         f'<p class="note">LPIPS: {html.escape(str(bench.get("lpips_note")))}</p>'),
        ("Per source protocol (median over cases)", pp_html),
        ("Radiomic reproducibility (nodules, across cases)", rad_html),
        ("Paired Wilcoxon signed-rank tests between methods", wil_html),
        ("Pictures", figs),
        ("Cases and protocols", _kv_table({"cases": ", ".join(c["name"] for c in bench.get("cases", [])),
                                           "source protocols": ", ".join(bench.get("source_protocols", [])),
                                           "targets": ", ".join(bench.get("targets", [])),
                                           "grid": bench.get("grid_note", "")})),
        ("Provenance", _kv_table({**prov, **{f"version {k}": v for k, v in vers.items()}})),
    ]
    return _page("CTNormalize quality benchmark", sub, sections)


PER_PROTOCOL_METRICS = ("l1_body_hu", "ssim_axial", "nps_similarity", "noise_std_error_hu", "edge_width_error_mm",
                        "ei_error_pt")


def _per_protocol_html(per_protocol: dict) -> str:
    if not per_protocol:
        return ""
    head = "".join(f"<th>{m}</th>" for m in PER_PROTOCOL_METRICS)
    rows = []
    for proto, d in per_protocol.items():
        first = True
        for label, vals in d.items():
            cell = f'<td rowspan="{len(d)}">{html.escape(proto)}</td>' if first else ""
            first = False
            rows.append(f"<tr>{cell}<td>{html.escape(label)}</td>" +
                        "".join(f"<td>{_fmt(vals.get(m))}</td>" for m in PER_PROTOCOL_METRICS) + "</tr>")
    return (f'<table class="metrics"><thead><tr><th>source → target</th><th>series</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def write_html(path, text: str):
    """Write the report atomically."""
    from ..io.atomic import atomic_write_text

    return atomic_write_text(path, text)
