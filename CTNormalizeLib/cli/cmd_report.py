"""``ctnormalize report``: a self-contained HTML report from a benchmark's quality.json."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BadInputError

NAME = "report"
HELP = "render the HTML report of a benchmark result (quality.json)"
ORDER = 61
DESCRIPTION = ("Render one self-contained HTML file (images embedded) from the quality.json that "
               "'ctnormalize evaluate --benchmark' wrote; the PNGs next to it are embedded, and the "
               "charts are redrawn from the JSON when a PNG is missing.")


def add_arguments(p):
    p.add_argument("result", help="quality.json written by 'ctnormalize evaluate --benchmark'")
    p.add_argument("-o", "--output", required=True, help="HTML file to write")


def run(args) -> int:
    from ..evaluate.benchmark import benchmark_figures
    from ..evaluate.report import benchmark_report_html, write_html

    from ..io.outputs import OutputGuard

    path = Path(args.result)
    guard = OutputGuard(inputs=[path])
    guard.add(args.output, what="-o")
    guard.check()
    try:
        bench = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        hint = ""
        if path.is_dir() and (path / "cohort.html").is_file():  # a batch's output folder
            hint = (f" It is a cohort run's folder: its report is {path / 'cohort.html'}; this command renders a "
                    "benchmark's quality.json.")
        elif (path.parent / "cohort.html").is_file() or path.suffix.lower() == ".csv":
            hint = (" A cohort run ('ctnormalize batch') writes its own report, cohort.html, next to its tables; "
                    "this command renders a benchmark's quality.json.")
        raise BadInputError(f"Cannot read benchmark result {path}: {exc}.{hint}") from None
    if "summary" not in bench or "runs" not in bench:
        raise BadInputError(f"{path} is not a benchmark result (no 'summary'/'runs').")
    figs = {}
    names = bench.get("figures", [])
    caps = bench.get("figure_captions", names)
    missing = False
    for cap, name in zip(caps, names):
        f = path.parent / name
        if f.is_file():
            figs[cap] = f.read_bytes()
        else:
            missing = True
    if missing or not figs:
        for cap, png in benchmark_figures(bench).items():
            figs.setdefault(cap, png)
    with guard:
        write_html(guard.stage(args.output), benchmark_report_html(bench, figs))
        guard.commit()
    print(f"report: {args.output}")
    return 0
