"""Quality benchmark: held-out phantoms (seeds >= 1000) and lung2, source protocols x targets x methods.

Usage (from the repository root)::

    .venv/bin/python benchmarks/quality.py                  # default size (<= 10 min on 2 cores)
    .venv/bin/python benchmarks/quality.py --full           # the whole grid (slow)
    .venv/bin/python benchmarks/quality.py --methods classical:classical,classical:mtf_ratio

Writes ``benchmarks/results/quality.json``, the PNGs and ``quality_report.html`` next to
them, and prints the table: each method next to the source and the replicate, with
"gap closed". Same as ``ctnormalize evaluate --benchmark``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CTNormalizeLib.cli.main import main  # noqa: E402


if __name__ == "__main__":
    argv = sys.argv[1:]
    out = "benchmarks/results"
    if "--out-dir" in argv:
        out = argv[argv.index("--out-dir") + 1]
    if "--report" not in argv:
        argv += ["--report", str(Path(out) / "quality_report.html")]
    sys.exit(main(["evaluate", "--benchmark", *argv]))
