"""Held-out-physics benchmark: every method on scans of the independent (evaluation-only) simulator.

Usage (from the repository root)::

    .venv/bin/python benchmarks/heldout_physics.py              # issue 11's three lung2 cases, 256 x 256
    .venv/bin/python benchmarks/heldout_physics.py --size native  # the same at 512 x 512, 0.63 mm (~4x slower)
    .venv/bin/python benchmarks/heldout_physics.py --size full    # native plus phantom cases (slow)
    .venv/bin/python benchmarks/heldout_physics.py --methods classical:denoise,bm4d
    .venv/bin/python benchmarks/heldout_physics.py --size full --target-like   # target given as a reference scan

Runs the classical methods, every installed model and, when the optional ``bm4d`` package
is installed, BM4D and BM4D + MTF ratio, each with the explicit (nominal) protocol of the
case (``--source-auto``: the source from the pixels; ``--target-like``: the target as a
reference scan of its protocol). Writes ``heldout_physics.json``, PNGs and ``heldout_physics.html`` into
``benchmarks/results/`` and prints the per-case table. Generated cases are cached in
``~/.cache/ctnormalize/heldout/``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CTNormalizeLib.benchmark_methods import heldout_methods, select_methods  # noqa: E402
from CTNormalizeLib.errors import BadInputError  # noqa: E402
from CTNormalizeLib.evaluate import heldout_benchmark as hb  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("tiny", "default", "native", "full"), default="default")
    ap.add_argument("--methods", default=None,
                    help="comma-separated method names (default: all); a name runs in every texture of --textures, "
                         "NAME[target] in that texture only")
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--textures", default="clean,target",
                    help="textures for the complete methods (the chain and models), comma-separated")
    ap.add_argument("--source-auto", action="store_true",
                    help="give the methods source=auto (tags and pixels only) instead of the nominal source protocol")
    ap.add_argument("--target-like", action="store_true",
                    help="give the methods a reference scan of the target protocol (another anatomy made with the "
                         "target's physics, as --target-like) instead of the nominal target protocol")
    ap.add_argument("--name-profile", action="store_true",
                    help="the nominal protocols also name a rectangular slice profile (profile=rect), as a user who "
                         "knows the scanner's slices are would (the phantom cases; lung2's helical triangles stay unnamed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    methods = heldout_methods(tuple(t.strip() for t in args.textures.split(",") if t.strip()))
    if args.methods:
        try:
            methods = select_methods(methods, args.methods)
        except BadInputError as exc:
            print(exc, file=sys.stderr)
            return 2
    res = hb.run_heldout(args.size, methods, source_mode="auto" if args.source_auto else "explicit",
                         target_mode="like" if args.target_like else "explicit", name_profile=args.name_profile,
                         progress=lambda st, f: print(f"{st}: {f:.0%}", file=sys.stderr))
    written = hb.write_heldout(res, args.out_dir)
    print(hb.format_table(res))
    print(f"\nelapsed {res['elapsed_s']} s wall, {res['cpu_s']} s CPU (case generation {res['case_generation_s']} s); wrote {written['json']}, "
          f"{written['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
